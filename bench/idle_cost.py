"""Idle cost of a connected listener: server CPU with N listeners on a silent channel.

For each N a fresh `python -m server` process is started (bench/forward.py's ServerProc),
N listeners connect with the console's client code in a worker process (forward.py's
RemoteGroup: one session, one peer connection and one joined channel each), nobody
talks, and after a settling pause the server's CPU time (utime + stime from
/proc/PID/stat) is read over the window. The N = 0 point is the server's fixed cost;
the per-listener figure is (CPU(N) - CPU(0)) / N, in ms of CPU per second.

The listeners are the console's own client (vpdesk.media.peer.ClientPeer): aiortc's
per-stream RTCP loops parked, the connection's RTCP sent by the process's scheduler
(server/media/rtcp.py), so a silent listener sends an RR + CNAME every 2.5-7.5 s, as a
browser does. docs/idle-results.json keeps earlier runs under their labels, including
the `aiortc` (the client's own RTCP loops) and `browser` kinds measured before the
console's client moved to the scheduler.

Run inside a loopback-only network namespace:
  unshare -n sh -c 'ip link set lo up && .venv/bin/python bench/idle_cost.py'
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.forward import (  # noqa: E402 - after the path tweak
    CHANNEL,
    ListenerGroup,
    RemoteGroup,
    ServerProc,
    _channels,
    cpu_seconds,
    login_token,
    machine_facts,
    rss_mib,
)

# The listeners' own RTCP, as recorded in the results.
CLIENT_RTCP = "scheduler"


# --- one point -----------------------------------------------------------------------------


def udp_datagrams_sent() -> int:
    """UDP datagrams sent in this network namespace so far (/proc/net/snmp OutDatagrams):
    in the benchmark's own namespace, the server's and the listeners' traffic together."""
    with open("/proc/net/snmp") as f:
        rows = [line.split() for line in f if line.startswith("Udp:")]
    return int(rows[1][rows[0].index("OutDatagrams")])


async def measure_point(server: ServerProc, n: int, group, args: argparse.Namespace) -> dict:
    """Start the server, connect `n` listeners, and read its CPU over the idle window."""
    await server.start()
    try:
        token = await login_token(server.url, "listener")
        channel = (await _channels(server, token))[CHANNEL]
        t_connect = time.perf_counter()
        connected = await group.connect(server.url, "listener", channel, n) if n else 0
        t_connect = time.perf_counter() - t_connect
        await asyncio.sleep(args.settle)
        pid = server.proc.pid
        c0, u0, t0 = cpu_seconds(pid), udp_datagrams_sent(), time.perf_counter()
        await asyncio.sleep(args.seconds)
        cpu, udp, wall = cpu_seconds(pid) - c0, udp_datagrams_sent() - u0, time.perf_counter() - t0
        return {
            "listeners": n,
            "connected": connected,
            "connect_s": round(t_connect, 1),
            "window_s": round(wall, 2),
            "server_cpu_s": round(cpu, 3),
            "server_cpu_ms_per_s": round(1000 * cpu / wall, 2),
            "udp_datagrams_per_s": round(udp / wall, 1),
            "server_rss_mib": round(rss_mib(pid), 1),
        }
    finally:
        if n:
            await group.close()
        await server.stop()


def per_listener(results: list[dict]) -> None:
    """Add each point's cost above the N = 0 point, per listener."""
    base = next((r for r in results if r["listeners"] == 0), None)
    for r in results:
        if base is None or not r["connected"]:
            r["ms_per_s_per_listener"] = r["datagrams_per_s_per_listener"] = None
            continue
        r["ms_per_s_per_listener"] = round(
            (r["server_cpu_ms_per_s"] - base["server_cpu_ms_per_s"]) / r["connected"], 3)
        r["datagrams_per_s_per_listener"] = round(r["udp_datagrams_per_s"] / r["connected"], 2)


def table(results: list[dict]) -> str:
    rows = ["| listeners' RTCP | N (connected) | server CPU (ms/s) | per listener above N = 0 "
            "(ms CPU / s) | UDP datagrams / s per listener (both ways) | server RSS (MiB) |",
            "|---|---:|---:|---:|---:|---:|"]
    for r in results:
        each, dgrams = r["ms_per_s_per_listener"], r["datagrams_per_s_per_listener"]
        rows.append(f"| {r['client_rtcp'] if r['listeners'] else '–'} | {r['listeners']} ({r['connected']}) | "
                    f"{r['server_cpu_ms_per_s']:.2f} | {'–' if each is None else f'{each:.3f}'} | "
                    f"{'–' if dgrams is None else f'{dgrams:.2f}'} | {r['server_rss_mib']:.0f} |")
    return "\n".join(rows)


async def main_async(args: argparse.Namespace) -> int:
    import logging

    logging.basicConfig(level=logging.WARNING)
    from server.media import aiortc_hooks

    aiortc_hooks.use_host_addresses(["127.0.0.1"])
    work = Path(tempfile.mkdtemp(prefix="vpdesk-idle-"))
    ns = [int(x) for x in args.listeners.split(",")]
    server = ServerProc("vpdesk", work / "vpdesk")
    server.data_dir.mkdir(parents=True)
    server.provision()
    results: list[dict] = []
    try:
        if 0 in ns:
            r = await measure_point(server, 0, None, args)
            results.append(dict(r, client_rtcp=None))
            print(f"[N=0] {json.dumps(r)}", file=sys.stderr, flush=True)
        group = RemoteGroup() if args.workers else ListenerGroup()
        try:
            for n in (n for n in ns if n):
                print(f"[N={n}] ...", file=sys.stderr, flush=True)
                r = dict(await measure_point(server, n, group, args), client_rtcp=CLIENT_RTCP)
                results.append(r)
                print(f"[N={n}] {json.dumps(r)}", file=sys.stderr, flush=True)
        finally:
            if isinstance(group, RemoteGroup):
                await group.exit()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    per_listener(results)
    md = table(results)
    command = ("unshare -n sh -c 'ip link set lo up && .venv/bin/python bench/idle_cost.py "
               + " ".join(sys.argv[1:]) + "'")
    out = Path(args.out)
    previous = json.loads(out.read_text()) if out.exists() else {}
    runs = previous.get("runs", {}) if args.label else {}
    runs[args.label or "current"] = {"command": command, "results": results, "table_markdown": md}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "machine": machine_facts(),
        "settings": {"seconds": args.seconds, "settle": args.settle, "workers": args.workers},
        "method": "server CPU (utime+stime, /proc/PID/stat) over the window with N listeners "
                  "connected and joined to one silent channel; per listener = (CPU(N) - CPU(0)) / N; "
                  "UDP datagrams from /proc/net/snmp of the benchmark's own network namespace",
        "runs": runs,
    }, indent=2))
    print(md)
    print(f"\nwrote {out}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--listeners", default="0,200", help="comma-separated N values (include 0)")
    parser.add_argument("--seconds", type=float, default=30.0, help="measurement window per point")
    parser.add_argument("--settle", type=float, default=8.0, help="pause after connecting, before the window")
    parser.add_argument("--workers", type=int, default=1, help="1: listeners in a worker process; 0: here")
    parser.add_argument("--label", help="store the run under this name in the JSON, keeping other runs")
    parser.add_argument("--out", default=str(ROOT / "docs" / "idle-results.json"))
    return asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
