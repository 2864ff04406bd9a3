"""TransmissionLog: every way a transmission ends, driven through the real FloorController
(fake clocks, tick() instead of sleeping), and once over a real in-process server."""

from __future__ import annotations

import pytest

from server.app_keys import AUDIT
from server.audit import AuditLog
from server.directory import Directory, Role, User
from server.floor import FloorController, Holder, RevokeReason
from server.state.memory import MemoryLiveStore
from server.transmissions import TransmissionLog, attach_transmission_log
from tests.server.harness import PttClient, close_all, start_site

LEASE_MS = 3000
MAX_TALK_MS = 5000
WALL = 1_700_000_000.0


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def advance_ms(self, ms: float) -> None:
        self.now += ms / 1000.0


class Node:
    """One node's FloorController with its TransmissionLog, sharing the store and audit."""

    def __init__(self, store, clock, audit, directory, sessions: set[str] | None = None) -> None:
        self.sessions = sessions  # this node's session ids; None: every talker is local
        self.log = TransmissionLog(audit, directory, clock=clock, is_local=self._is_local if sessions else None)
        self.floor = FloorController(
            store, lease_ms=LEASE_MS, max_talk_ms=MAX_TALK_MS, clock=clock,
            wall_clock=lambda: WALL + clock.now, on_event=self.log.on_floor_event,
        )

    def _is_local(self, channel_id: int) -> bool:
        lease = self.floor.current(channel_id)
        return lease is not None and lease.session_id in self.sessions


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
async def store(clock):
    s = MemoryLiveStore(clock=clock)
    yield s
    await s.close()


@pytest.fixture
def audit(tmp_path):
    log = AuditLog.open(tmp_path / "audit")
    yield log
    log.close()


@pytest.fixture
def directory(tmp_path):
    d = Directory.open(tmp_path / "dir")
    yield d
    d.close()


@pytest.fixture
def alpha(directory):
    return directory.add_channel("alpha").id


@pytest.fixture
def node(store, clock, audit, directory):
    return Node(store, clock, audit, directory)


def transmissions(audit: AuditLog) -> list[dict]:
    """The transmission details, oldest first."""
    assert audit.flush()
    return [e["detail"] for e in reversed(audit.query(kind="transmission"))]


def expected(channel: int, user_id: int, user: str, started: float, duration_ms: int, outcome: str) -> dict:
    return {
        "channel_id": channel, "channel": "alpha", "user_id": user_id, "user": user,
        "started_at": WALL + started, "duration_ms": duration_ms, "outcome": outcome,
    }


async def test_release_records_one_released_transmission(node, clock, audit, alpha):
    start = clock.now
    await node.floor.request(alpha, "s1", 11, "Alice")
    assert node.log.open_transmissions() == {alpha: Holder(11, "Alice")}
    clock.advance_ms(2500)
    assert await node.floor.release(alpha, "s1")
    assert transmissions(audit) == [expected(alpha, 11, "Alice", start, 2500, "released")]
    assert node.log.open_transmissions() == {}
    entry = audit.query(kind="transmission")[0]
    assert entry["actor"] == "Alice" and entry["actor_id"] == 11


async def test_max_talk_time_ends_with_max_duration(node, clock, audit, alpha):
    start = clock.now
    await node.floor.request(alpha, "s1", 11, "Alice")
    for _ in range(7):  # tick as the background task would; the revoke comes at 5 s
        clock.advance_ms(1000)
        await node.floor.tick()
    assert transmissions(audit) == [expected(alpha, 11, "Alice", start, MAX_TALK_MS, "max_duration")]


async def test_preemption_ends_the_first_and_starts_the_second_without_an_idle(node, clock, audit, alpha):
    first = clock.now
    await node.floor.request(alpha, "s1", 11, "Alice")
    clock.advance_ms(1200)
    second = clock.now
    await node.floor.request(alpha, "s2", 12, "Bob", "emergency")
    assert transmissions(audit) == [expected(alpha, 11, "Alice", first, 1200, "preempted")]
    clock.advance_ms(800)
    await node.floor.release(alpha, "s2")
    assert transmissions(audit)[1] == expected(alpha, 12, "Bob", second, 800, "released")


@pytest.mark.parametrize("reason", [RevokeReason.REMOVED, RevokeReason.DISCONNECTED])
async def test_revoked_floor_records_the_reason(node, clock, audit, alpha, reason):
    start = clock.now
    await node.floor.request(alpha, "s1", 11, "Alice")
    clock.advance_ms(300)
    if reason is RevokeReason.DISCONNECTED:
        assert await node.floor.release_session("s1") == {alpha}
    else:
        assert await node.floor.revoke(alpha, reason)
    assert transmissions(audit) == [expected(alpha, 11, "Alice", start, 300, str(reason))]


async def test_only_the_talkers_node_records_and_a_lost_lease_is_disconnected(store, clock, audit, directory, alpha):
    a = Node(store, clock, audit, directory, sessions={"a1"})
    b = Node(store, clock, audit, directory, sessions={"b1"})
    first = clock.now
    await a.floor.request(alpha, "a1", 11, "Alice")
    await b.floor.floor_state(alpha)  # node b sees Alice talk (FloorTaken there too)
    assert b.log.open_transmissions() == {}
    # Node a stalls past the lease; Bob on node b takes the expired floor.
    clock.advance_ms(LEASE_MS + 100)
    second = clock.now
    assert (await b.floor.request(alpha, "b1", 12, "Bob")).to_wire()["granted"] is True
    await a.floor.tick()  # a finds its lease gone, and Bob holding the floor
    assert a.log.open_transmissions() == {}
    clock.advance_ms(400)
    await b.floor.release(alpha, "b1")
    await a.floor.tick()
    assert transmissions(audit) == [
        expected(alpha, 11, "Alice", first, LEASE_MS + 100, "disconnected"),
        expected(alpha, 12, "Bob", second, 400, "released"),
    ]


async def test_events_without_a_transmission_record_nothing(node, audit, alpha):
    await node.floor.release(alpha, "nobody")
    assert not await node.floor.revoke(alpha)
    assert await node.floor.floor_state(alpha) == {"state": "idle"}
    assert transmissions(audit) == []


def test_denied_is_recorded_with_the_holder(node, audit, alpha):
    node.log.denied(alpha, User(12, "Bob", Role.GENERAL), Holder(11, "Alice"))
    assert audit.flush()
    (entry,) = audit.query()
    assert entry["kind"] == "floor_denied" and entry["actor"] == "Bob" and entry["actor_id"] == 12
    assert entry["detail"] == {
        "channel_id": alpha, "channel": "alpha", "reason": "busy", "holder_id": 11, "holder": "Alice",
    }


# --- over a real server -----------------------------------------------------------------------


def site_audit(site, tmp_path) -> tuple[AuditLog, bool]:
    """The site's own audit log, which the app wires to the hub's floor events (False:
    the test does not own it)."""
    observers = [getattr(o, "__self__", None) for o in site.hub.floor_observers]
    assert site.hub.transmissions in observers
    return site.server.app[AUDIT], False


async def test_real_server_records_a_release_and_a_max_talk_revoke(tmp_path):
    site = await start_site(tmp_path / "site", users=3, max_talk_ms=400, floor_lease_ms=600)
    audit, owned = site_audit(site, tmp_path)
    alpha = site.channels["alpha"]
    a = b = None
    try:
        a, b = [await PttClient.connect(site.url, n, media=False) for n in ("u1", "u2")]
        assert (await a.talk(alpha))["granted"] is True
        await b.signaling.next_event("floor_taken")
        assert (await b.talk(alpha))["granted"] is False  # busy: recorded as a denial
        await a.release(alpha)
        await b.signaling.next_event("floor_idle")
        assert (await b.talk(alpha))["granted"] is True
        revoked = await b.signaling.next_event("floor_revoked", timeout=10)
        assert revoked == {"type": "floor_revoked", "channel": alpha, "reason": "max_duration"}
        await a.signaling.next_event("floor_idle", timeout=5)
        await audit.flush_async()
        entries = [e for e in reversed(audit.query(kind="transmission")) if e["detail"]["channel_id"] == alpha]
        released, revoked_entry = (e["detail"] for e in entries)
        u1, u2 = site.directory.user_by_name("u1"), site.directory.user_by_name("u2")
        assert released["user_id"] == u1.id and released["user"] == "u1" and released["outcome"] == "released"
        assert revoked_entry["user_id"] == u2.id and revoked_entry["outcome"] == "max_duration"
        assert released["channel"] == revoked_entry["channel"] == "alpha"
        assert 0 <= released["duration_ms"] < 60_000
        # Revoked at the first maintenance tick at or past max_talk_ms.
        assert 400 <= revoked_entry["duration_ms"] < 60_000
        assert released["started_at"] < revoked_entry["started_at"]
        (denied,) = audit.query(kind="floor_denied")
        assert denied["actor"] == "u2" and denied["detail"]["channel_id"] == alpha
    finally:
        await close_all(*(c for c in (a, b) if c is not None))
        await site.server.stop()
        if owned:
            audit.close()
