#!/usr/bin/env python3
"""Synthesize the shipped PTT tones and write them next to this script.

    python server/tones/make_tones.py [OUT_DIR]

Stdlib only (math, struct, wave), deterministic: running it again writes the same bytes,
so the committed WAVs can be checked against it. Every tone is 48 kHz mono 16-bit PCM,
peaks at -6 dBFS, and starts and ends on a raised-cosine fade so it never clicks. Pitch
changes are phase-continuous (the frequency glides for a few ms) for the same reason.

| file            | sound                                              | length  |
|-----------------|----------------------------------------------------|---------|
| talk_permit.wav | two-step rising chirp, 1000 Hz then 1500 Hz         | 180 ms  |
| end_of_tx.wav   | descending "roger" blip, 1200 Hz gliding to 800 Hz  | 120 ms  |
| busy.wav        | three low buzzy beeps at 420 Hz                     | 600 ms  |
| incoming.wav    | soft bell-like chime at 1175 Hz, decaying           | 150 ms  |
| emergency.wav   | hi-lo warble, 650 / 1000 Hz every 100 ms            | 1200 ms |
"""

from __future__ import annotations

import math
import struct
import sys
import wave
from collections.abc import Callable, Sequence
from pathlib import Path

RATE = 48_000
PEAK_DBFS = -6.0
TWO_PI = 2.0 * math.pi


def _ms(ms: float) -> int:
    return round(RATE * ms / 1000.0)


def _fade(samples: list[float], fade_in_ms: float, fade_out_ms: float) -> list[float]:
    """Raised-cosine fade in and out, in place; returns `samples`."""
    n_in, n_out = _ms(fade_in_ms), _ms(fade_out_ms)
    n = len(samples)
    for i in range(min(n_in, n)):
        samples[i] *= 0.5 - 0.5 * math.cos(math.pi * i / n_in)
    for i in range(min(n_out, n)):
        # The last sample lands exactly on zero.
        samples[n - 1 - i] *= 0.5 - 0.5 * math.cos(math.pi * i / n_out)
    return samples


def _sweep(
    n: int,
    freq_at: Callable[[int], float],
    partials: Sequence[tuple[int, float]] = ((1, 1.0),),
) -> list[float]:
    """A tone whose fundamental follows `freq_at(sample index)`, phase-continuous.

    `partials` are (harmonic number, amplitude) pairs added on the same phase.
    """
    out = []
    phase = 0.0
    for i in range(n):
        out.append(sum(a * math.sin(h * phase) for h, a in partials))
        phase = (phase + TWO_PI * freq_at(i) / RATE) % TWO_PI
    return out


def _stepped(segments: Sequence[tuple[float, float]], glide_ms: float) -> Callable[[int], float]:
    """A frequency that holds each (frequency Hz, duration ms) in turn, gliding linearly
    from the previous one over the first `glide_ms` of each segment."""
    bounds: list[tuple[int, float, float]] = []  # (start sample, from Hz, to Hz)
    start, prev = 0, segments[0][0]
    for freq, dur in segments:
        bounds.append((start, prev, freq))
        start, prev = start + _ms(dur), freq
    glide = max(1, _ms(glide_ms))

    def freq_at(i: int) -> float:
        for seg_start, f_from, f_to in reversed(bounds):
            if i >= seg_start:
                since = i - seg_start
                return f_to if since >= glide else f_from + (f_to - f_from) * since / glide
        return bounds[0][2]

    return freq_at


def talk_permit() -> list[float]:
    # Rising = "go ahead"; a soft 2nd harmonic keeps it from sounding like a test tone.
    segs = ((1000.0, 70.0), (1500.0, 110.0))
    n = sum(_ms(d) for _, d in segs)
    return _fade(_sweep(n, _stepped(segs, 3.0), ((1, 1.0), (2, 0.12))), 5.0, 15.0)


def end_of_tx() -> list[float]:
    # Falling = "over"; the glide takes the first third, then the low note settles.
    n = _ms(120.0)
    glide_n = _ms(45.0)

    def freq_at(i: int) -> float:
        if i >= glide_n:
            return 800.0
        # Exponential glide: equal pitch steps per ms, which sounds even.
        return 1200.0 * (800.0 / 1200.0) ** (i / glide_n)

    return _fade(_sweep(n, freq_at, ((1, 1.0), (2, 0.10))), 4.0, 20.0)


def busy() -> list[float]:
    # Low and buzzy (odd harmonics, square-ish) = "no": three beeps with short gaps.
    beep = _fade(_sweep(_ms(140.0), lambda i: 420.0, ((1, 1.0), (3, 0.30), (5, 0.12))), 8.0, 12.0)
    gap = [0.0] * _ms(90.0)
    return beep + gap + beep + gap + list(beep)


def incoming() -> list[float]:
    # A bell: quick attack, exponential decay, a quiet octave partial that dies faster.
    n = _ms(150.0)
    out = []
    for i in range(n):
        t = i / RATE
        out.append(
            math.exp(-t / 0.055) * math.sin(TWO_PI * 1175.0 * t)
            + 0.25 * math.exp(-t / 0.025) * math.sin(TWO_PI * 2350.0 * t)
        )
    return _fade(out, 4.0, 12.0)


def emergency() -> list[float]:
    # Hi-lo warble: impossible to mistake for any other tone, and still not harsh.
    segs = [(1000.0 if k % 2 == 0 else 650.0, 100.0) for k in range(12)]
    n = sum(_ms(d) for _, d in segs)
    return _fade(_sweep(n, _stepped(segs, 4.0), ((1, 1.0), (2, 0.10))), 8.0, 25.0)


TONES: dict[str, Callable[[], list[float]]] = {
    "talk_permit": talk_permit,
    "end_of_tx": end_of_tx,
    "busy": busy,
    "incoming": incoming,
    "emergency": emergency,
}


def to_pcm16(samples: list[float], peak_dbfs: float = PEAK_DBFS) -> bytes:
    """Normalize to `peak_dbfs` and pack as little-endian 16-bit."""
    peak = max(abs(s) for s in samples)
    gain = 10.0 ** (peak_dbfs / 20.0) / peak
    return struct.pack(f"<{len(samples)}h", *(round(s * gain * 32767.0) for s in samples))


def write_wav(path: Path, samples: list[float]) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(to_pcm16(samples))


def main(out_dir: Path | None = None) -> list[Path]:
    out = Path(out_dir) if out_dir is not None else Path(__file__).resolve().parent
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, make in TONES.items():
        path = out / f"{name}.wav"
        write_wav(path, make())
        written.append(path)
    return written


if __name__ == "__main__":
    for p in main(Path(sys.argv[1]) if len(sys.argv) > 1 else None):
        print(p)
