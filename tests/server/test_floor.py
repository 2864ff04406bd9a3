"""FloorController rules, driven by tick() and a fake clock instead of sleeping."""

from __future__ import annotations

import asyncio

import pytest

from server.floor import (
    Denial,
    FloorController,
    FloorIdle,
    FloorRevoked,
    FloorTaken,
    Grant,
    Holder,
)
from server.state.memory import MemoryLiveStore

LEASE_MS = 3000
MAX_TALK_MS = 60_000
WALL = 1_700_000_000.0


class FakeClock:
    def __init__(self, start: float = 100.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance_ms(self, ms: float) -> None:
        self.now += ms / 1000.0


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
async def store(clock):
    s = MemoryLiveStore(clock=clock)
    yield s
    await s.close()


def make_controller(store, clock, events, **kw) -> FloorController:
    kw.setdefault("lease_ms", LEASE_MS)
    kw.setdefault("max_talk_ms", MAX_TALK_MS)
    return FloorController(
        store, clock=clock, wall_clock=lambda: WALL + clock.now, on_event=events.append, **kw
    )


async def run_for(ctl: FloorController, clock: FakeClock, ms: int, step_ms: int = 1000) -> None:
    """Let fake time pass, ticking as the background task would (every lease/3)."""
    for _ in range(ms // step_ms):
        clock.advance_ms(step_ms)
        await ctl.tick()


@pytest.fixture
def events():
    return []


@pytest.fixture
async def floor(store, clock, events):
    ctl = make_controller(store, clock, events)
    yield ctl
    await ctl.stop()


async def test_idle_request_is_granted_and_announced(floor, events, clock):
    result = await floor.request(1, "s1", 11, "Alice")
    assert result == Grant(max_ms=MAX_TALK_MS)
    assert events == [FloorTaken(1, Holder(11, "Alice"), WALL + clock.now)]
    assert floor.held_by("s1") == {1}
    assert floor.current(1).session_id == "s1"
    assert await floor.floor_state(1) == {
        "state": "taken",
        "holder": {"user_id": 11, "name": "Alice"},
        "since": WALL + clock.now,
    }


async def test_busy_denial_carries_holder(floor, events):
    await floor.request(1, "s1", 11, "Alice")
    events.clear()
    result = await floor.request(1, "s2", 22, "Bob")
    assert isinstance(result, Denial)
    assert result.reason == "busy"
    assert result.holder == Holder(11, "Alice")
    assert result.to_wire() == {
        "granted": False, "reason": "busy", "holder": {"user_id": 11, "name": "Alice"},
    }
    assert events == []
    assert floor.held_by("s2") == set()


async def test_release_by_non_holder_is_ignored(floor, events, store):
    await floor.request(1, "s1", 11, "Alice")
    events.clear()
    assert await floor.release(1, "s2") is False
    assert await floor.release(2, "s1") is False
    assert events == []
    assert (await store.floor_get(1)).session_id == "s1"
    assert floor.held_by("s1") == {1}


async def test_release_frees_floor(floor, events, store):
    await floor.request(1, "s1", 11, "Alice")
    events.clear()
    assert await floor.release(1, "s1") is True
    assert events == [FloorIdle(1)]
    assert await store.floor_get(1) is None
    assert floor.current(1) is None
    assert floor.held_by("s1") == set()
    assert await floor.floor_state(1) == {"state": "idle"}
    # Someone else may now talk.
    assert isinstance(await floor.request(1, "s2", 22, "Bob"), Grant)


async def test_rerequest_by_holder_is_idempotent(floor, events, store, clock):
    await floor.request(1, "s1", 11, "Alice")
    token = floor.current(1).token
    events.clear()
    await run_for(floor, clock, 10_000)
    result = await floor.request(1, "s1", 11, "Alice")
    assert result == Grant(max_ms=MAX_TALK_MS - 10_000)  # the talk timer is not reset
    assert events == []
    assert (await store.floor_get(1)).token == token
    assert floor.held_by("s1") == {1}


async def test_tokens_are_fresh_per_grant(floor):
    await floor.request(1, "s1", 11, "Alice")
    first = floor.current(1).token
    await floor.release(1, "s1")
    await floor.request(1, "s1", 11, "Alice")
    assert floor.current(1).token != first
    assert len(first) >= 16


async def test_emergency_preempts_normal(floor, events, clock):
    await floor.request(1, "s1", 11, "Alice")
    events.clear()
    result = await floor.request(1, "s2", 22, "Eve", priority="emergency")
    assert result == Grant(max_ms=MAX_TALK_MS)
    assert events == [
        FloorRevoked(1, "s1", "preempted"),
        FloorTaken(1, Holder(22, "Eve"), WALL + clock.now),
    ]
    assert floor.held_by("s1") == set()
    assert floor.held_by("s2") == {1}
    assert floor.current(1).priority == "emergency"
    # The pre-empted talker's late release does nothing.
    assert await floor.release(1, "s1") is False


async def test_emergency_cannot_preempt_emergency(floor, events):
    await floor.request(1, "s1", 11, "Alice", priority="emergency")
    events.clear()
    result = await floor.request(1, "s2", 22, "Eve", priority="emergency")
    assert result == Denial(holder=Holder(11, "Alice"))
    assert events == []
    assert floor.held_by("s1") == {1}


async def test_normal_cannot_preempt(floor):
    await floor.request(1, "s1", 11, "Alice")
    assert isinstance(await floor.request(1, "s2", 22, "Bob", priority="normal"), Denial)
    assert floor.held_by("s1") == {1}


async def test_holder_upgrades_to_emergency(floor, events):
    await floor.request(1, "s1", 11, "Alice")
    events.clear()
    assert isinstance(await floor.request(1, "s1", 11, "Alice", priority="emergency"), Grant)
    assert events == []
    assert isinstance(await floor.request(1, "s2", 22, "Eve", priority="emergency"), Denial)


async def test_unknown_priority_rejected(floor):
    with pytest.raises(ValueError):
        await floor.request(1, "s1", 11, "Alice", priority="urgent")
    assert floor.current(1) is None


async def test_max_duration_revoked_by_tick(floor, events, store, clock):
    await floor.request(1, "s1", 11, "Alice")
    events.clear()
    await run_for(floor, clock, MAX_TALK_MS - 1000)  # keeps renewing under the limit
    assert events == []
    assert floor.held_by("s1") == {1}
    await run_for(floor, clock, 1000)
    assert events == [FloorRevoked(1, "s1", "max_duration"), FloorIdle(1)]
    assert await store.floor_get(1) is None
    assert floor.held_by("s1") == set()


async def test_tick_renews_so_lease_outlives_ttl(floor, events, store, clock):
    await floor.request(1, "s1", 11, "Alice")
    for _ in range(5):  # 5 s of talking with a 3 s lease
        clock.advance_ms(1000)
        await floor.tick()
    assert (await store.floor_get(1)).session_id == "s1"
    assert floor.held_by("s1") == {1}
    assert len(events) == 1


async def test_release_session_frees_all_its_channels(floor, events, store):
    await floor.request(1, "s1", 11, "Alice")
    await floor.request(2, "s1", 11, "Alice")
    await floor.request(3, "s2", 22, "Bob")
    events.clear()
    freed = await floor.release_session("s1", reason="removed")
    assert freed == {1, 2}
    assert sorted(events, key=lambda e: (e.channel_id, type(e).__name__)) == [
        FloorIdle(1), FloorRevoked(1, "s1", "removed"),
        FloorIdle(2), FloorRevoked(2, "s1", "removed"),
    ]
    # Per channel, the talker hears it was revoked before members hear idle.
    assert events.index(FloorRevoked(1, "s1", "removed")) < events.index(FloorIdle(1))
    assert floor.held_by("s1") == set()
    assert floor.held_by("s2") == {3}
    assert await store.floor_get(1) is None and await store.floor_get(2) is None
    assert await floor.release_session("s1") == frozenset()


async def test_revoke_channel(floor, events):
    await floor.request(1, "s1", 11, "Alice")
    events.clear()
    assert await floor.revoke(1, "removed") is True
    assert events == [FloorRevoked(1, "s1", "removed"), FloorIdle(1)]
    assert await floor.revoke(1, "removed") is False
    assert floor.held_by("s1") == set()


async def test_held_by_tracks_grants_releases_and_revokes(floor):
    assert floor.held_by("s1") == set()
    await floor.request(1, "s1", 11, "Alice")
    await floor.request(2, "s1", 11, "Alice")
    live = floor.held_by("s1")
    assert live == {1, 2}
    assert floor.held_by("s1") is live  # the live object, no copy per call
    await floor.release(1, "s1")
    assert floor.held_by("s1") == {2}
    await floor.request(2, "s9", 99, "Eve", priority="emergency")
    assert floor.held_by("s1") == set()
    assert floor.held_by("s9") == {2}
    await floor.revoke(2, "removed")
    assert floor.held_by("s9") == set()


async def test_lease_expires_when_owner_stops_renewing(store, clock):
    """Node B grants a floor then dies (never ticks); node A notices the expiry."""
    events_a, events_b = [], []
    node_a = make_controller(store, clock, events_a)
    node_b = make_controller(store, clock, events_b)
    assert isinstance(await node_b.request(1, "sb", 22, "Bob"), Grant)
    denial = await node_a.request(1, "sa", 11, "Alice")
    assert denial == Denial(holder=Holder(22, "Bob"))
    # A learned of B's floor through the denial and announces it to its own members.
    assert events_a == [FloorTaken(1, Holder(22, "Bob"), WALL + clock.now)]
    events_a.clear()

    clock.advance_ms(LEASE_MS - 1)
    await node_a.tick()
    assert events_a == []
    assert node_a.current(1).session_id == "sb"
    clock.advance_ms(1)
    await node_a.tick()
    assert events_a == [FloorIdle(1)]
    assert node_a.current(1) is None
    assert isinstance(await node_a.request(1, "sa", 11, "Alice"), Grant)

    # B wakes up: its renewal fails, so its talker is told and its members see the new holder.
    events_b.clear()
    await node_b.tick()
    assert events_b == [
        FloorRevoked(1, "sb", "disconnected"),
        FloorTaken(1, Holder(11, "Alice"), WALL + clock.now),
    ]
    assert node_b.held_by("sb") == set()


async def test_lost_lease_noticed_by_owner_emits_idle(floor, events, store, clock):
    """The owner stalled longer than the lease: on its next tick the floor is gone."""
    await floor.request(1, "s1", 11, "Alice")
    events.clear()
    clock.advance_ms(LEASE_MS)
    await floor.tick()
    assert events == [FloorRevoked(1, "s1", "disconnected"), FloorIdle(1)]
    assert floor.held_by("s1") == set()


async def test_preemption_across_nodes_is_reported_as_preempted(store, clock):
    events_a, events_b = [], []
    node_a = make_controller(store, clock, events_a)
    node_b = make_controller(store, clock, events_b)
    await node_a.request(1, "sa", 11, "Alice")
    events_a.clear()
    assert isinstance(await node_b.request(1, "sb", 22, "Eve", priority="emergency"), Grant)
    assert events_b[0] == FloorRevoked(1, "sa", "preempted")
    await node_a.tick()
    assert events_a == [
        FloorRevoked(1, "sa", "preempted"),
        FloorTaken(1, Holder(22, "Eve"), WALL + clock.now),
    ]
    assert node_a.held_by("sa") == set()


async def test_floor_state_notices_expiry(store, clock):
    events_a = []
    node_a = make_controller(store, clock, events_a)
    node_b = make_controller(store, clock, [])
    await node_b.request(1, "sb", 22, "Bob")
    assert (await node_a.floor_state(1))["state"] == "taken"
    clock.advance_ms(LEASE_MS)
    assert await node_a.floor_state(1) == {"state": "idle"}
    assert events_a[-1] == FloorIdle(1)


async def test_fifty_concurrent_requests_one_grant(floor, events):
    results = await asyncio.gather(
        *(floor.request(1, f"s{i}", i, f"user{i}") for i in range(50))
    )
    grants = [r for r in results if isinstance(r, Grant)]
    assert len(grants) == 1
    winner = results.index(grants[0])
    assert all(r.holder == Holder(winner, f"user{winner}") for r in results if isinstance(r, Denial))
    assert [type(e) for e in events] == [FloorTaken]
    assert sum(len(floor.held_by(f"s{i}")) for i in range(50)) == 1


async def test_concurrent_requests_across_two_nodes_one_grant(store, clock):
    node_a = make_controller(store, clock, [])
    node_b = make_controller(store, clock, [])
    results = await asyncio.gather(
        *((node_a if i % 2 else node_b).request(1, f"s{i}", i, f"u{i}") for i in range(50))
    )
    assert sum(isinstance(r, Grant) for r in results) == 1


async def test_on_event_exception_does_not_corrupt_state(store, clock):
    def explode(event):
        raise RuntimeError("subscriber bug")

    ctl = FloorController(store, clock=clock, on_event=explode)
    assert isinstance(await ctl.request(1, "s1", 11, "Alice"), Grant)
    assert ctl.held_by("s1") == {1}
    assert await ctl.release(1, "s1") is True
    assert ctl.held_by("s1") == set()


class CountingStore(MemoryLiveStore):
    def __init__(self, clock):
        super().__init__(clock=clock)
        self.renewals = 0

    async def floor_renew(self, channel_id, token, ttl_ms):
        self.renewals += 1
        return await super().floor_renew(channel_id, token, ttl_ms)


async def test_start_renews_in_background_and_stop_leaves_no_tasks(clock):
    store = CountingStore(clock)
    ctl = FloorController(store, lease_ms=15, clock=clock, on_event=lambda e: None)
    before = asyncio.all_tasks()
    await ctl.start()
    await ctl.start()  # idempotent: still one task
    assert len(asyncio.all_tasks() - before) == 1
    await ctl.request(1, "s1", 11, "Alice")
    for _ in range(200):  # the task ticks every 5 ms; give it up to 1 s
        if store.renewals:
            break
        await asyncio.sleep(0.005)
    assert store.renewals >= 1
    await ctl.stop()
    assert asyncio.all_tasks() == before
    await ctl.stop()  # twice is harmless
    await store.close()


def test_invalid_durations_rejected(store):
    with pytest.raises(ValueError):
        FloorController(store, lease_ms=0, on_event=lambda e: None)


def test_events_to_wire():
    assert FloorTaken(3, Holder(1, "A"), 12.5).to_wire() == {
        "type": "floor_taken", "channel": 3, "holder": {"user_id": 1, "name": "A"}, "since": 12.5,
    }
    assert FloorIdle(3).to_wire() == {"type": "floor_idle", "channel": 3}
    assert FloorRevoked(3, "s", "preempted").to_wire() == {
        "type": "floor_revoked", "channel": 3, "reason": "preempted",
    }
    assert Grant(500).to_wire() == {"granted": True, "max_ms": 500}


async def test_revoke_reaches_another_nodes_talker(store, clock):
    events_a = []
    node_a = make_controller(store, clock, events_a)
    node_b = make_controller(store, clock, [])
    await node_b.request(1, "sb", 22, "Bob")
    assert await node_a.revoke(1, "removed") is True
    assert events_a == [FloorRevoked(1, "sb", "removed"), FloorIdle(1)]
    assert await store.floor_get(1) is None
