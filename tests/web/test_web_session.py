"""The page's session: sign-in, reload and network drops resumed without a new login,
a server restart, an expired sign-in, and channel membership changed while it runs."""

from __future__ import annotations

from server.config import ServerConfig
from server.node import EmbeddedServer
from tests.audio_tools import WavTrack
from tests.server.harness import PttClient, close_all
from tests.web.browser import new_page
from tests.web.page_helpers import (
    channel_mids,
    packets,
    requests_to,
    row,
    sessions_of,
    sign_in,
    stored,
    until,
    wait_online,
)


async def session_id(page) -> str:
    return await stored(page, "sessionId")


async def test_wrong_password_is_refused_with_a_message(site, chromium):
    page = await new_page(chromium)
    await page.goto(site.url)
    await page.fill("#username", "u1")
    await page.fill("#password", "not-the-password")
    await page.click("#login-button")
    await page.wait_for_selector("#login-error:has-text('Wrong user name or password')")
    assert await page.is_hidden("#radio-view")
    assert sessions_of(site, "u1") == []
    page.errors.clear()  # the browser logs the 401 itself


async def test_reload_resumes_the_session_with_its_channels_without_a_new_login(site, chromium, speech_wav):
    alpha, bravo = site.channels["alpha"], site.channels["bravo"]
    page = await new_page(chromium)
    await sign_in(page, site.url, "u1")
    await row(page, "alpha").locator(".channel-mute").click()
    await row(page, "bravo").locator(".channel-select").click()
    [session] = sessions_of(site, "u1")
    await until(lambda: _is(alpha in session.muted, True), what="the mute")
    before = await session_id(page)
    logins = requests_to(page, "/api/login")

    await page.reload()
    await wait_online(page)
    assert logins == [], "the reload signed in again"
    assert await page.is_hidden("#login-view")
    assert await session_id(page) == before, "the reload did not resume its session"
    assert [s.id for s in sessions_of(site, "u1")] == [before]
    assert session.joined == {alpha, bravo}
    assert session.muted == {alpha}
    assert await row(page, "alpha").locator(".channel-mute").get_attribute("aria-pressed") == "true"
    assert await page.text_content("#talk-channel") == "bravo"

    # And media flows on the new peer connection.
    talker = await PttClient.connect(site.url, "u2", slots=1, microphone=WavTrack(speech_wav, loop=True))
    try:
        assert (await talker.talk(bravo))["granted"]
        await until(lambda: _more(page, bravo, 50), what="audio after the reload")
        assert await packets(page, alpha) == 0, "a muted channel got audio after the reload"
    finally:
        await close_all(talker)


async def test_a_dropped_connection_comes_back_by_itself(site, chromium):
    page = await new_page(chromium)
    await sign_in(page, site.url, "u1")
    before = await session_id(page)
    logins = requests_to(page, "/api/login")

    await site.hub.close_connections()  # every WebSocket cut, as by a network drop
    await page.wait_for_selector('#connection[data-state="reconnecting"]', timeout=5000)
    await wait_online(page)
    assert await session_id(page) == before
    assert logins == []
    [session] = sessions_of(site, "u1")
    assert session.joined == {site.channels["alpha"], site.channels["bravo"]}


async def test_after_a_server_restart_the_page_rejoins_what_the_user_chose(site, chromium, tmp_path):
    alpha, bravo = site.channels["alpha"], site.channels["bravo"]
    page = await new_page(chromium)
    await sign_in(page, site.url, "u1")
    await row(page, "bravo").locator(".channel-listen").click()  # stop listening to bravo
    await row(page, "alpha").locator(".channel-mute").click()
    [session] = sessions_of(site, "u1")
    await until(lambda: _is((session.joined, session.muted), ({alpha}, {alpha})), what="leave and mute")

    port = site.server.port
    await site.server.stop()
    await page.wait_for_selector('#connection[data-state="reconnecting"]', timeout=5000)
    config = ServerConfig(data_dir=site.data_dir, listen_port=port, ice_addresses=["127.0.0.1"])
    site.server = await EmbeddedServer(config).start()  # the fixture stops this one
    await wait_online(page, timeout_ms=20000)

    [session] = sessions_of(site, "u1")  # a new session: the old one died with the server
    assert session.joined == {alpha}
    assert session.muted == {alpha}
    assert set((await channel_mids(page)).keys()) == {alpha}


async def test_an_expired_sign_in_goes_back_to_the_form_with_a_reason(site, chromium):
    page = await new_page(chromium)
    await sign_in(page, site.url, "u1")
    # The server accepts neither token (the login expired, or the site's key changed).
    await page.evaluate(
        "() => window.vpdeskDebug.app.store.set({token: 'eyJ.expired.token', refreshToken: 'gone'})"
    )
    await page.reload()
    await page.wait_for_selector("#login-error:has-text('Your sign-in has expired; sign in again')")
    assert await page.is_visible("#login-view")
    assert await page.input_value("#username") == "u1"
    assert await stored(page, "refreshToken") is None, "a dead sign-in is forgotten"
    page.errors.clear()  # the browser logs the refused refresh (401)


async def test_channels_added_and_removed_while_the_page_runs(site, chromium):
    alpha = site.channels["alpha"]
    page = await new_page(chromium)
    await sign_in(page, site.url, "u1")
    charlie = site.directory.add_channel("charlie", team="Ops", event="Exercise").id
    site.directory.add_member("u1", "charlie")
    await row(page, "charlie").wait_for(timeout=10000)  # channels_changed within a second or so
    await until(lambda: _has_mid(page, charlie), what="the new channel to be joined")
    assert await row(page, "charlie").locator(".channel-listen").get_attribute("aria-pressed") == "true"

    site.directory.remove_member("u1", "alpha")
    await row(page, "alpha").wait_for(state="detached", timeout=10000)
    assert alpha not in await channel_mids(page)
    [session] = sessions_of(site, "u1")
    assert alpha not in session.joined


async def _is(value, expected) -> bool:
    return value == expected


async def _more(page, channel: int, count: int) -> bool:
    return await packets(page, channel) > count


async def _has_mid(page, channel: int) -> bool:
    return channel in await channel_mids(page)
