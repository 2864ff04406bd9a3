"""Device listing and name resolution against a real PulseAudio (tests/pulse.py)."""

from __future__ import annotations

import asyncio

import pytest

from tests.pulse import MIC_SINK, SPEAKER_SINK, pulse  # noqa: F401 - the fixture
from vpdesk.audio.capture import Microphone
from vpdesk.audio.devices import (
    AudioDevice,
    AudioDeviceError,
    list_input_devices,
    list_output_devices,
    refresh_devices,
    resolve_device,
)
from vpdesk.audio.playback import Speaker


def names(devices: list[AudioDevice]) -> list[str]:
    return [d.name for d in devices]


def test_null_sinks_appear_as_devices(pulse):  # noqa: F811
    sinks = pulse.pactl("list", "short", "sinks")
    assert SPEAKER_SINK in sinks and MIC_SINK in sinks
    assert f"Default Source: {MIC_SINK}.monitor" in pulse.pactl("info")

    inputs, outputs = list_input_devices(), list_output_devices()
    assert MIC_SINK in names(inputs)
    assert SPEAKER_SINK in names(outputs)
    # Exactly one default of each kind, and it is a real entry of the list.
    assert sum(d.is_default for d in inputs) == 1
    assert sum(d.is_default for d in outputs) == 1
    assert all(d.inputs > 0 for d in inputs)
    assert all(d.outputs > 0 for d in outputs)
    assert len(set(names(outputs))) == len(outputs), "one entry per name"


def test_resolve_device_by_name_and_default(pulse):  # noqa: F811
    speaker = next(d for d in list_output_devices() if d.name == SPEAKER_SINK)
    assert resolve_device(SPEAKER_SINK, "output") == speaker.index
    # Case does not matter when nothing matches exactly.
    assert resolve_device(SPEAKER_SINK.upper(), "output") == speaker.index
    mic = next(d for d in list_input_devices() if d.name == MIC_SINK)
    assert resolve_device(MIC_SINK, "input") == mic.index
    # None means "let PortAudio use its default", which exists here.
    assert resolve_device(None, "input") is None
    assert resolve_device(None, "output") is None
    with pytest.raises(ValueError):
        resolve_device(None, "both")


def test_unknown_name_is_a_readable_error(pulse):  # noqa: F811
    with pytest.raises(AudioDeviceError) as err:
        resolve_device("USB Headset 9000", "input")
    assert str(err.value) == "Input device 'USB Headset 9000' not found"
    with pytest.raises(AudioDeviceError) as err:
        resolve_device("Nope", "output")
    assert str(err.value) == "Output device 'Nope' not found"


async def test_unknown_name_fails_open(pulse):  # noqa: F811
    mic = Microphone("USB Headset 9000", asyncio.get_running_loop())
    with pytest.raises(AudioDeviceError, match="not found"):
        mic.open()
    assert not mic.is_open
    speaker = Speaker("Nope")
    with pytest.raises(AudioDeviceError, match="not found"):
        speaker.open()
    assert not speaker.is_open


async def test_no_sound_server_means_audio_device_error(pulse):  # noqa: F811
    loop = asyncio.get_running_loop()
    with pulse.unreachable():
        # The PulseAudio-backed PCMs no longer open, so PortAudio drops them.
        assert MIC_SINK not in names(list_input_devices())
        mic = Microphone(None, loop)
        with pytest.raises(AudioDeviceError) as err:
            mic.open()
        message = str(err.value)
        # "No microphone found — listening only" on a machine without sound cards; a
        # machine whose ALSA still lists a card that fails to open says "busy".
        assert message.startswith(("No microphone found", "Microphone '")), message
        assert not mic.is_open
        mic.close()  # idempotent, also when never opened

        with pytest.raises(AudioDeviceError) as err:
            Microphone(MIC_SINK, loop).open()
        message = str(err.value)
        assert message.startswith("No microphone found") or MIC_SINK in message, message

        speaker = Speaker(None)
        with pytest.raises(AudioDeviceError) as err:
            speaker.open()
        assert str(err.value).startswith(("No speaker found", "Speaker '")), str(err.value)

    # Back on the live daemon, a refresh finds the devices again.
    assert MIC_SINK in names(list_input_devices())
    mic = Microphone(MIC_SINK, loop)
    mic.open()
    try:
        assert mic.is_open
    finally:
        mic.close()


async def test_refresh_refuses_while_a_stream_is_open(pulse):  # noqa: F811
    speaker = Speaker(SPEAKER_SINK)
    speaker.open()
    try:
        with pytest.raises(RuntimeError, match="stream"):
            refresh_devices()
    finally:
        speaker.close()
    refresh_devices()  # fine once closed
    assert SPEAKER_SINK in names(list_output_devices())


async def test_listed_device_that_fails_to_open_is_audio_device_error(pulse, monkeypatch):  # noqa: F811
    # The sound server goes away after PortAudio listed its devices (no refresh): the
    # device is still listed, opening it fails, as with a headset unplugged meanwhile.
    assert MIC_SINK in names(list_input_devices())
    monkeypatch.setenv("PULSE_SERVER", f"unix:{pulse.dir / 'gone'}")
    mic = Microphone(MIC_SINK, asyncio.get_running_loop())
    with pytest.raises(AudioDeviceError) as err:
        mic.open()
    assert str(err.value).startswith(f"Microphone '{MIC_SINK}' is busy or unavailable: ")
    assert not mic.is_open
    speaker = Speaker(SPEAKER_SINK)
    with pytest.raises(AudioDeviceError) as err:
        speaker.open()
    assert str(err.value).startswith(f"Speaker '{SPEAKER_SINK}' is busy or unavailable: ")
    assert not speaker.is_open
