"""The microphone: a sounddevice input stream feeding one aiortc audio track.

The stream runs all the time the Microphone is open, so the level meter moves even
while the dispatcher is not transmitting; 20 ms blocks reach the track only while
`gate` is True (the PTT controller opens it on a grant). While the gate is closed the
track's recv() simply waits, so aiortc's sender sends nothing.

Threads: PortAudio calls `_on_audio` on its own thread; it copies the block and hands
it to the asyncio loop with call_soon_threadsafe, and nothing else. Everything else
(open, close, gate, level, the track) belongs to that loop's thread.
"""

from __future__ import annotations

import asyncio
import collections
import fractions
import logging
import math
from typing import Any

import av
import numpy as np
import sounddevice as sd
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from vpdesk.audio.devices import INPUT, start_stream, stop_stream

logger = logging.getLogger(__name__)

SAMPLE_RATE = 48000
FRAME_SAMPLES = 960  # 20 ms: one Opus frame
TIME_BASE = fractions.Fraction(1, SAMPLE_RATE)

# At most this many frames wait for the sender: more would only add latency (each
# frame is 20 ms) after a stall of the loop; the oldest go first.
MAX_QUEUED_FRAMES = 3
METER_FLOOR_DB = -60.0


def peak_level(block: np.ndarray) -> float:
    """The meter value for an int16 block: its peak on a dB scale, -60 dBFS → 0.0,
    0 dBFS → 1.0."""
    if len(block) == 0:
        return 0.0
    peak = int(np.abs(block.astype(np.int32)).max())
    if peak == 0:
        return 0.0
    db = 20.0 * math.log10(peak / 32768.0)
    return min(1.0, max(0.0, 1.0 - db / METER_FLOOR_DB))


class MicrophoneTrack(MediaStreamTrack):
    """The microphone as an aiortc track: 20 ms, 48 kHz mono s16 frames.

    recv() waits for the next gated frame. `pts` counts samples captured since the
    Microphone was created (across re-opens), so a pause in transmitting shows as a
    jump of the timestamps, as RTP expects. Call from the Microphone's loop only.
    """

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._frames: collections.deque[tuple[int, np.ndarray]] = collections.deque(
            maxlen=MAX_QUEUED_FRAMES
        )
        self._arrived = asyncio.Event()
        self.dropped = 0  # frames pushed out of the full queue (latency cap)

    def _push(self, pts: int, samples: np.ndarray) -> None:
        if len(self._frames) == self._frames.maxlen:
            self.dropped += 1
        self._frames.append((pts, samples))
        self._arrived.set()

    def _flush(self) -> None:
        self._frames.clear()
        self._arrived.clear()

    @property
    def queued(self) -> int:
        return len(self._frames)

    async def recv(self) -> av.AudioFrame:
        while not self._frames:
            if self.readyState != "live":
                raise MediaStreamError
            self._arrived.clear()
            await self._arrived.wait()
        if self.readyState != "live":
            raise MediaStreamError
        pts, samples = self._frames.popleft()
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        frame.pts = pts
        frame.time_base = TIME_BASE
        return frame

    def stop(self) -> None:
        super().stop()
        self._frames.clear()
        self._arrived.set()  # wake a waiting recv() so it raises MediaStreamError


class Microphone:
    """A sounddevice InputStream (mono int16, blocks of 960) behind a gate.

    `device` is a device name from list_input_devices(), or None for the system
    default. Create, use and close on the asyncio loop `loop`.
    """

    def __init__(self, device: str | None, loop: asyncio.AbstractEventLoop) -> None:
        self.device = device
        self._loop = loop
        self._stream: sd.InputStream | None = None
        self._track = MicrophoneTrack()
        self._gate = False
        self._level = 0.0
        self._next_pts = 0
        self.blocks = 0  # blocks that reached the loop, gated or not
        self.overflows = 0  # blocks PortAudio flagged as input overflow

    # --- the stream -----------------------------------------------------------------

    def open(self) -> None:
        """Open and start the input stream. Raises AudioDeviceError ("No microphone
        found — listening only", "Input device 'X' not found", or "Microphone 'X' is
        busy or unavailable: ...")."""
        if self._stream is not None:
            return
        self._stream, _ = start_stream(
            INPUT,
            self.device,
            "Microphone",
            samplerate=SAMPLE_RATE,
            blocksize=FRAME_SAMPLES,
            dtype="int16",
            latency="low",
            callback=self._on_audio,
        )

    def close(self) -> None:
        """Stop and close the stream; the track stays (open() again to resume).
        Idempotent."""
        stream, self._stream = self._stream, None
        if stream is None:
            return
        stop_stream(stream, "Microphone", self.device)
        self._level = 0.0
        self._track._flush()
        logger.info("microphone %r: closed", self.device)

    @property
    def is_open(self) -> bool:
        return self._stream is not None

    # --- state for the session and the UI -------------------------------------------

    @property
    def gate(self) -> bool:
        return self._gate

    @gate.setter
    def gate(self, value: bool) -> None:
        value = bool(value)
        if value and not self._gate:
            # Frames still queued from an earlier transmission are stale: the first
            # frame sent after the grant must be what the dispatcher says now.
            self._track._flush()
        self._gate = value

    @property
    def level(self) -> float:
        """0.0..1.0: the peak of the last 20 ms block on a dB scale."""
        return self._level

    @property
    def track(self) -> MicrophoneTrack:
        return self._track

    # --- PortAudio's thread → the loop ----------------------------------------------

    def _on_audio(self, indata: np.ndarray, frames: int, _time: Any, status: Any) -> None:
        """PortAudio thread: copy the block and hand it to the loop, nothing else."""
        block = indata[:, 0].copy()
        try:
            self._loop.call_soon_threadsafe(self._on_block, block, bool(status.input_overflow))
        except RuntimeError:
            pass  # the loop is closed: the application is shutting down

    def _on_block(self, block: np.ndarray, overflow: bool) -> None:
        """Loop thread: meter, then queue the block as a frame when the gate is open."""
        if self._stream is None:
            return  # a block that was in flight when close() ran
        self.blocks += 1
        if overflow:
            self.overflows += 1
        pts = self._next_pts
        self._next_pts += len(block)
        self._level = peak_level(block)
        if self._gate and len(block) == FRAME_SAMPLES and self._track.readyState == "live":
            self._track._push(pts, block)
