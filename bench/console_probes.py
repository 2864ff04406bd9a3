"""Measuring hooks inside a console process (bench/console_agent.py), product code untouched.

`StageProbe.install()` wraps, at class level in this process only, the audio layer's
entry points so that the first loud sample of each burst is time-stamped
(CLOCK_MONOTONIC, shared by every process on the host) as it passes each stage:

  mic_cb      PortAudio's input callback hands the block over     (PortAudio thread)
  mic_loop    Microphone._on_block runs on the event loop         (loop)
  mic_send    MicrophoneTrack.recv gives the frame to the encoder (loop)
  sink_write  the burst's RTP packet reaches the channel's receiver (loop): stamped with
              the packet's arrival time when the receiver decodes it (on the audio
              thread, as the jitter buffer plays it; `decoded_at`, `action` and
              `waited_ms` say when and how), or a PlaybackSink gets written PCM (the
              audio-path-alone loopback)
  spk_cb      the Speaker's output callback mixes it out          (PortAudio thread)
  clip_start  the Speaker's callback starts a tone clip           (PortAudio thread)

A "burst" starts when a block has a sample at or above the threshold after at least
`holdoff_s` of quiet. `LoopLag` is a task that sleeps 10 ms and records how late it woke.

`Impairment` (environment variable VPDESK_BENCH_IMPAIR="loss=0.05,jitter_ms=30,seed=1",
read by install()) drops and delays packets in the channel receivers' tap of this
process: what a lossy, jittery network would do to the listener.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from typing import Any

import numpy as np

from vpdesk.audio.capture import Microphone, MicrophoneTrack
from vpdesk.audio.playback import PlaybackSink, Speaker
from vpdesk.core.jitter import Action
from vpdesk.media.receive import ChannelReceiver

RATE = 48_000
MAX_EVENTS = 20_000  # per stage: a bound on memory whatever the run length


class _Onset:
    """Quiet → loud detector for one stream of blocks."""

    __slots__ = ("threshold", "holdoff", "last_loud")

    def __init__(self, threshold: float, holdoff_s: float) -> None:
        self.threshold = threshold
        self.holdoff = holdoff_s
        self.last_loud = float("-inf")

    def check(self, samples: np.ndarray, now: float) -> int | None:
        """Index of the burst's first loud sample in `samples`, or None."""
        loud = np.flatnonzero(np.abs(samples) >= self.threshold)
        if len(loud) == 0:
            return None
        was = self.last_loud
        self.last_loud = now
        return int(loud[0]) if now - was > self.holdoff else None


def _latency_of(t: Any, attr: str) -> float | None:
    """PortAudio's stream-time estimate (e.g. outputBufferDacTime − currentTime), if any."""
    try:
        value = getattr(t, attr) - t.currentTime
    except (AttributeError, TypeError):
        return None
    return float(value) if value == value and t.currentTime > 0 else None


class StageProbe:
    """The stage time stamps of one process (see the module docstring)."""

    def __init__(self, threshold: float = 0.1, holdoff_s: float = 0.25, trace_buffer: bool = False) -> None:
        self.threshold = threshold
        self.holdoff = holdoff_s
        self.trace_buffer = trace_buffer
        self.events: dict[str, list[dict]] = {k: [] for k in (
            "mic_cb", "mic_loop", "mic_send", "sink_write", "spk_cb", "clip_start")}
        self.buffer_trace: list[tuple[float, str, float]] = []  # (t, sink key, buffered ms)
        self._detectors: dict[tuple[str, object], _Onset] = {}
        # (channel, 16-bit seq) → the sink's buffered ms when that packet arrived
        self._at_arrival: dict[tuple[int, int], float] = {}
        self.impairment = Impairment.from_env()

    def _detect(self, stage: str, key: object, samples: np.ndarray, scale: float, now: float) -> int | None:
        det = self._detectors.get((stage, key))
        if det is None:
            det = self._detectors[(stage, key)] = _Onset(self.threshold * scale, self.holdoff)
        return det.check(samples, now)

    def _add(self, stage: str, **values) -> None:
        events = self.events[stage]
        if len(events) < MAX_EVENTS:
            events.append(values)

    def clear(self) -> None:
        for events in self.events.values():
            events.clear()
        self.buffer_trace.clear()

    def install(self) -> None:
        """Wrap the audio classes of this process. Call before any device opens."""
        probe = self
        mic_cb, mic_block, track_recv = Microphone._on_audio, Microphone._on_block, MicrophoneTrack.recv
        sink_write, spk_cb = PlaybackSink.write, Speaker._on_audio
        rx_feed, rx_decode = ChannelReceiver.feed, ChannelReceiver._decode
        impairment = self.impairment

        def on_audio_in(self, indata, frames, t, status):
            now = time.monotonic()
            at = probe._detect("mic_cb", id(self), indata[:, 0], 32768.0, now)
            if at is not None:
                probe._add("mic_cb", t=now, offset=at, frames=frames,
                           in_latency=_latency_of(t, "inputBufferAdcTime"))
            mic_cb(self, indata, frames, t, status)

        def on_block(self, block, overflow):
            now = time.monotonic()
            at = probe._detect("mic_loop", id(self), block, 32768.0, now)
            if at is not None:
                probe._add("mic_loop", t=now, offset=at, gate=self.gate)
            mic_block(self, block, overflow)

        async def recv(self):
            frame = await track_recv(self)
            now = time.monotonic()
            at = probe._detect("mic_send", id(self), frame.to_ndarray().reshape(-1), 32768.0, now)
            if at is not None:
                probe._add("mic_send", t=now, offset=at, queued=self.queued)
            return frame

        def write(self, pcm):
            now = time.monotonic()
            samples = np.asarray(pcm).reshape(-1)
            before = self.buffered_ms
            at = probe._detect("sink_write", self.key, samples, 1.0, now)
            if at is not None:
                probe._add("sink_write", t=now, offset=at, key=str(self.key), buffered_ms=before,
                           state=self.state.value, samples=len(samples))
            if probe.trace_buffer and len(probe.buffer_trace) < 10 * MAX_EVENTS:
                probe.buffer_trace.append((now, str(self.key), before))
            sink_write(self, pcm)

        def feed(self, data):
            if len(data) >= 4:
                sink_ms = self.sink.buffered_ms if hasattr(self.sink, "buffered_ms") else 0.0
                if len(probe._at_arrival) > 4 * MAX_EVENTS:
                    probe._at_arrival.clear()
                probe._at_arrival[(self.channel_id, (data[2] << 8) | data[3])] = sink_ms
                if probe.trace_buffer and len(probe.buffer_trace) < 10 * MAX_EVENTS:
                    probe.buffer_trace.append((time.monotonic(), str(self.channel_id), sink_ms))
            rx_feed(self, data)

        def decode(self, playout):
            pcm = rx_decode(self, playout)
            packet = playout.packet
            if pcm is not None and packet is not None and playout.action in (Action.PLAY, Action.FEC):
                now = time.monotonic()
                at = probe._detect("sink_write", str(self.channel_id), pcm, 1.0, now)
                if at is not None:
                    seq = packet.seq & 0xFFFF if playout.action is Action.PLAY else (packet.seq - 1) & 0xFFFF
                    probe._add("sink_write", t=packet.arrival, offset=at, key=str(self.channel_id),
                               buffered_ms=probe._at_arrival.get((self.channel_id, seq)),
                               state="decoded", samples=len(pcm), decoded_at=now,
                               waited_ms=round((now - packet.arrival) * 1000.0, 3),
                               action=playout.action.value)
            return pcm

        def on_audio_out(self, outdata, frames, t, status):
            now = time.monotonic()
            out_latency = _latency_of(t, "outputBufferDacTime")
            if self._new_clips:
                probe._add("clip_start", t=now, out_latency=out_latency)
            spk_cb(self, outdata, frames, t, status)
            at = probe._detect("spk_cb", id(self), outdata[:frames, 0], 1.0, now)
            if at is not None:
                probe._add("spk_cb", t=now, offset=at, frames=frames, out_latency=out_latency)

        Microphone._on_audio = on_audio_in
        Microphone._on_block = on_block
        MicrophoneTrack.recv = recv
        PlaybackSink.write = write
        Speaker._on_audio = on_audio_out
        ChannelReceiver._decode = decode
        ChannelReceiver.feed = impairment.wrap(feed) if impairment is not None else feed


class Impairment:
    """Drops (`loss`, a probability) and delays (uniform 0..`jitter_ms`, so packets also
    reorder) the packets a ChannelReceiver is fed, on the running event loop."""

    def __init__(self, loss: float, jitter_ms: float, seed: int = 1) -> None:
        self.loss = loss
        self.jitter_s = jitter_ms / 1000.0
        self.rng = random.Random(seed)
        self.dropped = 0
        self.delayed = 0

    @classmethod
    def from_env(cls) -> Impairment | None:
        spec = os.environ.get("VPDESK_BENCH_IMPAIR")
        if not spec:
            return None
        values = dict(item.split("=", 1) for item in spec.split(",") if "=" in item)
        return cls(float(values.get("loss", 0)), float(values.get("jitter_ms", 0)), int(values.get("seed", 1)))

    def wrap(self, feed):
        impairment = self

        def impaired(receiver, data):
            if impairment.rng.random() < impairment.loss:
                impairment.dropped += 1
                return
            delay = impairment.rng.uniform(0.0, impairment.jitter_s)
            if delay <= 0.0:
                feed(receiver, data)
                return
            impairment.delayed += 1
            asyncio.get_running_loop().call_later(delay, feed, receiver, data)

        return impaired


class LoopLag:
    """Sleeps `interval` s in a loop on the running event loop and records the
    oversleep (how late each wake-up was), with CLOCK_MONOTONIC wake times."""

    def __init__(self, interval: float = 0.010, max_samples: int = 200_000) -> None:
        self.interval = interval
        self.max_samples = max_samples
        self.samples: list[tuple[float, float]] = []  # (t woke, lag s)
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self.samples = []
        self._task = asyncio.get_running_loop().create_task(self._run(), name="loop-lag-probe")

    async def _run(self) -> None:
        now = time.monotonic
        while len(self.samples) < self.max_samples:
            t0 = now()
            await asyncio.sleep(self.interval)
            t1 = now()
            self.samples.append((t1, max(0.0, t1 - t0 - self.interval)))

    async def stop(self) -> list[tuple[float, float]]:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        return self.samples
