"""Shared parts of the console benchmarks: the audio rig, agent processes, sites, results.

- `AudioRig`: the tests' private PulseAudio daemon (tests/pulse.py: null sinks
  `vp_speaker` and `vp_mic`) plus a measuring rig on ONE clock. A stereo null sink
  `vp_rig` has two mono remap sinks on its channels: `vp_rig_mouth` (left: what the rig
  says) and `vp_rig_ear` (right: what the listening console plays). The talking console's
  microphone is `vp_rig_mic`, a mono remap source of the left channel of `vp_rig`'s
  monitor. One `parec` of `vp_rig.monitor` then holds mouth and ear side by side, sample
  for sample, so latency = right onset − left onset needs no calibration: the rig's own
  playback path delays both channels alike. Remap sinks and sources are filters on the
  master's render pass: they add no buffer of their own.
- `Agent`: a console process (bench/console_agent.py) driven over stdin/stdout JSON lines.
- `provision()`: users and channels written with server.directory.Directory.
- `ServerProcess`: the standalone server, `python -m server`.
- `merge_results()`: docs/console-results.json, one key per benchmark.

Everything here runs in the orchestrating process, on its asyncio loop or in plain code.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import socket
import subprocess
import sys
import threading
import time
import wave
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.forward import cpu_seconds, machine_facts, rss_mib, stop_process, wait_healthy  # noqa: E402
from tests.pulse import PulseAudio  # noqa: E402

RATE = 48_000
PASSWORD = "bench-pw"
AGENT = ROOT / "bench" / "console_agent.py"
RIG_SINK = "vp_rig"
MOUTH_SINK = "vp_rig_mouth"
EAR_SINK = "vp_rig_ear"
MIC_SOURCE = "vp_rig_mic"
REPLY_PREFIX = "@@"

__all__ = [
    "AGENT", "Agent", "AudioRig", "EAR_SINK", "MIC_SOURCE", "MOUTH_SINK", "PASSWORD", "RATE",
    "ROOT", "RigRecording", "ServerProcess", "alsa_xruns", "burst_samples", "console_machine_facts", "cpu_seconds", "free_port",
    "machine_facts", "merge_results", "onsets", "pct", "provision", "rss_mib", "thread_cpu",
    "write_wav",
]


# --- numbers --------------------------------------------------------------------------


def pct(values, q: float) -> float | None:
    """The q-th percentile (nearest rank on sorted values), None for no values."""
    values = sorted(v for v in values if v is not None)
    if not values:
        return None
    k = min(len(values) - 1, max(0, math.ceil(q / 100 * len(values)) - 1))
    return values[k]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds per thread name (threads of one name summed), from /proc/PID/task."""
    clk = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/comm") as f:
                    name = f.read().strip()
                with open(f"/proc/{pid}/task/{tid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue  # the thread ended meanwhile
            out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / clk
    return out


def alsa_xruns(log: Path) -> dict[str, int]:
    """ALSA's own xrun reports in a process's stderr log ("underrun occurred" on playback,
    "overrun occurred" on capture): PortAudio recovers from these without always
    flagging its status bits."""
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return {"underrun": 0, "overrun": 0}
    return {"underrun": text.count("underrun occurred"), "overrun": text.count("overrun occurred")}


# --- signals --------------------------------------------------------------------------


def burst_samples(ms: float = 100.0, freq: float = 1000.0, amplitude: float = 0.5,
                  ramp_ms: float = 1.0) -> np.ndarray:
    """A tone burst (float32) with raised-cosine edges: a sharp, codec-friendly onset."""
    n = int(RATE * ms / 1000)
    t = np.arange(n) / RATE
    burst = amplitude * np.sin(2 * np.pi * freq * t)
    ramp = max(1, int(RATE * ramp_ms / 1000))
    edge = 0.5 - 0.5 * np.cos(np.pi * np.arange(ramp) / ramp)
    burst[:ramp] *= edge
    burst[-ramp:] *= edge[::-1]
    return burst.astype(np.float32)


def write_wav(path: Path, samples: np.ndarray) -> Path:
    data = np.clip(np.round(np.asarray(samples, dtype=np.float64) * 32767), -32768, 32767)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(data.astype("<i2").tobytes())
    return path


def onsets(x: np.ndarray, threshold: float, holdoff_s: float = 0.25) -> list[int]:
    """Sample indices where |x| first reaches `threshold` after `holdoff_s` below it."""
    loud = np.flatnonzero(np.abs(x) >= threshold)
    if len(loud) == 0:
        return []
    gap = int(holdoff_s * RATE)
    starts = [int(loud[0])]
    starts += [int(b) for a, b in zip(loud[:-1], loud[1:]) if b - a > gap]
    return starts


# --- the audio rig --------------------------------------------------------------------


class RigRecording:
    """One `parec` of vp_rig.monitor (stereo s16) into a file, plus a map from sample
    index to CLOCK_MONOTONIC (good to ~10 ms: only used to tell which burst a console's
    own timestamps belong to, never for the latency itself)."""

    def __init__(self, env: dict[str, str], path: Path) -> None:
        self.path = path
        self._file = open(path, "wb")  # noqa: SIM115 - closed in stop()
        self._proc = subprocess.Popen(
            ["parec", f"--device={RIG_SINK}.monitor", "--format=s16le", f"--rate={RATE}",
             "--channels=2", "--latency-msec=10"],
            stdout=self._file, stderr=subprocess.DEVNULL, env=env,
        )
        self._marks: list[tuple[float, int]] = []  # (monotonic, bytes on disk)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.wait(0.02):
            with contextlib.suppress(OSError):
                self._marks.append((time.monotonic(), self.path.stat().st_size))

    def samples_so_far(self) -> int:
        return self.path.stat().st_size // 4

    def wait_started(self, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while self.samples_so_far() == 0:
            if time.monotonic() > deadline or self._proc.poll() is not None:
                raise RuntimeError("parec delivered nothing from vp_rig.monitor")
            time.sleep(0.01)

    def stop(self) -> tuple[np.ndarray, np.ndarray]:
        """Stop recording; (left, right) as float32."""
        time.sleep(0.2)
        self._stop.set()
        self._thread.join(2)
        self._proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._proc.wait(5)
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self._file.close()
        raw = np.frombuffer(self.path.read_bytes()[: self.samples_so_far() * 4], dtype="<i2")
        stereo = raw.reshape(-1, 2).astype(np.float32) / 32768.0
        return stereo[:, 0].copy(), stereo[:, 1].copy()

    def monotonic_of(self, sample: int) -> float:
        """When `sample` was rendered, roughly: the earliest line t = a + s/RATE under every
        (time, size) mark (data is on disk only after it was rendered)."""
        pts = [(t, b // 4) for t, b in self._marks if b > 0]
        if not pts:
            raise RuntimeError("no recording marks")
        a = min(t - s / RATE for t, s in pts)
        return a + sample / RATE


class AudioRig:
    """The PulseAudio daemon with the rig's sinks (see the module docstring)."""

    def __init__(self) -> None:
        self.pulse = PulseAudio()

    def start(self, tmp: Path) -> None:
        self.pulse.start(tmp)
        p = self.pulse
        p.pactl("load-module", "module-null-sink", f"sink_name={RIG_SINK}", "channels=2",
                f"rate={RATE}", "channel_map=front-left,front-right",
                f"sink_properties=device.description={RIG_SINK}")
        for name, side in ((MOUTH_SINK, "front-left"), (EAR_SINK, "front-right")):
            p.pactl("load-module", "module-remap-sink", f"sink_name={name}", f"master={RIG_SINK}",
                    "channels=1", "channel_map=mono", f"master_channel_map={side}", "remix=no",
                    f"sink_properties=device.description={name}")
        p.pactl("load-module", "module-remap-source", f"source_name={MIC_SOURCE}",
                f"master={RIG_SINK}.monitor", "channels=1", "channel_map=mono",
                "master_channel_map=front-left", "remix=no",
                f"source_properties=device.description={MIC_SOURCE}")

    def env(self, *, source: str | None = None, sink: str | None = None) -> dict[str, str]:
        """Environment for a child process: the daemon, and its default source/sink
        (PULSE_SOURCE / PULSE_SINK: what PortAudio's "default" device opens)."""
        env = dict(self.pulse.env)
        if source:
            env["PULSE_SOURCE"] = source
        if sink:
            env["PULSE_SINK"] = sink
        return env

    def record(self, path: Path) -> RigRecording:
        rec = RigRecording(self.pulse.env, path)
        # Wake the null sink so it notices the low-latency reader (see tests/pulse.py).
        self.pulse.pactl("suspend-sink", RIG_SINK, "1")
        self.pulse.pactl("suspend-sink", RIG_SINK, "0")
        rec.wait_started()
        return rec

    def play(self, wav: Path) -> subprocess.Popen:
        """Play `wav` into the mouth (returns at once; wait() on the result)."""
        return subprocess.Popen(
            ["paplay", f"--device={MOUTH_SINK}", "--latency-msec=20", str(wav)],
            env=self.pulse.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )

    def stop(self) -> None:
        self.pulse.stop()


# --- the site -------------------------------------------------------------------------


def provision(data_dir: Path, users: dict[str, str], members: dict[str, list[str]],
              channels: list[str]) -> None:
    """Create `channels`, `users` (name → role) with PASSWORD, and `members` (user →
    channel names)."""
    from server.directory import Directory

    data_dir.mkdir(parents=True, exist_ok=True)
    directory = Directory.open(data_dir)
    try:
        for name in channels:
            directory.add_channel(name, team="Bench", event="Bench")
        for name, role in users.items():
            directory.add_user(name, role, PASSWORD)
        for user, names in members.items():
            for channel in names:
                directory.add_member(user, channel)
    finally:
        directory.close()


@dataclass
class ServerProcess:
    """The standalone server (`python -m server`) in its own process."""

    data_dir: Path
    log: Path
    port: int = 0
    proc: subprocess.Popen | None = None
    config: dict = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self.port = free_port()
        cmd = [sys.executable, "-m", "server", "--data", str(self.data_dir),
               "--listen", f"127.0.0.1:{self.port}", "--ice-address", "127.0.0.1"]
        if self.config:
            toml = self.data_dir / "bench.toml"
            toml.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in self.config.items()))
            cmd += ["--config", str(toml)]
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        await wait_healthy(self.proc, self.url, self.log)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def stop(self) -> None:
        if self.proc is not None:
            await stop_process(self.proc)
            self.proc = None


# --- agent processes ------------------------------------------------------------------


class Agent:
    """A bench/console_agent.py (or console_talkers.py) process. call() sends one command
    and awaits its reply; calls are serialised. Use from the orchestrator's loop."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log: Path,
                 script: Path = AGENT) -> None:
        self.name = name
        self.script = script
        self.args = args
        self.env = env
        self.log = log
        self.proc: asyncio.subprocess.Process | None = None
        self._lock = asyncio.Lock()

    async def start(self) -> "Agent":
        with open(self.log, "wb") as log:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, str(self.script), *self.args, cwd=ROOT, env=self.env,
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=log,
                limit=2**26,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def call(self, cmd: str, timeout: float = 30.0, **kw) -> dict:
        assert self.proc is not None and self.proc.stdin is not None and self.proc.stdout is not None
        async with self._lock:
            self.proc.stdin.write((json.dumps({"cmd": cmd, **kw}) + "\n").encode())
            await self.proc.stdin.drain()
            async with asyncio.timeout(timeout):
                for _ in range(10_000):  # bounded: stray lines before the reply
                    line = await self.proc.stdout.readline()
                    if not line:
                        raise RuntimeError(f"agent {self.name} exited; see {self.log}")
                    text = line.decode(errors="replace").strip()
                    if text.startswith(REPLY_PREFIX):
                        reply = json.loads(text[len(REPLY_PREFIX):])
                        if "error" in reply:
                            raise RuntimeError(f"agent {self.name}: {cmd}: {reply['error']}")
                        return reply
        raise RuntimeError(f"agent {self.name}: no reply to {cmd}")

    async def close(self) -> None:
        if self.proc is None:
            return
        if self.proc.returncode is None:
            with contextlib.suppress(Exception):
                await self.call("quit", timeout=20)
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        self.proc = None


# --- results --------------------------------------------------------------------------


def console_machine_facts() -> dict:
    """bench/forward.py's machine facts plus the console's own stack."""
    from importlib.metadata import PackageNotFoundError, version

    import sounddevice

    facts = machine_facts()
    for package in ("PySide6-Essentials", "shiboken6", "qasync", "sounddevice", "numpy"):
        try:
            facts[package] = version(package)
        except PackageNotFoundError:
            facts[package] = None
    facts["portaudio"] = sounddevice.get_portaudio_version()[1]
    try:
        out = subprocess.run(["pulseaudio", "--version"], capture_output=True, text=True, timeout=10)
        facts["pulseaudio"] = out.stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        facts["pulseaudio"] = None
    return facts


def merge_results(path: Path, key: str, data: dict) -> None:
    """Put `data` under `key` in the JSON file at `path`, keeping the other keys."""
    current: dict = {}
    if path.exists():
        with contextlib.suppress(ValueError):
            current = json.loads(path.read_text())
    current[key] = data
    current["machine"] = console_machine_facts()
    path.write_text(json.dumps(current, indent=2) + "\n")
