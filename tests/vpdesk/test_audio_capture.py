"""The Microphone: real capture from PulseAudio's fake microphone (tests/pulse.py)."""

from __future__ import annotations

import asyncio
import fractions

import numpy as np
import pytest
from aiortc.mediastreams import MediaStreamError

from tests.audio_tools import aligned_correlation, read_wav, speech_wav
from tests.pulse import MIC_SINK, pulse  # noqa: F401 - the fixture
from vpdesk.audio.capture import (
    FRAME_SAMPLES,
    SAMPLE_RATE,
    Microphone,
    peak_level,
)

SPEECH = "Unit four, proceed to the north gate."


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    return speech_wav(tmp_path_factory.mktemp("speech"), SPEECH, seconds_min=1.5)


async def wait_until(predicate, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


@pytest.fixture
async def mic(pulse):  # noqa: F811
    microphone = Microphone(MIC_SINK, asyncio.get_running_loop())
    microphone.open()
    yield microphone
    microphone.close()
    microphone.track.stop()


def test_peak_level_scale():
    assert peak_level(np.zeros(960, dtype=np.int16)) == 0.0
    assert peak_level(np.full(960, 32767, dtype=np.int16)) == pytest.approx(1.0, abs=1e-3)
    assert peak_level(np.full(960, -32768, dtype=np.int16)) == 1.0
    # -20 dBFS is a third of the way down a 60 dB meter; -60 dBFS and below read 0.
    assert peak_level(np.full(960, 3277, dtype=np.int16)) == pytest.approx(2 / 3, abs=1e-3)
    assert peak_level(np.full(960, 30, dtype=np.int16)) == 0.0


async def test_gated_capture_carries_the_speech(pulse, mic, speech):  # noqa: F811
    reference = read_wav(speech)
    frames = []
    levels = []

    async def pull() -> None:
        while True:
            frames.append(await mic.track.recv())

    mic.gate = True
    puller = asyncio.create_task(pull())
    player = pulse.play_into_mic(speech)
    try:
        async with asyncio.timeout(10):
            while player.poll() is None:
                levels.append(mic.level)
                await asyncio.sleep(0.02)
        assert player.returncode == 0
        # The tail of the speech is still in PortAudio's and PulseAudio's buffers.
        await asyncio.sleep(0.3)
        silent_level = mic.level
    finally:
        puller.cancel()
        await asyncio.gather(puller, return_exceptions=True)

    assert len(frames) > len(reference) // FRAME_SAMPLES
    for frame in frames[:5]:
        assert frame.format.name == "s16"
        assert frame.layout.name == "mono"
        assert frame.sample_rate == SAMPLE_RATE
        assert frame.samples == FRAME_SAMPLES
        assert frame.time_base == fractions.Fraction(1, SAMPLE_RATE)
    pts = [frame.pts for frame in frames]
    assert all(b > a for a, b in zip(pts, pts[1:])), "pts must increase"

    captured = np.concatenate([frame.to_ndarray().reshape(-1) for frame in frames])
    score, _lag = aligned_correlation(reference, captured)
    assert score >= 0.8, f"captured audio does not match the speech (score {score:.3f})"
    assert max(levels) > 0.3, "the meter did not move during speech"
    assert silent_level < 0.05, "the meter did not fall back in silence"


async def test_closed_gate_sends_nothing_but_the_meter_moves(pulse, mic, speech):  # noqa: F811
    assert mic.gate is False
    player = pulse.play_into_mic(speech)
    levels = []
    try:
        recv = asyncio.ensure_future(mic.track.recv())
        async with asyncio.timeout(10):
            while player.poll() is None and len(levels) < 40:
                levels.append(mic.level)
                await asyncio.sleep(0.02)
        # The stream ran all along (the meter saw the speech), yet no frame came out.
        assert mic.blocks > 10
        assert max(levels) > 0.3
        assert not recv.done()
        assert mic.track.queued == 0
        recv.cancel()
        await asyncio.gather(recv, return_exceptions=True)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(mic.track.recv(), 0.2)
    finally:
        player.terminate()
        player.wait()


async def test_opening_the_gate_flushes_stale_frames(pulse, mic):  # noqa: F811
    mic.gate = True
    # Nobody pulls: the queue fills to its cap, the oldest frames are dropped.
    await wait_until(lambda: mic.track.dropped > 0)
    assert mic.track.queued <= 3
    stale = mic.track._frames[-1][0]
    mic.gate = False
    mic.gate = True
    assert mic.track.queued == 0
    frame = await asyncio.wait_for(mic.track.recv(), 2.0)
    assert frame.pts > stale


async def test_queue_is_bounded_so_latency_is(pulse, mic):  # noqa: F811
    mic.gate = True
    await asyncio.sleep(0.3)  # ~15 frames captured, none pulled
    assert mic.track.queued == 3
    newest_pts = mic.track._frames[-1][0]
    received = [await asyncio.wait_for(mic.track.recv(), 1.0) for _ in range(3)]
    # What is left are the three newest frames, in order.
    assert [f.pts for f in received][-1] >= newest_pts
    assert received[0].pts < received[1].pts < received[2].pts


async def test_stop_ends_a_waiting_recv(pulse, mic):  # noqa: F811
    waiting = asyncio.ensure_future(mic.track.recv())
    await asyncio.sleep(0.05)
    assert not waiting.done()
    mic.track.stop()
    with pytest.raises(MediaStreamError):
        await asyncio.wait_for(waiting, 1.0)
    with pytest.raises(MediaStreamError):
        await mic.track.recv()


async def test_close_is_idempotent_and_reopen_keeps_the_track(pulse):  # noqa: F811
    mic = Microphone(None, asyncio.get_running_loop())
    track = mic.track
    mic.open()
    assert mic.is_open
    mic.gate = True
    first = await asyncio.wait_for(track.recv(), 2.0)
    mic.close()
    mic.close()
    assert not mic.is_open
    mic.open()
    try:
        assert mic.track is track
        again = await asyncio.wait_for(track.recv(), 2.0)
        assert again.pts > first.pts
    finally:
        mic.close()
        track.stop()
