"""The console's view model: the session's state as Qt signals, the widgets' actions as calls.

The widgets (`vpdesk.ui`) read state through this object and never touch the session,
the audio devices or the settings file directly. It listens to the `ConsoleSession`
(it is the session's `SessionListener`), re-emits what changed as signals, keeps the
dispatcher's choices (mutes, volumes, target, preferences) in the settings file, and
polls the microphone level while transmitting.

GUI thread only: with qasync the GUI thread is also the asyncio loop's thread.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from PySide6.QtCore import QObject, QTimer, Signal

from vpdesk.core.channels import ChannelState
from vpdesk.core.connection import ConnectionState
from vpdesk.core.ptt import DENIED_SHOW_S, PttMode, TxState
from vpdesk.core.settings import Settings, SettingsStore
from vpdesk.session.console import ConsoleSession

logger = logging.getLogger(__name__)

METER_INTERVAL_MS = 50
SAVE_DELAY_MS = 500  # a dragged volume slider writes the file once, not 60 times


class ConsoleViewModel(QObject):
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

    def __init__(
        self,
        session: ConsoleSession,
        settings: Settings,
        *,
        store: SettingsStore | None = None,
        server_key: str = "embedded",
        microphone=None,
        tone_player=None,
        audio_problem: str = "",
        list_devices: Callable[[str], list[str]] | None = None,
        on_audio_settings: Callable[[Settings], str] | None = None,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self.session = session
        session.listener = self
        self._settings = settings
        self._store = store
        self._server_key = server_key
        self._microphone = microphone
        self._tone_player = tone_player
        self._audio_problem = audio_problem
        self._list_devices = list_devices
        self._on_audio_settings = on_audio_settings
        self._last_tx = session.ptt.state
        self._last_target = session.target
        self._meter = QTimer(self)
        self._meter.setInterval(METER_INTERVAL_MS)
        self._meter.timeout.connect(self._poll_level)
        self._save_timer = QTimer(self)
        self._save_timer.setSingleShot(True)
        self._save_timer.setInterval(SAVE_DELAY_MS)
        self._save_timer.timeout.connect(self.save_settings)

    # --- reading -------------------------------------------------------------------

    def channels(self) -> tuple[ChannelState, ...]:
        return self.session.board.snapshot()

    def channel(self, channel_id: int) -> ChannelState:
        return self.session.board.get(channel_id)

    def activity_level(self, channel_id: int) -> float:
        if channel_id not in self.session.board:
            return 0.0
        return self.session.board.get(channel_id).activity_level(self.session.clock())

    @property
    def target(self) -> int | None:
        return self.session.target

    @property
    def tx_state(self) -> TxState:
        return self.session.ptt.state

    @property
    def tx_channel(self) -> int | None:
        return self.session.ptt.channel

    @property
    def ptt_mode(self) -> PttMode:
        return self.session.ptt.mode

    @property
    def connection_state(self) -> ConnectionState:
        return self.session.state

    @property
    def connection_detail(self) -> str:
        return self.session.detail

    @property
    def user_name(self) -> str:
        user = self.session.user or {}
        return str(user.get("name") or self.session.credentials.username)

    @property
    def user_role(self) -> str:
        return str((self.session.user or {}).get("role", ""))

    @property
    def audio_problem(self) -> str:
        return self._audio_problem

    @property
    def settings(self) -> Settings:
        return self._settings

    def talk_remaining_s(self) -> float | None:
        return self.session.ptt.talk_remaining_s()

    def denied_holder(self) -> str | None:
        return self.session.ptt.denied_holder

    def input_devices(self) -> list[str]:
        return self._list_devices("input") if self._list_devices else []

    def output_devices(self) -> list[str]:
        return self._list_devices("output") if self._list_devices else []

    # --- actions -------------------------------------------------------------------

    def press(self, source: str) -> None:
        self.session.press(source)

    def release(self, source: str) -> None:
        self.session.release(source)

    def release_all(self) -> None:
        self.session.release_all()

    def set_muted(self, channel_id: int, muted: bool) -> None:
        self.session.set_muted(channel_id, muted)
        self._settings.set_channel_prefs(self._server_key, channel_id, muted=muted)
        self._save_soon()

    def set_volume(self, channel_id: int, volume: float) -> None:
        self.session.set_volume(channel_id, volume)
        self._settings.set_channel_prefs(self._server_key, channel_id, volume=volume)
        self._save_soon()

    def set_target(self, channel_id: int) -> None:
        self.session.set_target(channel_id)
        if channel_id is not None:
            self._settings.targets[self._server_key] = channel_id
            self._save_soon()

    def apply_settings(self, settings: Settings) -> None:
        """New preferences from the dialog: PTT mode and key, devices, tones."""
        old = self._settings
        # Per-channel choices and window layout live on; the dialog edits the rest.
        settings = replace(
            settings,
            channels=old.channels,
            targets=old.targets,
            window_geometry=old.window_geometry,
            window_state=old.window_state,
        )
        self._settings = settings
        if settings.ptt_mode is not self.session.ptt.mode:
            self.session.set_ptt_mode(settings.ptt_mode)
            self.pttModeChanged.emit(settings.ptt_mode.value)
        if self._tone_player is not None:
            self._tone_player.reload(settings.tones, Path(settings.tone_dir) if settings.tone_dir else None)
        if self._on_audio_settings is not None and (
            (settings.input_device, settings.output_device) != (old.input_device, old.output_device)
        ):
            self.set_audio_problem(self._on_audio_settings(settings))
        self.save_settings()

    def test_tone(self, name: str) -> None:
        if self._tone_player is not None and self._tone_player.play(name):
            self.toneRequested.emit(name)

    def set_audio_problem(self, text: str) -> None:
        self._audio_problem = text
        self.audioStatus.emit(text)

    def set_microphone(self, microphone) -> None:
        """After the devices changed: the level meter reads the new microphone."""
        self._microphone = microphone

    def save_settings(self) -> None:
        if self._store is None:
            return
        try:
            self._store.save(self._settings)
        except OSError as exc:
            logger.warning("settings: cannot save %s: %s", self._store.path, exc)
            self.message.emit(f"Could not save settings: {exc}")

    def _save_soon(self) -> None:
        self._save_timer.start()

    # --- SessionListener -----------------------------------------------------------

    def connection_changed(self) -> None:
        self.connectionChanged.emit(self.session.state.value, self.session.detail)

    def channels_reset(self) -> None:
        self.channelsReset.emit()
        self._check_target()

    def channel_changed(self, channel_id: int) -> None:
        self.channelChanged.emit(channel_id)

    def tx_state_changed(self) -> None:
        self._check_target()
        state = self.session.ptt.state
        if state is not self._last_tx:
            self._last_tx = state
            if state is TxState.DENIED:
                # DENIED ends by the clock alone: look again once it has been shown.
                QTimer.singleShot(int(DENIED_SHOW_S * 1000) + 50, self.tx_state_changed)
            if state is TxState.TRANSMITTING:
                self._meter.start()
            else:
                self._meter.stop()
                self.micLevel.emit(0.0)
            self.txStateChanged.emit(state.value)

    def show_message(self, text: str) -> None:
        self.message.emit(text)

    def tone_played(self, name: str) -> None:
        self.toneRequested.emit(name)

    def _check_target(self) -> None:
        target = self.session.target
        if target != self._last_target:
            self._last_target = target
            self.targetChanged.emit(target)

    def _poll_level(self) -> None:
        level = getattr(self._microphone, "level", 0.0) if self._microphone is not None else 0.0
        self.micLevel.emit(float(level))
        # The DENIED state ends by the clock alone: let the widgets see it go.
        if self.session.ptt.state is not self._last_tx:
            self.tx_state_changed()
