"""Stand-ins for the audio layer and the view model, for tests of the session layer.

The session itself, the server and the media are real; only the sound card is replaced:
the microphone is a WAV played in real time and the speaker keeps what it was given.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np

from tests.audio_tools import WavTrack
from vpdesk.session.console import ConsoleSession, Credentials


class RecordingSink:
    def __init__(self) -> None:
        self.gain = 1.0
        self.chunks: list[np.ndarray] = []

    def write(self, pcm: np.ndarray) -> None:
        self.chunks.append(np.asarray(pcm, dtype=np.float32) * self.gain)

    def samples(self) -> np.ndarray:
        return np.concatenate(self.chunks) if self.chunks else np.zeros(0, np.float32)

    def clear(self) -> None:
        self.chunks.clear()


class RecordingSpeaker:
    def __init__(self) -> None:
        self.sinks: dict[object, RecordingSink] = {}

    def sink(self, key: object) -> RecordingSink:
        return self.sinks.setdefault(key, RecordingSink())

    def remove_sink(self, key: object) -> None:
        self.sinks.pop(key, None)


class WavMicrophone:
    """A microphone that speaks `wav` from its start each time the gate opens."""

    def __init__(self, wav: Path) -> None:
        self.track = WavTrack(wav, autostart=False)
        self._gate = False
        self.level = 0.0

    @property
    def gate(self) -> bool:
        return self._gate

    @gate.setter
    def gate(self, value: bool) -> None:
        self._gate = value
        if value:
            self.track.start()
        else:
            self.track.pause()


class RecordingListener:
    """The view model's side of SessionListener: keeps what it was told."""

    def __init__(self) -> None:
        self.messages: list[str] = []
        self.tones: list[str] = []
        self.changed: list[int] = []
        self.resets = 0
        self.connection_changes = 0
        self.tx_changes = 0

    def connection_changed(self) -> None:
        self.connection_changes += 1

    def channels_reset(self) -> None:
        self.resets += 1

    def channel_changed(self, channel_id: int) -> None:
        self.changed.append(channel_id)

    def tx_state_changed(self) -> None:
        self.tx_changes += 1

    def show_message(self, text: str) -> None:
        self.messages.append(text)

    def tone_played(self, name: str) -> None:
        self.tones.append(name)


def make_session(url: str, user: str, password: str, *, wav: Path | None = None, **kwargs) -> ConsoleSession:
    return ConsoleSession(
        Credentials(url, user, password),
        listener=RecordingListener(),
        speaker=RecordingSpeaker(),
        microphone=WavMicrophone(wav) if wav is not None else None,
        **kwargs,
    )


async def until(predicate, timeout: float = 10.0, step: float = 0.02) -> None:
    """Wait until predicate() is true (bounded)."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(step)
