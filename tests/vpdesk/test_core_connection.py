"""Reconnector: back-off delays and the resume plan."""

from __future__ import annotations

import pytest

from vpdesk.core.connection import ConnectionState, Reconnector, RestoreActions, ResumePlan


class Clock:
    def __init__(self, t: float = 0.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def make(**kw) -> tuple[Reconnector, Clock]:
    clock = Clock()
    kw.setdefault("jitter", lambda: 1.0)
    return Reconnector(clock, **kw), clock


def fail_n(r: Reconnector, n: int) -> list[float]:
    delays = []
    for _ in range(n):
        r.on_connecting()
        delays.append(r.on_lost())
    return delays


def test_states_through_a_drop_and_a_reconnect():
    r, clock = make()
    assert r.state is ConnectionState.DISCONNECTED
    r.on_connecting()
    assert r.state is ConnectionState.CONNECTING
    r.on_connected("s-1")
    assert r.state is ConnectionState.CONNECTED
    delay = r.on_lost()
    assert r.state is ConnectionState.RECONNECTING
    assert r.retry_at == pytest.approx(clock() + delay)
    r.on_connecting()
    assert r.retry_at is None
    r.on_connected("s-1")
    assert r.state is ConnectionState.CONNECTED


def test_delays_grow_exponentially_and_are_capped():
    r, _ = make(base=0.5, factor=2.0, max_delay=30.0)
    assert fail_n(r, 9) == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    assert r.attempts == 9


def test_jitter_scales_the_delay():
    draws = iter([0.5, 0.75, 1.0])
    r, _ = make(jitter=lambda: next(draws))
    assert fail_n(r, 3) == [0.25, 0.75, 2.0]


def test_default_jitter_stays_within_cap_and_varies():
    r = Reconnector(Clock(), max_delay=4.0)
    delays = fail_n(r, 40)
    assert all(0.0 < d <= 4.0 for d in delays)
    assert len(set(delays[-20:])) > 1  # randomised, so consoles do not reconnect in lockstep


def test_backoff_resets_after_a_stable_connection():
    r, clock = make(stable_s=10.0)
    fail_n(r, 4)  # 0.5, 1, 2, 4
    r.on_connected("s-1")
    clock.t += 10.0
    assert r.on_lost() == 0.5  # stayed up long enough: start over
    assert r.attempts == 1


def test_backoff_keeps_growing_on_a_flapping_link():
    r, clock = make(stable_s=10.0)
    fail_n(r, 3)  # 0.5, 1, 2
    r.on_connected("s-1")
    clock.t += 2.0  # dropped again quickly
    assert r.on_lost() == 4.0


def test_stop_and_auth_failure():
    r, _ = make()
    r.on_connected("s-1")
    fail_n(r, 3)
    r.stop()
    assert r.state is ConnectionState.DISCONNECTED
    assert r.on_lost() == 0.5  # a new start begins the back-off afresh
    r.on_auth_failed()
    assert r.state is ConnectionState.FAILED
    assert r.resume_plan().session_id is None


def test_bad_backoff_parameters_rejected():
    with pytest.raises(ValueError):
        Reconnector(Clock(), base=0.0)
    with pytest.raises(ValueError):
        Reconnector(Clock(), base=5.0, max_delay=1.0)


def test_resume_plan_remembers_session_joins_mutes_and_target():
    r, _ = make()
    r.on_connected("s-abc")
    for cid in (3, 1, 2):
        r.remember_join(cid)
    r.remember_join(3)  # joining twice records it once
    r.remember_mute(1, True)
    r.remember_mute(2, True)
    r.remember_mute(2, False)
    r.remember_mute(9, True)  # muted but not joined: nothing to restore
    r.remember_target(3)
    r.on_lost()
    plan = r.resume_plan()
    assert plan == ResumePlan(session_id="s-abc", joined=(3, 1, 2), muted=frozenset({1}), target=3)
    r.remember_leave(1)
    assert r.resume_plan().joined == (3, 2)
    assert r.resume_plan().muted == frozenset()
    r.forget_channels([3])
    assert r.resume_plan().target is None
    assert r.resume_plan().joined == (2,)


def test_new_session_id_replaces_the_old_one():
    r, _ = make()
    r.on_connected("s-1")
    r.on_lost()
    r.on_connected("s-2")  # resume refused: the server made a new session
    assert r.resume_plan().session_id == "s-2"


CHANNELS = [{"id": i, "name": f"c{i}", "team": "t", "event": "e"} for i in (1, 2, 3, 4)]


def test_restore_after_a_full_resume_does_nothing():
    plan = ResumePlan("s-1", joined=(1, 2), muted=frozenset({2}), target=1)
    hello = {"session": "s-1", "resumed": True, "channels": CHANNELS,
             "joined": [{"channel": 1, "muted": False}, {"channel": 2, "muted": True}]}
    assert plan.restore_actions(hello) == RestoreActions()


def test_restore_without_resume_rejoins_and_remutes_everything():
    plan = ResumePlan("s-1", joined=(3, 1, 2), muted=frozenset({2}), target=1)
    hello = {"session": "s-9", "resumed": False, "channels": CHANNELS, "joined": []}
    actions = plan.restore_actions(hello)
    assert actions.join == (3, 1, 2)
    assert actions.mute == ((2, True),)
    assert actions.dropped == ()


def test_restore_fills_in_what_a_partial_resume_missed():
    plan = ResumePlan("s-1", joined=(1, 2, 3, 4), muted=frozenset({1, 3}), target=None)
    hello = {
        "session": "s-1",
        "resumed": True,
        "channels": [c for c in CHANNELS if c["id"] != 4],  # removed from channel 4 meanwhile
        "joined": [{"channel": 1, "muted": False}, {"channel": 2, "muted": True}],
    }
    actions = plan.restore_actions(hello)
    assert actions.join == (3,)
    assert set(actions.mute) == {(1, True), (2, False), (3, True)}
    assert actions.dropped == (4,)
