"""The LiveStore contract. Every backend runs this same suite through the `harness`
fixture: memory on a fake clock, Redis against a real redis-server (tests/redis_server.py)."""

from __future__ import annotations

import asyncio

import pytest

from server.state.base import FloorLease, LiveStoreClosedError, LiveStoreError, Priority
from server.state.memory import MemoryLiveStore
from server.state.redis_store import RedisLiveStore

MEMORY_TTL_MS = 1000
# Redis expires keys by its own clock, so its harness really sleeps: a short TTL keeps each
# test's waits under a second, and "still alive" checks keep >= 30 % of it as margin
# for a busy machine.
REDIS_TTL_MS = 400
# Added to every real wait: Redis counts whole milliseconds and expires a key only once
# its deadline has passed.
REDIS_SLACK_S = 0.005


class FakeClock:
    def __init__(self, start: float = 5000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


class Harness:
    """A store plus a way to let store time pass. Tests express times as fractions of
    ``ttl_ms``; ``edge_ms`` is how close to a deadline a test may look (1 ms on the fake
    clock, a wide margin when time is real)."""

    def __init__(self, store, ttl_ms: int, edge_ms: float, clock: FakeClock | None = None) -> None:
        self.store = store
        self.ttl_ms = ttl_ms
        self.edge_ms = edge_ms
        self._clock = clock

    async def advance(self, ms: float) -> None:
        if self._clock is not None:
            self._clock.now += ms / 1000.0
        else:
            await asyncio.sleep(ms / 1000.0 + REDIS_SLACK_S)


@pytest.fixture(params=["memory", "redis"])
async def harness(request):
    if request.param == "memory":
        clock = FakeClock()
        harness = Harness(MemoryLiveStore(clock=clock), MEMORY_TTL_MS, edge_ms=1, clock=clock)
    else:
        server = request.getfixturevalue("redis_server")
        harness = Harness(RedisLiveStore.from_url(server.url), REDIS_TTL_MS, edge_ms=0.3 * REDIS_TTL_MS)
    yield harness
    await harness.store.close()


def lease(channel_id: int = 1, token: str = "t1", session: str = "s1", **kw) -> FloorLease:
    fields = dict(user_id=7, name="Alice", priority=Priority.NORMAL, since=1_700_000_000.5)
    fields.update(kw)
    return FloorLease(channel_id=channel_id, token=token, session_id=session, **fields)


async def test_acquire_idle_then_get(harness):
    s, ttl = harness.store, harness.ttl_ms
    assert await s.floor_get(1) is None
    assert await s.floor_acquire(lease(), ttl) is None
    assert await s.floor_get(1) == lease()


async def test_acquire_taken_returns_current_and_keeps_it(harness):
    s, ttl = harness.store, harness.ttl_ms
    await s.floor_acquire(lease(), ttl)
    current = await s.floor_acquire(lease(token="t2", session="s2", name="Bob"), ttl)
    assert current == lease()
    assert (await s.floor_get(1)).token == "t1"


async def test_channels_are_independent(harness):
    s, ttl = harness.store, harness.ttl_ms
    assert await s.floor_acquire(lease(channel_id=1), ttl) is None
    assert await s.floor_acquire(lease(channel_id=2, token="t2"), ttl) is None
    assert (await s.floor_get(2)).token == "t2"
    assert await s.floor_release(1, "t1")
    assert (await s.floor_get(2)).token == "t2"


async def test_lease_expires_by_store_clock(harness):
    s, ttl = harness.store, harness.ttl_ms
    await s.floor_acquire(lease(), ttl)
    await harness.advance(ttl - harness.edge_ms)
    assert await s.floor_get(1) is not None
    await harness.advance(harness.edge_ms)
    assert await s.floor_get(1) is None
    # An expired lease is absent for every method, not just floor_get.
    assert not await s.floor_renew(1, "t1", ttl)
    assert not await s.floor_release(1, "t1")
    assert not await s.floor_replace(lease(token="t2"), "t1", ttl)
    assert await s.floor_acquire(lease(token="t3", session="s3"), ttl) is None
    assert (await s.floor_get(1)).token == "t3"


async def test_expired_lease_does_not_block_acquire(harness):
    s, ttl = harness.store, harness.ttl_ms
    await s.floor_acquire(lease(), ttl)
    await harness.advance(ttl)
    # No floor_get in between: acquire itself must treat the old lease as gone.
    assert await s.floor_acquire(lease(token="t2", session="s2"), ttl) is None


async def test_renew_right_token_extends(harness):
    s, ttl = harness.store, harness.ttl_ms
    await s.floor_acquire(lease(), ttl)
    await harness.advance(0.6 * ttl)
    assert await s.floor_renew(1, "t1", ttl)
    await harness.advance(0.6 * ttl)  # 1.2 TTL after acquire: alive only thanks to the renew
    assert (await s.floor_get(1)).token == "t1"
    await harness.advance(0.5 * ttl)
    assert await s.floor_get(1) is None


async def test_renew_wrong_token_refused_and_does_not_extend(harness):
    s, ttl = harness.store, harness.ttl_ms
    await s.floor_acquire(lease(), ttl)
    await harness.advance(0.8 * ttl)
    assert not await s.floor_renew(1, "other", ttl)
    await harness.advance(0.2 * ttl)
    assert await s.floor_get(1) is None


async def test_renew_idle_refused(harness):
    assert not await harness.store.floor_renew(9, "t1", harness.ttl_ms)
    assert await harness.store.floor_get(9) is None


async def test_release_checks_token(harness):
    s, ttl = harness.store, harness.ttl_ms
    await s.floor_acquire(lease(), ttl)
    assert not await s.floor_release(1, "other")
    assert (await s.floor_get(1)).token == "t1"
    assert await s.floor_release(1, "t1")
    assert await s.floor_get(1) is None
    assert not await s.floor_release(1, "t1")


async def test_replace_compare_and_set(harness):
    s, ttl = harness.store, harness.ttl_ms
    await s.floor_acquire(lease(), ttl)
    emergency = lease(token="t2", session="s2", name="Eve", priority=Priority.EMERGENCY)
    assert not await s.floor_replace(emergency, "wrong", ttl)
    assert (await s.floor_get(1)).token == "t1"
    assert await s.floor_replace(emergency, "t1", ttl)
    assert await s.floor_get(1) == emergency
    # The old holder's token no longer works for anything.
    assert not await s.floor_renew(1, "t1", ttl)
    assert not await s.floor_release(1, "t1")


async def test_replace_sets_fresh_ttl(harness):
    s, ttl = harness.store, harness.ttl_ms
    await s.floor_acquire(lease(), ttl)
    await harness.advance(0.6 * ttl)
    assert await s.floor_replace(lease(token="t2"), "t1", ttl)
    await harness.advance(0.6 * ttl)
    assert (await s.floor_get(1)).token == "t2"


async def test_replace_on_idle_refused(harness):
    assert not await harness.store.floor_replace(lease(), "t1", harness.ttl_ms)
    assert await harness.store.floor_get(1) is None


async def test_nonpositive_ttl_rejected(harness):
    with pytest.raises(ValueError):
        await harness.store.floor_acquire(lease(), 0)
    with pytest.raises(ValueError):
        await harness.store.floor_renew(1, "t1", -5)


async def test_ping_and_close(harness):
    s, ttl = harness.store, harness.ttl_ms
    assert await s.ping() is True
    await s.close()
    assert await s.ping() is False
    with pytest.raises(LiveStoreClosedError):
        await s.floor_get(1)
    with pytest.raises(LiveStoreClosedError):
        await s.floor_acquire(lease(), ttl)
    await s.close()  # twice is harmless


def test_lease_encode_decode_roundtrip():
    original = lease(priority=Priority.EMERGENCY, name="Zoë \"Z\"")
    decoded = FloorLease.decode(original.encode())
    assert decoded == original
    assert decoded.priority == "emergency"


@pytest.mark.parametrize("bad", ['{"channel_id": 1}', "not json", '{"channel_id":1,"token":"t",'
                                 '"session_id":"s","user_id":1,"name":"n","priority":"loud","since":1}'])
def test_lease_decode_rejects_malformed(bad):
    with pytest.raises(LiveStoreError):
        FloorLease.decode(bad)
