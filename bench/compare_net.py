"""The servers' side of bench/compare.py: a network namespace behind a veth pair, and a
Janus process configured for the benchmark.

libnice (Janus's ICE) never offers 127.0.0.1, so every server under test runs in a named
network namespace reached over a veth pair; the load generator stays on the host end.
Everything is created inside the caller's own (loopback-only) namespace and removed again.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.forward import stop_process  # noqa: E402

HOST_IP = "10.203.0.1"
SERVER_IP = "10.203.0.2"
JANUS_LIB = Path("/usr/lib/x86_64-linux-gnu/janus")


def loopback_only() -> bool:
    """True when this network namespace has no interface but lo (e.g. `unshare -n`)."""
    # Not /sys/class/net: `unshare -n` leaves /sys showing the parent's interfaces.
    return {name for _, name in socket.if_nameindex()} <= {"lo"}


def _ip(*args: str, check: bool = True) -> None:
    subprocess.run(["ip", *args], check=check, capture_output=True, timeout=20)


@dataclass
class ServerNamespace:
    """`ip netns add NAME` with a veth pair: HOST_IP/24 here, SERVER_IP/24 inside.

    Use as a context manager; leaving it (also on error or Ctrl-C) deletes the namespace,
    which takes the veth pair with it.
    """

    name: str = field(default_factory=lambda: f"vpbench-srv-{os.getpid()}")
    host_if: str = "vpb-host"
    server_if: str = "vpb-srv"

    @property
    def prefix(self) -> list[str]:
        """Command prefix that runs a program inside the namespace."""
        return ["ip", "netns", "exec", self.name]

    def __enter__(self) -> "ServerNamespace":
        if not loopback_only():
            raise RuntimeError("run inside a loopback-only namespace: unshare -n sh -c 'ip link set lo up && ...'")
        try:
            _ip("netns", "add", self.name)
            _ip("link", "add", self.host_if, "type", "veth", "peer", "name", self.server_if)
            _ip("link", "set", self.server_if, "netns", self.name)
            _ip("addr", "add", f"{HOST_IP}/24", "dev", self.host_if)
            _ip("link", "set", self.host_if, "up")
            inside = [*self.prefix, "ip"]
            for args in (["link", "set", "lo", "up"],
                         ["addr", "add", f"{SERVER_IP}/24", "dev", self.server_if],
                         ["link", "set", self.server_if, "up"]):
                subprocess.run(inside + args, check=True, capture_output=True, timeout=20)
        except BaseException:
            self.remove()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.remove()

    def remove(self) -> None:
        _ip("netns", "del", self.name, check=False)
        _ip("link", "del", self.host_if, check=False)


def janus_binary() -> str | None:
    return shutil.which("janus") or next(
        (p for p in ("/usr/bin/janus", "/usr/sbin/janus") if os.access(p, os.X_OK)), None)


def janus_version() -> str:
    binary = janus_binary()
    if binary is None:
        return "?"
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=20).stdout
    for line in out.splitlines():
        if line.startswith("Janus version:"):
            return line.split("(", 1)[-1].rstrip(")")
    return "?"


def write_janus_config(folder: Path, host: str, port: int, room: int, event_loops: int | None) -> Path:
    """A Janus configuration in `folder` that loads the VideoRoom plugin and the HTTP
    transport only (symlinked into folders of their own), gathers ICE on `host` only and
    has no STUN server; Janus's defaults otherwise. Returns the janus.jcfg path."""
    conf = folder / "conf"
    for sub in ("conf", "plugins", "transports", "events", "loggers"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for kind, lib in (("plugins", "libjanus_videoroom.so"), ("transports", "libjanus_http.so")):
        link = folder / kind / lib
        if not link.exists():
            link.symlink_to(JANUS_LIB / kind / lib)
    loops = f"\tevent_loops = {event_loops}\n" if event_loops else ""
    (conf / "janus.jcfg").write_text(
        "general: {\n"
        f'\tconfigs_folder = "{conf}"\n'
        f'\tplugins_folder = "{folder / "plugins"}"\n'
        f'\ttransports_folder = "{folder / "transports"}"\n'
        f'\tevents_folder = "{folder / "events"}"\n'
        f'\tloggers_folder = "{folder / "loggers"}"\n'
        f"{loops}"
        "}\n"
        "certificates: {\n}\nmedia: {\n}\n"
        f'nat: {{\n\tnice_debug = false\n\tice_enforce_list = "{host}"\n}}\n'
        "plugins: {\n}\ntransports: {\n}\nloggers: {\n}\nevents: {\n}\n"
    )
    (conf / "janus.transport.http.jcfg").write_text(
        "general: {\n"
        '\tbase_path = "/janus"\n\thttp = true\n'
        f'\tport = {port}\n\tip = "{host}"\n\thttps = false\n'
        "}\n"
        "admin: {\n\tadmin_http = false\n\tadmin_https = false\n}\n"
        "cors: {\n}\n"
    )
    (conf / "janus.plugin.videoroom.jcfg").write_text(
        "general: {\n}\n"
        f"room-{room}: {{\n"
        '\tdescription = "bench"\n\tpublishers = 1\n\taudiocodec = "opus"\n'
        "}\n"
    )
    return conf / "janus.jcfg"


@dataclass
class JanusProc:
    """Janus in the namespace; `event_loops` None keeps Janus's default (a loop per handle)."""

    work: Path
    room: int
    event_loops: int | None = None
    host: str = SERVER_IP
    port: int = 8088
    prefix: list[str] = field(default_factory=list)
    proc: subprocess.Popen | None = None
    log: Path | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/janus"

    async def start(self) -> None:
        import aiohttp

        binary = janus_binary()
        if binary is None:
            raise RuntimeError("janus is not installed (apt-get install janus)")
        config = write_janus_config(self.work, self.host, self.port, self.room, self.event_loops)
        self.log = self.work / "janus.log"
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                self.prefix + [binary, "-C", str(config), "-F", str(config.parent), "-o"],
                stdout=log, stderr=subprocess.STDOUT, cwd=self.work)
        async with aiohttp.ClientSession() as http:
            for _ in range(200):  # bounded: 20 s
                if self.proc.poll() is not None:
                    raise RuntimeError(f"janus exited: see {self.log}")
                with contextlib.suppress(aiohttp.ClientError, OSError):
                    async with http.get(self.url + "/info") as r:
                        if r.status == 200:
                            return
                await asyncio.sleep(0.1)
        raise RuntimeError(f"janus did not come up: see {self.log}")

    async def stop(self) -> None:
        if self.proc is not None:
            await stop_process(self.proc)
            self.proc = None
