"""Which audio devices exist, and turning a saved device name into a PortAudio index.

PortAudio (through sounddevice) enumerates devices once, when it is initialised; a
headset plugged in later, or a changed PULSE_SERVER, is only seen after
refresh_devices(). A device is remembered in the settings by its name (indices change
between runs); `None` means "the system default".

Every failure a dispatcher can hit (no microphone, busy device, unknown name) surfaces
as AudioDeviceError, whose text is a sentence fit for the UI as it is.

Call from the event loop thread (or any one thread): PortAudio's device queries are
not meant to run concurrently with refresh_devices().
"""

from __future__ import annotations

import logging
import weakref
from dataclasses import dataclass
from typing import Any

import sounddevice as sd

logger = logging.getLogger(__name__)

INPUT = "input"
OUTPUT = "output"

# Streams that are open right now: re-initialising PortAudio under them would free
# their native handles (a crash on the next close), so refresh_devices() refuses.
_open_streams: weakref.WeakSet[Any] = weakref.WeakSet()


class AudioDeviceError(RuntimeError):
    """A device problem, worded for the dispatcher: str(e) goes to the UI unchanged."""


@dataclass(frozen=True)
class AudioDevice:
    index: int
    name: str
    inputs: int
    outputs: int
    is_default: bool


def _check_kind(kind: str) -> None:
    if kind not in (INPUT, OUTPUT):
        raise ValueError(f"device kind must be {INPUT!r} or {OUTPUT!r}, not {kind!r}")


def _default_index(kind: str) -> int | None:
    """PortAudio's default device of `kind`, or None when it has none."""
    try:
        info = sd.query_devices(kind=kind)
    except sd.PortAudioError:
        return None
    index = info.get("index") if isinstance(info, dict) else None
    return int(index) if index is not None and index >= 0 else None


def _default_hostapi() -> int | None:
    try:
        return int(sd.default.hostapi)
    except (sd.PortAudioError, TypeError, ValueError):
        return None


def _list(kind: str) -> list[AudioDevice]:
    _check_kind(kind)
    channels_key = "max_input_channels" if kind == INPUT else "max_output_channels"
    default = _default_index(kind)
    preferred_api = _default_hostapi()
    by_name: dict[str, list[dict[str, Any]]] = {}
    for info in sd.query_devices():
        if info[channels_key] > 0:
            by_name.setdefault(str(info["name"]), []).append(info)
    # Windows lists one device under several host APIs with the same name: keep one
    # entry per name: the system default, else the default host API's, else the first.
    chosen = [
        next(
            (i for i in same if i["index"] == default),
            next((i for i in same if i["hostapi"] == preferred_api), same[0]),
        )
        for same in by_name.values()
    ]
    return [
        AudioDevice(
            index=int(info["index"]),
            name=str(info["name"]),
            inputs=int(info["max_input_channels"]),
            outputs=int(info["max_output_channels"]),
            is_default=info["index"] == default,
        )
        for info in sorted(chosen, key=lambda i: i["index"])
    ]


def list_input_devices() -> list[AudioDevice]:
    """Devices with at least one input channel, in PortAudio order."""
    return _list(INPUT)


def list_output_devices() -> list[AudioDevice]:
    """Devices with at least one output channel, in PortAudio order."""
    return _list(OUTPUT)


def _none_found(kind: str) -> AudioDeviceError:
    if kind == INPUT:
        return AudioDeviceError("No microphone found — listening only")
    return AudioDeviceError("No speaker found")


def resolve_device(name: str | None, kind: str) -> int | None:
    """The PortAudio index to open for the device called `name`.

    `None` asks for the system default and returns None when PortAudio has one (let
    PortAudio pick it), else the first device of that kind. Raises AudioDeviceError
    when there is no device of that kind at all, or none called `name` (an exact
    match wins over a case-insensitive one).
    """
    _check_kind(kind)
    devices = _list(kind)
    if not devices:
        raise _none_found(kind)
    if name is None:
        return None if _default_index(kind) is not None else devices[0].index
    for device in devices:
        if device.name == name:
            return device.index
    for device in devices:
        if device.name.casefold() == name.casefold():
            return device.index
    label = "Input" if kind == INPUT else "Output"
    raise AudioDeviceError(f"{label} device '{name}' not found")


def device_label(index: int | None, kind: str) -> str:
    """A name for messages: the device's own name, or "default"."""
    try:
        info = sd.query_devices(index if index is not None else None, kind=kind)
        return str(info["name"])
    except (sd.PortAudioError, ValueError, TypeError):
        return "default"


def refresh_devices() -> None:
    """Re-initialise PortAudio so devices plugged in since (and a changed
    PULSE_SERVER) are seen. Only when no Microphone or Speaker stream is open:
    raises RuntimeError otherwise."""
    still_open = [s for s in _open_streams if not s.closed]
    if still_open:
        raise RuntimeError(f"refresh_devices() with {len(still_open)} audio stream(s) open")
    sd._terminate()  # sounddevice has no public re-scan; this pair is its documented way
    sd._initialize()
    logger.info(
        "audio devices: %d input, %d output after refresh",
        len(list_input_devices()),
        len(list_output_devices()),
    )


def register_stream(stream: Any) -> None:
    """Note an open sounddevice stream (for refresh_devices' safety check)."""
    _open_streams.add(stream)


def start_stream(kind: str, device: str | None, what: str, **settings: Any) -> tuple[Any, str]:
    """Open and start a mono stream of `kind` on the named device (None: the default).

    `what` names the device to the dispatcher ("Microphone", "Speaker"); `settings` go
    to sounddevice (samplerate, blocksize, dtype, latency, callback). Returns the stream
    and the device's label. Raises AudioDeviceError when the device is missing, busy or
    refuses the settings. Call on the thread that owns the stream's object.
    """
    index = resolve_device(device, kind)
    label = device or device_label(index, kind)
    stream_class = sd.InputStream if kind == INPUT else sd.OutputStream
    try:
        stream = stream_class(device=index, channels=1, **settings)
        stream.start()
    except (sd.PortAudioError, ValueError) as exc:
        raise AudioDeviceError(f"{what} '{label}' is busy or unavailable: {exc}") from exc
    register_stream(stream)
    logger.info("%s %r: open (device index %s)", what.lower(), label, index)
    return stream, label


def stop_stream(stream: Any, what: str, device: str | None) -> None:
    """Abort and close a stream from start_stream; a device that errors on the way out
    (unplugged) is logged, not raised: closing must always succeed."""
    try:
        stream.abort()
        stream.close()
    except sd.PortAudioError as exc:
        logger.warning("%s %r: error while closing: %s", what.lower(), device, exc)
