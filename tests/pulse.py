"""A private PulseAudio daemon with two null sinks, for tests of real audio I/O.

    from tests.pulse import pulse  # the fixture; module scope

The daemon (started per test module, in a temporary folder, as whoever runs the tests,
root included; never `--system`) has:
- `vp_speaker`: a null sink, the default sink. What the console plays ends up in its
  monitor source, which record_speaker() / start_recording() read with parec.
- `vp_mic`: a null sink whose monitor `vp_mic.monitor` is the default source: a fake
  microphone. play_into_mic() plays a WAV into it with paplay.

PortAudio reaches it through ALSA's pulse plugin (Debian: libasound2-plugins). The
fixture points ALSA at a generated config (ALSA_CONFIG_PATH = the system alsa.conf plus
ours) in which `default` is PulseAudio and `vp_speaker` / `vp_mic` are named PCMs, so
they appear as PortAudio devices by those names; it sets PULSE_SERVER for this process,
re-initialises PortAudio (refresh_devices) and restores both afterwards.

If the daemon cannot start the test fails (pytest.fail) with the daemon's log: CI has
every package, so a missing one is an error to see, not a skip.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from vpdesk.audio.devices import refresh_devices

RATE = 48_000
SPEAKER_SINK = "vp_speaker"
MIC_SINK = "vp_mic"
SYSTEM_ALSA_CONF = Path("/usr/share/alsa/alsa.conf")
START_TIMEOUT_S = 10.0
_POLL_S = 0.05

_DAEMON_SCRIPT = """\
load-module module-native-protocol-unix socket={socket} auth-anonymous=1
load-module module-null-sink sink_name={speaker} rate={rate} channels=1 \
sink_properties=device.description={speaker}
load-module module-null-sink sink_name={mic} rate={rate} channels=1 \
sink_properties=device.description={mic}
set-default-sink {speaker}
set-default-source {mic}.monitor
"""

# `default` goes to PulseAudio unconditionally (the system's pulse.conf only does so
# when a daemon answered when ALSA first read its config); the named PCMs make the
# null sinks selectable by name in PortAudio.
_ALSA_CONF = """\
pcm.!default {{ type pulse hint.description "PulseAudio (test daemon)" }}
ctl.!default {{ type pulse }}
pcm.{speaker} {{ type pulse device "{speaker}" hint {{ show on description "{speaker}" }} }}
pcm.{mic} {{ type pulse device "{mic}.monitor" hint {{ show on description "{mic}" }} }}
"""


def _need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"{tool} is not installed (Debian: pulseaudio, pulseaudio-utils)")
    return path


def _with_parent(command: list[str]) -> list[str]:
    """`command` set to get SIGTERM when the test process dies (util-linux setpriv), so a
    crashed test run leaves no daemon or recorder behind."""
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig=TERM", "--", *command] if setpriv else command



def _end(proc: subprocess.Popen) -> None:
    """SIGTERM, 5 s to exit, then SIGKILL."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

class MonitorRecorder:
    """One parec reading a sink's monitor source into a file, for the daemon's life.

    A null sink nobody listens to at low latency sleeps in ~2 s blocks, and a stream
    opened on it then waits up to that long for its first data. So the fixture keeps
    one low-latency parec on each sink's monitor all along (and kicks the sinks once
    with a suspend/resume), and recordings are slices of the speaker's file.
    """

    def __init__(self, env: dict[str, str], sink: str, path: Path) -> None:
        self.path = path
        self._file = open(path, "wb")  # noqa: SIM115 - closed in close()
        command = [
            _need("parec"),
            f"--device={sink}.monitor",
            "--format=s16le",
            f"--rate={RATE}",
            "--channels=1",
            "--latency-msec=10",
        ]
        self._proc = subprocess.Popen(
            _with_parent(command),
            stdout=self._file,
            stderr=subprocess.PIPE,
            env=env,
        )

    def wait_started(self) -> None:
        self._wait_bytes(1, timeout=5.0, what="parec delivered nothing from the monitor")

    def size(self) -> int:
        return self.path.stat().st_size

    def _wait_bytes(self, size: int, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while self.size() < size:
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else ""
                pytest.fail(f"parec exited ({self._proc.returncode}): {err}")
            if time.monotonic() > deadline:
                pytest.fail(what)
            time.sleep(0.005)

    def read(self, start: int, end: int) -> np.ndarray:
        """Bytes [start, end) of the recording as float32 samples, once written."""
        self._wait_bytes(end, timeout=3.0, what="parec stopped delivering")
        with open(self.path, "rb") as f:
            f.seek(start)
            raw = f.read(end - start)
        return np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0

    def close(self) -> None:
        _end(self._proc)
        if self._proc.stderr:
            self._proc.stderr.close()
        self._file.close()


class SpeakerRecording:
    """What the speaker sink plays from start_recording() until stop()."""

    # parec delivers in ~10 ms pieces; wait this much past stop() so nothing played
    # before it is missing.
    FLUSH_BYTES = 2 * RATE * 60 // 1000

    def __init__(self, monitor: MonitorRecorder) -> None:
        self._monitor = monitor
        self._start = monitor.size() & ~1
        self.samples: np.ndarray | None = None

    def stop(self) -> np.ndarray:
        """End the recording; float32 mono 48 kHz samples (blocks ~60 ms at most)."""
        if self.samples is None:
            end = (self._monitor.size() + self.FLUSH_BYTES) & ~1
            self.samples = self._monitor.read(self._start, end)
        return self.samples


class PulseAudio:
    """One private PulseAudio daemon. start() and stop() from the test's thread."""

    def __init__(self) -> None:
        self.dir: Path | None = None
        self.socket: Path | None = None
        self.env: dict[str, str] = {}  # for subprocesses (paplay, parec, pactl)
        self._proc: subprocess.Popen | None = None
        self._log: Path | None = None
        self._saved_environ: dict[str, str | None] = {}
        self._monitors: dict[str, MonitorRecorder] = {}

    @property
    def server(self) -> str:
        assert self.socket is not None, "PulseAudio is not started"
        return f"unix:{self.socket}"

    # --- lifecycle ------------------------------------------------------------------

    def start(self, tmp_dir: Path | None = None) -> None:
        """Start the daemon in a fresh folder and point this process at it."""
        daemon = _need("pulseaudio")
        _need("pactl")
        if not SYSTEM_ALSA_CONF.is_file():
            pytest.fail(f"{SYSTEM_ALSA_CONF} is missing (Debian: libasound2-data)")
        # Unix socket paths are limited to ~107 bytes: keep the folder short.
        self.dir = Path(tempfile.mkdtemp(prefix="vp-pulse-", dir=tmp_dir))
        if len(str(self.dir / "native")) > 100:
            self.dir = Path(tempfile.mkdtemp(prefix="vp-pulse-"))
        self.socket = self.dir / "native"
        runtime = self.dir / "runtime"
        runtime.mkdir(mode=0o700)
        script = self.dir / "daemon.pa"
        script.write_text(
            _DAEMON_SCRIPT.format(socket=self.socket, speaker=SPEAKER_SINK, mic=MIC_SINK, rate=RATE)
        )
        alsa_conf = self.dir / "alsa.conf"
        alsa_conf.write_text(_ALSA_CONF.format(speaker=SPEAKER_SINK, mic=MIC_SINK))

        # HOME / XDG dirs inside our folder: the daemon writes its cookie and state
        # there, not into the real user's (root's) home.
        daemon_env = dict(os.environ)
        daemon_env.update(
            HOME=str(self.dir),
            XDG_RUNTIME_DIR=str(runtime),
            XDG_CONFIG_HOME=str(self.dir / "config"),
            XDG_STATE_HOME=str(self.dir / "state"),
            PULSE_RUNTIME_PATH=str(runtime),
            PULSE_STATE_PATH=str(self.dir / "state"),
        )
        daemon_env.pop("PULSE_SERVER", None)
        daemon_env.pop("DBUS_SESSION_BUS_ADDRESS", None)
        self._log = self.dir / "pulseaudio.log"
        command = [
            daemon,
            "-n",  # no default.pa: only our script
            "--daemonize=no",
            "--exit-idle-time=-1",
            "--use-pid-file=no",
            "--disallow-exit",
            "--realtime=no",
            "--high-priority=no",
            "--disable-shm=yes",
            "--log-target=stderr",
            "--log-level=notice",
            "-F",
            str(script),
        ]
        with open(self._log, "wb") as log:
            self._proc = subprocess.Popen(
                _with_parent(command),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=daemon_env,
            )
        self.env = dict(os.environ, PULSE_SERVER=self.server, ALSA_CONFIG_PATH=self._alsa_path())
        self.env.pop("PULSE_SINK", None)
        self.env.pop("PULSE_SOURCE", None)
        self._wait_ready()
        self._start_monitors()

        for key in ("PULSE_SERVER", "ALSA_CONFIG_PATH", "PULSE_SINK", "PULSE_SOURCE"):
            self._saved_environ[key] = os.environ.get(key)
        os.environ.pop("PULSE_SINK", None)
        os.environ.pop("PULSE_SOURCE", None)
        os.environ["PULSE_SERVER"] = self.server
        os.environ["ALSA_CONFIG_PATH"] = self._alsa_path()
        refresh_devices()

    def _alsa_path(self) -> str:
        assert self.dir is not None
        return f"{SYSTEM_ALSA_CONF}:{self.dir / 'alsa.conf'}"

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            assert self._proc is not None
            if self._proc.poll() is not None:
                self._fail(f"pulseaudio exited with status {self._proc.returncode}")
            result = subprocess.run(
                ["pactl", "info"], env=self.env, capture_output=True, text=True, timeout=10
            )
            if result.returncode == 0 and f"Default Sink: {SPEAKER_SINK}" in result.stdout:
                return
            if time.monotonic() > deadline:
                self._fail(f"pulseaudio did not answer within {START_TIMEOUT_S} s")
            time.sleep(_POLL_S)

    def _start_monitors(self) -> None:
        assert self.dir is not None
        for sink in (SPEAKER_SINK, MIC_SINK):
            self._monitors[sink] = MonitorRecorder(self.env, sink, self.dir / f"{sink}.raw")
        # Wake the sinks so they notice the low-latency listeners now, not after the
        # rest of their current (long, idle) sleep.
        for sink in (SPEAKER_SINK, MIC_SINK):
            self.pactl("suspend-sink", sink, "1")
            self.pactl("suspend-sink", sink, "0")
        for monitor in self._monitors.values():
            monitor.wait_started()

    def _fail(self, why: str) -> None:
        log = self._log.read_text(errors="replace") if self._log and self._log.exists() else ""
        self.stop()
        pytest.fail(f"{why}; its log:\n{log}")

    def stop(self) -> None:
        """Stop the daemon, restore the environment, re-initialise PortAudio."""
        if self._saved_environ:
            for key, value in self._saved_environ.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
            self._saved_environ = {}
            with contextlib.suppress(RuntimeError):  # a test left a stream open
                refresh_devices()
        for monitor in self._monitors.values():
            monitor.close()
        self._monitors = {}
        if self._proc is not None:
            _end(self._proc)
            self._proc = None
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    # --- helpers for tests ----------------------------------------------------------

    def pactl(self, *args: str) -> str:
        result = subprocess.run(
            ["pactl", *args], env=self.env, capture_output=True, text=True, timeout=10
        )
        if result.returncode != 0:
            raise RuntimeError(f"pactl {' '.join(args)} failed: {result.stderr.strip()}")
        return result.stdout

    def play_into_mic(self, wav_path: Path) -> subprocess.Popen:
        """Start playing `wav_path` into the fake microphone; wait() on the result."""
        command = [_need("paplay"), f"--device={MIC_SINK}", "--latency-msec=20", str(wav_path)]
        return subprocess.Popen(
            _with_parent(command),
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def start_recording(self) -> SpeakerRecording:
        """Record the speaker sink from now until the recording's stop()."""
        assert self.dir is not None, "PulseAudio is not started"
        return SpeakerRecording(self._monitors[SPEAKER_SINK])

    def record_speaker(self, seconds: float) -> np.ndarray:
        """Record `seconds` of the speaker sink (blocking): float32 mono 48 kHz."""
        recording = self.start_recording()
        time.sleep(seconds)
        return recording.stop()

    @contextlib.contextmanager
    def unreachable(self) -> Iterator[None]:
        """Within the block, this process's PULSE_SERVER names a socket nobody
        listens on (PortAudio re-initialised), as on a PC whose sound server died."""
        assert self.dir is not None
        previous = os.environ["PULSE_SERVER"]
        os.environ["PULSE_SERVER"] = f"unix:{self.dir / 'nobody-listens'}"
        refresh_devices()
        try:
            yield
        finally:
            os.environ["PULSE_SERVER"] = previous
            refresh_devices()


@pytest.fixture(scope="module")
def pulse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PulseAudio]:
    """A started PulseAudio daemon that this process's PortAudio plays to and records
    from (see the module docstring)."""
    daemon = PulseAudio()
    try:
        daemon.start(tmp_path_factory.mktemp("pulse"))
        yield daemon
    finally:
        daemon.stop()
