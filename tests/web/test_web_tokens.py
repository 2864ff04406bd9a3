"""The page's sign-in against a real server: short-lived access tokens refreshed ahead of
expiry, a refused token refreshed once, sign-out, the server ending the sign-in, login
throttling, and signaling's rate limit."""

from __future__ import annotations

import asyncio

import pytest

from server.app_keys import TOKENS
from server.auth import TokenError
from tests.server.api_client import ApiClient
from tests.web.browser import new_page
from tests.web.page_helpers import (
    ptt_state,
    press_ptt,
    release_ptt,
    requests_to,
    row,
    sessions_of,
    sign_in,
    stored,
    tones_played,
    until,
    wait_online,
    watch_sockets,
)

SHORT_TTL_S = 8  # the page refreshes with a third of it left: every ~3 s


async def test_tokens_are_refreshed_ahead_and_a_reconnect_after_expiry_needs_no_sign_in(site_with, chromium):
    site = await site_with(token_ttl_s=SHORT_TTL_S)
    page = await new_page(chromium)
    logins, refreshes = requests_to(page, "/api/login"), requests_to(page, "/api/refresh")
    sockets = watch_sockets(page)
    await sign_in(page, site.url, "u1")
    first_token, session = await stored(page, "token"), await stored(page, "sessionId")

    await asyncio.sleep(SHORT_TTL_S + 1)  # the token the page signed in with is dead now
    with pytest.raises(TokenError, match="expired"):
        site.server.app[TOKENS].verify(first_token)
    assert len(refreshes) >= 2, "the page did not refresh ahead of expiry"

    await site.hub.close_connections()  # a network drop
    await page.wait_for_selector('#connection[data-state="reconnecting"]', timeout=5000)
    await wait_online(page)
    assert await page.is_hidden("#login-view")
    assert logins == ["POST"], "the page signed in again"
    assert await stored(page, "sessionId") == session, "the session was not resumed"
    assert len(sockets.hellos) == 2
    assert sockets.hellos[0] == first_token
    assert sockets.hellos[1] not in (None, first_token)
    assert sockets.refusals == [], "a hello was refused: the page used a stale token"


async def test_a_token_the_server_refuses_is_replaced_by_one_refresh(site, chromium):
    page = await new_page(chromium)
    await sign_in(page, site.url, "u1")
    logins, refreshes = requests_to(page, "/api/login"), requests_to(page, "/api/refresh")
    # Still "valid" by the clock, but refused (e.g. the site's signing key changed).
    await page.evaluate("() => window.vpdeskDebug.app.store.set({token: 'eyJ.not.ours'})")
    await page.reload()
    await wait_online(page)
    assert await page.is_hidden("#login-view")
    assert (logins, refreshes) == ([], ["POST"])
    assert await stored(page, "token") != "eyJ.not.ours"


async def test_sign_out_ends_the_login_and_keeps_the_choices(site, chromium):
    alpha = site.channels["alpha"]
    page = await new_page(chromium)
    await sign_in(page, site.url, "u1")
    await row(page, "alpha").locator(".channel-mute").click()
    await until(lambda: _is(alpha in sessions_of(site, "u1")[0].muted, True), what="the mute")
    refresh_token = await stored(page, "refreshToken")

    async with page.expect_response(lambda r: r.url.endswith("/api/logout")) as logout:
        await page.click("#sign-out")
    assert (await logout.value).status == 200
    assert await page.is_visible("#login-view")
    assert await page.input_value("#username") == "u1"
    await until(lambda: _is(sessions_of(site, "u1"), []), what="the session to end")
    async with ApiClient(site.url) as api:
        refused = await api.post("/api/refresh", {"refresh_token": refresh_token})
    assert refused.status == 401, "the login outlived its sign-out"

    sockets = watch_sockets(page)
    await page.reload()
    await page.wait_for_selector("#login-view", state="visible")
    assert sockets.opened == [], "a reload after sign-out connected"
    assert await stored(page, "token") is None

    await sign_in(page, site.url, "u1")
    assert await row(page, "alpha").locator(".channel-mute").get_attribute("aria-pressed") == "true"


async def test_the_server_ending_the_sign_in_shows_why(site, chromium):
    page = await new_page(chromium)
    logins = requests_to(page, "/api/login")

    # Signed out from elsewhere (the page's own login, ended by someone holding its token).
    await sign_in(page, site.url, "u1")
    async with ApiClient(site.url, token=await stored(page, "token")) as api:
        assert (await api.post("/api/logout")).status == 200
    await page.wait_for_selector("#login-error:has-text('You were signed out')")

    # The password changed (by the user, on another device).
    await sign_in(page, site.url, "u1")
    async with await ApiClient.login(site.url, "u1") as api:
        body = {"old_password": "secret-pw", "new_password": "new-secret-pw"}
        assert (await api.post("/api/me/password", body)).status == 200
    await page.wait_for_selector("#login-error:has-text('Your password was changed')")

    # The user deleted by an admin.
    await sign_in(page, site.url, "u1", password="new-secret-pw")
    async with await ApiClient.login(site.url, "admin") as admin:
        user_id = site.directory.user_by_name("u1").id
        assert (await admin.delete(f"/api/users/{user_id}")).status == 200
    await page.wait_for_selector("#login-error:has-text('Your account was removed')")

    assert logins == ["POST"] * 3, "the page tried to sign itself back in"
    assert await stored(page, "refreshToken") is None
    assert await page.is_hidden("#radio-view")


async def test_a_throttled_login_says_when_to_try_again(site_with, chromium):
    site = await site_with(login_failures_per_user=2, login_window_s=120)
    page = await new_page(chromium)
    await page.goto(site.url)
    for _ in range(2):
        await page.fill("#username", "u1")
        await page.fill("#password", "wrong")
        await page.click("#login-button")
        await page.wait_for_selector("#login-error:has-text('Wrong user name or password')")
        await page.evaluate("() => { document.getElementById('login-error').textContent = ''; }")
    await page.fill("#password", "secret-pw")  # right, but too late
    await page.click("#login-button")
    error = page.locator("#login-error", has_text="Too many failed attempts; try again in")
    await error.wait_for()
    seconds = int((await error.text_content()).rsplit("in ", 1)[1].split(" ")[0])
    assert 0 < seconds <= 120
    assert sessions_of(site, "u1") == []
    page.errors.clear()  # the browser logs the 401s and the 429


async def test_too_many_requests_refuse_a_press_quietly_then_reconnect_after_a_pause(site_with, chromium):
    # Five frames per connection (hello, offer and two joins leave one for a press); the
    # third refusal closes the connection (4008).
    site = await site_with(signaling_rate_per_s=0.001, signaling_burst=5, signaling_abuse_limit=2)
    bravo = site.channels["bravo"]
    page = await new_page(chromium)
    sockets = watch_sockets(page)
    await sign_in(page, site.url, "u1")
    await row(page, "bravo").locator(".channel-select").click()

    await press_ptt(page)  # the last frame of the budget: granted
    await until(lambda: _state_is(page, "transmitting"), what="the grant")
    await release_ptt(page)  # floor_release: refused (rate_limited), quietly
    await until(lambda: _state_is(page, "idle"), what="the release")
    await press_ptt(page)  # refused: a short message, no busy tone
    await page.wait_for_selector("#message:has-text('Cannot talk: too many requests')")
    await release_ptt(page)
    assert await ptt_state(page) == "idle"
    assert "busy" not in await tones_played(page), "a throttled press is no busy channel"
    assert [r["error"]["code"] for r in sockets.refusals] == ["rate_limited", "rate_limited"]
    assert await page.is_visible("#radio-view")

    await press_ptt(page)  # the third refusal: the server closes (4008)
    await page.wait_for_selector("#link-notice:has-text('Too many requests; reconnecting')")
    await release_ptt(page)
    await wait_online(page)
    assert await page.is_hidden("#link-notice")
    assert len(sockets.opened) == 2, "one reconnect, not a loop"
    assert sockets.opened[1] - sockets.closed[0] >= 3, "reconnected without backing off"
    [session] = sessions_of(site, "u1")
    assert bravo in session.joined


async def _is(value, expected) -> bool:
    return value == expected


async def _state_is(page, state: str) -> bool:
    return await ptt_state(page) == state
