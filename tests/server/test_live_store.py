"""The LiveStore contract. Every backend runs this same suite through the `harness`
fixture; only the memory backend exists today (Redis joins by adding a param)."""

from __future__ import annotations

import pytest

from server.state.base import FloorLease, LiveStoreClosedError, LiveStoreError, Priority
from server.state.memory import MemoryLiveStore

TTL_MS = 1000


class FakeClock:
    def __init__(self, start: float = 5000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


class Harness:
    """A store plus a way to let store time pass: a fake clock for memory; a Redis
    backend will sleep for real (with short TTLs) instead."""

    def __init__(self, store, clock: FakeClock) -> None:
        self.store = store
        self._clock = clock

    async def advance(self, ms: float) -> None:
        self._clock.now += ms / 1000.0


@pytest.fixture(params=["memory"])
async def harness(request):
    clock = FakeClock()
    if request.param == "memory":
        store = MemoryLiveStore(clock=clock)
    else:  # pragma: no cover - future backends
        raise AssertionError(request.param)
    yield Harness(store, clock)
    await store.close()


def lease(channel_id: int = 1, token: str = "t1", session: str = "s1", **kw) -> FloorLease:
    fields = dict(user_id=7, name="Alice", priority=Priority.NORMAL, since=1_700_000_000.5)
    fields.update(kw)
    return FloorLease(channel_id=channel_id, token=token, session_id=session, **fields)


async def test_acquire_idle_then_get(harness):
    s = harness.store
    assert await s.floor_get(1) is None
    assert await s.floor_acquire(lease(), TTL_MS) is None
    assert await s.floor_get(1) == lease()


async def test_acquire_taken_returns_current_and_keeps_it(harness):
    s = harness.store
    await s.floor_acquire(lease(), TTL_MS)
    current = await s.floor_acquire(lease(token="t2", session="s2", name="Bob"), TTL_MS)
    assert current == lease()
    assert (await s.floor_get(1)).token == "t1"


async def test_channels_are_independent(harness):
    s = harness.store
    assert await s.floor_acquire(lease(channel_id=1), TTL_MS) is None
    assert await s.floor_acquire(lease(channel_id=2, token="t2"), TTL_MS) is None
    assert (await s.floor_get(2)).token == "t2"
    assert await s.floor_release(1, "t1")
    assert (await s.floor_get(2)).token == "t2"


async def test_lease_expires_by_store_clock(harness):
    s = harness.store
    await s.floor_acquire(lease(), TTL_MS)
    await harness.advance(TTL_MS - 1)
    assert await s.floor_get(1) is not None
    await harness.advance(1)
    assert await s.floor_get(1) is None
    # An expired lease is absent for every method, not just floor_get.
    assert not await s.floor_renew(1, "t1", TTL_MS)
    assert not await s.floor_release(1, "t1")
    assert not await s.floor_replace(lease(token="t2"), "t1", TTL_MS)
    assert await s.floor_acquire(lease(token="t3", session="s3"), TTL_MS) is None
    assert (await s.floor_get(1)).token == "t3"


async def test_expired_lease_does_not_block_acquire(harness):
    s = harness.store
    await s.floor_acquire(lease(), TTL_MS)
    await harness.advance(TTL_MS)
    # No floor_get in between: acquire itself must treat the old lease as gone.
    assert await s.floor_acquire(lease(token="t2", session="s2"), TTL_MS) is None


async def test_renew_right_token_extends(harness):
    s = harness.store
    await s.floor_acquire(lease(), TTL_MS)
    await harness.advance(800)
    assert await s.floor_renew(1, "t1", TTL_MS)
    await harness.advance(800)  # 1600 ms after acquire: alive only thanks to the renew
    assert (await s.floor_get(1)).token == "t1"
    await harness.advance(200)
    assert await s.floor_get(1) is None


async def test_renew_wrong_token_refused_and_does_not_extend(harness):
    s = harness.store
    await s.floor_acquire(lease(), TTL_MS)
    await harness.advance(800)
    assert not await s.floor_renew(1, "other", TTL_MS)
    await harness.advance(200)
    assert await s.floor_get(1) is None


async def test_renew_idle_refused(harness):
    assert not await harness.store.floor_renew(9, "t1", TTL_MS)
    assert await harness.store.floor_get(9) is None


async def test_release_checks_token(harness):
    s = harness.store
    await s.floor_acquire(lease(), TTL_MS)
    assert not await s.floor_release(1, "other")
    assert (await s.floor_get(1)).token == "t1"
    assert await s.floor_release(1, "t1")
    assert await s.floor_get(1) is None
    assert not await s.floor_release(1, "t1")


async def test_replace_compare_and_set(harness):
    s = harness.store
    await s.floor_acquire(lease(), TTL_MS)
    emergency = lease(token="t2", session="s2", name="Eve", priority=Priority.EMERGENCY)
    assert not await s.floor_replace(emergency, "wrong", TTL_MS)
    assert (await s.floor_get(1)).token == "t1"
    assert await s.floor_replace(emergency, "t1", TTL_MS)
    assert await s.floor_get(1) == emergency
    # The old holder's token no longer works for anything.
    assert not await s.floor_renew(1, "t1", TTL_MS)
    assert not await s.floor_release(1, "t1")


async def test_replace_sets_fresh_ttl(harness):
    s = harness.store
    await s.floor_acquire(lease(), TTL_MS)
    await harness.advance(900)
    assert await s.floor_replace(lease(token="t2"), "t1", TTL_MS)
    await harness.advance(900)
    assert (await s.floor_get(1)).token == "t2"


async def test_replace_on_idle_refused(harness):
    assert not await harness.store.floor_replace(lease(), "t1", TTL_MS)
    assert await harness.store.floor_get(1) is None


async def test_nonpositive_ttl_rejected(harness):
    with pytest.raises(ValueError):
        await harness.store.floor_acquire(lease(), 0)
    with pytest.raises(ValueError):
        await harness.store.floor_renew(1, "t1", -5)


async def test_ping_and_close(harness):
    s = harness.store
    assert await s.ping() is True
    await s.close()
    assert await s.ping() is False
    with pytest.raises(LiveStoreClosedError):
        await s.floor_get(1)
    with pytest.raises(LiveStoreClosedError):
        await s.floor_acquire(lease(), TTL_MS)
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
