"""Audio devices for the console: microphone capture, speaker mixing, tones.

Built on sounddevice (PortAudio); no Qt here. PortAudio's callbacks only copy samples;
everything else runs on the asyncio loop.
"""

from vpdesk.audio.capture import FRAME_SAMPLES, SAMPLE_RATE, Microphone, MicrophoneTrack
from vpdesk.audio.devices import (
    AudioDevice,
    AudioDeviceError,
    list_input_devices,
    list_output_devices,
    refresh_devices,
    resolve_device,
)
from vpdesk.audio.playback import PlaybackSink, Speaker
from vpdesk.audio.tone_player import TonePlayer

__all__ = [
    "FRAME_SAMPLES",
    "SAMPLE_RATE",
    "AudioDevice",
    "AudioDeviceError",
    "Microphone",
    "MicrophoneTrack",
    "PlaybackSink",
    "Speaker",
    "TonePlayer",
    "list_input_devices",
    "list_output_devices",
    "refresh_devices",
    "resolve_device",
]
