"""TokenKeeper against a real in-process server: refresh before expiry, rotation, the
password fallback, and the console session's use of it."""

from __future__ import annotations

import asyncio

import pytest
import pytest_asyncio

from tests.server.harness import PASSWORD, start_site
from tests.vpdesk.session_helpers import make_session, until
from vpdesk.core.connection import ConnectionState
from vpdesk.session.admin_api import AdminApi, ApiRefused
from vpdesk.session.tokens import TokenKeeper, TokenRefused

TTL_S = 120  # access tokens; the keeper refreshes once fewer than 60 s are left


class Clock:
    """The keeper's monotonic clock, moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest_asyncio.fixture
async def site(tmp_path):
    site = await start_site(tmp_path / "site", users=2, token_ttl_s=TTL_S)
    yield site
    await site.server.stop()


async def whoami(site, token: str) -> str:
    async def fixed() -> str:
        return token

    api = AdminApi(site.url, fixed)
    try:
        return (await api.me())["user"]["name"]
    finally:
        await api.close()


async def test_refreshes_before_expiry_with_a_rotated_refresh_token(site):
    clock = Clock()
    keeper = TokenKeeper(site.url, "u1", PASSWORD, clock=clock)
    first = await keeper.access_token()
    assert keeper.logins == 1 and keeper.seconds_left() == pytest.approx(TTL_S, abs=2)
    assert await keeper.access_token() == first  # plenty of time left: no refresh
    refresh_1 = keeper.refresh_token

    clock.now += TTL_S - 59  # 59 s left: under the margin
    second = await keeper.access_token()
    assert second != first and keeper.refreshes == 1 and keeper.logins == 1
    assert keeper.refresh_token != refresh_1  # rotated
    assert await whoami(site, second) == "u1"

    clock.now += TTL_S - 59
    third = await keeper.access_token()  # works only with the rotated token: reuse revokes
    assert third != second and keeper.refreshes == 2 and keeper.logins == 1
    assert await whoami(site, third) == "u1"


async def test_concurrent_callers_share_one_refresh(site):
    clock = Clock()
    keeper = TokenKeeper(site.url, "u1", PASSWORD, clock=clock)
    await keeper.access_token()
    clock.now += TTL_S
    tokens = await asyncio.gather(*(keeper.access_token() for _ in range(5)))
    assert len(set(tokens)) == 1
    # A second refresh with the spent token would have ended the login (theft): none did.
    assert keeper.refreshes == 1 and keeper.logins == 1
    assert await whoami(site, tokens[0]) == "u1"


async def logout(site, token: str) -> None:
    async def fixed() -> str:
        return token

    api = AdminApi(site.url, fixed)
    try:
        await api.logout()
    finally:
        await api.close()


async def test_a_refused_refresh_falls_back_to_the_password(site):
    clock = Clock()
    keeper = TokenKeeper(site.url, "u1", PASSWORD, clock=clock)
    await logout(site, await keeper.access_token())  # the login and its refresh token end
    clock.now += TTL_S
    token = await keeper.access_token()
    assert keeper.logins == 2 and keeper.refreshes == 0
    assert await whoami(site, token) == "u1"


async def test_without_a_password_a_refused_refresh_needs_a_new_sign_in(site):
    clock = Clock()
    signed_in = TokenKeeper(site.url, "u1", PASSWORD, clock=clock)
    await signed_in.access_token()
    keeper = TokenKeeper(site.url, clock=clock)  # e.g. tokens handed over, no password kept
    keeper.accept({"token": "x.e30.y", "expires_at": 0, "refresh_token": signed_in.refresh_token})
    token = await keeper.access_token()  # the refresh token alone is enough
    assert await whoami(site, token) == "u1" and keeper.user["name"] == "u1"

    await logout(site, token)
    clock.now += TTL_S
    with pytest.raises(TokenRefused, match="sign in again"):
        await keeper.access_token()


async def test_wrong_password_is_refused(site):
    keeper = TokenKeeper(site.url, "u1", "not-the-password")
    with pytest.raises(TokenRefused, match="wrong user name or password"):
        await keeper.access_token()


async def test_throttled_login_is_not_a_verdict_on_the_password(tmp_path):
    site = await start_site(tmp_path / "site", users=1, login_failures_per_user=1)
    try:
        with pytest.raises(TokenRefused):
            await TokenKeeper(site.url, "u0", "wrong").access_token()
        with pytest.raises(ApiRefused) as info:  # 429: try later, the password may be right
            await TokenKeeper(site.url, "u0", PASSWORD).access_token()
        assert (info.value.status, info.value.code) == (429, "rate_limited")
    finally:
        await site.server.stop()


async def test_console_session_refreshes_instead_of_signing_in_again(tmp_path):
    # Tokens shorter than the keeper's margin: every token asked for is a refreshed one.
    site = await start_site(tmp_path / "site", users=2, token_ttl_s=30)
    session = make_session(site.url, "u1", PASSWORD)
    try:
        session.reconnector.base = 0.05
        session.start()
        await session.wait_connected()
        token = await session.access_token()
        assert await whoami(site, token) == "u1"
        await session.drop_connection()
        await until(lambda: not session.connected)
        await session.wait_connected()  # the hello used a refreshed token
        assert session._tokens.logins == 1 and session._tokens.refreshes >= 2
    finally:
        await session.stop()
        await site.server.stop()


async def test_console_session_stops_when_its_password_was_changed(site):
    session = make_session(site.url, "u1", PASSWORD)
    try:
        session.reconnector.base = 0.05
        session.start()
        await session.wait_connected()
        admin = TokenKeeper(site.url, "admin", PASSWORD)
        api = AdminApi(site.url, admin.access_token)
        try:
            user_id = site.directory.user_by_name("u1").id
            await api.update_user(user_id, password="a-new-password-1")
        finally:
            await api.close()
        # The server ended the session and its login; the old password no longer works.
        await until(lambda: session.state is ConnectionState.FAILED)
        assert "Login refused" in session.detail
    finally:
        await session.stop()
