"""Plays the console's tones (talk permit, end of transmission, busy, ...) on the Speaker.

Which file and how loud come from vpdesk.core.tones (a user folder overrides shipped
files by name; each tone has a volume and an on/off switch). Files are decoded once
into float32 48 kHz mono and cached; a user file that cannot be decoded falls back to
the shipped one, so a bad override never silences a tone.

Call from the asyncio loop thread (the Speaker's).
"""

from __future__ import annotations

import logging
import wave
from pathlib import Path

import numpy as np

from vpdesk.audio.playback import SAMPLE_RATE, Speaker
from vpdesk.core.tones import SHIPPED_TONES_DIR, ToneSettings, resolve_tone

logger = logging.getLogger(__name__)

PLAYED_HISTORY = 100
_UNCHANGED = object()


class ToneDecodeError(ValueError):
    def __init__(self, path: Path, reason: str):
        super().__init__(f"cannot decode tone {path}: {reason}")
        self.path = path


def _pcm_to_float(raw: bytes, sample_width: int) -> np.ndarray:
    """Interleaved PCM bytes → float32 in [-1, 1)."""
    if sample_width == 1:  # 8-bit WAV is unsigned
        return (np.frombuffer(raw, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
    if sample_width == 2:
        return np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0
    if sample_width == 3:
        b = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        value = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        value = np.where(value >= 1 << 23, value - (1 << 24), value)
        return value.astype(np.float32) / float(1 << 23)
    if sample_width == 4:
        return (np.frombuffer(raw, dtype="<i4").astype(np.float64) / float(1 << 31)).astype(
            np.float32
        )
    raise ValueError(f"{8 * sample_width}-bit samples are not supported")


def resample_linear(samples: np.ndarray, rate: int, target: int = SAMPLE_RATE) -> np.ndarray:
    """Linear-interpolation resampling (good enough for short synthetic tones)."""
    if rate == target or len(samples) == 0:
        return samples.astype(np.float32, copy=False)
    length = max(1, int(round(len(samples) * target / rate)))
    positions = np.arange(length, dtype=np.float64) * (rate / target)
    return np.interp(positions, np.arange(len(samples)), samples).astype(np.float32)


def decode_tone(path: Path) -> np.ndarray:
    """A PCM WAV file as float32 mono 48 kHz samples (channels averaged).
    Raises ToneDecodeError."""
    try:
        with wave.open(str(path), "rb") as w:
            channels, width, rate = w.getnchannels(), w.getsampwidth(), w.getframerate()
            raw = w.readframes(w.getnframes())
        samples = _pcm_to_float(raw[: len(raw) - len(raw) % (width * channels)], width)
    except (OSError, EOFError, wave.Error, ValueError) as exc:
        raise ToneDecodeError(path, str(exc)) from exc
    if channels > 1:
        samples = samples.reshape(-1, channels).mean(axis=1)
    if len(samples) == 0 or rate <= 0:
        raise ToneDecodeError(path, "no audio")
    return resample_linear(samples, rate)


class TonePlayer:
    """Plays tones by name on `speaker` with the volumes in `settings`."""

    def __init__(
        self,
        speaker: Speaker,
        settings: ToneSettings,
        user_dir: Path | None,
        shipped_dir: Path = SHIPPED_TONES_DIR,
    ) -> None:
        self.speaker = speaker
        self.settings = settings
        self.user_dir = Path(user_dir) if user_dir is not None else None
        self.shipped_dir = Path(shipped_dir)
        self._cache: dict[tuple[str, Path], np.ndarray] = {}
        self.played: list[str] = []

    def play(self, name: str) -> bool:
        """Play tone `name` (one of TONE_NAMES) now. False when it is switched off
        (gain 0) or no file for it can be decoded. Raises UnknownTone for other names."""
        gain = self.settings.gain(name)
        if gain <= 0.0:
            return False
        samples = self._samples(name)
        if samples is None:
            return False
        self.speaker.play_clip(samples, gain)
        self.played.append(name)
        del self.played[:-PLAYED_HISTORY]
        return True

    def reload(
        self,
        settings: ToneSettings | None = None,
        user_dir: Path | None | object = _UNCHANGED,
    ) -> None:
        """After a preference change: new settings and/or user folder; drops the cache
        (a file may have been replaced under the same name)."""
        if settings is not None:
            self.settings = settings
        if user_dir is not _UNCHANGED:
            self.user_dir = Path(user_dir) if user_dir is not None else None  # type: ignore[arg-type]
        self._cache.clear()

    def _samples(self, name: str) -> np.ndarray | None:
        path = resolve_tone(name, self.user_dir, self.shipped_dir)
        samples = self._load(name, path)
        shipped = self.shipped_dir / f"{name}.wav"
        if samples is None and path != shipped:
            samples = self._load(name, shipped)
        return samples

    def _load(self, name: str, path: Path) -> np.ndarray | None:
        key = (name, path)
        samples = self._cache.get(key)
        if samples is None:
            try:
                samples = decode_tone(path)
            except ToneDecodeError as exc:
                logger.warning("tones: %s", exc)
                return None
            self._cache[key] = samples
        return samples
