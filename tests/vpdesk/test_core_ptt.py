"""PttController: hold and toggle modes, several sources, server answers, outages.

Plain pytest with an injected clock; no sleeping.
"""

from __future__ import annotations

import pytest

from vpdesk.core.ptt import (
    DENIED_SHOW_S,
    PlayTone,
    PressRefused,
    PttController,
    PttMode,
    ReleaseFloor,
    RequestFloor,
    ShowMessage,
    StartMicrophone,
    StopMicrophone,
    TxState,
)

CH = 7


class Clock:
    def __init__(self, t: float = 1000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def make(mode: PttMode = PttMode.HOLD, *, target: int | None = CH, connected: bool = True):
    clock = Clock()
    return PttController(mode, clock, target=target, connected=connected), clock


def talking(ptt: PttController, source: str = "button") -> None:
    """Press and get granted."""
    assert ptt.press(source) == [RequestFloor(CH, "normal")]
    assert ptt.on_granted(CH, 60000) == [StartMicrophone(), PlayTone("talk_permit")]
    assert ptt.state is TxState.TRANSMITTING


def messages(effects) -> list[str]:
    return [e.text for e in effects if isinstance(e, ShowMessage)]


# --- hold-to-talk ------------------------------------------------------------------


def test_hold_press_grant_release_cycle():
    ptt, _ = make()
    assert ptt.state is TxState.IDLE
    assert ptt.press("key") == [RequestFloor(CH, "normal")]
    assert ptt.state is TxState.REQUESTING
    assert ptt.channel == CH
    assert ptt.on_granted(CH, 60000) == [StartMicrophone(), PlayTone("talk_permit")]
    assert ptt.state is TxState.TRANSMITTING
    assert ptt.release("key") == [StopMicrophone(), ReleaseFloor(CH), PlayTone("end_of_tx")]
    assert ptt.state is TxState.IDLE
    assert ptt.channel is None


def test_hold_several_sources_only_last_release_ends():
    ptt, _ = make()
    talking(ptt, "button")
    # The key and the pedal join the button: no second request.
    assert ptt.press("key") == []
    assert ptt.press("pedal") == []
    assert ptt.held_sources == {"button", "key", "pedal"}
    assert ptt.release("button") == []
    assert ptt.release("pedal") == []
    assert ptt.state is TxState.TRANSMITTING
    assert ptt.release("key") == [StopMicrophone(), ReleaseFloor(CH), PlayTone("end_of_tx")]
    assert ptt.state is TxState.IDLE


def test_sources_held_before_grant_are_counted():
    ptt, _ = make()
    assert ptt.press("key") == [RequestFloor(CH, "normal")]
    assert ptt.press("pedal") == []  # the request in flight serves both
    assert ptt.release("key") == []
    assert ptt.state is TxState.REQUESTING  # the pedal is still down
    assert ptt.on_granted(CH, 60000) == [StartMicrophone(), PlayTone("talk_permit")]
    assert ptt.release("pedal") == [StopMicrophone(), ReleaseFloor(CH), PlayTone("end_of_tx")]


def test_release_of_unpressed_source_is_ignored():
    ptt, _ = make()
    assert ptt.release("pedal") == []
    talking(ptt, "key")
    assert ptt.release("pedal") == []  # never pressed: must not end the key's transmission
    assert ptt.release("key") != []  # ...but the key's own release does
    assert ptt.release("key") == []  # a second release of the same source: ignored
    assert ptt.state is TxState.IDLE


def test_auto_repeat_press_is_not_counted_twice():
    ptt, _ = make()
    talking(ptt, "key")
    assert ptt.press("key") == []  # keyboard auto-repeat
    assert ptt.press("key") == []
    # One release ends it: the source is held or not, not counted per repeat.
    assert ptt.release("key") == [StopMicrophone(), ReleaseFloor(CH), PlayTone("end_of_tx")]


def test_grant_after_early_release_is_released_at_once():
    ptt, _ = make()
    ptt.press("key")
    assert ptt.release("key") == []
    assert ptt.state is TxState.CANCELLING
    # No microphone, no talk-permit tone: just give the floor back.
    assert ptt.on_granted(CH, 60000) == [ReleaseFloor(CH)]
    assert ptt.state is TxState.IDLE
    assert ptt.press("key") == [RequestFloor(CH, "normal")]  # nothing is stuck


def test_press_again_before_answer_keeps_the_request():
    ptt, _ = make()
    ptt.press("key")
    ptt.release("key")
    assert ptt.press("key") == []  # the request in flight serves again
    assert ptt.state is TxState.REQUESTING
    assert ptt.on_granted(CH, 60000) == [StartMicrophone(), PlayTone("talk_permit")]


def test_stale_grant_when_idle_is_released():
    ptt, _ = make()
    assert ptt.on_granted(3, 60000) == [ReleaseFloor(3)]
    assert ptt.state is TxState.IDLE


def test_talk_remaining_counts_down_with_the_clock():
    ptt, clock = make()
    assert ptt.talk_remaining_s() is None
    talking(ptt)
    assert ptt.talk_remaining_s() == pytest.approx(60.0)
    clock.t += 12.5
    assert ptt.talk_remaining_s() == pytest.approx(47.5)


# --- toggle ------------------------------------------------------------------------


def test_toggle_press_starts_next_press_stops_releases_do_nothing():
    ptt, _ = make(PttMode.TOGGLE)
    assert ptt.press("button") == [RequestFloor(CH, "normal")]
    assert ptt.release("button") == []
    assert ptt.state is TxState.REQUESTING  # a release does not cancel in toggle mode
    assert ptt.on_granted(CH, 60000) == [StartMicrophone(), PlayTone("talk_permit")]
    assert ptt.state is TxState.TRANSMITTING
    # Any source stops it.
    assert ptt.press("pedal") == [StopMicrophone(), ReleaseFloor(CH), PlayTone("end_of_tx")]
    assert ptt.release("pedal") == []
    assert ptt.state is TxState.IDLE


def test_toggle_second_press_before_grant_cancels():
    ptt, _ = make(PttMode.TOGGLE)
    ptt.press("key")
    ptt.release("key")
    assert ptt.press("key") == []
    assert ptt.state is TxState.CANCELLING
    assert ptt.on_granted(CH, 60000) == [ReleaseFloor(CH)]
    assert ptt.state is TxState.IDLE


def test_toggle_auto_repeat_does_not_toggle():
    ptt, _ = make(PttMode.TOGGLE)
    talking(ptt, "key")
    assert ptt.press("key") == []  # still held: auto-repeat, not a second press
    assert ptt.state is TxState.TRANSMITTING


def test_mode_switch_while_transmitting_ends_transmission():
    ptt, _ = make(PttMode.TOGGLE)
    talking(ptt, "key")
    ptt.release("key")
    assert ptt.set_mode(PttMode.HOLD) == [StopMicrophone(), ReleaseFloor(CH), PlayTone("end_of_tx")]
    assert ptt.mode is PttMode.HOLD
    assert ptt.state is TxState.IDLE


# --- denial ------------------------------------------------------------------------


def test_busy_denial_no_queue_and_press_again_works():
    ptt, clock = make()
    ptt.press("key")
    effects = ptt.on_denied(CH, "Alice")
    assert PlayTone("busy") in effects
    assert messages(effects) == ["Channel busy: Alice is speaking"]
    assert ptt.state is TxState.DENIED
    assert ptt.denied_holder == "Alice"
    # No queue: the floor going free later grants nothing by itself.
    assert ptt.on_granted(CH, 60000) == [ReleaseFloor(CH)]
    assert ptt.state is TxState.DENIED
    # DENIED is shown briefly, then reads as idle.
    clock.t += DENIED_SHOW_S
    assert ptt.state is TxState.IDLE
    assert ptt.denied_holder is None
    # Pressing again asks again.
    ptt.release("key")
    assert ptt.press("key") == [RequestFloor(CH, "normal")]
    assert ptt.on_granted(CH, 60000) == [StartMicrophone(), PlayTone("talk_permit")]


def test_press_again_while_denied_is_shown_asks_again():
    ptt, _ = make()
    ptt.press("key")
    ptt.on_denied(CH, "Bob")
    ptt.release("key")
    assert ptt.state is TxState.DENIED
    assert ptt.press("key") == [RequestFloor(CH, "normal")]
    assert ptt.state is TxState.REQUESTING


def test_denial_for_another_channel_is_ignored():
    ptt, _ = make()
    ptt.press("key")
    assert ptt.on_denied(CH + 1, "Bob") == []
    assert ptt.state is TxState.REQUESTING


# --- revokes -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reason", "tone", "text"),
    [
        ("max_duration", "end_of_tx", "Transmission ended: maximum talk time reached"),
        ("preempted", "emergency", "Pre-empted by an emergency call"),
        ("removed", "busy", "Transmission ended: you were removed from the channel"),
        ("disconnected", "busy", "Transmission ended: the server lost your session"),
    ],
)
def test_revoke_stops_microphone_with_tone_and_message(reason, tone, text):
    ptt, _ = make()
    talking(ptt, "key")
    effects = ptt.on_revoked(CH, reason)
    assert effects == [StopMicrophone(), PlayTone(tone), ShowMessage(text)]
    assert ptt.state is TxState.IDLE
    # The server already freed the floor: letting go sends no release.
    assert ptt.release("key") == []
    # And a fresh press asks again.
    assert ptt.press("key") == [RequestFloor(CH, "normal")]


def test_revoke_for_another_channel_or_when_idle_is_ignored():
    ptt, _ = make()
    assert ptt.on_revoked(CH, "max_duration") == []
    talking(ptt)
    assert ptt.on_revoked(CH + 1, "preempted") == []
    assert ptt.state is TxState.TRANSMITTING


def test_revoke_with_unknown_reason_still_stops():
    ptt, _ = make()
    talking(ptt)
    effects = ptt.on_revoked(CH, "a-future-reason")
    assert effects[0] == StopMicrophone()
    assert messages(effects) == ["Transmission ended by the server"]


# --- refusals and outages ----------------------------------------------------------


def test_press_with_no_target_is_refused():
    ptt, _ = make(target=None)
    effects = ptt.press("key")
    assert effects[0] == PressRefused("no channel selected")
    assert not any(isinstance(e, RequestFloor) for e in effects)
    assert messages(effects) == ["Cannot talk: no channel selected"]
    assert ptt.state is TxState.IDLE
    # Choosing a channel makes the next press work.
    ptt.release("key")
    ptt.target = 4
    assert ptt.press("key") == [RequestFloor(4, "normal")]


def test_press_while_disconnected_is_refused():
    ptt, _ = make(connected=False)
    effects = ptt.press("pedal")
    assert effects[0] == PressRefused("not connected")
    assert not any(isinstance(e, RequestFloor) for e in effects)
    assert ptt.state is TxState.IDLE
    ptt.release("pedal")
    assert ptt.set_connected(True) == []
    assert ptt.press("pedal") == [RequestFloor(CH, "normal")]


def test_connection_lost_while_transmitting_stops_microphone():
    ptt, _ = make()
    talking(ptt, "key")
    effects = ptt.on_connection_lost()
    assert effects[0] == StopMicrophone()
    assert not any(isinstance(e, ReleaseFloor) for e in effects)  # nothing can be sent
    assert messages(effects) == ["Transmission ended: connection lost"]
    assert ptt.state is TxState.IDLE
    assert not ptt.connected
    assert ptt.release("key") == []
    assert ptt.press("key")[0] == PressRefused("not connected")


def test_connection_lost_while_requesting_goes_idle():
    ptt, _ = make()
    ptt.press("key")
    effects = ptt.set_connected(False)
    assert StopMicrophone() not in effects  # it was never started
    assert ptt.state is TxState.IDLE
    # A grant that straggles in after the outage neither starts the mic nor sends anything.
    assert ptt.on_granted(CH, 60000) == []


def test_release_all_ends_a_stuck_transmission():
    ptt, _ = make()
    talking(ptt, "key")
    ptt.press("pedal")
    assert ptt.release_all() == [StopMicrophone(), ReleaseFloor(CH), PlayTone("end_of_tx")]
    assert ptt.held_sources == frozenset()
    assert ptt.release("key") == []


# --- target and emergency ----------------------------------------------------------


def test_target_change_applies_to_next_press_only():
    ptt, _ = make()
    talking(ptt, "key")
    ptt.target = 9
    assert ptt.channel == CH
    assert ptt.release("key") == [StopMicrophone(), ReleaseFloor(CH), PlayTone("end_of_tx")]
    assert ptt.press("key") == [RequestFloor(9, "normal")]


def test_emergency_press_requests_with_emergency_priority():
    ptt, _ = make()
    assert ptt.press("button", emergency=True) == [RequestFloor(CH, priority="emergency")]
    assert ptt.emergency
    assert ptt.on_granted(CH, 60000) == [StartMicrophone(), PlayTone("talk_permit")]
    assert ptt.emergency
    ptt.release("button")
    assert not ptt.emergency
    # The next ordinary press is normal priority again.
    assert ptt.press("button") == [RequestFloor(CH, "normal")]


def test_failed_request_goes_idle_with_the_reason():
    clock = [0.0]
    ptt = PttController(PttMode.HOLD, lambda: clock[0], target=7, connected=True)
    assert ptt.press("mouse") == [RequestFloor(7, "normal")]
    effects = ptt.on_failed(7, "you are not a member of this channel")
    assert effects == [PlayTone("busy"), ShowMessage("Cannot talk: you are not a member of this channel")]
    assert ptt.state is TxState.IDLE
    assert ptt.on_failed(7, "again") == []  # nothing in progress any more
