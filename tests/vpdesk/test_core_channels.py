"""ChannelBoard: channel lists, floor banners, mute/volume, the activity light.

Driven by protocol dicts shaped exactly as docs/protocol.md shows them.
"""

from __future__ import annotations

import pytest

from vpdesk.core.channels import (
    ACTIVITY_HOLD_S,
    DEFAULT_VOLUME,
    ChannelBoard,
    FloorStatus,
    UnknownChannel,
)


class Clock:
    def __init__(self, t: float = 500.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


FIRE = {"id": 1, "name": "Fire Ops", "team": "Fire", "event": "County Fair"}
EMS = {"id": 2, "name": "EMS", "team": "Medical", "event": "County Fair"}
GATE = {"id": 3, "name": "Gate", "team": "Security", "event": "County Fair"}


def taken(channel: int, name: str, user_id: int = 11, since: float = 1795241096.62) -> dict:
    holder = {"user_id": user_id, "name": name}
    return {"type": "floor_taken", "channel": channel, "holder": holder, "since": since}


def idle(channel: int) -> dict:
    return {"type": "floor_idle", "channel": channel}


def board(**kw) -> tuple[ChannelBoard, Clock]:
    clock = Clock()
    b = ChannelBoard(clock, **kw)
    b.apply_channels([FIRE, EMS])
    return b, clock


def test_apply_channels_from_hello_keeps_server_order_and_defaults():
    b, _ = board()
    snap = b.snapshot()
    assert [c.id for c in snap] == [1, 2]
    fire = snap[0]
    assert (fire.name, fire.team, fire.event) == ("Fire Ops", "Fire", "County Fair")
    assert fire.joined is False and fire.muted is False
    assert fire.volume == DEFAULT_VOLUME
    assert fire.floor.status is FloorStatus.IDLE
    assert fire.speaking == ""


def test_channels_changed_adds_removes_and_keeps_local_choices():
    b, _ = board()
    b.set_joined(1, True)
    b.set_joined(2, True)
    b.set_muted(1, True)
    b.set_volume(1, 0.3)
    renamed = dict(FIRE, name="Fire Command")
    changes = b.apply_channels([GATE, renamed])  # EMS gone, Gate new, Fire renamed
    assert changes.added == (3,)
    assert changes.removed == (2,)
    assert changes.removed_joined == (2,)
    assert changes.updated == (1,)
    assert b.ids() == (3, 1)
    fire = b.get(1)
    assert fire.name == "Fire Command"
    assert (fire.joined, fire.muted, fire.volume) == (True, True, 0.3)
    assert 2 not in b
    with pytest.raises(UnknownChannel):
        b.get(2)


def test_removed_channel_not_joined_is_not_in_removed_joined():
    b, _ = board()
    changes = b.apply_channels([FIRE])
    assert changes.removed == (2,)
    assert changes.removed_joined == ()


def test_malformed_channel_entries_are_skipped():
    b = ChannelBoard(Clock())
    changes = b.apply_channels([FIRE, {"id": "2", "name": "bad id"}, {"name": "no id"}, dict(FIRE)])
    assert changes.added == (1,)
    assert len(b) == 1


def test_floor_taken_and_idle_banner():
    b, _ = board()
    assert b.on_floor_taken(taken(1, "Alice")) is True
    fire = b.get(1)
    assert fire.speaking == "Alice is speaking"
    assert fire.floor.taken
    assert fire.floor.holder_name == "Alice"
    assert fire.floor.holder_id == 11
    assert fire.floor.since == pytest.approx(1795241096.62)
    assert b.get(2).speaking == ""  # other channels untouched
    # The talker changes without an idle in between (pre-emption).
    b.on_floor_taken(taken(1, "Bob", user_id=12))
    assert b.get(1).speaking == "Bob is speaking"
    assert b.on_floor_idle(idle(1)) is True
    assert b.get(1).speaking == ""
    assert b.get(1).floor.status is FloorStatus.IDLE


def test_own_floor_reads_you_are_speaking():
    b, _ = board(self_user_id=11)
    b.on_floor_taken(taken(2, "alice", user_id=11))
    assert b.get(2).speaking == "You are speaking"


def test_floor_events_for_unknown_channels_are_ignored():
    b, _ = board()
    before = b.snapshot()
    assert b.on_floor_taken(taken(99, "Zed")) is False
    assert b.on_floor_idle(idle(99)) is False
    assert b.on_floor_taken({"type": "floor_taken", "channel": "1"}) is False
    assert b.snapshot() == before


def test_join_response_sets_joined_muted_and_floor():
    b, _ = board()
    floor = {"state": "taken", "holder": {"user_id": 5, "name": "Carol"}, "since": 1.0}
    b.on_joined(1, {"mid": "1", "floor": floor, "muted": False})
    fire = b.get(1)
    assert fire.joined
    assert fire.speaking == "Carol is speaking"
    assert b.joined_ids() == (1,)
    b.set_joined(1, False)
    assert b.joined_ids() == ()


def test_mute_and_volume_clamping():
    b, _ = board()
    b.set_muted(2, True)
    assert b.get(2).muted
    assert b.muted_ids() == {2}
    assert b.set_volume(1, 1.7) == 1.0
    assert b.get(1).volume == 1.0
    assert b.set_volume(1, -0.5) == 0.0
    assert b.get(1).volume == 0.0
    assert b.set_volume(1, 0.42) == pytest.approx(0.42)
    with pytest.raises(ValueError):
        b.set_volume(1, float("nan"))
    with pytest.raises(UnknownChannel):
        b.set_muted(42, True)
    with pytest.raises(UnknownChannel):
        b.set_volume(42, 0.5)


def test_snapshot_does_not_change_under_the_reader():
    b, _ = board()
    snap = b.snapshot()
    b.set_muted(1, True)
    b.on_floor_taken(taken(1, "Alice"))
    assert snap[0].muted is False
    assert snap[0].speaking == ""


def test_activity_light_lit_while_taken_and_fades_after_idle():
    b, clock = board()
    assert not b.get(1).is_active(clock())  # never any activity
    b.on_floor_taken(taken(1, "Alice"))
    clock.t += 30.0  # a long transmission: lit all along
    assert b.get(1).is_active(clock())
    b.on_floor_idle(idle(1))
    assert b.get(1).is_active(clock())  # the fade starts at idle
    assert b.get(1).activity_level(clock()) == pytest.approx(1.0)
    clock.t += ACTIVITY_HOLD_S / 2
    assert b.get(1).is_active(clock())
    assert b.get(1).activity_level(clock()) == pytest.approx(0.5)
    clock.t += ACTIVITY_HOLD_S / 2
    assert not b.get(1).is_active(clock())
    assert b.get(1).activity_level(clock()) == 0.0


def test_audio_activity_lights_the_lamp():
    b, clock = board()
    b.note_audio(2)
    assert b.get(2).is_active(clock())
    assert not b.get(1).is_active(clock())
    clock.t += ACTIVITY_HOLD_S + 0.01
    assert not b.get(2).is_active(clock())
    b.note_audio(99)  # unknown: no error, nothing added
    assert 99 not in b
