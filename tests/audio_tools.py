"""Audio helpers for the media tests and benchmarks: speech, playing, recording, comparing.

- speech_wav(): real speech (espeak-ng, converted by sox) as 48 kHz mono s16 WAV.
- WavTrack: an aiortc audio track that plays samples in real time, 20 ms per frame.
- TrackRecorder: drains a remote aiortc track into a 48 kHz mono int16 buffer.
- aligned_correlation() / longest_gap_ms(): "did the same audio come out, whole?".

WavTrack and TrackRecorder run on the test's asyncio loop (the loop of the peer
connection that uses them). The rest is plain numpy and may be called anywhere.
"""

from __future__ import annotations

import asyncio
import fractions
import hashlib
import logging
import shutil
import subprocess
import tempfile
import wave
from pathlib import Path

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

logger = logging.getLogger(__name__)

RATE = 48_000
FRAME_SAMPLES = 960  # 20 ms at 48 kHz: one Opus frame
FRAME_SECONDS = FRAME_SAMPLES / RATE
TIME_BASE = fractions.Fraction(1, RATE)


# --- WAV files ----------------------------------------------------------------------


def read_wav(path: Path) -> np.ndarray:
    """Read a 16-bit PCM WAV; return int16 mono samples (channels averaged)."""
    with wave.open(str(path), "rb") as w:
        if w.getsampwidth() != 2:
            raise ValueError(f"{path}: {8 * w.getsampwidth()}-bit samples, want 16-bit")
        channels = w.getnchannels()
        data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    if channels > 1:
        data = data.reshape(-1, channels).mean(axis=1).round().astype(np.int16)
    return data.astype(np.int16, copy=True)


def wav_rate(path: Path) -> int:
    with wave.open(str(path), "rb") as w:
        return w.getframerate()


def write_wav(path: Path, samples: np.ndarray, rate: int = RATE) -> Path:
    """Write int16 mono samples (floats are clipped and rounded) as a PCM WAV."""
    samples = np.asarray(samples)
    if samples.dtype != np.int16:
        samples = np.clip(np.round(samples), -32768, 32767).astype(np.int16)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.astype("<i2").tobytes())
    return Path(path)


def speech_wav(folder: Path, text: str, seconds_min: float = 2.0, voice: str = "en") -> Path:
    """Synthesized speech of `text` as 48 kHz mono s16 WAV in `folder` (cached).

    espeak-ng speaks at 22.05 kHz; sox resamples. If the speech is shorter than
    `seconds_min` it is repeated (with 200 ms pauses) until it is not, so a test gets at
    least that much audio. The file name hashes the arguments, so a folder shared by
    tests (a session tmp dir) synthesizes each text once.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    key = hashlib.sha1(f"{voice}\0{seconds_min}\0{text}".encode()).hexdigest()[:16]
    target = folder / f"speech-{key}.wav"
    if target.exists():
        return target
    for tool in ("espeak-ng", "sox"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"{tool} is not installed; it is needed to synthesize speech")
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        raw = Path(tmp) / "espeak.wav"
        converted = Path(tmp) / "48k.wav"
        espeak = ["espeak-ng", "-v", voice, "-w", str(raw), text]
        subprocess.run(espeak, check=True, capture_output=True)
        subprocess.run(
            ["sox", str(raw), "-r", str(RATE), "-c", "1", "-b", "16", "-e", "signed-integer",
             str(converted)],
            check=True,
            capture_output=True,
        )
        speech = read_wav(converted)
        if len(speech) == 0:
            raise RuntimeError(f"espeak-ng produced no audio for {text!r}")
        pause = np.zeros(int(0.2 * RATE), dtype=np.int16)
        pieces = [speech]
        while sum(len(p) for p in pieces) < seconds_min * RATE:
            pieces += [pause, speech]
        # Write then rename: a concurrent test never reads a half-written file.
        partial = Path(tmp) / "final.wav"
        write_wav(partial, np.concatenate(pieces))
        partial.replace(target)
    return target


# --- playing: WavTrack ---------------------------------------------------------------


class WavTrack(MediaStreamTrack):
    """Plays a WAV file or int16 array in real time as 20 ms, 48 kHz mono s16 frames.

    Frames are paced by the loop clock against the time of the first recv(), so the
    stream does not drift however late each recv() is called. Before start() (when
    `autostart=False`) and after the end it emits digital silence, as a microphone
    with nobody speaking would; with `loop=True` the audio repeats; with
    `end_track=True` the track ends after the audio (recv raises MediaStreamError).

    `on_done` is set when the audio has been played to its end; `play_started_at` is
    the loop time the first audio frame was due (for latency figures).
    Call start()/restart() on the loop that runs the peer connection.
    """

    kind = "audio"

    def __init__(
        self,
        source: Path | str | np.ndarray,
        *,
        autostart: bool = True,
        loop: bool = False,
        end_track: bool = False,
    ) -> None:
        super().__init__()
        if isinstance(source, np.ndarray):
            samples = source
        else:
            if wav_rate(Path(source)) != RATE:
                raise ValueError(f"{source}: WavTrack plays {RATE} Hz WAV only")
            samples = read_wav(Path(source))
        if samples.dtype != np.int16:
            samples = np.clip(np.round(samples), -32768, 32767).astype(np.int16)
        # Pad to whole frames so every frame is exactly 20 ms.
        pad = (-len(samples)) % FRAME_SAMPLES
        self.samples = np.concatenate([samples, np.zeros(pad, dtype=np.int16)])
        self.loop = loop
        self.end_track = end_track
        self.on_done = asyncio.Event()
        self.play_started_at: float | None = None
        self.frames_sent = 0
        self._playing = autostart
        self._position = 0
        self._mark_start = autostart
        self._clock_start: float | None = None
        self._silence = np.zeros(FRAME_SAMPLES, dtype=np.int16)

    def start(self) -> None:
        """Play the audio from its beginning, from the next frame on."""
        self._position = 0
        self._playing = True
        self._mark_start = True
        self.on_done.clear()

    restart = start

    def pause(self) -> None:
        """Emit silence from the next frame on (start() plays from the beginning again)."""
        self._playing = False

    @property
    def playing(self) -> bool:
        return self._playing

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        loop = asyncio.get_running_loop()
        if self._clock_start is None:
            self._clock_start = loop.time()
        due = self._clock_start + self.frames_sent * FRAME_SECONDS
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        chunk = self._next_chunk(due)
        frame = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = RATE
        frame.pts = self.frames_sent * FRAME_SAMPLES
        frame.time_base = TIME_BASE
        self.frames_sent += 1
        return frame

    def _next_chunk(self, due: float) -> np.ndarray:
        if not self._playing:
            if self.end_track and self.on_done.is_set():
                self.stop()
                raise MediaStreamError
            return self._silence
        if self._mark_start:
            self._mark_start = False
            self.play_started_at = due
        chunk = self.samples[self._position : self._position + FRAME_SAMPLES]
        self._position += FRAME_SAMPLES
        if self._position >= len(self.samples):
            if self.loop:
                self._position = 0
            else:
                self._playing = False
                self.on_done.set()
        return chunk


# --- recording: TrackRecorder ---------------------------------------------------------


class TrackRecorder:
    """Drains a (remote) audio track into a 48 kHz mono int16 buffer, in a task.

    aiortc decodes Opus to 48 kHz stereo s16; the channels are averaged. With
    `fill_gaps` a jump in the frames' pts (lost packets, or a stream that paused) is
    filled with zeros, so missing audio shows as silence instead of vanishing and the
    buffer keeps the sender's timeline. Jumps longer than `max_fill_s` are not filled
    (a new stream, not a gap).

    `arrivals` holds (loop time, sample index) for each frame: the time a given sample
    came out of the track, for latency figures. start() and stop() run on the loop of
    the peer connection that owns the track.
    """

    def __init__(
        self,
        track: MediaStreamTrack,
        *,
        fill_gaps: bool = True,
        max_fill_s: float = 10.0,
        voiced_threshold: int = 500,
    ) -> None:
        self.track = track
        self.fill_gaps = fill_gaps
        self.max_fill = int(max_fill_s * RATE)
        self.voiced_threshold = voiced_threshold
        self.frames_received = 0
        self.arrivals: list[tuple[float, int]] = []
        self.first_voiced_at: float | None = None
        self.voiced = asyncio.Event()
        self.ended = asyncio.Event()
        self._chunks: list[np.ndarray] = []
        self._length = 0
        self._next_pts: int | None = None
        self._resampler: av.AudioResampler | None = None
        self._task: asyncio.Task | None = None

    def start(self) -> TrackRecorder:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="track-recorder")
        return self

    async def stop(self) -> np.ndarray:
        """Stop recording (the track itself is left alone); return the samples."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
        if self._task is not None:
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        return self.samples()

    def samples(self) -> np.ndarray:
        if not self._chunks:
            return np.zeros(0, dtype=np.int16)
        if len(self._chunks) > 1:
            self._chunks = [np.concatenate(self._chunks)]
        return self._chunks[0].copy()

    def clear(self) -> None:
        """Forget what was recorded so far (e.g. the silence before a transmission)."""
        self._chunks = []
        self._length = 0
        self.arrivals.clear()
        self.first_voiced_at = None
        self.voiced.clear()

    async def wait_frames(self, count: int, timeout: float = 10.0) -> None:
        """Wait until `count` frames in total have been received."""
        async with asyncio.timeout(timeout):
            while self.frames_received < count:
                await asyncio.sleep(0.02)

    async def wait_voiced(self, timeout: float = 10.0) -> float:
        """Wait for the first frame louder than voiced_threshold; return its loop time."""
        async with asyncio.timeout(timeout):
            await self.voiced.wait()
        assert self.first_voiced_at is not None
        return self.first_voiced_at

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                try:
                    frame = await self.track.recv()
                except MediaStreamError:
                    return
                now = loop.time()
                self.frames_received += 1
                mono = self._to_mono48k(frame)
                if self.fill_gaps:
                    self._fill_gap_before(frame, len(mono))
                self.arrivals.append((now, self._length))
                self._chunks.append(mono)
                self._length += len(mono)
                loud = len(mono) > 0 and int(np.abs(mono).max()) >= self.voiced_threshold
                if loud and self.first_voiced_at is None:
                    self.first_voiced_at = now
                    self.voiced.set()
        finally:
            self.ended.set()

    def _fill_gap_before(self, frame: av.AudioFrame, produced: int) -> None:
        if frame.pts is None or frame.sample_rate != RATE:
            return
        pts = int(frame.pts)
        if self._next_pts is not None:
            # RTP timestamps are 32-bit and wrap; a small positive jump is a gap.
            jump = (pts - self._next_pts) % (1 << 32)
            if 0 < jump <= self.max_fill:
                self._chunks.append(np.zeros(jump, dtype=np.int16))
                self._length += jump
        self._next_pts = (pts + produced) % (1 << 32)

    def _to_mono48k(self, frame: av.AudioFrame) -> np.ndarray:
        if frame.sample_rate == RATE and frame.format.name in ("s16", "s16p"):
            data = frame.to_ndarray()
            channels = len(frame.layout.channels)
            if frame.format.is_planar:
                data = data.reshape(channels, -1)
                mono = data.mean(axis=0) if channels > 1 else data[0]
            else:
                data = data.reshape(-1, channels)
                mono = data.mean(axis=1) if channels > 1 else data[:, 0]
            return np.round(mono).astype(np.int16)
        # Anything else (another rate or sample format): let libswresample convert.
        if self._resampler is None:
            self._resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE)
        out = [f.to_ndarray().reshape(-1) for f in self._resampler.resample(frame)]
        return np.concatenate(out).astype(np.int16) if out else np.zeros(0, dtype=np.int16)


# --- comparing -------------------------------------------------------------------------


def voiced_extent(samples: np.ndarray, relative: float = 0.02) -> tuple[int, int]:
    """[start, end) of the region from the first to the last sample above `relative`
    times the peak. (0, 0) for silence."""
    x = np.abs(np.asarray(samples, dtype=np.float64))
    if len(x) == 0 or x.max() == 0:
        return 0, 0
    loud = np.flatnonzero(x > relative * x.max())
    return int(loud[0]), int(loud[-1]) + 1


def aligned_correlation(
    reference: np.ndarray,
    recorded: np.ndarray,
    max_lag_s: float = 2.0,
    rate: int = RATE,
) -> tuple[float, int]:
    """How well `recorded` contains `reference`, and where.

    The lag (in samples, positive when `recorded` is late) maximizes the FFT
    cross-correlation within ±max_lag_s. The score is the normalized correlation
    (cosine) of the reference's voiced extent with the recorded samples at that lag;
    recorded samples missing at either end count as zeros, so truncated or gappy audio
    scores lower. Returns (score, lag): ~1.0 for the same audio however delayed or
    attenuated, near 0 for unrelated sound.
    """
    ref = np.asarray(reference, dtype=np.float64)
    rec = np.asarray(recorded, dtype=np.float64)
    if len(ref) == 0 or len(rec) == 0:
        return 0.0, 0
    start, end = voiced_extent(ref)
    if end == start:
        return 0.0, 0
    ref_voiced = ref[start:end]

    # Cross-correlate the voiced part only: silence adds nothing but length.
    # corr[k] = sum_n rec[n + k] * ref_voiced[n]; lag = k - start then aligns whole signals.
    size = 1 << int(np.ceil(np.log2(len(ref_voiced) + len(rec))))
    corr = np.fft.irfft(np.fft.rfft(rec, size) * np.conj(np.fft.rfft(ref_voiced, size)), size)
    max_lag = int(max_lag_s * rate)
    lags = np.arange(-max_lag, max_lag + 1)
    shifts = lags + start  # the k for each lag
    # A shift k < 0 wraps to the end of the circular result; keep only shifts that
    # leave some overlap between ref_voiced and rec.
    valid = (shifts > -len(ref_voiced)) & (shifts < len(rec))
    lags, shifts = lags[valid], shifts[valid]
    if len(lags) == 0:
        return 0.0, 0
    best = int(np.argmax(corr[shifts % size]))
    lag = int(lags[best])

    # Score at that lag over the voiced extent, zero-padding what the recording lacks.
    aligned = np.zeros(len(ref_voiced))
    lo = start + lag
    src_lo, src_hi = max(lo, 0), min(lo + len(ref_voiced), len(rec))
    if src_hi > src_lo:
        aligned[src_lo - lo : src_hi - lo] = rec[src_lo:src_hi]
    denominator = np.sqrt(np.dot(ref_voiced, ref_voiced) * np.dot(aligned, aligned))
    if denominator == 0:
        return 0.0, lag
    return float(np.dot(ref_voiced, aligned) / denominator), lag


def longest_gap_ms(
    recorded: np.ndarray,
    rate: int = RATE,
    threshold: int = 16,
    region: tuple[int, int] | None = None,
) -> float:
    """The longest run of near-digital silence (|x| <= threshold) inside the voiced
    region (default: voiced_extent(recorded)), in milliseconds.

    Lost or dropped audio decodes to (or is filled with) zeros; speech's own pauses
    rarely reach exact silence for long, so compare against the reference's own value.
    """
    x = np.abs(np.asarray(recorded, dtype=np.int32))
    start, end = region if region is not None else voiced_extent(x)
    x = x[start:end]
    if len(x) == 0:
        return 0.0
    quiet = x <= threshold
    if not quiet.any():
        return 0.0
    # Run lengths of True: positions where quiet starts and stops.
    edges = np.diff(np.concatenate([[0], quiet.astype(np.int8), [0]]))
    starts = np.flatnonzero(edges == 1)
    stops = np.flatnonzero(edges == -1)
    return float((stops - starts).max() * 1000.0 / rate)


def delayed(samples: np.ndarray, delay_samples: int, total: int | None = None) -> np.ndarray:
    """`samples` preceded by `delay_samples` zeros, zero-padded to `total` (test helper)."""
    length = total if total is not None else delay_samples + len(samples)
    out = np.zeros(length, dtype=samples.dtype)
    take = max(0, min(len(samples), len(out) - delay_samples))
    out[delay_samples : delay_samples + take] = samples[:take]
    return out

