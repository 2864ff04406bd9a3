"""A stand-in for vpdesk.viewmodels.console.ConsoleViewModel: same signals, reads and actions.

For widget tests and scripts/ui_preview.py. It records every action in `calls` (a list of
tuples: name, then arguments) and applies the local ones (mute, volume, target, settings)
to its own state the way the real one does, emitting the same signals. Tests and the
preview drive the rest (floors, transmitter, connection) through the `put_*`/`set_*`
helpers below. GUI thread only.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import replace

from PySide6.QtCore import QObject, Signal

from vpdesk.core.channels import ChannelState, Floor, FloorStatus
from vpdesk.core.connection import ConnectionState
from vpdesk.core.ptt import PttMode, TxState
from vpdesk.core.settings import Settings


class FakeConsoleViewModel(QObject):
    channelsReset = Signal()
    channelChanged = Signal(int)
    targetChanged = Signal(object)
    txStateChanged = Signal(str)
    micLevel = Signal(float)
    connectionChanged = Signal(str, str)
    message = Signal(str)
    toneRequested = Signal(str)
    audioStatus = Signal(str)
    pttModeChanged = Signal(str)

    def __init__(self, channels: Iterable[ChannelState] = (), *, settings: Settings | None = None) -> None:
        super().__init__()
        self.calls: list[tuple] = []
        self._channels: dict[int, ChannelState] = {c.id: c for c in channels}
        self._activity: dict[int, float] = {}
        self._target: int | None = None
        self._tx_state = TxState.IDLE
        self._settings = settings or Settings()
        self._connection = ConnectionState.CONNECTED
        self._detail = "Connected to embedded server as alice"
        self._user_name = "alice"
        self._user_role = "dispatch"
        self._audio_problem = ""
        self._remaining: float | None = None
        self._denied_holder: str | None = None
        self.inputs = ["Built-in Microphone", "USB Headset Mic"]
        self.outputs = ["Built-in Speakers", "USB Headset"]

    # --- reading (same as ConsoleViewModel) ----------------------------------------------

    def channels(self) -> tuple[ChannelState, ...]:
        return tuple(self._channels.values())

    def channel(self, channel_id: int) -> ChannelState:
        return self._channels[channel_id]

    def activity_level(self, channel_id: int) -> float:
        if channel_id in self._channels and self._channels[channel_id].floor.taken:
            return 1.0
        return self._activity.get(channel_id, 0.0)

    @property
    def target(self) -> int | None:
        return self._target

    @property
    def tx_state(self) -> TxState:
        return self._tx_state

    @property
    def tx_channel(self) -> int | None:
        return self._target if self._tx_state is not TxState.IDLE else None

    @property
    def ptt_mode(self) -> PttMode:
        return self._settings.ptt_mode

    @property
    def connection_state(self) -> ConnectionState:
        return self._connection

    @property
    def connection_detail(self) -> str:
        return self._detail

    @property
    def user_name(self) -> str:
        return self._user_name

    @property
    def user_role(self) -> str:
        return self._user_role

    @property
    def audio_problem(self) -> str:
        return self._audio_problem

    @property
    def settings(self) -> Settings:
        return self._settings

    def talk_remaining_s(self) -> float | None:
        return self._remaining if self._tx_state is TxState.TRANSMITTING else None

    def denied_holder(self) -> str | None:
        return self._denied_holder if self._tx_state is TxState.DENIED else None

    def input_devices(self) -> list[str]:
        return list(self.inputs)

    def output_devices(self) -> list[str]:
        return list(self.outputs)

    # --- actions (recorded) ----------------------------------------------------------------

    def press(self, source: str) -> None:
        self.calls.append(("press", source))

    def release(self, source: str) -> None:
        self.calls.append(("release", source))

    def release_all(self) -> None:
        self.calls.append(("release_all",))

    def set_muted(self, channel_id: int, muted: bool) -> None:
        self.calls.append(("set_muted", channel_id, muted))
        self.put_channel(replace(self._channels[channel_id], muted=bool(muted)))

    def set_volume(self, channel_id: int, volume: float) -> None:
        self.calls.append(("set_volume", channel_id, volume))
        self.put_channel(replace(self._channels[channel_id], volume=min(1.0, max(0.0, volume))))

    def set_target(self, channel_id: int) -> None:
        self.calls.append(("set_target", channel_id))
        if channel_id != self._target:
            self._target = channel_id
            self.targetChanged.emit(channel_id)

    def apply_settings(self, settings: Settings) -> None:
        self.calls.append(("apply_settings", settings))
        old_mode = self._settings.ptt_mode
        self._settings = copy.deepcopy(settings)
        if settings.ptt_mode is not old_mode:
            self.pttModeChanged.emit(settings.ptt_mode.value)

    def test_tone(self, name: str) -> None:
        self.calls.append(("test_tone", name))
        self.toneRequested.emit(name)

    # --- helpers for tests and the preview ---------------------------------------------------

    def calls_named(self, name: str) -> list[tuple]:
        return [call for call in self.calls if call[0] == name]

    def put_channels(self, channels: Iterable[ChannelState]) -> None:
        """Replace the channel list (emits channelsReset)."""
        self._channels = {c.id: c for c in channels}
        self.channelsReset.emit()

    def put_channel(self, state: ChannelState) -> None:
        """Replace one channel's state (emits channelChanged)."""
        self._channels[state.id] = state
        self.channelChanged.emit(state.id)

    def put_speaker(self, channel_id: int, name: str | None, *, own: bool = False) -> None:
        """Someone (None: nobody) takes the floor of a channel; `own`: it is us."""
        if name is None:
            floor, text = Floor(), ""
            self._activity[channel_id] = 0.6  # fading after the transmission
        else:
            floor = Floor(FloorStatus.TAKEN, 1 if own else 99, name, 0.0)
            text = "You are speaking" if own else f"{name} is speaking"
        self.put_channel(replace(self._channels[channel_id], floor=floor, speaking=text))

    def put_activity(self, channel_id: int, level: float) -> None:
        self._activity[channel_id] = level

    def put_target(self, channel_id: int | None) -> None:
        self._target = channel_id
        self.targetChanged.emit(channel_id)

    def put_tx_state(
        self, state: TxState, *, remaining: float | None = None, denied_holder: str | None = None
    ) -> None:
        self._tx_state = state
        self._remaining = remaining
        self._denied_holder = denied_holder
        self.txStateChanged.emit(state.value)

    def put_connection(self, state: ConnectionState, detail: str = "") -> None:
        self._connection = state
        self._detail = detail
        self.connectionChanged.emit(state.value, detail)

    def put_user(self, name: str, role: str) -> None:
        self._user_name, self._user_role = name, role

    def put_audio_problem(self, text: str) -> None:
        self._audio_problem = text
        self.audioStatus.emit(text)

    def put_ptt_mode(self, mode: PttMode) -> None:
        self._settings.ptt_mode = mode
        self.pttModeChanged.emit(mode.value)
