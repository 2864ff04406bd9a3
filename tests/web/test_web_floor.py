"""Push-to-talk in the real page against the real server's floor control: busy denial
with the holder's name and the busy tone, toggle mode (remembered), the space bar, a
talker whose page loses focus, and the server revoking a transmission."""

from __future__ import annotations

import asyncio

from tests.server.harness import PttClient, close_all
from tests.web.page_helpers import (
    press_ptt,
    ptt_state,
    release_ptt,
    row,
    sign_in,
    tones_played,
    until,
    wait_online,
)
from tests.web.browser import new_page


def holder_name(site, channel: int) -> str | None:
    """Who the server says holds the floor of `channel` (None when idle)."""
    lease = site.hub.floor.current(channel)
    return lease.name if lease else None


async def test_busy_shows_the_holder_and_refuses_the_press_with_the_busy_tone(site, chromium):
    alpha = site.channels["alpha"]
    talker = await PttClient.connect(site.url, "u2", slots=1)
    try:
        page = await new_page(chromium)
        await sign_in(page, site.url, "u1")
        await row(page, "alpha").locator(".channel-select").click()
        assert (await talker.talk(alpha))["granted"]

        banner = page.locator("#floor-banner")
        await page.wait_for_selector('#floor-banner[data-state="taken"]')
        assert await banner.text_content() == "u2 is speaking"

        await press_ptt(page)
        await page.wait_for_selector('#ptt-button[data-state="denied"]')
        assert await banner.get_attribute("data-state") == "busy"
        assert "u2 is speaking" in await banner.text_content()
        assert "busy" in (await page.text_content("#message")).lower()
        await release_ptt(page)
        assert await tones_played(page) == ["busy"]
        assert holder_name(site, alpha) == "u2", "the denied press changed the floor"

        # Once the talker lets go the channel is free for the page.
        await talker.release(alpha)
        await page.wait_for_selector('#floor-banner[data-state="idle"]', timeout=10000)
        await press_ptt(page)
        await page.wait_for_selector('#ptt-button[data-state="transmitting"]')
        assert holder_name(site, alpha) == "u1"
        assert (await talker.talk(alpha))["granted"] is False
        await release_ptt(page)
        await until(lambda: _is(holder_name(site, alpha), None), what="the page to release the floor")
        assert await tones_played(page) == ["busy", "talk_permit", "end_of_tx"]
    finally:
        await close_all(talker)


async def test_toggle_mode_talks_until_tapped_again_and_is_remembered(site, chromium):
    alpha = site.channels["alpha"]
    page = await new_page(chromium)
    await sign_in(page, site.url, "u1")
    await page.check('input[name="ptt-mode"][value="toggle"]')
    await page.reload()
    await wait_online(page)
    assert await page.is_checked('input[name="ptt-mode"][value="toggle"]'), "toggle mode was forgotten"
    assert await page.text_content("#ptt-label") == "Tap to talk"

    await page.click("#ptt-button")
    await page.wait_for_selector('#ptt-button[data-state="transmitting"]')
    await asyncio.sleep(0.5)
    assert holder_name(site, alpha) == "u1", "the floor went with the finger"
    await page.click("#ptt-button")
    await page.wait_for_selector('#ptt-button[data-state="idle"]')
    await until(lambda: _is(holder_name(site, alpha), None), what="the tap to release the floor")


async def test_the_space_bar_is_a_ptt_key_and_losing_focus_releases(site, chromium):
    alpha = site.channels["alpha"]
    page = await new_page(chromium)
    await sign_in(page, site.url, "u1")

    await page.keyboard.down("Space")
    await page.wait_for_selector('#ptt-button[data-state="transmitting"]')
    assert holder_name(site, alpha) == "u1"
    await page.keyboard.up("Space")
    await until(lambda: _is(holder_name(site, alpha), None), what="space up to release")

    # Held, then the window loses focus: the key-up may never come, so the page lets go.
    await page.keyboard.down("Space")
    await page.wait_for_selector('#ptt-button[data-state="transmitting"]')
    await page.evaluate("() => window.dispatchEvent(new Event('blur'))")
    await until(lambda: _is(holder_name(site, alpha), None), what="blur to release")
    await page.keyboard.up("Space")


async def test_typing_in_a_field_is_not_a_press(site, chromium):
    page = await new_page(chromium)
    await page.goto(site.url)
    await page.fill("#username", "u 1")
    assert await page.input_value("#username") == "u 1"


async def test_a_revoked_transmission_ends_in_the_page(site, chromium):
    alpha = site.channels["alpha"]
    page = await new_page(chromium)
    await sign_in(page, site.url, "u1")
    await press_ptt(page)
    await page.wait_for_selector('#ptt-button[data-state="transmitting"]')

    dispatcher = await PttClient.connect(site.url, "u0", slots=1)
    try:
        assert (await dispatcher.talk(alpha, priority="emergency"))["granted"]
        await page.wait_for_selector('#ptt-button[data-state="idle"]')
        assert "emergency" in (await page.text_content("#message")).lower()
        assert (await tones_played(page))[-1] == "emergency"
        await release_ptt(page)
        await page.wait_for_selector('#floor-banner[data-state="taken"]')
        assert await page.text_content("#floor-banner") == "u0 is speaking"
    finally:
        await close_all(dispatcher)


async def _is(value, expected) -> bool:
    return value == expected
