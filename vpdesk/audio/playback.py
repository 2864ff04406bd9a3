"""The speaker: one output stream mixing every channel's audio and the tones.

One sounddevice OutputStream pulls 10 ms from every PlaybackSink, applies each sink's
gain, adds the one-shot clips (tones) and plays the sum. A sink gets its audio one of
two ways:

- **A frame source** (`attach()`): a monitored channel's receiver
  (vpdesk.media.receive.ChannelReceiver), whose jitter buffer decides, each time the
  sink needs the next frame, what to decode: the packet, a lost packet's FEC, or a
  concealment. Playout is thus driven by the audio device's clock, and the receiver's
  adaptive start delay is the only buffering (the remainder of a 20 ms frame waits for
  the next 10 ms callback).
- **Written PCM** (`write()`: the bench's audio-path-alone loopback, tests): a small
  fixed buffer: after running empty it waits for `prefill_ms` of audio before playing
  again, and it never holds more than `max_buffer_ms` (the oldest audio goes first).

Threads: write(), attach(), sink(), remove_sink(), play_clip(), open() and close() run on
the asyncio loop's thread; PortAudio's thread runs `_on_audio`, which copies and adds
small arrays and calls each attached source's `next_frame()` (a decode, ~0.1 ms, with
the GIL released). A sink's buffer is shared between the two under a lock held for a
few array copies at most; clips are handed over through a deque (thread-safe appends).

A Speaker that is not open (no device, or it failed) still takes writes: sinks just
keep their newest max_buffer_ms, so the session layer never special-cases it.
"""

from __future__ import annotations

import collections
import enum
import logging
import threading
import time
from typing import Any, Protocol

import numpy as np
import sounddevice as sd

from vpdesk.audio.devices import OUTPUT, start_stream, stop_stream

logger = logging.getLogger(__name__)

SAMPLE_RATE = 48000
BLOCK_SAMPLES = 480  # 10 ms per callback: small, so a sink's audio starts promptly
MAX_GAIN = 2.0
MAX_CLIPS = 8  # overlapping tones beyond this are dropped (a stuck UI cannot pile up)
# A sink that ran dry and gets audio again within this time was starved mid-burst (an
# underrun); later audio is a new transmission.
MID_BURST_GAP_S = 0.5


def _ms_to_samples(ms: float) -> int:
    return max(0, int(round(ms * SAMPLE_RATE / 1000.0)))


class SinkState(enum.Enum):
    FILLING = "filling"  # empty or prefilling: outputs silence
    PLAYING = "playing"


class FrameSource(Protocol):
    """Audio that a sink pulls frame by frame (a channel's jitter buffer and decoder)."""

    @property
    def underruns(self) -> int: ...  # read on PortAudio's thread

    @property
    def buffered_ms(self) -> float: ...

    def next_frame(self) -> np.ndarray | None:
        """PortAudio's thread: the next frame (float32 mono 48 kHz), or None: silence."""

    def end_of_burst(self) -> None: ...

    def reset(self) -> None: ...


class PlaybackSink:
    """One source of audio (a channel) into the Speaker's mix.

    write(), attach() and `gain` belong to the loop thread; `_pull` to PortAudio's.
    """

    def __init__(self, key: object, speaker: Speaker, prefill: int, max_buffer: int) -> None:
        self.key = key
        self._speaker = speaker
        self._prefill = prefill
        self._max_buffer = max(max_buffer, prefill, 1)
        self._gain = 1.0
        self._lock = threading.Lock()
        self._chunks: collections.deque[np.ndarray] = collections.deque()
        self._head = 0  # samples of _chunks[0] already played
        self._buffered = 0
        self._state = SinkState.FILLING
        self._waited = 0  # samples of stream time spent FILLING with something buffered
        self._dry_at: float | None = None  # monotonic time it last ran dry while playing
        # Set by end_of_burst(): the transmission is over, so running dry is expected.
        self._burst_over = False
        self.dropped_samples = 0  # discarded by the max_buffer rule
        self._source: FrameSource | None = None
        self._pending = np.zeros(0, dtype=np.float32)  # the rest of the source's last frame
        self._source_underruns = 0  # the source's count, as last seen by _pull
        self._source_playing = False
        self._generation = 0  # bumped by attach() and clear(): a pull in flight is stale

    def attach(self, source: FrameSource | None) -> None:
        """Loop thread: play `source`'s frames from now on (None: stop pulling)."""
        with self._lock:
            self._source = source
            self._generation += 1
            self._pending = self._pending[:0]
            self._source_underruns = source.underruns if source is not None else 0
            self._source_playing = False

    @property
    def source(self) -> FrameSource | None:
        return self._source

    @property
    def gain(self) -> float:
        return self._gain

    @gain.setter
    def gain(self, value: float) -> None:
        """Linear gain 0.0..2.0 (clamped); takes effect from the next 10 ms block."""
        self._gain = min(MAX_GAIN, max(0.0, float(value)))

    @property
    def buffered_ms(self) -> float:
        """Audio waiting: written PCM, plus a source's unplayed frame part and buffer."""
        ms = (self._buffered + len(self._pending)) * 1000.0 / SAMPLE_RATE
        source = self._source
        return ms + source.buffered_ms if source is not None else ms

    @property
    def state(self) -> SinkState:
        if self._source is not None and self._source_playing:
            return SinkState.PLAYING
        return self._state

    def write(self, pcm: np.ndarray) -> None:
        """Loop thread: queue float32 mono 48 kHz samples (any length)."""
        samples = np.array(pcm, dtype=np.float32, copy=True).reshape(-1)
        if len(samples) == 0:
            return
        if self._dry_at is not None:
            if time.monotonic() - self._dry_at < MID_BURST_GAP_S:
                self._speaker._written_underruns += 1
            self._dry_at = None
        self._burst_over = False
        with self._lock:
            self._chunks.append(samples)
            self._buffered += len(samples)
            excess = self._buffered - self._max_buffer
            if excess > 0:
                self._drop_oldest(excess)

    def end_of_burst(self) -> None:
        """Loop thread: the transmission ended (the floor went idle or changed hands).

        The sink runs dry after its last samples as it should; the next audio starts a
        new transmission, not the recovery from an underrun, however soon it comes."""
        self._burst_over = True
        self._dry_at = None
        if self._source is not None:
            self._source.end_of_burst()

    def clear(self) -> None:
        """Loop thread: forget everything buffered (e.g. the device changed)."""
        with self._lock:
            self._chunks.clear()
            self._head = 0
            self._buffered = 0
            self._state = SinkState.FILLING
            self._waited = 0
            self._pending = self._pending[:0]
            self._generation += 1
            self._source_playing = False
        self._dry_at = None
        if self._source is not None:
            self._source.reset()

    def _drop_oldest(self, count: int) -> None:
        """Under the lock: discard the oldest `count` samples."""
        self.dropped_samples += count
        self._buffered -= count
        while count > 0:
            available = len(self._chunks[0]) - self._head
            if available <= count:
                self._chunks.popleft()
                self._head = 0
                count -= available
            else:
                self._head += count
                count = 0

    def _pull(self, out: np.ndarray) -> bool:
        """PortAudio thread: fill `out` with the next samples (zeros past the end);
        False (and `out` untouched) while the sink is silent."""
        source = self._source
        if source is not None and self._pull_source(out, source):
            return True
        return self._pull_written(out)

    def _pull_source(self, out: np.ndarray, source: FrameSource) -> bool:
        """PortAudio thread: the pending part of the last frame, then new frames."""
        wanted = len(out)
        with self._lock:
            pending, self._pending = self._pending, self._pending[:0]
            generation = self._generation
        filled = min(wanted, len(pending))
        out[:filled] = pending[:filled]
        pending = pending[filled:]
        while filled < wanted:
            frame = source.next_frame()  # outside the lock: this decodes
            if frame is None or len(frame) == 0:
                break
            take = min(wanted - filled, len(frame))
            out[filled : filled + take] = frame[:take]
            filled += take
            pending = frame[take:]
        underruns = source.underruns
        if underruns != self._source_underruns:
            self._speaker._pulled_underruns += underruns - self._source_underruns
            self._source_underruns = underruns
        with self._lock:
            if self._generation == generation:  # not re-attached or cleared meanwhile
                self._pending = pending
                self._source_playing = filled > 0
        if filled == 0:
            return False
        out[filled:] = 0.0
        return True

    def _pull_written(self, out: np.ndarray) -> bool:
        """PortAudio thread: from the written PCM, with the prefill rule."""
        wanted = len(out)
        with self._lock:
            if self._state is SinkState.FILLING:
                if self._buffered == 0:
                    self._waited = 0
                    return False
                if self._buffered < self._prefill and self._waited < self._prefill:
                    # Not enough yet: wait, but only ~prefill of wall time, so a short
                    # burst (a single frame) still plays.
                    self._waited += wanted
                    return False
                self._state = SinkState.PLAYING
            filled = 0
            while filled < wanted and self._chunks:
                chunk = self._chunks[0]
                take = min(wanted - filled, len(chunk) - self._head)
                out[filled : filled + take] = chunk[self._head : self._head + take]
                filled += take
                self._head += take
                if self._head == len(chunk):
                    self._chunks.popleft()
                    self._head = 0
            self._buffered -= filled
            if filled < wanted:
                out[filled:] = 0.0
                self._state = SinkState.FILLING
                self._waited = 0
                if not self._burst_over:
                    self._dry_at = time.monotonic()
        return True


class Speaker:
    """One OutputStream (mono float32, 48 kHz, 10 ms blocks) mixing every sink and the
    one-shot clips. `device` is a name from list_output_devices() or None for the
    system default. Use from the asyncio loop thread.
    """

    def __init__(
        self,
        device: str | None,
        *,
        prefill_ms: float = 40.0,
        max_buffer_ms: float = 200.0,
        latency: float | str = "low",
    ) -> None:
        self.device = device
        self.latency = latency
        self._prefill = _ms_to_samples(prefill_ms)
        self._max_buffer = _ms_to_samples(max_buffer_ms)
        self._stream: sd.OutputStream | None = None
        self._sinks: dict[object, PlaybackSink] = {}
        # The callback iterates this tuple; the loop swaps in a new one, never mutates.
        self._sink_list: tuple[PlaybackSink, ...] = ()
        self._new_clips: collections.deque[tuple[np.ndarray, float]] = collections.deque()
        self._clips: list[list[Any]] = []  # PortAudio thread only: [samples, position, gain]
        self._mix = np.zeros(BLOCK_SAMPLES, dtype=np.float32)
        self._scratch = np.zeros(BLOCK_SAMPLES, dtype=np.float32)
        # Underruns: counted on the loop for written PCM, on PortAudio's thread for
        # sources (one writer each, so no lock).
        self._written_underruns = 0
        self._pulled_underruns = 0
        self.callbacks = 0
        self.output_underflows = 0  # blocks PortAudio itself reported as late

    # --- the stream -----------------------------------------------------------------

    def open(self) -> None:
        """Open and start the output stream. Raises AudioDeviceError ("No speaker
        found", "Output device 'X' not found", "Speaker 'X' is busy or unavailable:
        ...")."""
        if self._stream is not None:
            return
        for sink in self._sink_list:
            sink.clear()  # what piled up while closed is stale
        self._stream, _ = start_stream(
            OUTPUT,
            self.device,
            "Speaker",
            samplerate=SAMPLE_RATE,
            blocksize=BLOCK_SAMPLES,
            dtype="float32",
            latency=self.latency,
            callback=self._on_audio,
        )

    def close(self) -> None:
        """Stop and close the stream; sinks stay (and keep taking writes). Idempotent."""
        stream, self._stream = self._stream, None
        if stream is None:
            return
        stop_stream(stream, "Speaker", self.device)
        self._new_clips.clear()
        self._clips = []
        logger.info("speaker %r: closed", self.device)

    @property
    def underruns(self) -> int:
        """Times a sink ran dry in the middle of a transmission and then went on."""
        return self._written_underruns + self._pulled_underruns

    @property
    def is_open(self) -> bool:
        return self._stream is not None

    # --- sinks and clips ------------------------------------------------------------

    def sink(self, key: object) -> PlaybackSink:
        """The sink for `key`, created on first use."""
        sink = self._sinks.get(key)
        if sink is None:
            sink = PlaybackSink(key, self, self._prefill, self._max_buffer)
            self._sinks[key] = sink
            self._sink_list = tuple(self._sinks.values())
        return sink

    def remove_sink(self, key: object) -> None:
        if self._sinks.pop(key, None) is not None:
            self._sink_list = tuple(self._sinks.values())

    def play_clip(self, samples: np.ndarray, gain: float = 1.0) -> None:
        """Play float32 mono 48 kHz `samples` once, over the sinks (tones). Clips may
        overlap; with no open stream the clip is dropped."""
        if self._stream is None or gain <= 0.0 or len(samples) == 0:
            return
        clip = np.asarray(samples, dtype=np.float32).reshape(-1)
        self._new_clips.append((clip, float(gain)))

    # --- PortAudio's thread ---------------------------------------------------------

    def _on_audio(self, outdata: np.ndarray, frames: int, _time: Any, status: Any) -> None:
        """PortAudio thread: mix the sinks and clips into `outdata`."""
        if status.output_underflow:
            self.output_underflows += 1
        if len(self._mix) < frames:  # only if the host ignored our blocksize
            self._mix = np.zeros(frames, dtype=np.float32)
            self._scratch = np.zeros(frames, dtype=np.float32)
        mix = self._mix[:frames]
        scratch = self._scratch[:frames]
        mix.fill(0.0)
        for sink in self._sink_list:
            # Pull even at gain 0 so a muted sink's buffer keeps moving in time.
            if sink._pull(scratch) and sink.gain > 0.0:
                mix += scratch * np.float32(sink.gain)
        self._mix_clips(mix)
        np.clip(mix, -1.0, 1.0, out=outdata[:, 0])
        self.callbacks += 1

    def _mix_clips(self, mix: np.ndarray) -> None:
        while self._new_clips:
            samples, gain = self._new_clips.popleft()
            if len(self._clips) < MAX_CLIPS:
                self._clips.append([samples, 0, gain])
        if not self._clips:
            return
        still_playing = []
        for clip in self._clips:
            samples, position, gain = clip
            part = samples[position : position + len(mix)]
            mix[: len(part)] += part * np.float32(gain)
            clip[1] = position + len(part)
            if clip[1] < len(samples):
                still_playing.append(clip)
        self._clips = still_playing
