"""Login, refresh, logout and password change against a real in-process server.

No media: sessions are signaling only (hello), which is what logins end.
"""

from __future__ import annotations

import aiohttp
import pytest

from server.app_keys import AUDIT, LOGINS
from server.logins import LoginStore
from tests.server import harness
from vpdesk.session.signaling import RequestError, SignalingClient

WAIT = 5.0  # seconds: the most any single expectation here may take


@pytest.fixture
async def site(tmp_path):
    site = await harness.start_site(tmp_path, users=4, login_failures_per_user=5,
                                    login_failures_per_address=8)
    try:
        yield site
    finally:
        await site.server.stop()


class Http:
    def __init__(self, site: harness.Site, http: aiohttp.ClientSession) -> None:
        self.site = site
        self.http = http

    async def post(self, path: str, body: object = None, token: str | None = None):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with self.http.post(self.site.url + path, json=body, headers=headers) as resp:
            return resp.status, await resp.json(), resp.headers

    async def get(self, path: str, token: str | None = None):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with self.http.get(self.site.url + path, headers=headers) as resp:
            return resp.status, await resp.json()

    async def login(self, name: str, password: str = harness.PASSWORD) -> dict:
        status, body, _ = await self.post("/api/login", {"username": name, "password": password})
        assert status == 200, body
        return body


@pytest.fixture
async def api(site):
    async with aiohttp.ClientSession() as http:
        yield Http(site, http)


@pytest.fixture
async def sockets(site):
    opened: list[SignalingClient] = []

    async def open_session(token: str) -> SignalingClient:
        sig = await SignalingClient.connect(site.url)
        opened.append(sig)
        await sig.hello(token, timeout=WAIT)
        return sig

    yield open_session
    for sig in opened:
        await sig.close()


def assert_unauthorized(status: int, body: dict, words: str) -> None:
    assert status == 401, body
    assert body["error"]["code"] == "unauthorized"
    assert words in body["error"]["message"], body


async def assert_session_works(sig: SignalingClient, site: harness.Site) -> None:
    reply = await sig.request("floor_release", timeout=WAIT, channel=site.channels["bravo"])
    assert reply["ok"] is True


# --- login and refresh ---------------------------------------------------------------


async def test_login_answers_an_access_token_and_a_refresh_token(api, site):
    body = await api.login("u0")
    assert set(body) == {"token", "expires_at", "user", "refresh_token", "refresh_expires_at"}
    assert body["user"] == {"id": site.directory.user_by_name("u0").id, "name": "u0", "role": "dispatch"}
    # Short-lived access, long-lived refresh (the config's defaults: 15 min, 30 days).
    assert body["refresh_expires_at"] - body["expires_at"] > 24 * 3600
    status, stats = await api.get("/api/stats", body["token"])
    assert status == 200 and "sessions" in stats


async def test_refresh_rotates_and_a_reused_refresh_token_revokes_the_login(api, site):
    first = await api.login("u0")
    status, second, _ = await api.post("/api/refresh", {"refresh_token": first["refresh_token"]})
    assert status == 200, second
    assert set(second) == set(first)
    assert second["user"] == first["user"]
    assert second["refresh_token"] != first["refresh_token"]
    assert second["token"] != first["token"]
    assert (await api.get("/api/stats", second["token"]))[0] == 200

    # The rotated-out token again: refused, and the whole login is over (theft).
    status, body, _ = await api.post("/api/refresh", {"refresh_token": first["refresh_token"]})
    assert_unauthorized(status, body, "reused")
    status, body, _ = await api.post("/api/refresh", {"refresh_token": second["refresh_token"]})
    assert_unauthorized(status, body, "unknown")
    for token in (first["token"], second["token"]):
        status, body = await api.get("/api/stats", token)
        assert_unauthorized(status, body, "token revoked")
    # Another login of the same user is not touched.
    other = await api.login("u0")
    assert (await api.get("/api/stats", other["token"]))[0] == 200


async def test_refresh_with_a_malformed_body_is_bad_request(api):
    for body in (None, [], {"refresh_token": 7}, {}):
        status, reply, _ = await api.post("/api/refresh", body)
        assert status == 400 and reply["error"]["code"] == "bad_request", body
    status, reply, _ = await api.post("/api/refresh", {"refresh_token": "x" * 5000})
    assert_unauthorized(status, reply, "unknown")


async def test_refresh_for_a_deleted_user_is_refused(api, site):
    body = await api.login("u3")
    site.directory.remove_user("u3")
    status, reply, _ = await api.post("/api/refresh", {"refresh_token": body["refresh_token"]})
    assert_unauthorized(status, reply, "no longer exists")


async def test_hello_with_a_revoked_login_is_refused_and_closed(api, site):
    body = await api.login("u3")
    site.server.app[LOGINS].revoke_user(site.directory.user_by_name("u3").id)
    sig = await SignalingClient.connect(site.url)
    try:
        with pytest.raises(RequestError) as info:
            await sig.hello(body["token"], timeout=WAIT)
        assert info.value.code == "unauthorized"
        assert "revoked" in info.value.message
        assert await sig.wait_closed(timeout=WAIT) == 4001
    finally:
        await sig.close()


# --- logout --------------------------------------------------------------------------


async def test_logout_ends_the_logins_sessions_and_its_tokens(api, site, sockets):
    mine = await api.login("u3")
    elsewhere = await api.login("u3")  # the same user on another device
    sig = await sockets(mine["token"])
    other = await sockets(elsewhere["token"])
    async with aiohttp.ClientSession() as http:
        raw = await http.ws_connect(site.url + "/ws")
        await raw.send_json({"id": 1, "type": "hello", "token": mine["token"]})
        assert (await raw.receive_json(timeout=WAIT))["ok"] is True

        status, body, _ = await api.post("/api/logout", token=mine["token"])
        assert (status, body) == (200, {})

        assert await sig.wait_closed(timeout=WAIT) == 4001
        closing = await raw.receive(timeout=WAIT)
        assert closing.type == aiohttp.WSMsgType.CLOSE
        assert (closing.data, closing.extra) == (4001, "logged out")
        await raw.close()
    status, body = await api.get("/api/stats", mine["token"])
    assert_unauthorized(status, body, "token revoked")
    status, body, _ = await api.post("/api/refresh", {"refresh_token": mine["refresh_token"]})
    assert_unauthorized(status, body, "unknown")
    status, body, _ = await api.post("/api/logout", token=mine["token"])
    assert_unauthorized(status, body, "token revoked")
    # No resume of an ended session: a new login gets a fresh one.
    again = await SignalingClient.connect(site.url)
    try:
        hello = await again.hello((await api.login("u3"))["token"], resume=sig.session_id, timeout=WAIT)
        assert hello["resumed"] is False
    finally:
        await again.close()
    await assert_session_works(other, site)


async def test_logout_needs_a_token(api):
    status, body, _ = await api.post("/api/logout")
    assert_unauthorized(status, body, "token invalid")
    status, body, _ = await api.post("/api/logout", token="junk")
    assert_unauthorized(status, body, "token invalid")


# --- ending a user's sessions --------------------------------------------------------


async def test_password_change_ends_all_the_users_sessions_and_no_one_elses(api, site, sockets):
    first, second, bystander = await api.login("u3"), await api.login("u3"), await api.login("u2")
    sessions = [await sockets(first["token"]), await sockets(second["token"])]
    witness = await sockets(bystander["token"])
    body = {"old_password": harness.PASSWORD, "new_password": "a-new-one"}
    status, reply, _ = await api.post("/api/me/password", body, token=first["token"])
    assert (status, reply) == (200, {})
    for sig in sessions:
        assert await sig.wait_closed(timeout=WAIT) == 4001
    for login in (first, second):
        assert_unauthorized(*await api.get("/api/stats", login["token"]), "token revoked")
    await assert_session_works(witness, site)
    # The new password is the one that works now.
    status, reply, _ = await api.post("/api/login", {"username": "u3", "password": harness.PASSWORD})
    assert status == 401
    assert (await api.login("u3", "a-new-one"))["user"]["name"] == "u3"


async def test_password_change_with_the_wrong_old_password_changes_nothing(api, site, sockets):
    login = await api.login("u3")
    sig = await sockets(login["token"])
    body = {"old_password": "not-it", "new_password": "a-new-one"}
    status, reply, _ = await api.post("/api/me/password", body, token=login["token"])
    assert status == 403 and reply["error"]["code"] == "forbidden"
    for bad in ({"old_password": harness.PASSWORD}, {"old_password": harness.PASSWORD, "new_password": ""}):
        status, reply, _ = await api.post("/api/me/password", bad, token=login["token"])
        assert status == 400 and reply["error"]["code"] == "bad_request", reply
    await assert_session_works(sig, site)
    await api.login("u3")


@pytest.mark.parametrize("password_first", [True, False], ids=["password-first", "logins-first"])
async def test_a_password_changed_by_another_process_ends_sessions(api, site, sockets, password_first):
    # What `vpserver user passwd` does while the server runs: set the password (which
    # bumps the directory revision) and revoke the user's logins in logins.sqlite3, in
    # either order, with the server's poll free to look in between.
    sig = await sockets((await api.login("u3"))["token"])
    witness = await sockets((await api.login("u2"))["token"])
    if password_first:
        site.directory.set_password("u3", "changed-by-cli")
        await site.hub.apply_directory_changes()  # the poll, between the two writes
    with LoginStore.open(site.data_dir) as cli_logins:
        assert cli_logins.revoke_user(site.directory.user_by_name("u3").id) == 1
    if not password_first:
        site.directory.set_password("u3", "changed-by-cli")
    assert await sig.wait_closed(timeout=WAIT) == 4001  # by the poll
    await assert_session_works(witness, site)


async def test_deleting_the_user_ends_their_sessions(api, site, sockets):
    sig = await sockets((await api.login("u3"))["token"])
    witness = await sockets((await api.login("u2"))["token"])
    site.directory.remove_user("u3")
    assert await sig.wait_closed(timeout=WAIT) == 4001
    await assert_session_works(witness, site)


async def test_end_sessions_by_user_counts_what_it_ended(api, site, sockets):
    u3 = site.directory.user_by_name("u3")
    for _ in range(2):
        await sockets((await api.login("u3"))["token"])
    assert await site.hub.end_sessions(user_id=u3.id, reason="test") == 2
    assert await site.hub.end_sessions(user_id=u3.id, reason="test") == 0
    with pytest.raises(ValueError):
        await site.hub.end_sessions(reason="nobody")


# --- login throttling ----------------------------------------------------------------


async def wrong_login(api: Http, name: str):
    return await api.post("/api/login", {"username": name, "password": "wrong"})


def assert_rate_limited(status: int, body: dict, headers) -> None:
    assert status == 429, body
    assert body["error"]["code"] == "rate_limited"
    retry_after = body["error"]["retry_after"]
    assert 0 < retry_after <= 300
    assert int(headers["Retry-After"]) == retry_after


async def test_login_is_throttled_per_user(api, site):
    for _ in range(5):
        status, body, _ = await wrong_login(api, "u3")
        assert status == 401, body
    assert_rate_limited(*await wrong_login(api, "u3"))
    # Even the right password waits now (it is not even checked), in any letter case.
    status, body, headers = await api.post("/api/login", {"username": "u3", "password": harness.PASSWORD})
    assert_rate_limited(status, body, headers)
    assert_rate_limited(*await wrong_login(api, "U3"))
    # Another user from the same address still gets in.
    assert (await api.login("u2"))["user"]["name"] == "u2"


async def test_login_is_throttled_per_address(api, site):
    names = ["u0", "u1", "u2", "nobody", "admin", "outsider", "x", "y"]  # 8: the address limit
    for name in names:
        status, body, _ = await wrong_login(api, name)
        assert status == 401, body
    assert_rate_limited(*await wrong_login(api, "z"))
    status, body, headers = await api.post("/api/login", {"username": "u3", "password": harness.PASSWORD})
    assert_rate_limited(status, body, headers)


async def test_successful_logins_do_not_count(api, site):
    for _ in range(12):  # beyond both limits
        await api.login("u1")
    assert (await api.login("u1"))["user"]["name"] == "u1"


# --- the audit log -------------------------------------------------------------------


async def test_logins_logouts_and_password_changes_are_audited(api, site):
    await wrong_login(api, "u3")
    login = await api.login("u3")
    await api.post("/api/logout", token=login["token"])
    login = await api.login("u3")
    body = {"old_password": harness.PASSWORD, "new_password": "a-new-one"}
    assert (await api.post("/api/me/password", body, token=login["token"]))[0] == 200
    audit = site.server.app[AUDIT]
    assert await audit.flush_async()
    entries = list(reversed(audit.query(limit=20)))
    kinds = [e["kind"] for e in entries if e["kind"] in ("login", "login_failed", "logout", "password_changed")]
    assert kinds == ["login_failed", "login", "logout", "login", "password_changed"]
    failed = next(e for e in entries if e["kind"] == "login_failed")
    assert failed["detail"]["username"] == "u3" and failed["address"] == "127.0.0.1"
    logout = next(e for e in entries if e["kind"] == "logout")
    assert logout["actor"] == "u3"


async def test_password_change_guesses_are_throttled_like_logins(api, site):
    login = await api.login("u3")
    body = {"old_password": "guess", "new_password": "a-new-one"}
    for _ in range(5):
        status, reply, _ = await api.post("/api/me/password", body, token=login["token"])
        assert status == 403, reply
    body["old_password"] = harness.PASSWORD  # right, but not looked at any more
    assert_rate_limited(*await api.post("/api/me/password", body, token=login["token"]))
    assert_rate_limited(*await api.post("/api/login", {"username": "u3", "password": harness.PASSWORD}))
