"""bench/cluster.py at the smallest sizes: it runs end to end against real nodes and a
real redis-server, and what it writes adds up (every press granted, every packet of the
hop run matched on the wire, node b fed by node a's relay). Not a performance test."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytest.importorskip("matplotlib")


def can_capture_on_lo() -> bool:
    try:
        socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(0x0800)).close()
        return True
    except (OSError, AttributeError):
        return False


@pytest.mark.timeout(90)
@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server not installed")
@pytest.mark.skipif(not can_capture_on_lo(), reason="no AF_PACKET socket (needs CAP_NET_RAW)")
def test_cluster_bench_smallest_run(tmp_path):
    subprocess.run(
        [sys.executable, str(ROOT / "bench" / "cluster.py"), "--presses", "5", "--access-warmup", "1",
         "--hop-seconds", "1", "--warmup", "0.5", "--listeners", "2", "--seconds", "1",
         "--idle", "0.2", "--settle", "0.5", "--out-dir", str(tmp_path)],
        cwd=ROOT, check=True, timeout=85, capture_output=True,
    )
    results = json.loads((tmp_path / "cluster-results.json").read_text())
    assert (tmp_path / "cluster.png").stat().st_size > 0
    assert results["machine"]["redis_server"] != "?"

    access = {r["setup"]: r for r in results["access"]}
    assert len(access) == 3
    for r in access.values():
        assert (r["presses"], r["denied"], r["missed_floor_events"]) == (5, 0, 0), r
        assert r["access_ms"]["p50"] > 0
    two = access["2 nodes, Redis (client on b)"]
    assert two["banner_other_node_ms"]["n"] == 5

    hop = results["hop"]["two_nodes"]
    window = hop["talker_packets_in_window"]
    assert window >= 40
    assert hop["wire_matched"] == {"in": window, "relay": window, "a": window, "b": window}
    assert hop["wire_ms"]["hop_b_minus_a"]["n"] == window

    rows = {(r["setup"], r["node"]): r for r in results["cpu"]}
    assert set(rows) == {("2 nodes", "a"), ("2 nodes", "b"), ("1 node", "solo")}
    a, b = rows["2 nodes", "a"], rows["2 nodes", "b"]
    assert a["relay_sent"] > 0 and a["local_copies"] > 0
    assert b["incoming_packets"] == b["counters_delta"]["packets_relayed_in"] > 0
    assert b["relay_sent"] == 0
    for r in rows.values():
        assert r["received_of_window_packets"] == r["expected_of_window_packets"] > 0, r
