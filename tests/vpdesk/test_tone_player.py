"""TonePlayer: the shipped tones, user overrides and volumes, heard through a real
PulseAudio sink (tests/pulse.py) and checked against the WAV files."""

from __future__ import annotations

import asyncio
import wave
from pathlib import Path

import numpy as np
import pytest

from tests.audio_tools import aligned_correlation, read_wav, write_wav
from tests.pulse import SPEAKER_SINK, pulse  # noqa: F401 - the fixture
from vpdesk.audio.playback import SAMPLE_RATE, Speaker
from vpdesk.audio.tone_player import TonePlayer, decode_tone, resample_linear
from vpdesk.core.tones import SHIPPED_TONES_DIR, ToneSettings, UnknownTone

TALK_PERMIT = SHIPPED_TONES_DIR / "talk_permit.wav"


@pytest.fixture
def speaker(pulse):  # noqa: F811
    out = Speaker(SPEAKER_SINK)
    out.open()
    yield out
    out.close()


def rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))


def dominant_frequency(samples: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / SAMPLE_RATE)[np.argmax(spectrum)])


def sine(freq: float, seconds: float, rate: int, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return amplitude * np.sin(2 * np.pi * freq * t)


def write_stereo_wav(path: Path, left: np.ndarray, right: np.ndarray, rate: int) -> Path:
    frames = np.stack([left, right], axis=1)
    pcm = np.clip(np.round(frames * 32767), -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return path


async def heard(pulse, player: TonePlayer, name: str, seconds: float) -> tuple[bool, np.ndarray]:  # noqa: F811
    """Play tone `name` and record the speaker for `seconds`."""
    recording = pulse.start_recording()
    played = player.play(name)
    await asyncio.sleep(seconds)
    return played, recording.stop()


# --- decoding, no device ---------------------------------------------------------------


def test_decode_matches_the_shipped_wav():
    samples = decode_tone(TALK_PERMIT)
    assert samples.dtype == np.float32
    np.testing.assert_allclose(samples, read_wav(TALK_PERMIT) / 32768.0, atol=1e-6)


def test_decode_resamples_and_mixes_down(tmp_path):
    # 16 kHz stereo, a 500 Hz tone in the left channel only: 48 kHz mono at half level.
    left = sine(500.0, 0.25, 16000)
    path = write_stereo_wav(tmp_path / "t.wav", left, np.zeros_like(left), 16000)
    samples = decode_tone(path)
    assert len(samples) == pytest.approx(0.25 * SAMPLE_RATE, abs=3)
    assert dominant_frequency(samples) == pytest.approx(500.0, abs=5)
    assert np.abs(samples).max() == pytest.approx(0.25, rel=0.02)


def test_linear_resampling_keeps_the_waveform():
    x = sine(300.0, 0.1, 8000)
    y = resample_linear(x, 8000)
    expected = sine(300.0, 0.1, SAMPLE_RATE)
    assert len(y) == len(expected)
    assert np.abs(y[:-6] - expected[:-6]).max() < 0.02


def test_unknown_tone_name_raises():
    player = TonePlayer(Speaker(None), ToneSettings(), None)
    with pytest.raises(UnknownTone):
        player.play("air_horn")


# --- heard through the device --------------------------------------------------------


async def test_talk_permit_is_heard_as_shipped(pulse, speaker):  # noqa: F811
    settings = ToneSettings()
    settings.set_volume("talk_permit", 1.0)
    player = TonePlayer(speaker, settings, None)
    played, recorded = await heard(pulse, player, "talk_permit", 0.45)
    assert played is True
    assert player.played == ["talk_permit"]
    reference = read_wav(TALK_PERMIT)
    score, _ = aligned_correlation(reference, recorded * 32768.0)
    assert score >= 0.8, f"recording does not match talk_permit.wav (score {score:.3f})"
    # Its energy is there: volume 1.0 plays the file at its own level.
    assert rms(recorded) * np.sqrt(len(recorded)) == pytest.approx(
        rms(reference / 32768.0) * np.sqrt(len(reference)), rel=0.1
    )


async def test_disabled_tone_plays_nothing(pulse, speaker):  # noqa: F811
    settings = ToneSettings()
    settings.set_enabled("busy", False)
    player = TonePlayer(speaker, settings, None)
    played, recorded = await heard(pulse, player, "busy", 0.3)
    assert played is False
    assert player.played == []
    assert np.abs(recorded).max() < 1e-3
    # "incoming" is off by default.
    assert player.play("incoming") is False


async def test_user_folder_overrides_by_file_name(pulse, speaker, tmp_path):  # noqa: F811
    # The override is 22.05 kHz stereo: it must be resampled and mixed down too.
    tone = sine(600.0, 0.2, 22050)
    write_stereo_wav(tmp_path / "talk_permit.wav", tone, tone, 22050)
    settings = ToneSettings()
    settings.set_volume("talk_permit", 1.0)
    player = TonePlayer(speaker, settings, tmp_path)
    played, recorded = await heard(pulse, player, "talk_permit", 0.45)
    assert played
    loud = recorded[np.abs(recorded) > 0.05]
    assert len(loud) > 0, "nothing was heard"
    assert dominant_frequency(recorded) == pytest.approx(600.0, abs=10)
    assert np.abs(recorded).max() == pytest.approx(0.5, rel=0.1)
    # ... and it is not the shipped tone.
    shipped_score, _ = aligned_correlation(read_wav(TALK_PERMIT), recorded * 32768.0)
    assert shipped_score < 0.5


async def test_corrupt_override_falls_back_to_the_shipped_tone(pulse, speaker, tmp_path):  # noqa: F811
    (tmp_path / "talk_permit.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really")
    settings = ToneSettings()
    settings.set_volume("talk_permit", 1.0)
    player = TonePlayer(speaker, settings, tmp_path)
    played, recorded = await heard(pulse, player, "talk_permit", 0.45)
    assert played
    score, _ = aligned_correlation(read_wav(TALK_PERMIT), recorded * 32768.0)
    assert score >= 0.8, f"the shipped tone was not played (score {score:.3f})"


async def test_volume_scales_the_amplitude(pulse, speaker):  # noqa: F811
    settings = ToneSettings()
    settings.set_volume("end_of_tx", 0.8)
    player = TonePlayer(speaker, settings, None)
    _, loud = await heard(pulse, player, "end_of_tx", 0.35)
    settings.set_volume("end_of_tx", 0.2)
    _, quiet = await heard(pulse, player, "end_of_tx", 0.35)
    assert rms(quiet) > 0
    # RMS over the same-length windows: the ratio is the gain ratio.
    ratio = rms(loud) / rms(quiet)
    assert ratio == pytest.approx(4.0, rel=0.3)


async def test_reload_drops_the_cache_and_switches_folders(pulse, speaker, tmp_path):  # noqa: F811
    settings = ToneSettings()
    settings.set_volume("talk_permit", 1.0)
    player = TonePlayer(speaker, settings, None)
    assert player.play("talk_permit")
    await asyncio.sleep(0.3)  # let the shipped tone finish
    write_wav(tmp_path / "talk_permit.wav", sine(900.0, 0.2, SAMPLE_RATE) * 16000)
    player.reload(user_dir=tmp_path)
    _, recorded = await heard(pulse, player, "talk_permit", 0.45)
    assert dominant_frequency(recorded) == pytest.approx(900.0, abs=10)

    quiet = ToneSettings()
    quiet.set_enabled("talk_permit", False)
    player.reload(quiet)
    assert player.user_dir == tmp_path  # unchanged unless given
    assert player.play("talk_permit") is False
    assert player.played == ["talk_permit", "talk_permit"]


def test_played_history_is_capped():
    player = TonePlayer(Speaker(None), ToneSettings(), None)
    for _ in range(150):
        assert player.play("end_of_tx")  # the closed speaker drops the clip
    assert len(player.played) == 100
