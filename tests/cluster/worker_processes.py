"""`vpserver --workers N` as a real process tree, for tests/cluster/test_workers.py and
bench/workers.py: the supervisor, its workers (found in /proc), which worker a client's
session landed on (the site's session records in Redis), and each worker's /api/stats
(fetched over fresh connections until every worker has answered)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import aiohttp
import redis.asyncio as aioredis

from tests.cluster.nodes import NodeProcess

PREFIX = "vpdesk:"


def children_of(pid: int) -> list[int]:
    """The live processes whose parent is `pid` (from /proc/*/stat)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone in between
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry))
    return sorted(found)


def cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [part.decode() for part in f.read().split(b"\0") if part]
    except OSError:
        return []


class WorkersProcess(NodeProcess):
    """`vpserver --workers N` on one port: node ids `<name>-w1..wN`."""

    def __init__(self, name: str, data_dir: Path, redis_url: str, workers: int = 2,
                 **config: object) -> None:
        super().__init__(name, data_dir, redis_url, **config)
        self.workers = workers

    @property
    def node_ids(self) -> list[str]:
        return [f"{self.name}-w{i}" for i in range(1, self.workers + 1)]

    def command(self) -> list[str]:
        return [*super().command(), "--workers", str(self.workers)]

    async def start(self) -> "WorkersProcess":
        await super().start()
        await wait_registered(self.redis_url, self.node_ids)
        return self

    def worker_pids(self) -> dict[str, int]:
        """Node id → pid of each live worker process."""
        pids = {}
        for pid in children_of(self.process.pid):
            argv = cmdline(pid)
            named = [i for i, arg in enumerate(argv[:-1]) if arg == "--node-id"]
            if named:
                pids[argv[named[-1] + 1]] = pid  # the last one: the supervisor's override
        return pids


async def registered_nodes(redis_url: str) -> dict[str, dict]:
    """The site's node records (node id → decoded record) that have not expired."""
    from server.cluster.registry import NodeRegistry

    client = aioredis.Redis.from_url(redis_url)
    try:
        records = await NodeRegistry(client, PREFIX).load_all()
    finally:
        await client.aclose()
    return {k: {"public_url": r.public_url, "relay": r.relay_address} for k, r in records.items()}


async def wait_registered(redis_url: str, names: list[str], timeout: float = 30.0) -> dict[str, dict]:
    """Wait (bounded) until every node in `names` has a record; returns the records."""
    for _ in range(int(timeout / 0.1)):
        nodes = await registered_nodes(redis_url)
        if all(n in nodes for n in names):
            return nodes
        await asyncio.sleep(0.1)
    raise TimeoutError(f"nodes {names} not registered: {sorted(nodes)}")


async def session_worker(redis_url: str, session_id: str, timeout: float = 10.0) -> str:
    """The node id that holds the session: its worker writes the session's record within a
    heartbeat (1 s) of the session opening."""
    client = aioredis.Redis.from_url(redis_url)
    try:
        for _ in range(int(timeout / 0.05)):
            node = await client.hget(f"{PREFIX}session:{session_id}", "node")
            if node is not None:
                return node.decode()
            await asyncio.sleep(0.05)
    finally:
        await client.aclose()
    raise TimeoutError(f"no session record for {session_id}")


async def stats_of_workers(url: str, token: str, names: list[str], tries: int = 200) -> dict[str, dict]:
    """Each worker's /api/stats: one request per fresh TCP connection, which the kernel
    hands to any worker, until every one of `names` has answered (bounded)."""
    found: dict[str, dict] = {}
    headers = {"Authorization": f"Bearer {token}"}
    for _ in range(tries):
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http:
            async with http.get(f"{url}/api/stats", headers=headers) as r:
                r.raise_for_status()
                stats = await r.json()
        found.setdefault(stats["node"], stats)
        if all(n in found for n in names):
            return found
    raise TimeoutError(f"only {sorted(found)} answered /api/stats in {tries} requests")
