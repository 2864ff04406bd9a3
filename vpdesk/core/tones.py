"""Which tone file to play, and how loud.

The shipped tones live in `server/tones/` (written by its make_tones.py). A user tone
folder overrides any of them by file name (`busy.wav` replaces the busy tone); a user file
that is missing or cannot be read as a WAV falls back to the shipped one, so a bad
override never silences a tone. Each tone has its own volume and an on/off switch.

Pure functions and plain data: call from any thread. `ToneSettings` is not locked; the
console owns one on its event loop.
"""

from __future__ import annotations

import logging
import math
import wave
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from server import shipped

logger = logging.getLogger(__name__)

TONE_NAMES: tuple[str, ...] = ("talk_permit", "end_of_tx", "busy", "incoming", "emergency")

# The shipped folder, wherever server.shipped finds it (checkout, wheel or bundle).
SHIPPED_TONES_DIR = shipped.tones_dir()

DEFAULT_TONE_VOLUME = 0.8
# "incoming" would chime on every transmission of every monitored channel: opt-in.
_OFF_BY_DEFAULT = frozenset({"incoming"})


class UnknownTone(ValueError):
    def __init__(self, name: str):
        super().__init__(f"unknown tone {name!r}; known: {', '.join(TONE_NAMES)}")
        self.name = name


def _check_name(name: str) -> None:
    if name not in TONE_NAMES:
        raise UnknownTone(name)


def _readable_wav(path: Path) -> bool:
    """True when `path` opens as a PCM WAV with at least one frame."""
    try:
        with wave.open(str(path), "rb") as w:
            return w.getnframes() > 0 and w.getnchannels() > 0
    except (OSError, EOFError, wave.Error) as exc:
        logger.warning("tones: ignoring unreadable user tone %s: %s", path, exc)
        return False


def resolve_tone(name: str, user_dir: Path | None, shipped_dir: Path = SHIPPED_TONES_DIR) -> Path:
    """The file to play for tone `name`: the user's `<name>.wav` when readable, else the
    shipped one. Raises UnknownTone for a name outside TONE_NAMES."""
    _check_name(name)
    filename = f"{name}.wav"
    if user_dir is not None:
        candidate = Path(user_dir) / filename
        if candidate.is_file() and _readable_wav(candidate):
            return candidate
    return Path(shipped_dir) / filename


@dataclass(frozen=True)
class ToneSetting:
    enabled: bool = True
    volume: float = DEFAULT_TONE_VOLUME


def _clamp_volume(volume: Any) -> float:
    v = float(volume)
    if math.isnan(v):
        raise ValueError("volume must be a number, not NaN")
    return min(1.0, max(0.0, v))


def _defaults() -> dict[str, ToneSetting]:
    return {name: ToneSetting(enabled=name not in _OFF_BY_DEFAULT) for name in TONE_NAMES}


@dataclass
class ToneSettings:
    """Per-tone volume (0.0–1.0, clamped) and enabled flag."""

    tones: dict[str, ToneSetting] = field(default_factory=_defaults)

    def get(self, name: str) -> ToneSetting:
        _check_name(name)
        return self.tones.get(name, ToneSetting())

    def set_volume(self, name: str, volume: float) -> float:
        """Set one tone's volume; returns the clamped value kept."""
        _check_name(name)
        v = _clamp_volume(volume)
        self.tones[name] = ToneSetting(self.get(name).enabled, v)
        return v

    def set_enabled(self, name: str, enabled: bool) -> None:
        _check_name(name)
        self.tones[name] = ToneSetting(bool(enabled), self.get(name).volume)

    def gain(self, name: str) -> float:
        """The linear gain to play `name` with: 0.0 when it is switched off."""
        s = self.get(name)
        return s.volume if s.enabled else 0.0

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """For the settings file."""
        return {n: {"enabled": s.enabled, "volume": s.volume} for n, s in self.tones.items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> ToneSettings:
        """From the settings file; unknown tones and bad values keep their defaults."""
        settings = cls()
        for name, entry in (data or {}).items():
            if name not in TONE_NAMES or not isinstance(entry, Mapping):
                continue
            if isinstance(entry.get("enabled"), bool):
                settings.set_enabled(name, entry["enabled"])
            try:
                if "volume" in entry and not isinstance(entry["volume"], bool):
                    settings.set_volume(name, entry["volume"])
            except (TypeError, ValueError, OverflowError):
                logger.warning("tones: ignoring bad volume %r for %s", entry.get("volume"), name)
        return settings
