"""The site under test for bench/cluster.py: one redis-server, node processes started
fresh for every setup, and the node figures the benchmark reads (/api/stats, /proc).

Nodes are tests.cluster.nodes.NodeProcess; MemoryNode is the same process without
`--redis`, i.e. a standalone server with the memory live store and SQLite directory.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path

import aiohttp

from bench.forward import PASSWORD as LISTENER_PASSWORD
from server.directory import Directory, Role
from tests.cluster.nodes import NodeProcess
from tests.redis_server import RedisServer
from tests.server.harness import PASSWORD, provision
from vpdesk.session.signaling import login

CHANNEL = "alpha"
# Machine-speed pressing is far beyond a person's signaling rate (as in tests/cluster).
NODE_CONFIG: dict[str, object] = {"signaling_rate_per_s": 10_000.0, "signaling_burst": 10_000}
# bench.forward's listener groups log in as this user with bench.forward's password.
LISTENER_USER = "listener"


class MemoryNode(NodeProcess):
    """A node without Redis: memory live store, SQLite directory, no relay."""

    def command(self) -> list[str]:
        command = super().command()
        for flag in ("--redis", "--node-id", "--relay"):
            at = command.index(flag)
            del command[at:at + 2]
        return command


def provision_site(data_dir: Path, users: int) -> int:
    """Users u0..u{users-1} (u0 dispatch) on 'alpha' and 'bravo' with the tests' password,
    plus the listener groups' user; returns alpha's channel id."""
    channels = provision(data_dir, users)
    directory = Directory.open(data_dir)
    try:
        directory.add_user(LISTENER_USER, Role.GENERAL, LISTENER_PASSWORD)
        directory.add_member(LISTENER_USER, CHANNEL)
    finally:
        directory.close()
    return channels[CHANNEL]


class Site:
    """Fresh nodes per setup over one redis-server (flushed between setups)."""

    def __init__(self, root: Path, users: int = 6) -> None:
        self.root = root
        self.users = users
        self.redis = RedisServer(root / "redis")
        self.nodes: list[NodeProcess] = []
        self.channel = 0
        self._setups = 0

    def __enter__(self) -> "Site":
        self.redis.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        for node in self.nodes:
            node.kill()
        self.redis.stop()

    async def start(self, names: list[str], *, redis: bool = True) -> list[NodeProcess]:
        """Stop the previous setup's nodes, flush Redis, provision a new site in the first
        node's data folder and start the nodes in order (the first seeds Redis)."""
        await self.stop()
        await asyncio.to_thread(self.redis.flushall)
        self._setups += 1
        base = self.root / f"setup-{self._setups}"
        base.mkdir(parents=True)
        self.channel = provision_site(base / f"data-{names[0]}", self.users)
        kind = NodeProcess if redis else MemoryNode
        for name in names:
            node = kind(name, base / f"data-{name}", self.redis.url, **NODE_CONFIG)
            self.nodes.append(node)
            await node.start()
        return self.nodes

    async def stop(self) -> None:
        for node in self.nodes:
            await node.stop()
        self.nodes = []


async def token_of(url: str, user: str) -> str:
    password = LISTENER_PASSWORD if user == LISTENER_USER else PASSWORD
    return (await login(url, user, password))["token"]


async def node_stats(node: NodeProcess, token: str) -> dict:
    """The node's /api/stats (needs a dispatch or admin token)."""
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{node.url}/api/stats", headers={"Authorization": f"Bearer {token}"}) as r:
            r.raise_for_status()
            return await r.json()


def redis_server_version() -> str:
    executable = shutil.which("redis-server")
    if executable is None:
        return "?"
    out = subprocess.run([executable, "--version"], capture_output=True, text=True, check=False).stdout
    for word in out.split():
        if word.startswith("v="):
            return word[2:]
    return out.strip()
