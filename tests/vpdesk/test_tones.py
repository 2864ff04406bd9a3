"""The shipped tone files, the script that makes them, and tone resolution/settings."""

from __future__ import annotations

import importlib.util
import itertools
import wave
from pathlib import Path

import numpy as np
import pytest

from vpdesk.core.tones import (
    SHIPPED_TONES_DIR,
    TONE_NAMES,
    ToneSettings,
    UnknownTone,
    resolve_tone,
)

TONES_DIR = Path(__file__).resolve().parents[2] / "server" / "tones"
RATE = 48_000

# (min, max) duration in seconds per tone.
DURATIONS = {
    "talk_permit": (0.150, 0.200),
    "end_of_tx": (0.100, 0.140),
    "busy": (0.550, 0.650),
    "incoming": (0.120, 0.180),
    "emergency": (1.100, 1.300),
}


def read(name: str) -> tuple[wave._wave_params, np.ndarray]:
    with wave.open(str(TONES_DIR / f"{name}.wav"), "rb") as w:
        params = w.getparams()
        data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float64) / 32768.0
    return params, data


def dominant_hz(x: np.ndarray) -> float:
    n = 1 << 17  # zero-padded: ~0.37 Hz bins
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x)), n=n))
    return float(np.fft.rfftfreq(n, 1.0 / RATE)[spectrum.argmax()])


def test_shipped_dir_points_at_the_server_package_s_tones():
    assert SHIPPED_TONES_DIR == TONES_DIR


@pytest.mark.parametrize("name", TONE_NAMES)
def test_tone_format_duration_and_peak(name):
    params, x = read(name)
    assert (params.nchannels, params.sampwidth, params.framerate) == (1, 2, RATE)
    lo, hi = DURATIONS[name]
    assert lo <= len(x) / RATE <= hi
    peak_dbfs = 20 * np.log10(np.abs(x).max())
    assert -7.0 <= peak_dbfs <= -5.0


@pytest.mark.parametrize("name", TONE_NAMES)
def test_tone_has_no_clicks(name):
    _, x = read(name)
    ms = RATE // 1000
    # Faded in and out: the first and last millisecond stay well below the peak...
    assert abs(x[0]) < 0.002 and abs(x[-1]) < 0.002
    assert np.abs(x[:ms]).max() < 0.1
    assert np.abs(x[-ms:]).max() < 0.1
    # ...and no jump anywhere: a 1.5 kHz sine at -6 dBFS moves at most ~0.1 per sample;
    # a phase or amplitude discontinuity would jump by far more.
    assert np.abs(np.diff(x)).max() < 0.15


def test_dominant_frequencies_are_distinct():
    dominant = {name: dominant_hz(read(name)[1]) for name in TONE_NAMES}
    for a, b in itertools.combinations(TONE_NAMES, 2):
        assert abs(dominant[a] - dominant[b]) >= 100.0, (a, b, dominant)
    # Busy is the low one.
    assert dominant["busy"] < 500.0
    assert all(dominant["busy"] < f for n, f in dominant.items() if n != "busy")


def test_talk_permit_rises_and_end_of_tx_falls():
    _, permit = read("talk_permit")
    _, end = read("end_of_tx")
    third = len(permit) // 3
    assert dominant_hz(permit[-third:]) > dominant_hz(permit[:third]) + 200
    third = len(end) // 3
    assert dominant_hz(end[:third]) > dominant_hz(end[-third:]) + 100


def test_busy_is_three_beeps():
    _, x = read("busy")
    ms = RATE // 1000
    # Envelope per 10 ms window; count rising edges past half the peak.
    win = 10 * ms
    env = np.array([np.abs(x[i : i + win]).max() for i in range(0, len(x) - win + 1, win)])
    on = env > 0.5 * env.max()
    onsets = int(on[0]) + int(np.count_nonzero(on[1:] & ~on[:-1]))
    assert onsets == 3


def test_emergency_alternates_two_tones():
    _, x = read("emergency")
    seg = RATE // 10  # 100 ms per step

    def step(k: int) -> float:  # the middle half of step k, clear of the glides
        return dominant_hz(x[k * seg + seg // 4 : (k + 1) * seg - seg // 4])

    assert abs(step(1) - step(2)) > 200.0
    assert step(3) == pytest.approx(step(1), abs=30.0)
    assert step(4) == pytest.approx(step(2), abs=30.0)


def test_committed_wavs_match_the_script(tmp_path):
    spec = importlib.util.spec_from_file_location("make_tones", TONES_DIR / "make_tones.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    written = module.main(tmp_path)
    assert sorted(p.name for p in written) == sorted(f"{n}.wav" for n in TONE_NAMES)
    for path in written:
        assert path.read_bytes() == (TONES_DIR / path.name).read_bytes(), path.name


# --- resolution --------------------------------------------------------------------


def write_wav(path: Path, frames: int = 480) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(b"\x00\x00" * frames)


def test_resolve_uses_shipped_without_user_dir():
    for name in TONE_NAMES:
        path = resolve_tone(name, None, TONES_DIR)
        assert path == TONES_DIR / f"{name}.wav"
        assert path.is_file()


def test_user_file_overrides_by_name(tmp_path):
    write_wav(tmp_path / "busy.wav")
    assert resolve_tone("busy", tmp_path, TONES_DIR) == tmp_path / "busy.wav"
    # Other tones are not in the user folder: shipped ones.
    assert resolve_tone("talk_permit", tmp_path, TONES_DIR) == TONES_DIR / "talk_permit.wav"


def test_unreadable_or_missing_user_file_falls_back(tmp_path):
    (tmp_path / "busy.wav").write_bytes(b"not a wav at all")
    write_wav(tmp_path / "end_of_tx.wav", frames=0)  # a header and no sound
    (tmp_path / "incoming.wav").mkdir()  # a folder by that name
    assert resolve_tone("busy", tmp_path, TONES_DIR) == TONES_DIR / "busy.wav"
    assert resolve_tone("end_of_tx", tmp_path, TONES_DIR) == TONES_DIR / "end_of_tx.wav"
    assert resolve_tone("incoming", tmp_path, TONES_DIR) == TONES_DIR / "incoming.wav"
    assert resolve_tone("emergency", tmp_path / "nope", TONES_DIR) == TONES_DIR / "emergency.wav"


def test_unknown_tone_name_rejected():
    with pytest.raises(UnknownTone):
        resolve_tone("fanfare", None, TONES_DIR)


# --- settings ----------------------------------------------------------------------


def test_tone_settings_defaults():
    s = ToneSettings()
    assert s.get("incoming").enabled is False
    assert s.gain("incoming") == 0.0
    for name in ("talk_permit", "end_of_tx", "busy", "emergency"):
        assert s.get(name).enabled is True
        assert 0.0 < s.gain(name) <= 1.0


def test_tone_settings_volume_clamped_and_enable():
    s = ToneSettings()
    assert s.set_volume("busy", 3.0) == 1.0
    assert s.set_volume("busy", -1.0) == 0.0
    s.set_volume("talk_permit", 0.25)
    s.set_enabled("incoming", True)
    assert s.gain("talk_permit") == 0.25
    assert s.gain("incoming") > 0.0
    s.set_enabled("talk_permit", False)
    assert s.gain("talk_permit") == 0.0
    assert s.get("talk_permit").volume == 0.25  # switching off keeps the volume
    with pytest.raises(UnknownTone):
        s.set_volume("fanfare", 0.5)


def test_tone_settings_round_trip_and_bad_input():
    s = ToneSettings()
    s.set_volume("emergency", 0.9)
    s.set_enabled("incoming", True)
    again = ToneSettings.from_dict(s.to_dict())
    assert again == s
    junk = ToneSettings.from_dict(
        {"busy": {"volume": "loud", "enabled": "yes"}, "fanfare": {"volume": 1.0}}
    )
    assert junk == ToneSettings()
