"""The Speaker and its sinks: the jitter rules on their own, then real playback into
PulseAudio's null sink, recorded from its monitor (tests/pulse.py), including a
channel's RTP through ChannelReceiver's jitter buffer, FEC and concealment."""

from __future__ import annotations

import asyncio
import struct

import numpy as np
import pytest

from tests.audio_tools import aligned_correlation, read_wav, speech_wav
from tests.pulse import SPEAKER_SINK, pulse  # noqa: F401 - the fixture
from tests.vpdesk.test_audio_opus import decode_all, encode
from vpdesk.audio.playback import SAMPLE_RATE, SinkState, Speaker
from vpdesk.media.receive import ChannelReceiver

SPEECH = "Dispatch copies, all clear on channel two."
CHUNK = 960  # 20 ms, as frames arrive from the network


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> np.ndarray:
    path = speech_wav(tmp_path_factory.mktemp("speech"), SPEECH, seconds_min=1.5)
    return read_wav(path).astype(np.float32) / 32768.0


@pytest.fixture
def speaker(pulse):  # noqa: F811
    out = Speaker(SPEAKER_SINK)
    out.open()
    yield out
    out.close()


def sine(freq: float, seconds: float, amplitude: float) -> np.ndarray:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def amplitude_at(samples: np.ndarray, freq: float) -> float:
    """Amplitude of the `freq` component (Hann-windowed FFT, ±5 Hz)."""
    window = np.hanning(len(samples))
    spectrum = np.abs(np.fft.rfft(samples * window)) * 2 / window.sum()
    freqs = np.fft.rfftfreq(len(samples), 1 / SAMPLE_RATE)
    band = (freqs > freq - 5) & (freqs < freq + 5)
    return float(spectrum[band].max())


def loud_part(samples: np.ndarray, threshold: float = 0.01) -> np.ndarray:
    loud = np.flatnonzero(np.abs(samples) > threshold)
    assert len(loud) > 0, "the recording is silent"
    return samples[loud[0] : loud[-1] + 1]


async def write_in_real_time(sink, samples: np.ndarray) -> None:
    """Write `samples` in 20 ms chunks, paced by the loop clock (as from the network)."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    for offset in range(0, len(samples), CHUNK):
        sink.write(samples[offset : offset + CHUNK])
        delay = start + (offset + CHUNK) / SAMPLE_RATE - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)


async def drain(sink, speaker, timeout: float = 3.0) -> None:
    """Wait until `sink` has played everything written to it."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while sink.buffered_ms > 0:
        assert loop.time() < deadline, (
            f"sink still holds {sink.buffered_ms:.0f} ms ({sink.state}); "
            f"speaker callbacks={speaker.callbacks} open={speaker.is_open}"
        )
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.15)  # what PortAudio and PulseAudio still hold


# --- the jitter rules, without a device ------------------------------------------------


def test_sink_waits_for_prefill_then_plays():
    speaker = Speaker(None, prefill_ms=40.0)
    sink = speaker.sink("ch1")
    block = np.zeros(480, dtype=np.float32)
    sink.write(np.full(960, 0.5, dtype=np.float32))  # 20 ms < prefill
    assert sink._pull(block) is False
    sink.write(np.full(960, 0.25, dtype=np.float32))  # now 40 ms
    assert sink._pull(block) is True
    assert sink.state is SinkState.PLAYING
    assert np.all(block == 0.5)
    assert sink.buffered_ms == pytest.approx(30.0)


def test_a_short_burst_plays_after_prefill_of_waiting():
    speaker = Speaker(None, prefill_ms=40.0)
    sink = speaker.sink("ch1")
    block = np.zeros(480, dtype=np.float32)
    sink.write(np.full(480, 0.5, dtype=np.float32))  # one 10 ms frame, then nothing
    pulls = [sink._pull(block) for _ in range(5)]
    # Silent for ~40 ms of stream time (4 blocks of 10 ms), then it plays.
    assert pulls == [False] * 4 + [True]
    assert np.all(block == 0.5)
    # Next block it runs dry (zeros) and goes back to prefilling: silent.
    assert sink._pull(block) is True and np.all(block == 0.0)
    assert sink.state is SinkState.FILLING
    assert sink._pull(block) is False
    assert speaker.underruns == 0  # nothing came after: the end of a burst, not a starve


def test_running_dry_mid_burst_counts_an_underrun():
    speaker = Speaker(None, prefill_ms=20.0)
    sink = speaker.sink("ch1")
    block = np.zeros(480, dtype=np.float32)
    sink.write(np.zeros(960, dtype=np.float32))
    assert sink._pull(block) and sink._pull(block)
    assert sink._pull(block) and sink.state is SinkState.FILLING  # dry
    assert speaker.underruns == 0
    sink.write(np.zeros(960, dtype=np.float32))  # the burst goes on: it was starved
    assert speaker.underruns == 1


def test_a_new_transmission_right_after_the_last_is_not_an_underrun():
    speaker = Speaker(None, prefill_ms=20.0)
    sink = speaker.sink("ch1")
    block = np.zeros(480, dtype=np.float32)
    sink.write(np.zeros(960, dtype=np.float32))
    sink.end_of_burst()  # floor_idle arrived while the last audio was still buffered
    assert sink._pull(block) and sink._pull(block)
    assert sink._pull(block) and sink.state is SinkState.FILLING  # dry, as expected
    sink.write(np.zeros(960, dtype=np.float32))  # the next talker, 0 s later
    assert speaker.underruns == 0
    # That new burst starving mid-way still counts.
    sink.write(np.zeros(960, dtype=np.float32))
    while sink._pull(block) and sink.state is SinkState.PLAYING:
        pass
    sink.write(np.zeros(960, dtype=np.float32))
    assert speaker.underruns == 1


def test_closed_speaker_keeps_only_the_newest_audio():
    speaker = Speaker(None, max_buffer_ms=200.0)
    assert not speaker.is_open
    sink = speaker.sink("ch1")
    ramp = np.arange(SAMPLE_RATE, dtype=np.float32)  # 1 s, each sample its index
    for offset in range(0, len(ramp), CHUNK):
        sink.write(ramp[offset : offset + CHUNK])
        assert sink.buffered_ms <= 200.0
    assert sink.buffered_ms == pytest.approx(200.0)
    # What stays is the newest 200 ms.
    block = np.zeros(480, dtype=np.float32)
    assert sink._pull(block)
    assert block[0] == SAMPLE_RATE - 9600
    speaker.play_clip(np.ones(480, dtype=np.float32))  # dropped, no error
    speaker.close()  # idempotent when never opened


def test_sinks_are_get_or_create_and_gain_is_clamped():
    speaker = Speaker(None)
    a = speaker.sink("a")
    assert speaker.sink("a") is a
    assert speaker.sink("b") is not a
    a.gain = 5.0
    assert a.gain == 2.0
    a.gain = -1.0
    assert a.gain == 0.0
    speaker.remove_sink("a")
    speaker.remove_sink("a")  # idempotent
    assert speaker.sink("a") is not a


class FrameList:
    """A frame source (what ChannelReceiver is to a sink) that hands out given frames."""

    def __init__(self, frames):
        self.frames = list(frames)
        self.underruns = 0
        self.buffered_ms = 0.0
        self.ended = self.resets = 0

    def next_frame(self):
        return self.frames.pop(0) if self.frames else None

    def end_of_burst(self):
        self.ended += 1

    def reset(self):
        self.resets += 1


def test_an_attached_source_is_pulled_a_frame_at_a_time():
    speaker = Speaker(None)
    sink = speaker.sink("ch1")
    source = FrameList([np.full(960, 0.5, np.float32), np.full(960, 0.25, np.float32)])
    sink.attach(source)
    block = np.zeros(480, dtype=np.float32)
    assert sink._pull(block) and np.all(block == 0.5)  # no prefill: at once
    assert len(source.frames) == 1  # half of the first frame waits for the next block
    assert sink.buffered_ms == pytest.approx(10.0)
    assert sink._pull(block) and np.all(block == 0.5)
    assert sink._pull(block) and np.all(block == 0.25)
    assert sink.state is SinkState.PLAYING
    assert sink._pull(block) and np.all(block == 0.25)
    assert sink._pull(block) is False  # the source has nothing: silent
    assert sink.state is SinkState.FILLING
    source.underruns = 2  # the source's own count reaches the speaker's
    sink._pull(block)
    assert speaker.underruns == 2
    sink.end_of_burst()
    sink.clear()
    assert (source.ended, source.resets) == (1, 1)
    sink.attach(None)
    assert sink.source is None and sink._pull(block) is False


def test_a_short_frame_source_is_padded_with_zeros():
    speaker = Speaker(None)
    sink = speaker.sink("ch1")
    sink.attach(FrameList([np.full(240, 0.5, np.float32)]))
    block = np.ones(480, dtype=np.float32)
    assert sink._pull(block)
    assert np.all(block[:240] == 0.5) and np.all(block[240:] == 0.0)


# --- real playback ---------------------------------------------------------------------


async def test_sink_plays_speech_through_the_device(pulse, speaker, speech):  # noqa: F811
    sink = speaker.sink("ch1")
    recording = pulse.start_recording()
    await write_in_real_time(sink, speech)
    await drain(sink, speaker)
    recorded = recording.stop()
    score, _ = aligned_correlation(speech, recorded)
    assert score >= 0.8, f"played audio does not match the speech (score {score:.3f})"
    assert speaker.callbacks > 0
    assert np.abs(recorded).max() <= 1.0


async def test_muted_sink_is_silent(pulse, speaker, speech):  # noqa: F811
    sink = speaker.sink("muted")
    sink.gain = 0.0
    recording = pulse.start_recording()
    await write_in_real_time(sink, speech[: SAMPLE_RATE // 2])
    await drain(sink, speaker)
    recorded = recording.stop()
    assert len(recorded) > SAMPLE_RATE // 4
    assert np.abs(recorded).max() < 1e-3
    assert sink.buffered_ms == 0.0  # its audio was consumed, only not heard


async def test_two_sinks_mix(pulse, speaker):  # noqa: F811
    low, high = speaker.sink("low"), speaker.sink("high")
    low.gain = 0.5
    high.gain = 1.0
    recording = pulse.start_recording()
    await asyncio.gather(
        write_in_real_time(low, sine(440.0, 0.8, 0.6)),
        write_in_real_time(high, sine(1000.0, 0.8, 0.2)),
    )
    await drain(low, speaker)
    await drain(high, speaker)
    recorded = loud_part(recording.stop())
    middle = recorded[len(recorded) // 4 : 3 * len(recorded) // 4]
    assert amplitude_at(middle, 440.0) == pytest.approx(0.6 * 0.5, rel=0.2)
    assert amplitude_at(middle, 1000.0) == pytest.approx(0.2 * 1.0, rel=0.2)


async def test_writing_too_fast_keeps_latency_bounded(pulse, speaker, speech):  # noqa: F811
    sink = speaker.sink("burst")
    for offset in range(0, len(speech), CHUNK):  # seconds of audio in one go
        sink.write(speech[offset : offset + CHUNK])
        assert sink.buffered_ms <= 200.0
    assert sink.dropped_samples > 0
    await drain(sink, speaker)


async def test_play_clip_is_heard_over_a_sink(pulse, speaker):  # noqa: F811
    recording = pulse.start_recording()
    speaker.play_clip(sine(1500.0, 0.3, 0.5), gain=0.5)
    speaker.play_clip(sine(700.0, 0.3, 0.5), gain=1.0)  # overlapping clips add up
    await asyncio.sleep(0.6)
    recorded = loud_part(recording.stop())
    assert len(recorded) == pytest.approx(0.3 * SAMPLE_RATE, rel=0.1)
    assert amplitude_at(recorded, 1500.0) == pytest.approx(0.25, rel=0.2)
    assert amplitude_at(recorded, 700.0) == pytest.approx(0.5, rel=0.2)


def rtp(seq: int, ts: int, payload: bytes) -> bytes:
    return struct.pack("!BBHII", 0x80, 111, seq & 0xFFFF, ts & 0xFFFFFFFF, 4321) + payload


async def test_rtp_through_the_jitter_buffer_is_heard_with_lost_packets_recovered(pulse, speaker, speech):  # noqa: F811
    """A channel's Opus RTP, paced as from the network with a few packets dropped, goes
    through ChannelReceiver into the real Speaker: the recording is the speech, and the
    dropped packets were rebuilt from the next ones' FEC."""
    packets = encode(np.round(speech * 32768.0).clip(-32768, 32767).astype(np.int16))
    dropped = set(range(12, len(packets) - 5, 17))
    receiver = ChannelReceiver(1, speaker.sink("ch1"))
    assert receiver.pulled
    loop = asyncio.get_running_loop()
    recording = pulse.start_recording()
    start = loop.time()
    for i, packet in enumerate(packets):
        if i not in dropped:
            receiver.feed(rtp(1000 + i, 5000 + i * CHUNK, packet))
        delay = start + (i + 1) * CHUNK / SAMPLE_RATE - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
    speaker.sink("ch1").end_of_burst()
    await drain(speaker.sink("ch1"), speaker)
    recorded = recording.stop()
    assert receiver.packets == len(packets) - len(dropped)
    assert receiver.lost == len(dropped) and receiver.late == 0
    assert receiver.recovered_by_fec >= 1
    # Everything that went missing was rebuilt (FEC) or, where FEC came too late, concealed.
    assert receiver.recovered_by_fec + receiver.concealed >= len(dropped)
    reference = decode_all(packets)  # what a lossless link would have played
    # Window by window: a hiccup of the loaded machine (an ALSA underrun) shifts the
    # rest of the recording, which is not what this test is about.
    scores = window_scores(reference, recorded)
    assert len(scores) >= 5
    assert np.median(scores) >= 0.9, f"played audio does not match the speech ({np.round(scores, 2)})"
    assert speaker.callbacks > 0


def window_scores(reference: np.ndarray, recorded: np.ndarray, seconds: float = 0.2) -> list[float]:
    """aligned_correlation of each voiced `seconds` of `reference` with `recorded`."""
    size = int(seconds * SAMPLE_RATE)
    scores = []
    for start in range(0, len(reference) - size, size):
        part = reference[start : start + size]
        if np.sqrt(np.mean(part**2)) > 0.02:
            scores.append(aligned_correlation(part, recorded, max_lag_s=len(recorded) / SAMPLE_RATE)[0])
    return scores
