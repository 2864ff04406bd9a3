"""Workers benchmark: one site on one machine as 1 process vs `vpserver --workers 2`.

One talker and N listeners on one channel, against a fresh server for every point: a
single node (`vpserver --redis`), then the same server with `--workers 2`, whose two
processes share the listen port (the kernel spreads the listeners over them) and relay
the talker's packets to each other. Both setups use the same Redis, so that the only
difference is the number of processes.

The clients are bench.forward's (pre-encoded Opus written by a paced raw RTP writer;
listeners that tap RTP before the jitter buffer and never decode, in two client
processes). Figures per point:
- server CPU per forwarded packet: utime + stime summed over every server process (the
  supervisor and its workers, /proc/PID/stat) over the window, divided by the copies the
  listeners received in it (as bench/forward.py does); also per worker, with what it
  forwarded and relayed (its /api/stats, read over fresh connections until each worker
  has answered);
- delivered / expected: copies of the window's packets that reached a listener, against
  packets sent in the window × N;
- latency of the last copy of each packet, client side (talker's send stamp to the
  latest listener tap), p50 / p99.

Prints a table and writes docs/workers-results.json. Run inside a loopback-only network
namespace (a few minutes):
  unshare -n sh -c 'ip link set lo up && .venv/bin/python bench/workers.py'
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.cluster_site import LISTENER_USER, NODE_CONFIG, provision_site, redis_server_version, token_of  # noqa: E402
from bench.forward import (  # noqa: E402
    FRAME_S, Client, RemoteGroup, analyse, cpu_seconds, encoded_source, idle_cpu_rates, machine_facts,
    start_talking,
)
from tests.cluster.nodes import NodeProcess  # noqa: E402
from tests.cluster.worker_processes import WorkersProcess, stats_of_workers  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402

SETUPS = {"1 process": 1, "--workers 2": 2}
COUNTERS = ("packets_in", "packets_forwarded", "relay_sent", "relay_received", "packets_relayed_in")


def server_pids(server: NodeProcess) -> dict[str, int]:
    """Name → pid of every process of the server under test."""
    if isinstance(server, WorkersProcess):
        return {"supervisor": server.process.pid, **server.worker_pids()}
    return {server.name: server.process.pid}


async def worker_stats(server: NodeProcess, token: str) -> dict[str, dict]:
    names = server.node_ids if isinstance(server, WorkersProcess) else [server.name]
    return await stats_of_workers(server.url, token, names)


async def run_point(redis: RedisServer, root: Path, label: str, n: int, groups: list[RemoteGroup],
                    payloads: list[bytes], args: argparse.Namespace) -> dict:
    await asyncio.to_thread(redis.flushall)
    data = root / "data"
    shutil.rmtree(data, ignore_errors=True)
    channel = provision_site(data, users=4)
    workers = SETUPS[label]
    server = (WorkersProcess("site", data, redis.url, workers=workers, **NODE_CONFIG) if workers > 1
              else NodeProcess("site", data, redis.url, **NODE_CONFIG))
    await server.start()
    talker_client = None
    try:
        token = await token_of(server.url, "u0")  # dispatch: may read /api/stats
        talker_client = await Client.connect(server.url, token, None, listen=False)
        shares = [n // 2 + n % 2, n // 2]
        connected = sum(await asyncio.gather(*(
            g.connect(server.url, LISTENER_USER, channel, k) for g, k in zip(groups, shares) if k)))
        await asyncio.sleep(args.settle)
        pids = server_pids(server)
        idle = await idle_cpu_rates(pids, args.idle)
        talker = await start_talking(talker_client, channel, groups, payloads)
        marks: dict[str, tuple] = {}

        async def mark(name: str, at: float) -> None:
            # /api/stats read outside the CPU window (before its start, after its end).
            await asyncio.sleep(max(0.0, at - time.perf_counter()))
            if name == "start":
                stats = await worker_stats(server, token)
            cpu = {k: cpu_seconds(p) for k, p in pids.items()}
            now = time.perf_counter()
            if name == "end":
                stats = await worker_stats(server, token)
            marks[name] = (now, cpu, {k: {c: int(s.get(c, 0)) for c in COUNTERS} | {"sessions": s["sessions"]}
                                      for k, s in stats.items()})

        start = time.perf_counter()
        await asyncio.gather(
            talker.run(args.warmup + args.seconds + 0.3),
            mark("start", start + args.warmup),
            mark("end", start + args.warmup + args.seconds),
        )
        await asyncio.sleep(0.5)
        await talker_client.signaling.request("floor_release", channel=channel)
        arrivals = []
        for g in groups:
            arrivals.extend(await g.collect())
    finally:
        if talker_client is not None:
            await talker_client.close()
        for g in groups:
            with contextlib.suppress(Exception):
                await g.close()
        await server.stop()
    (ws, cpu0, s0), (we, cpu1, s1) = marks["start"], marks["end"]
    window = we - ws
    result, _ = analyse("vpdesk", talker, arrivals, payloads, ws, we)
    expected = result["talker_packets_in_window"] * n
    delivered = result["delivered_in_window"]
    server_cpu = sum(cpu1[k] - cpu0[k] for k in pids)
    per_process = []
    for k in pids:
        cpu = cpu1[k] - cpu0[k]
        row = {"process": k, "cpu_pct": round(100 * cpu / window, 1), "idle_cpu_pct": round(100 * idle[k], 2)}
        if k in s1:
            d = {c: s1[k][c] - s0[k][c] for c in COUNTERS}
            row.update({
                "sessions": s1[k]["sessions"],
                "talker_here": d["packets_in"] > d["packets_relayed_in"],
                **d,
                "us_per_local_copy": round(1e6 * cpu / d["packets_forwarded"], 1) if d["packets_forwarded"] else None,
            })
        per_process.append(row)
    return {
        "setup": label,
        "processes": len(pids),
        "listeners": n,
        "connected": connected,
        "window_s": round(window, 3),
        "server_cpu_s": round(server_cpu, 3),
        "server_cpu_pct": round(100 * server_cpu / window, 1),
        "server_idle_cpu_pct": round(100 * sum(idle.values()), 2),
        "cpu_us_per_packet": round(1e6 * server_cpu / delivered, 1) if delivered else None,
        "cpu_us_per_packet_above_idle": (round(1e6 * (server_cpu - sum(idle.values()) * window) / delivered, 1)
                                         if delivered else None),
        "talker_packets_in_window": result["talker_packets_in_window"],
        "delivered_in_window": delivered,
        "received_of_window_packets": result["received_of_window_packets"],
        "expected_in_window": expected,
        "delivered_pct": round(100 * result["received_of_window_packets"] / expected, 2) if expected else None,
        "latency_last_p50_ms": result["latency_last_p50_ms"],
        "latency_last_p99_ms": result["latency_last_p99_ms"],
        "last_copy_packets": result["last_copy_packets"],
        "misaligned": result["misaligned"],
        "talker_late_sends": talker.late,
        "per_process": per_process,
    }


def _f(v, fmt: str = "{:,.1f}") -> str:
    return "–" if v is None else fmt.format(v)


def table(results: list[dict]) -> str:
    rows = ["| setup | N | listeners per worker | server CPU % (sum) | busiest process CPU % "
            "| µs CPU / forwarded packet (above idle) | delivered / expected | last copy p50 / p99 (ms) |",
            "|---|---:|---|---:|---:|---:|---:|---:|"]
    for r in results:
        split = " + ".join(str(p["sessions"] - (1 if p.get("talker_here") else 0))
                           for p in r["per_process"] if "sessions" in p)
        busiest = max(p["cpu_pct"] for p in r["per_process"])
        rows.append(
            f"| {r['setup']} | {r['listeners']} | {split} | {r['server_cpu_pct']:.1f} | {busiest:.1f} | "
            f"{_f(r['cpu_us_per_packet'])} ({_f(r['cpu_us_per_packet_above_idle'])}) | "
            f"{r['received_of_window_packets']:,} / {r['expected_in_window']:,} ({_f(r['delivered_pct'], '{:.2f}')} %) | "
            f"{_f(r['latency_last_p50_ms'], '{:.2f}')} / {_f(r['latency_last_p99_ms'], '{:.2f}')} |")
    return "\n".join(rows)


async def main_async(args: argparse.Namespace) -> int:
    import logging

    import redis as redis_py

    logging.basicConfig(level=logging.WARNING)
    from server.media import aiortc_hooks

    aiortc_hooks.use_host_addresses(["127.0.0.1"])
    ns = [int(x) for x in args.listeners.split(",")]
    labels = [s.strip() for s in args.setups.split(",")]
    work = Path(tempfile.mkdtemp(prefix="vpdesk-workers-"))
    facts = {**machine_facts(), "redis_server": redis_server_version(), "redis_py": redis_py.__version__}
    print(f"machine: {facts}", file=sys.stderr)
    payloads = encoded_source(int((args.warmup + args.seconds + 1.0) / FRAME_S) + 10, work)
    results: list[dict] = []
    skipped: list[str] = []
    deadline = time.monotonic() + args.max_minutes * 60
    groups = [RemoteGroup(), RemoteGroup()]
    redis = RedisServer(work / "redis")
    redis.start()
    try:
        for n in ns:
            for label in labels:
                if time.monotonic() > deadline:
                    skipped.append(f"{label} N={n}: time budget (--max-minutes) spent")
                    continue
                print(f"[{label} N={n}] ...", file=sys.stderr, flush=True)
                try:
                    r = await run_point(redis, work, label, n, groups, payloads, args)
                except Exception as exc:  # noqa: BLE001 - report the point and go on
                    print(f"[{label} N={n}] failed: {exc!r}", file=sys.stderr)
                    skipped.append(f"{label} N={n}: failed: {exc!r}")
                    continue
                results.append(r)
                print(f"[{label} N={n}] {json.dumps(r)}", file=sys.stderr, flush=True)
    finally:
        for g in groups:
            await g.exit()
        redis.stop()

    md = table(results)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    command = "unshare -n sh -c 'ip link set lo up && .venv/bin/python bench/workers.py " + " ".join(sys.argv[1:]) + "'"
    (out / "workers-results.json").write_text(json.dumps({
        "command": command,
        "machine": facts,
        "machine_note": "2 cores shared with other jobs running at the same time; both server "
                        "setups and the client processes (talker + 2 listener processes) compete "
                        "for the same 2 cores, so timing figures are noisy and the 2-worker "
                        "setup cannot show the gain it would have on idle cores",
        "settings": {k: v for k, v in vars(args).items() if k != "out_dir"},
        "notes": {
            "cpu": "utime + stime over the window summed over every server process "
                   "(supervisor and workers, or the single process) / listener copies received "
                   "in the window; above idle: less the same processes' CPU with N connected "
                   "listeners and nobody talking",
            "latency": "client side: talker send stamp to the latest listener's tap of the "
                       "same packet (the last copy of the fan-out), over packets that reached "
                       "every listener",
            "per_process": "each worker's /api/stats deltas over the window (read over fresh "
                           "connections until each worker answered); sessions includes the "
                           "talker on its worker",
        },
        "results": results,
        "skipped": skipped,
        "table_markdown": md,
    }, indent=2))
    print(md)
    for s in skipped:
        print(f"skipped: {s}")
    print(f"\nmachine: {facts['nproc']} CPUs ({facts['cpu_model']}), shared with other jobs; "
          f"Python {facts['python']}, aiortc {facts['aiortc']}, redis-server {facts['redis_server']}; "
          f"wrote {out / 'workers-results.json'}")
    shutil.rmtree(work, ignore_errors=True)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--listeners", default="200,400", help="N values")
    parser.add_argument("--setups", default=",".join(SETUPS), help="comma-separated: " + ", ".join(SETUPS))
    parser.add_argument("--seconds", type=float, default=8.0, help="measurement window per point")
    parser.add_argument("--warmup", type=float, default=1.0, help="talk time before the window")
    parser.add_argument("--settle", type=float, default=2.0,
                        help="after the listeners joined: the other worker's listeners reach the "
                             "talker's routes, the connection burst's CPU fades")
    parser.add_argument("--idle", type=float, default=2.0, help="idle window (N connected, silent)")
    parser.add_argument("--out-dir", default=str(ROOT / "docs"))
    parser.add_argument("--max-minutes", type=float, default=20.0, help="skip remaining points after this")
    args = parser.parse_args()
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
