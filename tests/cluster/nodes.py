"""Server nodes as real processes (`python -m server`), for the multi-node tests and the
scale-out benchmark: started on loopback, sharing one Redis, killable with SIGKILL."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp

from tests.redis_server import free_port
from tests.server.harness import provision

START_TIMEOUT_S = 30.0


class NodeProcess:
    """One `vpserver` node. `url` once started; its output goes to `log_path`."""

    def __init__(self, name: str, data_dir: Path, redis_url: str, **config: object) -> None:
        self.name = name
        self.data_dir = data_dir
        self.redis_url = redis_url
        self.config = {"floor_lease_ms": 3000, **config}
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        self.log_path = data_dir.parent / f"node-{name}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        config_file = self.data_dir.parent / f"node-{self.name}.toml"
        config_file.write_text("".join(f"{key} = {value!r}\n" for key, value in self.config.items()))
        return [
            sys.executable, "-m", "server",
            "--config", str(config_file),
            "--data", str(self.data_dir),
            "--listen", f"127.0.0.1:{self.port}",
            "--ice-address", "127.0.0.1",
            "--redis", self.redis_url,
            "--node-id", self.name,
            "--relay", "127.0.0.1:0",
        ]

    async def start(self) -> "NodeProcess":
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            self.command(), stdout=log, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        log.close()
        await self.wait_healthy()
        return self

    async def wait_healthy(self, timeout: float = START_TIMEOUT_S) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        async with aiohttp.ClientSession() as http:
            while True:
                if self.process is not None and self.process.poll() is not None:
                    raise RuntimeError(f"node {self.name} exited: {self.log_tail()}")
                try:
                    async with http.get(f"{self.url}/api/health") as response:
                        if response.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                if asyncio.get_running_loop().time() > deadline:
                    raise TimeoutError(f"node {self.name} not healthy: {self.log_tail()}")
                await asyncio.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL: no goodbye to anyone, as a crash or a power cut."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    async def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(self.process.wait, 15)
        except subprocess.TimeoutExpired:
            self.kill()

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


async def start_nodes(
    root: Path, redis_url: str, names: list[str], users: int = 10, **config: object
) -> tuple[list[NodeProcess], dict[str, int]]:
    """Provision a site in the first node's data folder and start the nodes in order: the
    first one puts the directory into Redis, the others take it from there."""
    first = root / f"data-{names[0]}"
    channels = provision(first, users)
    nodes = []
    try:
        for name in names:
            nodes.append(await NodeProcess(name, root / f"data-{name}", redis_url, **config).start())
    except BaseException:
        for node in nodes:
            node.kill()
        raise
    return nodes, channels
