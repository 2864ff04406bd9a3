"""The audio test tools measure what they claim: the media tests trust these numbers."""

from __future__ import annotations

import asyncio
import fractions
import wave

import av
import numpy as np
import pytest
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from tests.audio_tools import (
    FRAME_SAMPLES,
    RATE,
    TrackRecorder,
    WavTrack,
    aligned_correlation,
    delayed,
    longest_gap_ms,
    read_wav,
    speech_wav,
    voiced_extent,
    write_wav,
)

TEXT_A = "Unit four, proceed to the north gate and report."
TEXT_B = "Dispatch copies, all clear on channel two."


@pytest.fixture(scope="module")
def speech_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("speech")


@pytest.fixture(scope="module")
def speech_a(speech_dir) -> np.ndarray:
    return read_wav(speech_wav(speech_dir, TEXT_A, seconds_min=2.0))


@pytest.fixture(scope="module")
def speech_b(speech_dir) -> np.ndarray:
    return read_wav(speech_wav(speech_dir, TEXT_B, seconds_min=2.0))


# --- speech and WAV files ------------------------------------------------------------


def test_speech_wav_is_48k_mono_speech(speech_dir):
    path = speech_wav(speech_dir, TEXT_A, seconds_min=2.0)
    with wave.open(str(path), "rb") as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (48_000, 1, 2)
        assert w.getnframes() >= 2.0 * 48_000
    samples = read_wav(path).astype(np.float64)
    start, end = voiced_extent(samples)
    voiced = samples[start:end]
    assert np.sqrt(np.mean(voiced**2)) > 1000, "speech should be well above the noise floor"
    # Speech energy sits in the voice band, not at DC or near Nyquist.
    spectrum = np.abs(np.fft.rfft(voiced)) ** 2
    freqs = np.fft.rfftfreq(len(voiced), 1 / RATE)
    band = spectrum[(freqs >= 100) & (freqs <= 4000)].sum()
    assert band / spectrum.sum() > 0.7


def test_speech_wav_is_cached_and_lengthened(speech_dir):
    first = speech_wav(speech_dir, "Copy that.", seconds_min=3.0)
    mtime = first.stat().st_mtime_ns
    again = speech_wav(speech_dir, "Copy that.", seconds_min=3.0)
    assert again == first and again.stat().st_mtime_ns == mtime
    # A short phrase is repeated until it lasts seconds_min.
    assert len(read_wav(first)) >= 3.0 * RATE
    assert speech_wav(speech_dir, "Copy that.", seconds_min=0.0) != first


def test_wav_round_trip(tmp_path):
    rng = np.random.default_rng(7)
    samples = rng.integers(-32768, 32767, size=48_123, dtype=np.int16)
    path = write_wav(tmp_path / "x.wav", samples)
    back = read_wav(path)
    assert back.dtype == np.int16
    np.testing.assert_array_equal(back, samples)
    # Floats are rounded and clipped, not wrapped.
    write_wav(tmp_path / "f.wav", np.array([40000.0, -40000.0, 1.6]))
    np.testing.assert_array_equal(read_wav(tmp_path / "f.wav"), [32767, -32768, 2])


# --- correlation and gaps ------------------------------------------------------------


def test_correlation_finds_a_shifted_copy(speech_a):
    recorded = delayed(speech_a, 12_345, total=len(speech_a) + RATE)
    score, lag = aligned_correlation(speech_a, recorded)
    assert score > 0.999
    assert lag == 12_345


def test_correlation_finds_an_early_copy(speech_a):
    # The recording started late: its first 0.1 s of the reference are missing.
    score, lag = aligned_correlation(speech_a, speech_a[4800:])
    assert lag == -4800
    assert score > 0.9


def test_correlation_of_unrelated_sound_is_low(speech_a, speech_b):
    score, _ = aligned_correlation(speech_a, speech_b)
    assert score < 0.3
    noise = np.random.default_rng(1).normal(0, 3000, len(speech_a) + RATE)
    score, _ = aligned_correlation(speech_a, noise)
    assert score < 0.3
    score, _ = aligned_correlation(speech_a, np.zeros(len(speech_a), dtype=np.int16))
    assert score == 0.0


def test_correlation_survives_attenuation_and_noise(speech_a):
    rng = np.random.default_rng(2)
    recorded = delayed(speech_a, 5_000) * 0.3 + rng.normal(0, 200, len(speech_a) + 5_000)
    score, lag = aligned_correlation(speech_a, recorded)
    assert score > 0.9
    assert abs(lag - 5_000) <= 1


def test_correlation_penalizes_a_truncated_recording(speech_a):
    half = delayed(speech_a, 1000)[: 1000 + len(speech_a) // 2]
    score, lag = aligned_correlation(speech_a, half)
    assert lag == 1000
    assert score < 0.85, "missing half the speech must show in the score"


def test_longest_gap_sees_a_dropout(speech_a):
    baseline = longest_gap_ms(speech_a)
    start, end = voiced_extent(speech_a)
    middle = (start + end) // 2
    dropped = speech_a.copy()
    dropped[middle : middle + int(0.8 * RATE)] = 0
    assert longest_gap_ms(dropped) >= 800
    assert baseline < 800
    # Silence before and after the voice is not a gap.
    padded = np.concatenate([np.zeros(RATE, np.int16), speech_a, np.zeros(RATE, np.int16)])
    assert longest_gap_ms(padded) == pytest.approx(baseline)


# --- WavTrack ---------------------------------------------------------------------------


async def test_wav_track_paces_frames_in_real_time(speech_a):
    track = WavTrack(speech_a)
    loop = asyncio.get_running_loop()
    frames = [await track.recv()]
    t0 = loop.time()
    for _ in range(25):
        frames.append(await track.recv())
    elapsed = loop.time() - t0
    assert 0.45 <= elapsed <= 1.0, f"25 frames of 20 ms took {elapsed:.3f} s"
    assert all(f.samples == FRAME_SAMPLES and f.sample_rate == RATE for f in frames)
    assert all(f.layout.name == "mono" and f.format.name == "s16" for f in frames)
    assert [f.pts for f in frames] == [i * FRAME_SAMPLES for i in range(26)]
    assert frames[0].time_base == fractions.Fraction(1, RATE)
    played = np.concatenate([f.to_ndarray().reshape(-1) for f in frames])
    np.testing.assert_array_equal(played, speech_a[: len(played)])
    track.stop()


async def test_wav_track_waits_for_start_then_ends_in_silence():
    tone = (np.sin(np.arange(3 * FRAME_SAMPLES) * 0.05) * 10_000).astype(np.int16)
    track = WavTrack(tone, autostart=False)
    before = [await track.recv() for _ in range(2)]
    assert all(not f.to_ndarray().any() for f in before)
    track.start()
    played = [await track.recv() for _ in range(3)]
    assert track.on_done.is_set()
    played_samples = np.concatenate([f.to_ndarray().reshape(-1) for f in played])
    np.testing.assert_array_equal(played_samples, tone)
    after = await track.recv()
    assert not after.to_ndarray().any()
    assert after.pts == 5 * FRAME_SAMPLES, "pts keeps counting through silence"
    track.restart()
    assert not track.on_done.is_set()
    replayed = (await track.recv()).to_ndarray().reshape(-1)
    np.testing.assert_array_equal(replayed, tone[:FRAME_SAMPLES])
    track.stop()


async def test_wav_track_end_track_ends_the_stream():
    track = WavTrack(np.ones(FRAME_SAMPLES + 10, np.int16), end_track=True)
    first, padded = await track.recv(), await track.recv()
    assert padded.to_ndarray().reshape(-1)[10:].any() == False  # noqa: E712 - zero padding
    with pytest.raises(MediaStreamError):
        await track.recv()
    assert track.readyState == "ended"


# --- TrackRecorder ---------------------------------------------------------------------


class StereoFrames(MediaStreamTrack):
    """Frames shaped like aiortc's Opus decoder output: 48 kHz stereo s16, given pts."""

    kind = "audio"

    def __init__(self, chunks: list[tuple[int, np.ndarray, np.ndarray]]):
        super().__init__()
        self.chunks = list(chunks)

    async def recv(self):
        if not self.chunks:
            self.stop()
            raise MediaStreamError
        pts, left, right = self.chunks.pop(0)
        interleaved = np.stack([left, right], axis=1).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(
            interleaved.astype(np.int16), format="s16", layout="stereo"
        )
        frame.sample_rate = RATE
        frame.pts = pts
        frame.time_base = fractions.Fraction(1, RATE)
        await asyncio.sleep(0)
        return frame


async def test_recorder_downmixes_stereo_and_fills_pts_gaps():
    n = FRAME_SAMPLES
    left, right = np.full(n, 1000, np.int16), np.full(n, 3000, np.int16)
    start = (1 << 32) - n  # the second frame's pts wraps around 2**32
    track = StereoFrames([(start, left, right), (0, left, right), (2 * n, left, right)])
    recorder = TrackRecorder(track, voiced_threshold=1500).start()
    await asyncio.wait_for(recorder.ended.wait(), 2)
    samples = await recorder.stop()
    assert recorder.frames_received == 3
    # One lost frame (pts n) is filled with silence, the wrap is not a gap.
    assert len(samples) == 4 * n
    assert (samples[: 2 * n] == 2000).all() and not samples[2 * n : 3 * n].any()
    assert (samples[3 * n :] == 2000).all()
    assert [index for _, index in recorder.arrivals] == [0, n, 3 * n]
    assert recorder.voiced.is_set() and recorder.first_voiced_at == recorder.arrivals[0][0]


async def test_recorder_records_a_wav_track(speech_a):
    clip = speech_a[: 15 * FRAME_SAMPLES]
    track = WavTrack(clip, end_track=True)
    recorder = TrackRecorder(track).start()
    await asyncio.wait_for(recorder.ended.wait(), 3)
    np.testing.assert_array_equal(recorder.samples()[: len(clip)], clip)
    recorder.clear()
    assert len(recorder.samples()) == 0 and not recorder.arrivals
    await recorder.stop()


async def test_recorder_stop_cancels_a_waiting_task():
    track = WavTrack(np.zeros(FRAME_SAMPLES, np.int16))
    recorder = TrackRecorder(track).start()
    await recorder.wait_frames(3, timeout=2)
    await recorder.stop()
    assert recorder.ended.is_set()
    count = recorder.frames_received
    await asyncio.sleep(0.1)
    assert recorder.frames_received == count
    track.stop()
