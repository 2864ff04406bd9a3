"""What only the Redis live store has to get right: several nodes sharing one floor, a
Redis that goes away and comes back, the Lua token checks, key prefixes."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from server.state.base import (
    FloorLease,
    LiveStoreClosedError,
    LiveStoreError,
    LiveStoreRecovering,
    Priority,
)
from server.state.redis_store import RedisLiveStore, redacted_url

TTL_MS = 10_000
QUIET_MS = 1000
# A bound so that a hung call fails the test instead of the whole run; never a speed check.
HANG_BOUND_S = 15


def lease(channel_id: int = 1, token: str = "t1", session: str = "s1") -> FloorLease:
    return FloorLease(channel_id=channel_id, token=token, session_id=session, user_id=7,
                      name=f"user of {session}", priority=Priority.NORMAL, since=1_700_000_000.0)


@pytest.fixture
async def stores(redis_server):
    """Two stores on the same Redis, as two nodes would have."""
    pair = [RedisLiveStore.from_url(redis_server.url) for _ in range(2)]
    yield pair
    for store in pair:
        await store.close()


@pytest.fixture
async def raw(redis_server):
    client = aioredis.Redis.from_url(redis_server.url)
    yield client
    await client.aclose()


async def test_one_winner_among_concurrent_acquirers_on_two_nodes(stores):
    rounds, acquirers = 200, 10
    for channel in range(1, rounds + 1):
        attempts = [lease(channel, token=f"t{i}", session=f"s{i}") for i in range(acquirers)]
        results = await asyncio.gather(
            *(stores[i % 2].floor_acquire(attempt, TTL_MS) for i, attempt in enumerate(attempts))
        )
        winners = [attempt for attempt, result in zip(attempts, results) if result is None]
        assert len(winners) == 1, f"channel {channel}: {len(winners)} winners"
        # Every loser was told who won, and both nodes read the same holder.
        assert all(result == winners[0] for result in results if result is not None)
        assert await stores[0].floor_get(channel) == await stores[1].floor_get(channel) == winners[0]


async def test_outage_raises_then_the_same_store_works_again(redis_server, stores):
    store = stores[0]
    assert await store.floor_acquire(lease(), TTL_MS) is None
    await asyncio.to_thread(redis_server.stop)
    try:
        assert await asyncio.wait_for(store.ping(), HANG_BOUND_S) is False
        for call in (
            store.floor_get(1),
            store.floor_acquire(lease(token="t2"), TTL_MS),
            store.floor_renew(1, "t1", TTL_MS),
            store.floor_replace(lease(token="t3"), "t1", TTL_MS),
            store.floor_release(1, "t1"),
        ):
            with pytest.raises(LiveStoreError) as raised:
                await asyncio.wait_for(call, HANG_BOUND_S)
            assert "redis at redis://127.0.0.1" in str(raised.value)
            assert not isinstance(raised.value, LiveStoreClosedError)
    finally:
        await asyncio.to_thread(redis_server.start)
    # Same object, no reconnect call: the pool reconnects and the scripts (which the new
    # Redis has never seen) are loaded again. Nothing was saved, so the floor is idle.
    assert await store.ping() is True
    assert await store.floor_get(1) is None
    # Redis lost its data, and this store knew the data before: no grant for one lease,
    # for any store of the site, so that a talker who held a floor learns it lost it
    # (its renewal fails) before anyone else can be granted.
    with pytest.raises(LiveStoreRecovering) as raised:
        await store.floor_acquire(lease(token="t4"), QUIET_MS)  # the lease is the quiet time
    assert 0 < raised.value.wait_ms <= QUIET_MS
    with pytest.raises(LiveStoreRecovering):
        await stores[1].floor_acquire(lease(token="t5", session="s5"), TTL_MS)
    assert not await store.detect_data_loss(QUIET_MS)  # found once, by the acquire
    await asyncio.sleep(raised.value.wait_ms / 1000 + 0.05)
    assert await store.floor_acquire(lease(token="t4"), TTL_MS) is None
    assert await store.floor_renew(1, "t4", TTL_MS)
    assert await stores[1].floor_acquire(lease(token="t5", session="s5"), TTL_MS) == lease(token="t4")
    assert await store.floor_release(1, "t4")


async def test_scripts_refuse_a_wrong_token_and_leave_the_lease_untouched(stores, raw):
    store = stores[0]
    assert await store.floor_acquire(lease(), TTL_MS) is None
    key = store.key(1)
    before = await raw.get(key)
    assert not await store.floor_renew(1, "t1x", 60_000)
    assert not await store.floor_release(1, "")
    assert not await store.floor_replace(lease(token="t9"), "T1", 60_000)
    assert await raw.get(key) == before
    assert 0 < await raw.pttl(key) <= TTL_MS  # the refused renew did not extend it


async def test_a_value_that_is_not_a_lease_matches_no_token(stores, raw):
    store = stores[0]
    key = store.key(1)
    for junk in (b"not json", b'{"token": 5}', b"[1,2]"):
        await raw.set(key, junk, px=TTL_MS)
        assert not await store.floor_renew(1, "5", TTL_MS)
        assert not await store.floor_release(1, "5")
        assert not await store.floor_replace(lease(), "5", TTL_MS)
        assert await raw.get(key) == junk
        with pytest.raises(LiveStoreError):
            await store.floor_get(1)


async def test_acquire_sets_the_expiry_and_renew_resets_it(stores, raw):
    store = stores[0]
    assert await store.floor_acquire(lease(), 5_000) is None
    assert 0 < await raw.pttl(store.key(1)) <= 5_000
    assert await store.floor_renew(1, "t1", 60_000)
    assert 5_000 < await raw.pttl(store.key(1)) <= 60_000
    assert await store.floor_replace(lease(token="t2"), "t1", 5_000)
    assert 0 < await raw.pttl(store.key(1)) <= 5_000


async def test_prefixes_keep_sites_apart(redis_server, raw):
    site_a = RedisLiveStore.from_url(redis_server.url, prefix="siteA:")
    site_b = RedisLiveStore.from_url(redis_server.url, prefix="siteB:")
    try:
        assert await site_a.floor_acquire(lease(token="a"), TTL_MS) is None
        assert await site_b.floor_acquire(lease(token="b"), TTL_MS) is None
        assert sorted(await raw.keys("*")) == [
            b"siteA:epoch", b"siteA:floor:1", b"siteB:epoch", b"siteB:floor:1",
        ]
        assert not await site_b.floor_release(1, "a")
        assert (await site_a.floor_get(1)).token == "a"
    finally:
        await site_a.close()
        await site_b.close()


async def test_default_prefix(stores, raw):
    await stores[0].floor_acquire(lease(channel_id=42), TTL_MS)
    assert sorted(await raw.keys("*")) == [b"vpdesk:epoch", b"vpdesk:floor:42"]


async def test_unreachable_from_the_start(redis_server):
    # A port nothing listens on (the session's Redis is stopped for the test).
    url = redis_server.url
    await asyncio.to_thread(redis_server.stop)
    store = RedisLiveStore.from_url(url)
    try:
        assert await asyncio.wait_for(store.ping(), HANG_BOUND_S) is False
        with pytest.raises(LiveStoreError, match="during floor_acquire"):
            await asyncio.wait_for(store.floor_acquire(lease(), TTL_MS), HANG_BOUND_S)
    finally:
        await store.close()


def test_invalid_url_is_a_store_error():
    with pytest.raises(LiveStoreError, match="invalid redis url"):
        RedisLiveStore.from_url("http://example.invalid/")


def test_password_is_redacted():
    assert redacted_url("redis://:s3cret@10.0.0.5:6380/2") == "redis://:***@10.0.0.5:6380/2"
    assert redacted_url("redis://app:s3cret@cache/0") == "redis://app:***@cache/0"
    assert redacted_url("redis://10.0.0.5:6379") == "redis://10.0.0.5:6379"


async def test_closed_store(stores):
    store = stores[0]
    await store.close()
    assert await store.ping() is False
    with pytest.raises(LiveStoreClosedError):
        await store.floor_release(1, "t1")
    await store.close()


async def test_data_loss_is_noticed_by_the_heartbeat_check_too(redis_server, stores):
    store, other = stores
    assert not await store.detect_data_loss(TTL_MS)  # first look: learns the epoch
    assert not await other.detect_data_loss(TTL_MS)
    assert await other.floor_acquire(lease(token="t1"), TTL_MS) is None  # no quiet period
    await asyncio.to_thread(redis_server.flushall)  # what a restart without persistence does
    assert await store.detect_data_loss(TTL_MS) is True
    # Every node notices (each puts back what it keeps), but only once.
    assert await other.detect_data_loss(TTL_MS) is True
    assert await other.detect_data_loss(TTL_MS) is False
    with pytest.raises(LiveStoreRecovering):
        await other.floor_acquire(lease(token="t2", session="s2"), TTL_MS)
