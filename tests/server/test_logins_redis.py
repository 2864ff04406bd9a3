"""RedisLoginStore against a real redis-server: what two nodes sharing it see, what is in
Redis, expiry by Redis's clock, an outage, and two whole sites sharing one Redis.

The behaviour both backends share is tested in test_logins.py on each of them.
"""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import socket
import time

import aiohttp
import pytest
import redis

from server.auth import SECRET_FILENAME
from server.directory import Role, User
from server.logins import LoginStoreUnavailable, RefreshRefused
from server.logins_redis import RedisLoginStore
from tests.server import harness
from vpdesk.session.signaling import RequestError, SignalingClient

ALICE = User(1, "alice", Role.DISPATCH)
BOB = User(2, "bob", Role.GENERAL)
TTL = 3600
WAIT = 5.0


class Clock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def nodes(redis_server):
    """Two stores on one Redis: two nodes of a site."""
    one, two = (RedisLoginStore.from_url(redis_server.url) for _ in range(2))
    yield one, two
    one.close()
    two.close()


@pytest.fixture
def raw(redis_server):
    """A plain client, to look at the keys."""
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    yield client
    client.close()


def login(store: RedisLoginStore, user: User = ALICE, ttl: int = TTL) -> tuple[str, str, float]:
    return store.create(user, address="127.0.0.1", client="test", refresh_ttl_s=ttl)


def refused(store: RedisLoginStore, token: str) -> str:
    with pytest.raises(RefreshRefused) as info:
        store.rotate(token, TTL)
    return info.value.reason


# --- two nodes -----------------------------------------------------------------------


def test_a_login_made_on_one_node_rotates_on_the_other(nodes):
    one, two = nodes
    login_id, first, _ = login(one)
    assert two.is_active(login_id) and two.user_of(login_id) == ALICE.id
    rotated_id, user_id, second, _ = two.rotate(first, TTL)
    assert (rotated_id, user_id) == (login_id, ALICE.id)
    third = one.rotate(second, TTL)[2]
    assert one.active_among([login_id, "gone"]) == two.active_among([login_id]) == {login_id}
    # The rotated-out token comes back on either node: the login is over on both.
    assert refused(two, first) == "reused"
    assert not one.is_active(login_id) and not two.is_active(login_id)
    assert refused(one, third) == "unknown"
    # The reuse revoked a login: news for the other node, not for the one it happened on.
    assert one.changed_by_others() is True
    assert two.changed_by_others() is False


def test_revoke_user_on_one_node_is_news_on_the_other(nodes):
    one, two = nodes
    alice = [login(one)[0], login(two)[0]]
    bob = login(two, BOB)[0]
    assert one.changed_by_others() is False and two.changed_by_others() is False
    assert one.revoke_user(ALICE.id) == 2
    assert two.changed_by_others() is True
    assert one.changed_by_others() is False
    assert two.changed_by_others() is False
    assert not any(store.is_active(i) for store in nodes for i in alice)
    assert one.is_active(bob) and two.is_active(bob)


def test_revocations_on_both_nodes_in_turn_are_news_on_each(nodes):
    one, two = nodes
    first, second = login(one)[0], login(one)[0]
    one.revoke(first)
    two.revoke(second)
    # Each made one of the two increments: the other one is news.
    assert one.changed_by_others() is True
    assert two.changed_by_others() is True
    assert one.changed_by_others() is False and two.changed_by_others() is False


# --- what is in Redis ----------------------------------------------------------------


def test_keys_hold_hashes_never_the_refresh_tokens(nodes, raw):
    one, _ = nodes
    login_id, first, _ = login(one)
    second = one.rotate(first, TTL)[2]
    everything = []
    for key in raw.scan_iter("*"):
        everything.append(key)
        kind = raw.type(key)
        if kind == "string":
            everything.append(raw.get(key))
        elif kind == "hash":
            everything.extend(f"{k}={v}" for k, v in raw.hgetall(key).items())
        elif kind == "set":
            everything.extend(raw.smembers(key))
        elif kind == "zset":
            everything.extend(raw.zrange(key, 0, -1))
    dump = "\n".join(everything)
    assert first not in dump and second not in dump
    assert all(key.startswith("vpdesk:") for key in raw.scan_iter("*"))
    for token in (first, second):
        assert raw.get(f"vpdesk:refresh:{hashlib.sha256(token.encode()).hexdigest()}") == login_id
    assert raw.hget(f"vpdesk:login:{login_id}", "refresh_hash") == hashlib.sha256(second.encode()).hexdigest()
    assert raw.smembers(f"vpdesk:user-logins:{ALICE.id}") == {login_id}


def test_every_key_expires_by_itself(redis_server, raw):
    clock = Clock()
    with RedisLoginStore.from_url(redis_server.url, clock=clock) as store:
        login_id, first, _ = login(store, ttl=100)
        clock.now += 40
        store.rotate(first, 100)
    ttls = {key: raw.pttl(key) for key in raw.scan_iter("*")}
    spent = f"vpdesk:refresh:{hashlib.sha256(first.encode()).hexdigest()}"
    # The spent hash is kept only while its token would have lived (Redis's clock did
    # not move 40 s, so it has nearly its full 100 s).
    assert 0 < ttls.pop(spent) <= 100_000
    # The expiry index is the only key without one (with the revocation counter, not
    # made yet: nothing was revoked).
    assert {key for key, ttl in ttls.items() if ttl < 0} == {"vpdesk:logins:by-expiry"}
    assert all(90_000 < ttl <= 100_000 for key, ttl in ttls.items() if ttl >= 0)


def test_a_login_ends_when_redis_expires_it(redis_server, raw):
    # The node's clock stands still, so only Redis's own clock can end this login: a
    # login with a 1 s refresh ttl is gone from Redis within 3 s, and then refused.
    clock = Clock()
    with RedisLoginStore.from_url(redis_server.url, clock=clock) as store:
        login_id, refresh, _ = login(store, ttl=1)
        assert store.is_active(login_id)
        deadline = time.monotonic() + 3.0
        while raw.exists(f"vpdesk:login:{login_id}") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not store.is_active(login_id)
        assert store.user_of(login_id) is None
        assert refused(store, refresh) == "unknown"


def test_purge_ends_logins_expired_by_the_nodes_clock(redis_server, raw):
    clock = Clock()
    with RedisLoginStore.from_url(redis_server.url, clock=clock) as store:
        old_id = login(store)[0]
        clock.now += TTL / 2
        new_id = login(store, BOB)[0]
        clock.now += TTL / 2
        assert store.purge() == 1
        assert not raw.exists(f"vpdesk:login:{old_id}")
        assert raw.zrange("vpdesk:logins:by-expiry", 0, -1) == [new_id]
        assert store.is_active(new_id)
        assert store.purge() == 0


def test_a_prefix_keeps_sites_apart(redis_server):
    with RedisLoginStore.from_url(redis_server.url, prefix="site-a:") as a, \
            RedisLoginStore.from_url(redis_server.url, prefix="site-b:") as b:
        login_id, refresh, _ = login(a)
        assert not b.is_active(login_id)
        assert refused(b, refresh) == "unknown"
        assert b.revoke_user(ALICE.id) == 0
        assert a.is_active(login_id)


def test_redis_forgetting_everything_is_not_taken_for_revocations(nodes, redis_server):
    one, two = nodes
    login_id = login(one)[0]
    two.revoke(login(two)[0])
    assert one.changed_by_others() is True
    redis_server.flushall()  # what a restart without persistence does
    assert one.changed_by_others() is False
    assert not one.is_active(login_id)


# --- outage ------------------------------------------------------------------------------


def test_an_outage_raises_unavailable_and_the_store_comes_back(redis_server):
    with RedisLoginStore.from_url(redis_server.url) as store:
        login_id, refresh, _ = login(store)
        redis_server.stop()
        try:
            for call in (lambda: login(store), lambda: store.rotate(refresh, TTL),
                         lambda: store.is_active(login_id), lambda: store.active_among([login_id]),
                         lambda: store.user_of(login_id), lambda: store.revoke(login_id),
                         lambda: store.revoke_user(ALICE.id)):
                with pytest.raises(LoginStoreUnavailable):
                    call()
            started = time.monotonic()
            assert [store.changed_by_others() for _ in range(10)] == [False] * 10
            assert time.monotonic() - started < 2.0
        finally:
            redis_server.start()
        # Back once the breaker lets a call through (1 s after the last failure).
        deadline = time.monotonic() + 5.0
        while True:
            try:
                new_id = login(store)[0]
                break
            except LoginStoreUnavailable:
                assert time.monotonic() < deadline, "the store did not come back"
                time.sleep(0.1)
        assert store.is_active(new_id)
        assert not store.is_active(login_id)  # nothing was saved: that login is forgotten


def test_a_silent_redis_costs_one_timeout_per_second_at_most():
    # A host that accepts connections and never answers: every attempt waits for the
    # 0.5 s socket timeout. The breaker lets one attempt through per second.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)
        port = silent.getsockname()[1]
        started = time.monotonic()
        store = RedisLoginStore.from_url(f"redis://127.0.0.1:{port}/0")  # reads the counter
        try:
            assert 0.4 < time.monotonic() - started < 1.5  # one timeout, not retried
            started = time.monotonic()
            assert [store.changed_by_others() for _ in range(10)] == [False] * 10
            with pytest.raises(LoginStoreUnavailable, match="retried shortly"):
                store.is_active("x")
            assert time.monotonic() - started < 0.3  # all refused by the open breaker
            time.sleep(1.0)
            started = time.monotonic()
            with pytest.raises(LoginStoreUnavailable, match="Timeout"):
                store.is_active("x")  # tried again after the second
            assert 0.4 < time.monotonic() - started < 1.5
        finally:
            store.close()


# --- two sites, one Redis ------------------------------------------------------------


class Http:
    def __init__(self, http: aiohttp.ClientSession) -> None:
        self.http = http

    async def post(self, site: harness.Site, path: str, body: object) -> tuple[int, dict]:
        async with self.http.post(site.url + path, json=body) as resp:
            return resp.status, await resp.json()

    async def stats(self, site: harness.Site, token: str) -> int:
        async with self.http.get(site.url + "/api/stats", headers={"Authorization": f"Bearer {token}"}) as resp:
            return resp.status

    async def login(self, site: harness.Site, name: str = "u0") -> tuple[int, dict]:
        return await self.post(site, "/api/login", {"username": name, "password": harness.PASSWORD})


@pytest.fixture
async def two_sites(tmp_path, redis_server):
    """Two nodes with their own data folders (and SQLite directories, provisioned alike)
    sharing one Redis and one token secret."""
    a = await harness.start_site(tmp_path / "a", users=4, redis_url=redis_server.url)
    sites = [a]
    try:
        (tmp_path / "b").mkdir()
        shutil.copy(a.data_dir / SECRET_FILENAME, tmp_path / "b" / SECRET_FILENAME)
        b = await harness.start_site(tmp_path / "b", users=4, redis_url=redis_server.url)
        sites.append(b)
        for name in ("u0", "u1", "admin"):
            assert a.directory.user_by_name(name).id == b.directory.user_by_name(name).id
        yield a, b
    finally:
        for site in sites:
            await site.server.stop()


@pytest.fixture
async def http():
    async with aiohttp.ClientSession() as session:
        yield Http(session)


async def test_login_on_one_site_refreshes_on_the_other_and_reuse_ends_it_on_both(two_sites, http):
    a, b = two_sites
    status, first = await http.login(a)
    assert status == 200, first
    status, second = await http.post(b, "/api/refresh", {"refresh_token": first["refresh_token"]})
    assert status == 200, second
    assert second["user"] == first["user"]
    assert await http.stats(a, second["token"]) == 200

    # The token B rotated out comes back on A: theft; the login is over on both sites.
    status, body = await http.post(a, "/api/refresh", {"refresh_token": first["refresh_token"]})
    assert (status, body["error"]["code"]) == (401, "unauthorized") and "reused" in body["error"]["message"]
    status, body = await http.post(b, "/api/refresh", {"refresh_token": second["refresh_token"]})
    assert status == 401 and "unknown" in body["error"]["message"]
    for site in (a, b):
        assert await http.stats(site, second["token"]) == 401


async def test_a_redis_outage_answers_unavailable_then_logins_work_again(two_sites, http, redis_server):
    a, _ = two_sites
    status, tokens = await http.login(a)
    assert status == 200
    await asyncio.to_thread(redis_server.stop)
    try:
        status, body = await http.login(a)
        assert (status, body["error"]["code"]) == (503, "unavailable"), body
        status, body = await http.post(a, "/api/refresh", {"refresh_token": tokens["refresh_token"]})
        assert (status, body["error"]["code"]) == (503, "unavailable"), body
        # A hello cannot check its login: refused as unavailable, the socket stays open.
        sig = await SignalingClient.connect(a.url)
        try:
            with pytest.raises(RequestError) as raised:
                await sig.hello(tokens["token"], timeout=WAIT)
            assert raised.value.code == "unavailable"
        finally:
            await sig.close()
    finally:
        await asyncio.to_thread(redis_server.start)
    deadline = time.monotonic() + WAIT
    while (status := (await http.login(a))[0]) == 503 and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert status == 200
