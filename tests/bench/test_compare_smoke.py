"""bench/compare.py at the smallest size (N = 2, 1 s): it runs end to end against real
servers in a network namespace of its own (vpdesk's server, the naive MediaRelay baseline
and, when installed, Janus), and what it writes adds up. Not a performance test."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

pytest.importorskip("matplotlib")

from bench.compare_net import janus_binary, loopback_only, write_janus_config  # noqa: E402
from bench.compare_report import combine, table  # noqa: E402

needs_netns = pytest.mark.skipif(
    not (loopback_only() and os.geteuid() == 0 and shutil.which("ip")),
    reason="needs root in a loopback-only namespace (unshare -n) for ip netns / veth",
)
needs_janus = pytest.mark.skipif(janus_binary() is None, reason="janus not installed")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("compare")
    servers = "vpdesk,naive" + (",janus" if janus_binary() else "")
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "compare.py"), "--listeners", "2", "--seconds", "1",
         "--warmup", "0.5", "--idle", "0.5", "--idle-base", "0.5", "--grace", "0.5",
         "--servers", servers, "--out-dir", str(out)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output, _ = proc.communicate(timeout=170)
    assert proc.returncode == 0, output[-3000:]
    results = json.loads((out / "compare-results.json").read_text())
    return {"out": out, "pid": proc.pid, "output": output, "results": results,
            "rows": {r["server"]: r for r in results["results"]}}


def check_row(row: dict) -> None:
    assert row["connected"] == 2, row
    assert row["talker_packets_in_window"] >= 40, row
    assert row["delivered_in_window"] > 0, row
    assert 0 < row["received_of_window_packets"] <= row["expected_in_window"], row
    assert row["misaligned"] == 0, row
    assert row["cpu_us_per_packet"] > 0, row
    assert row["idle_ms_per_s_per_listener"] is not None, row
    # The veth capture saw the talker's packets go out and the copies come back.
    assert row["wire_last_copy_packets"] > 0, row
    assert row["wire_latency_last_p50_ms"] > 0, row


def test_janus_config_loads_only_videoroom_and_http(tmp_path):
    config = write_janus_config(tmp_path, "10.203.0.2", 8088, 1234, event_loops=2)
    assert sorted(p.name for p in (tmp_path / "plugins").iterdir()) == ["libjanus_videoroom.so"]
    assert sorted(p.name for p in (tmp_path / "transports").iterdir()) == ["libjanus_http.so"]
    assert not list((tmp_path / "events").iterdir())
    text = config.read_text()
    assert 'ice_enforce_list = "10.203.0.2"' in text and "event_loops = 2" in text
    assert "stun" not in text
    assert 'audiocodec = "opus"' in (config.parent / "janus.plugin.videoroom.jcfg").read_text()
    assert 'ip = "10.203.0.2"' in (config.parent / "janus.transport.http.jcfg").read_text()
    assert "event_loops" not in write_janus_config(tmp_path / "d", "10.203.0.2", 8088, 1234, None).read_text()


def test_rounds_combine_to_medians_and_sums():
    def row(cpu, received, wire_p99):
        return {"server": "vpdesk", "listeners": 10, "round": 1, "connected": 10, "cpu_us_per_packet": cpu,
                "cpu_us_per_packet_above_idle": cpu - 1, "received_of_window_packets": received,
                "expected_in_window": 5000, "wire_latency_last_p50_ms": 1.0, "wire_latency_last_p99_ms": wire_p99,
                "idle_ms_per_s_per_listener": None, "server_cpu_pct": 3, "server_rss_mib": 100,
                "generator_cpu_pct": 4, "server_stats": {"x": 1}}

    combined = combine([row(30.0, 5000, 2.0), row(50.0, 4000, 9.0), row(40.0, 5000, 3.0)])
    assert combined["cpu_us_per_packet"] == 40.0 and combined["wire_latency_last_p99_ms"] == 3.0
    assert (combined["received_of_window_packets"], combined["expected_in_window"]) == (14000, 15000)
    assert combined["delivered_pct"] == 93.33 and combined["rounds"] == 3
    assert combined["listeners"] == 10 and "round" not in combined
    assert "| vpdesk | 10 | 40.0 (39.0) [30.0–50.0] | 14,000 / 15,000 (93.3 %) |" in table([combined], [])


@pytest.mark.timeout(180)
@needs_netns
def test_vpdesk_and_naive_baseline(run):
    for kind in ("vpdesk", "naive"):
        check_row(run["rows"][kind])
    assert run["out"].joinpath("compare.png").stat().st_size > 0
    assert "| vpdesk | 2 |" in run["results"]["table_markdown"]
    # The run's namespace is gone (its veth with it).
    assert not Path(f"/run/netns/vpbench-srv-{run['pid']}").exists()


@pytest.mark.timeout(180)
@needs_netns
@needs_janus
def test_janus(run):
    check_row(run["rows"]["janus"])
    assert run["results"]["machine"]["janus"] != "?"
    assert run["results"]["vpdesk_over_janus_cpu_per_packet"]["ratio"] > 0
