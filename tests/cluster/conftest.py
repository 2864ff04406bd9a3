"""Fixtures for the multi-node tests: a real redis-server and real `vpserver` processes."""

from __future__ import annotations

import pytest

from tests.cluster.nodes import start_nodes
from tests.server.conftest import redis_process, redis_server  # noqa: F401 (fixtures)


@pytest.fixture
async def two_nodes(tmp_path, redis_server):  # noqa: F811
    """Nodes "a" and "b" of one site (users u0..u9 on 'alpha' and 'bravo'), as
    processes; yields (a, b, channels)."""
    # Machine-speed pressing (a round every few ms) is far beyond a person's signaling
    # rate: lift the per-connection limit, which is not what these tests are about.
    nodes, channels = await start_nodes(
        tmp_path, redis_server.url, ["a", "b"], users=10,
        signaling_rate_per_s=10_000.0, signaling_burst=10_000,
    )
    try:
        yield nodes[0], nodes[1], channels
    finally:
        for node in nodes:
            await node.stop()
