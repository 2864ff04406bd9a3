"""Several processes of one server on one machine: `vpserver --workers N`.

Python forwards audio on one core per process. With `--workers N` (config key `workers`;
0 or "auto": one per CPU core) the `vpserver` process becomes a small supervisor of N
worker processes, each the same server with the same configuration, that all accept on
the same listen address: every worker binds it with SO_REUSEPORT, and the Linux kernel
spreads new connections over them, so a channel's listeners land on every worker. The
workers are the nodes of one site (server.cluster): they share the state in Redis, so
`--redis` is required, and a talker's packets reach the listeners on the other workers
over the node-to-node relay. Each worker is named `<node_id>-w<i>` and has its own relay
port and media port (port 0: one the system picks; a fixed port P: P, P+1, ...). All of them announce
the same public URL, so `hello.nodes` names it once, and a client that reconnects to it
after its worker went away resumes on whichever worker the kernel picks (session records).

The supervisor starts the workers, forwards SIGTERM and SIGINT to them and waits for them
to stop (a second signal kills them), and restarts a worker that exits without being asked
to, after a back-off; a worker that keeps dying, or one that rejects the configuration,
stops the whole server with a non-zero exit code. Workers die with the supervisor
(PR_SET_PDEATHSIG), so a supervisor killed outright leaves no orphans. The supervisor is
synchronous and small: it never imports aiortc or opens the site's state itself.

A worker is started as `vpserver` with the supervisor's own arguments plus overrides
(`--workers 1`, the listen address with its port resolved, the node id, the relay
address and the internal `--reuse-port`), so it reads the same config file.
"""

from __future__ import annotations

import ctypes
import enum
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from .config import ConfigError, ServerConfig, media_port_number, parse_listen

logger = logging.getLogger(__name__)

# Restart back-off: 0.5 s after the first unexpected exit, doubling up to 10 s; more than
# MAX_RESTARTS within RESTART_WINDOW_S means the worker cannot run, and the server stops.
FIRST_BACKOFF_S = 0.5
MAX_BACKOFF_S = 10.0
MAX_RESTARTS = 5
RESTART_WINDOW_S = 60.0
# After SIGTERM, how long the workers get to close their sessions before SIGKILL (inside
# the systemd unit's TimeoutStopSec=20, so that the supervisor acts first).
STOP_TIMEOUT_S = 15.0
# vpserver's exit code for a configuration a worker rejects (server.cli.EXIT_USAGE).
EXIT_USAGE = 2
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_PR_SET_PDEATHSIG = 1


class SupervisorError(Exception):
    """The workers cannot be started (e.g. the listen address is taken)."""


def worker_count(value: int | str) -> int:
    """The `workers` setting as a number of processes: a count ≥ 1 as given, 0 or "auto"
    one per CPU core this process may run on. ConfigError for anything else."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text == "auto":
            value = 0
        elif text.isdigit():
            value = int(text)
        else:
            raise ConfigError(f"workers must be a number or 'auto', not {value!r}")
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"workers must be a number ≥ 0 or 'auto', not {value!r}")
    if value == 0:
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return value


def check_reuse_port() -> None:
    """ConfigError unless this system spreads one listen port's connections over several
    processes: Linux's SO_REUSEPORT. (BSDs and macOS accept the option but hand every
    connection to one socket; Windows has no such option.)"""
    if not sys.platform.startswith("linux") or not hasattr(socket, "SO_REUSEPORT"):
        raise ConfigError(f"--workers needs SO_REUSEPORT as Linux has it, which {sys.platform} "
                          "lacks; run one vpserver per port instead (docs/operations.md)")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        except OSError as exc:
            raise ConfigError(f"--workers needs SO_REUSEPORT, which this kernel refuses: {exc}") from None


@dataclass(frozen=True)
class WorkerPlan:
    """What tells worker `index` (from 1) apart from its siblings."""

    index: int
    node_id: str
    relay_listen: str
    relay_announce: str | None
    media_port: int | None = None  # None: the configured setting (auto or off) as it is

    def overrides(self, listen: str) -> list[str]:
        """Options appended to the supervisor's own arguments (the last one wins)."""
        return [
            "--workers", "1", "--listen", listen, "--node-id", self.node_id,
            "--relay", self.relay_listen,
            *(["--relay-announce", self.relay_announce] if self.relay_announce else []),
            *(["--media-port", str(self.media_port)] if self.media_port else []),
            "--reuse-port",
        ]


def plan_workers(config: ServerConfig, count: int, listen_port: int) -> list[WorkerPlan]:
    """Node ids `<node_id>-w1..wN` (node_id defaults to host:port as for one node) and one
    relay port each: the system's pick when the configured port is 0, else consecutive
    ports from the configured one (for the announced address too)."""
    base = config.node_id or f"{socket.gethostname()}:{listen_port}"
    relay_host, relay_port = parse_listen(config.relay_listen)
    announce = parse_listen(config.relay_announce) if config.relay_announce else None
    if announce is not None and (relay_port == 0 or announce[1] == 0):
        raise ConfigError("with --workers, --relay and --relay-announce need fixed ports "
                          "(each worker takes the next one)")
    last = max(relay_port, announce[1] if announce else 0) + count - 1
    if relay_port and last > 65535:
        raise ConfigError(f"{count} workers need relay ports up to {last}, beyond 65535")
    media_port = media_port_number(config.media_port)
    if media_port and media_port + count - 1 > 65535:
        raise ConfigError(f"{count} workers need media ports up to {media_port + count - 1}, beyond 65535")
    plans = []
    for i in range(count):
        port = relay_port + i if relay_port else 0
        plans.append(WorkerPlan(
            index=i + 1,
            node_id=f"{base}-w{i + 1}",
            relay_listen=_address(relay_host, port),
            relay_announce=_address(announce[0], announce[1] + i) if announce else None,
            media_port=media_port + i if media_port else None,
        ))
    return plans


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def vpserver_program() -> list[str]:
    """How to start `vpserver` again: this interpreter with `-m server`, or the frozen
    executable itself (PyInstaller)."""
    if getattr(sys, "frozen", False):
        return [sys.executable]
    return [sys.executable, "-m", "server"]


def reserve_listen_port(host: str, port: int) -> int:
    """Check that the workers can bind `host:port` with SO_REUSEPORT and that nobody
    listens there yet (another vpserver of this user would otherwise share its
    connections with ours); port 0 becomes a free port. SupervisorError if not."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise SupervisorError(f"cannot listen on {_address(host, port)}: {exc.strerror}") from None
        port = probe.getsockname()[1]
    target = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    try:
        with socket.create_connection((target, port), timeout=0.5):
            pass
    except OSError:
        return port  # nobody answers: free
    raise SupervisorError(f"cannot listen on {_address(host, port)}: another server listens there")


# -- the supervisor -----------------------------------------------------------------------


class WorkerState(enum.Enum):
    RUNNING = "running"
    WAITING = "waiting"  # exited unexpectedly; restarts at `restart_at`
    STOPPED = "stopped"


@dataclass
class Worker:
    """One worker process slot: its command and its restart history."""

    name: str
    command: list[str]
    state: WorkerState = WorkerState.STOPPED
    process: subprocess.Popen | None = None
    exit_code: int | None = None
    starts: int = 0
    restart_at: float = 0.0
    restarts: deque[float] = field(default_factory=deque)  # when, within the window


class Supervisor:
    """Runs the workers until a stop signal. Call `run()` once, on the main thread (it
    installs signal handlers); it returns the exit code for `vpserver`."""

    def __init__(self, workers: Sequence[tuple[str, list[str]]], *,
                 clock: Callable[[], float] = time.monotonic,
                 stop_timeout_s: float = STOP_TIMEOUT_S,
                 first_backoff_s: float = FIRST_BACKOFF_S,
                 max_restarts: int = MAX_RESTARTS) -> None:
        self.workers = [Worker(name, command) for name, command in workers]
        self._clock = clock
        self._stop_timeout_s = stop_timeout_s
        self._first_backoff_s = first_backoff_s
        self._max_restarts = max_restarts
        self._stopping = False
        self._stop_deadline = 0.0
        self._failure: int | None = None  # exit code when the server stops of itself
        self._libc = _libc()

    def run(self) -> int:
        wake_read, wake_write = os.pipe()
        os.set_blocking(wake_read, False)
        os.set_blocking(wake_write, False)
        previous = {sig: signal.signal(sig, _note_signal) for sig in (*_STOP_SIGNALS, signal.SIGCHLD)}
        previous_fd = signal.set_wakeup_fd(wake_write)
        try:
            for worker in self.workers:
                self._start(worker)
            self._supervise(wake_read)
        except BaseException:
            self._kill_all("the supervisor failed")  # never leave workers behind
            for worker in self.workers:
                if worker.state is WorkerState.RUNNING:
                    worker.process.wait(5)
            raise
        finally:
            signal.set_wakeup_fd(previous_fd)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            os.close(wake_read)
            os.close(wake_write)
        if self._failure is not None:
            return self._failure
        clean = all(w.exit_code == 0 for w in self.workers if w.exit_code is not None)
        logger.info("supervisor: all workers stopped%s", "" if clean else " (not all cleanly)")
        return 0 if clean else 1

    def _supervise(self, wake_read: int) -> None:
        """Until every worker has stopped after a stop signal or a fatal exit."""
        while True:
            select.select([wake_read], [], [], self._next_timeout())
            for signum in _drain(wake_read):
                if signum in _STOP_SIGNALS:
                    self._on_stop_signal(signal.Signals(signum))
            self._reap()
            if self._stopping:
                if not any(w.state is WorkerState.RUNNING for w in self.workers):
                    break
                if self._clock() >= self._stop_deadline:
                    self._kill_all("did not stop in time")
            else:
                self._restart_due()

    # --- starting and restarting ---------------------------------------------------------

    def _start(self, worker: Worker) -> None:
        parent = os.getpid()
        libc = self._libc

        def die_with_parent() -> None:  # in the child, between fork and exec
            if libc is not None:
                libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
            if os.getppid() != parent:  # the supervisor died before prctl took effect
                os._exit(1)

        # Its own process group: a Ctrl-C in the terminal reaches the supervisor only,
        # which stops the workers in order.
        worker.process = subprocess.Popen(worker.command, preexec_fn=die_with_parent, process_group=0)
        worker.state = WorkerState.RUNNING
        worker.exit_code = None
        worker.starts += 1
        logger.info("supervisor: worker %s is pid %d", worker.name, worker.process.pid)

    def _reap(self) -> None:
        for worker in self.workers:
            if worker.state is not WorkerState.RUNNING or worker.process.poll() is None:
                continue
            code = worker.process.returncode
            worker.exit_code = code
            worker.state = WorkerState.STOPPED
            if self._stopping:
                logger.info("supervisor: worker %s stopped (%s)", worker.name, _describe(code))
                continue
            if code == EXIT_USAGE:
                self._give_up(f"worker {worker.name} rejects the configuration; stopping", EXIT_USAGE)
                continue
            now = self._clock()
            while worker.restarts and now - worker.restarts[0] > RESTART_WINDOW_S:
                worker.restarts.popleft()
            if len(worker.restarts) >= self._max_restarts:
                self._give_up(f"worker {worker.name} exited {len(worker.restarts) + 1} times within "
                              f"{RESTART_WINDOW_S:.0f} s ({_describe(code)}); stopping", 1)
                continue
            delay = min(MAX_BACKOFF_S, self._first_backoff_s * 2 ** len(worker.restarts))
            worker.restarts.append(now)
            worker.restart_at = now + delay
            worker.state = WorkerState.WAITING
            logger.warning("supervisor: worker %s exited unexpectedly (%s); restarting in %.1f s",
                           worker.name, _describe(code), delay)

    def _restart_due(self) -> None:
        now = self._clock()
        for worker in self.workers:
            if worker.state is WorkerState.WAITING and now >= worker.restart_at:
                self._start(worker)

    def _next_timeout(self) -> float:
        """Until the next restart or the stop deadline; at most 1 s (a lost wake-up byte
        costs a second, never a hang)."""
        now = self._clock()
        due = [w.restart_at for w in self.workers if w.state is WorkerState.WAITING and not self._stopping]
        if self._stopping:
            due.append(self._stop_deadline)
        return max(0.0, min([now + 1.0, *due]) - now)

    # --- stopping ------------------------------------------------------------------------

    def _on_stop_signal(self, sig: signal.Signals) -> None:
        if self._stopping:
            self._kill_all(f"{sig.name} again")
            return
        logger.info("supervisor: %s: stopping %d workers", sig.name, len(self.workers))
        self._begin_stop()

    def _give_up(self, message: str, code: int) -> None:
        logger.error("supervisor: %s", message)
        if self._failure is None:
            self._failure = code
        self._begin_stop()

    def _begin_stop(self) -> None:
        if self._stopping:
            return
        self._stopping = True
        self._stop_deadline = self._clock() + self._stop_timeout_s
        for worker in self.workers:
            if worker.state is WorkerState.WAITING:
                worker.state = WorkerState.STOPPED
            elif worker.state is WorkerState.RUNNING:
                _send(worker, signal.SIGTERM)

    def _kill_all(self, why: str) -> None:
        for worker in self.workers:
            if worker.state is WorkerState.RUNNING:
                logger.warning("supervisor: killing worker %s (%s)", worker.name, why)
                _send(worker, signal.SIGKILL)
        self._stop_deadline = self._clock() + 5.0  # then again, should one survive SIGKILL


def _note_signal(signum: int, frame: object) -> None:
    """The handler itself does nothing: the wake-up fd carries the signal number to the
    supervisor's loop."""


def _drain(fd: int) -> bytes:
    data = b""
    while True:
        try:
            chunk = os.read(fd, 512)
        except BlockingIOError:
            return data
        if not chunk:
            return data
        data += chunk


def _send(worker: Worker, sig: signal.Signals) -> None:
    try:
        worker.process.send_signal(sig)
    except ProcessLookupError:
        pass  # exited in between; the next reap sees it


def _describe(code: int | None) -> str:
    if code is None:
        return "running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


# -- the entry point ------------------------------------------------------------------------


def run_workers(config: ServerConfig, argv: Sequence[str], count: int) -> int:
    """Supervise `count` (> 1) workers of the server `argv` (vpserver's arguments) describes
    until SIGTERM or SIGINT; returns the exit code. ConfigError without Redis, without
    SO_REUSEPORT, or for TLS options that cannot work; SupervisorError when the listen
    address is taken."""
    from .tls import served_tls  # here: cryptography is not needed to parse options

    if count < 2:
        raise ValueError(f"run_workers needs at least 2 workers, not {count}")
    if config.redis_url is None:
        raise ConfigError(f"--workers {count} needs --redis (or redis_url): the workers are the "
                          "nodes of one site and share its state (floors, sessions, directory) "
                          "in Redis")
    check_reuse_port()
    served_tls(config)  # TLS errors once, here; a self-signed pair is made once, not N times
    port = reserve_listen_port(config.listen_host, config.listen_port)
    listen = _address(config.listen_host, port)
    plans = plan_workers(config, count, port)
    program = vpserver_program()
    logger.info("supervisor: %d workers on %s (%s)", count, listen,
                ", ".join(p.node_id for p in plans))
    supervisor = Supervisor([(p.node_id, [*program, *argv, *p.overrides(listen)]) for p in plans])
    return supervisor.run()


__all__ = [
    "Supervisor", "SupervisorError", "WorkerPlan", "check_reuse_port", "plan_workers",
    "reserve_listen_port", "run_workers", "vpserver_program", "worker_count",
]
