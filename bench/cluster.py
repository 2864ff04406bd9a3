"""Scale-out benchmark: several `vpserver` nodes on one Redis (issue 6, "Measure").

Every setup runs fresh node processes (tests.cluster.nodes.NodeProcess, or
bench.cluster_site.MemoryNode for a node without Redis) on loopback, over one throwaway
redis-server flushed between setups. Three parts:

1. Access time: one client presses (floor_request sent → reply with granted:true
   received), releases, waits until the members saw floor_idle, pauses, and again; for a
   single node with the memory store, a single node on Redis, and two nodes on Redis with
   the requester on node b. Members record when their floor_taken arrives (signaling
   reader's callback): the banner latency, on the requester's node and on the other one.
2. The node-to-node hop: a talker on node a, one listener on a and one on b. Per RTP
   packet, kernel timestamps on `lo` (bench.cluster_wire) of the talker's packet, node
   a's relay datagram and each listener's copy; hop = copy on b − copy on a. Then the
   same with one node and one listener: a listener's latency when nothing is relayed.
3. CPU per forwarded packet: one talker on node a at 50 packets/s, N listeners split
   evenly over nodes a and b; each node's CPU (/proc/PID/stat) over a fixed window divided
   by what that node forwarded (its /api/stats counters), next to the same N on one node.

The talker and the listeners are bench.forward's: pre-encoded Opus written by a paced raw
RTP writer, listeners that tap RTP before the jitter buffer and never decode, in two
worker processes (one per node), so that the clients do not starve the nodes on 2 cores.

Prints tables, writes docs/cluster-results.json and docs/cluster.png. Run inside a
loopback-only network namespace (a few minutes):
  unshare -n sh -c 'ip link set lo up && .venv/bin/python bench/cluster.py'
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.cluster_site import LISTENER_USER, Site, node_stats, redis_server_version, token_of  # noqa: E402
from bench.cluster_wire import HopCapture, packet_times  # noqa: E402
from bench.forward import (  # noqa: E402
    FRAME_S, Client, RemoteGroup, Talker, analyse, cpu_seconds, encoded_source, idle_cpu_rates, machine_facts,
    quiet_gc, start_talking,
)
from tests.server.harness import PttClient, close_all  # noqa: E402

MS = 1000.0


def percentiles(values: list[float], scale: float = MS) -> dict:
    if not values:
        return {"n": 0, "p50": None, "p95": None, "p99": None, "max": None}
    a = np.asarray(values, dtype=float) * scale
    return {"n": len(values), **{f"p{q}": round(float(np.percentile(a, q)), 3) for q in (50, 95, 99)},
            "max": round(float(a.max()), 3)}


# --- 1. access time ----------------------------------------------------------------------


class FloorWatcher:
    """A member's floor events as they arrive (the reader task's callback, so the stamp
    does not wait for anyone to take the event from the queue)."""

    def __init__(self, client: PttClient, channel: int) -> None:
        self.channel = channel
        self.taken_at: float | None = None
        self.taken = asyncio.Event()
        self.idle = asyncio.Event()
        client.signaling.on_event = self._on_event

    def _on_event(self, message: dict) -> None:
        if message.get("channel") != self.channel:
            return
        if message.get("type") == "floor_taken":
            self.taken_at = time.perf_counter()
            self.taken.set()
        elif message.get("type") == "floor_idle":
            self.idle.set()

    def reset(self) -> None:
        self.taken_at = None
        self.taken.clear()
        self.idle.clear()


async def access_setup(site: Site, label: str, names: list[str], *, redis: bool,
                       args: argparse.Namespace) -> dict:
    """`args.presses` presses by u1 on the last node; members u2 on the last node and,
    with two nodes, u3 on the first."""
    nodes = await site.start(names, redis=redis)
    channel = site.channel
    requester = await PttClient.connect(nodes[-1].url, "u1", media=False)
    same = await PttClient.connect(nodes[-1].url, "u2", media=False)
    other = await PttClient.connect(nodes[0].url, "u3", media=False) if len(nodes) > 1 else None
    members = {"same": same, **({"other": other} if other is not None else {})}
    watchers = {k: FloorWatcher(c, channel) for k, c in members.items()}
    access: list[float] = []
    banner: dict[str, list[float]] = {k: [] for k in watchers}
    denied = 0
    missed_events = 0
    try:
        for press in range(args.access_warmup + args.presses):
            for w in watchers.values():
                w.reset()
            t0 = time.perf_counter()
            reply = await requester.talk(channel)
            t1 = time.perf_counter()
            if not reply.get("granted"):
                denied += 1
                await asyncio.sleep(0.1)
                continue
            try:
                await asyncio.wait_for(asyncio.gather(*(w.taken.wait() for w in watchers.values())), 2.0)
            except TimeoutError:
                missed_events += 1
            await requester.release(channel)
            try:
                await asyncio.wait_for(asyncio.gather(*(w.idle.wait() for w in watchers.values())), 2.0)
            except TimeoutError:
                missed_events += 1
            if press >= args.access_warmup:
                access.append(t1 - t0)
                for k, w in watchers.items():
                    if w.taken_at is not None:
                        banner[k].append(w.taken_at - t0)
            await asyncio.sleep(args.pause)
    finally:
        await close_all(requester, *members.values())
    return {
        "setup": label,
        "nodes": names,
        "redis": redis,
        "requester_node": names[-1],
        "presses": len(access),
        "denied": denied,
        "missed_floor_events": missed_events,
        "access_ms": percentiles(access),
        "banner_same_node_ms": percentiles(banner["same"]),
        "banner_other_node_ms": percentiles(banner.get("other", [])),
    }


# --- 2. the hop ----------------------------------------------------------------------------


def copy_times(arrivals: list[tuple[float, bytes]], payloads: list[bytes]) -> tuple[dict[int, float], tuple]:
    """A listener's tap arrivals by talker packet index, and (SSRC, index, seq) of its
    first copy: vpdesk forwards payloads byte for byte, so the first payload names it."""
    from server.media.forwarder import rtp_payload_bounds

    if not arrivals:
        return {}, (None, 0, 0)
    index_of = {p: i for i, p in enumerate(payloads)}
    _, first = arrivals[0]
    a, b = rtp_payload_bounds(first)
    base = index_of[first[a:b]]
    first_seq = (first[2] << 8) | first[3]
    times: dict[int, float] = {}
    for t, data in arrivals:
        idx = base + ((((data[2] << 8) | data[3]) - first_seq) & 0xFFFF)
        a, b = rtp_payload_bounds(data)
        if idx < len(payloads) and data[a:b] == payloads[idx]:
            times.setdefault(idx, t)
    return times, (int.from_bytes(first[8:12], "big"), base, first_seq)


async def hop_run(site: Site, names: list[str], groups: list[RemoteGroup], payloads: list[bytes],
                  args: argparse.Namespace) -> dict:
    """A talker on the first node and one listener on each node (group i on node i)."""
    nodes = await site.start(names)
    channel = site.channel
    token = await token_of(nodes[0].url, "u0")
    talker_client = await Client.connect(nodes[0].url, token, None, listen=False)
    try:
        for g, node in zip(groups, nodes):
            await g.connect(node.url, LISTENER_USER, channel, 1)
        await asyncio.sleep(args.settle)
        grant = await talker_client.signaling.request("floor_request", channel=channel)
        if not grant.get("granted"):
            raise RuntimeError(f"floor not granted: {grant}")
        for g in groups:
            await g.reset()
        capture = HopCapture()
        await capture.start()
        talker = Talker(talker_client, payloads)
        quiet_gc()
        await talker.run(args.warmup + args.hop_seconds)
        await asyncio.sleep(0.5)
        await talker_client.signaling.request("floor_release", channel=channel)
        records = await capture.stop()
        arrivals = {node.name: (await g.collect())[0] for g, node in zip(groups, nodes)}
        stats = {node.name: await node_stats(node, token) for node in nodes}
    finally:
        await talker_client.close()
        for g in groups:
            with contextlib.suppress(Exception):
                await g.close()
    sent = talker.sent
    window = [i for i, t in enumerate(sent) if t >= sent[0] + args.warmup]
    taps, firsts = {}, {}
    for name, arr in arrivals.items():
        taps[name], firsts[name] = copy_times(arr, payloads)
    wire = packet_times(records, talker.ssrc, talker.seq0, firsts)

    def diffs(later: dict[int, float], earlier: dict[int, float]) -> list[float]:
        return [later[i] - earlier[i] for i in window if i in later and i in earlier]

    result = {
        "nodes": names,
        "talker_packets_in_window": len(window),
        "received_in_window": {k: sum(1 for i in window if i in v) for k, v in taps.items()},
        "wire_packets_captured": len(records),
        "wire_matched": {k: sum(1 for i in window if i in v) for k, v in wire.items()},
        "wire_ms": {f"talker_to_listener_{k}": percentiles(diffs(wire[k], wire["in"])) for k in taps},
        "client_tap_ms": {f"talker_to_listener_{k}": percentiles([v[i] - sent[i] for i in window if i in v])
                          for k, v in taps.items()},
        "node_stats": stats,
    }
    if len(nodes) > 1:
        result["wire_ms"].update({
            "hop_b_minus_a": percentiles(diffs(wire["b"], wire["a"])),
            "node_a_in_to_relay_out": percentiles(diffs(wire["relay"], wire["in"])),
            "relay_out_to_listener_b": percentiles(diffs(wire["b"], wire["relay"])),
            "relay_out_to_listener_a": percentiles(diffs(wire["a"], wire["relay"])),
        })
        result["client_tap_ms"]["hop_b_minus_a"] = percentiles(diffs(taps["b"], taps["a"]))
    return result


async def hop(site: Site, groups: list[RemoteGroup], payloads: list[bytes], args: argparse.Namespace) -> dict:
    """Two nodes (listeners on a and b), then one node with one listener as the baseline:
    a listener's latency with no relay anywhere."""
    two = await hop_run(site, ["a", "b"], groups, payloads, args)
    one = await hop_run(site, ["solo"], groups[:1], payloads, args)
    return {"two_nodes": two, "single_node": one}


# --- 3. CPU per forwarded packet -----------------------------------------------------------


def _counters(stats: dict) -> dict[str, int]:
    keys = ("packets_in", "packets_forwarded", "relay_sent", "relay_received", "packets_relayed_in",
            "packets_relayed_stale", "relay_refused")
    return {k: int(stats.get(k, 0)) for k in keys}


async def cpu_point(site: Site, names: list[str], n: int, groups: list[RemoteGroup],
                    payloads: list[bytes], args: argparse.Namespace) -> list[dict]:
    """One talker on the first node, N listeners split over the groups; group i connects
    to node i (or to the only node). One row per node."""
    nodes = await site.start(names)
    channel = site.channel
    token = await token_of(nodes[0].url, "u0")
    talker_client = await Client.connect(nodes[0].url, token, None, listen=False)
    shares = [n // 2 + n % 2, n // 2]
    node_of_group = [nodes[i % len(nodes)] for i in range(len(groups))]
    try:
        connected = await asyncio.gather(*(
            g.connect(node.url, LISTENER_USER, channel, k)
            for g, node, k in zip(groups, node_of_group, shares) if k
        ))
        await asyncio.sleep(args.settle)
        pids = {node.name: node.process.pid for node in nodes}
        idle = await idle_cpu_rates(pids, args.idle)
        talker = await start_talking(talker_client, channel, groups, payloads)
        marks: dict[str, tuple] = {}

        async def mark(name: str, at: float) -> None:
            # Counters read outside the CPU window, so that the window's CPU holds no
            # /api/stats request; they then span a few ms more than it.
            await asyncio.sleep(max(0.0, at - time.perf_counter()))
            if name == "start":
                stats = [await node_stats(node, token) for node in nodes]
            cpu = {k: cpu_seconds(p) for k, p in pids.items()}
            now = time.perf_counter()
            if name == "end":
                stats = [await node_stats(node, token) for node in nodes]
            marks[name] = (now, cpu, {node.name: _counters(s) for node, s in zip(nodes, stats)})

        start = time.perf_counter()
        await asyncio.gather(
            talker.run(args.warmup + args.seconds + 0.3),
            mark("start", start + args.warmup),
            mark("end", start + args.warmup + args.seconds),
        )
        await asyncio.sleep(0.5)
        await talker_client.signaling.request("floor_release", channel=channel)
        arrivals = [await g.collect() for g in groups]
    finally:
        await talker_client.close()
        for g in groups:
            with contextlib.suppress(Exception):
                await g.close()
    (ws, cpu0, n0), (we, cpu1, n1) = marks["start"], marks["end"]
    window = we - ws
    received: dict[str, list[int]] = {node.name: [0, 0] for node in nodes}  # copies, expected
    for node, arr in zip(node_of_group, arrivals):
        if arr:
            r, _ = analyse("vpdesk", talker, arr, payloads, ws, we)
            received[node.name][0] += r["received_of_window_packets"]
            received[node.name][1] += r["talker_packets_in_window"] * len(arr)
    rows = []
    for node in nodes:
        k = node.name
        d = {c: n1[k][c] - n0[k][c] for c in n1[k]}
        cpu = cpu1[k] - cpu0[k]
        copies = d["packets_forwarded"] + d["relay_sent"]
        incoming = d["packets_in"] if k == nodes[0].name else d["packets_relayed_in"]
        listeners = sum(s for g_node, s in zip(node_of_group, shares) if g_node is node)
        rows.append({
            "setup": "2 nodes" if len(nodes) > 1 else "1 node",
            "listeners_total": n,
            "connected_total": sum(connected),
            "node": k,
            "listeners_on_node": listeners,
            "window_s": round(window, 3),
            "cpu_s": round(cpu, 3),
            "cpu_pct": round(100 * cpu / window, 1),
            "idle_cpu_pct": round(100 * idle[k], 2),
            "incoming_packets": incoming,
            "local_copies": d["packets_forwarded"],
            "relay_sent": d["relay_sent"],
            "forwarded_copies": copies,
            "us_per_forwarded_copy": round(1e6 * cpu / copies, 1) if copies else None,
            "us_per_forwarded_copy_above_idle": (round(1e6 * (cpu - idle[k] * window) / copies, 1)
                                                 if copies else None),
            "us_per_incoming_packet": round(1e6 * cpu / incoming, 1) if incoming else None,
            "received_of_window_packets": received[k][0],
            "expected_of_window_packets": received[k][1],
            "counters_delta": d,
            "talker_late_sends": talker.late,
        })
    return rows


# --- output --------------------------------------------------------------------------------


def _f(v, fmt: str = "{:,.2f}") -> str:
    return "–" if v is None else fmt.format(v)


def _ppp(p: dict, fmt: str = "{:.2f}") -> str:
    return " / ".join(_f(p.get(q), fmt) for q in ("p50", "p95", "p99"))


def access_table(results: list[dict]) -> str:
    rows = ["| setup | presses | access time p50 / p95 / p99 (ms) | floor_taken on the requester's node "
            "p50 / p95 / p99 (ms) | floor_taken on the other node p50 / p95 / p99 (ms) |",
            "|---|---:|---:|---:|---:|"]
    for r in results:
        other = _ppp(r["banner_other_node_ms"]) if r["banner_other_node_ms"]["n"] else "–"
        rows.append(f"| {r['setup']} | {r['presses']} | {_ppp(r['access_ms'])} | "
                    f"{_ppp(r['banner_same_node_ms'])} | {other} |")
    return "\n".join(rows)


def hop_table(h: dict) -> str:
    two, one = h["two_nodes"], h["single_node"]
    lines = [
        (two, "talker_to_listener_a", "2 nodes: talker → listener on a (talker's node)"),
        (two, "talker_to_listener_b", "2 nodes: talker → listener on b"),
        (two, "hop_b_minus_a", "2 nodes: **copy on b − copy on a**, per packet"),
        (two, "node_a_in_to_relay_out", "2 nodes: talker → node a's relay datagram"),
        (two, "relay_out_to_listener_b", "2 nodes: relay datagram → listener on b"),
        (two, "relay_out_to_listener_a", "2 nodes: relay datagram → listener on a (sent after it)"),
        (one, "talker_to_listener_solo", "1 node (no relay): talker → its listener"),
    ]
    rows = ["| path (one talker packet) | wire p50 / p99 (ms) | client taps p50 / p99 (ms) |",
            "|---|---:|---:|"]
    for result, key, label in lines:
        wire = result["wire_ms"][key]
        tap = result["client_tap_ms"].get(key)
        rows.append(f"| {label} | {_f(wire['p50'])} / {_f(wire['p99'])} | "
                    f"{(_f(tap['p50']) + ' / ' + _f(tap['p99'])) if tap else '–'} |")
    return "\n".join(rows)


def cpu_table(rows_in: list[dict]) -> str:
    rows = ["| setup | N | node | listeners on it | incoming packets | copies out (local + relay) | "
            "CPU % | µs / copy out (above idle) | µs / incoming packet | delivered / expected |",
            "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows_in:
        rows.append(
            f"| {r['setup']} | {r['listeners_total']} | {r['node']} | {r['listeners_on_node']} | "
            f"{r['incoming_packets']:,} | {r['forwarded_copies']:,} ({r['local_copies']:,} + {r['relay_sent']:,}) | "
            f"{r['cpu_pct']:.1f} | {_f(r['us_per_forwarded_copy'], '{:,.1f}')} "
            f"({_f(r['us_per_forwarded_copy_above_idle'], '{:,.1f}')}) | "
            f"{_f(r['us_per_incoming_packet'], '{:,.0f}')} | "
            f"{r['received_of_window_packets']:,} / {r['expected_of_window_packets']:,} |")
    return "\n".join(rows)


def plot(access: list[dict], cpu: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(15, 4.4))
    if access:
        bars = [(r["setup"].replace(", ", "\n", 1), r["access_ms"]) for r in access]
        bars += [(f"{r['setup'].split(',')[0]}: banner\n(floor_taken on\nthe other node)", r["banner_other_node_ms"])
                 for r in access if r["banner_other_node_ms"]["n"]]
        x = np.arange(len(bars))
        for k, (q, color) in enumerate((("p50", "tab:blue"), ("p95", "tab:orange"), ("p99", "tab:red"))):
            ax1.bar(x + (k - 1) * 0.27, [p[q] for _, p in bars], 0.27, label=q, color=color)
        ax1.set_xticks(x, [label for label, _ in bars], fontsize=7)
        ax1.set_ylabel("ms (press → granted; press → banner)")
        ax1.set_title("Access time (loopback)")
        ax1.legend(fontsize=8)
        ax1.grid(True, axis="y", alpha=0.3)
    series = [("2 nodes", "a", "node a (talker; N/2 listeners + relay)", "tab:blue", "o-"),
              ("2 nodes", "b", "node b (N/2 listeners)", "tab:green", "s-"),
              ("1 node", "solo", "single node (N listeners)", "tab:gray", "^--")]
    for setup, node, label, color, style in series:
        rs = [r for r in cpu if r["setup"] == setup and r["node"] == node and r["us_per_forwarded_copy"]]
        if not rs:
            continue
        ns = [r["listeners_total"] for r in rs]
        ax2.plot(ns, [r["us_per_forwarded_copy"] for r in rs], style, color=color, label=label)
        ax3.plot(ns, [r["us_per_incoming_packet"] for r in rs], style, color=color, label=label)
    for ax, title, ylabel in ((ax2, "CPU per copy sent", "node CPU µs per copy out (local + relay)"),
                              (ax3, "CPU per packet in", "node CPU µs per incoming packet")):
        ax.set_xlabel("listeners N in total (one talker on node a, 50 packets/s)")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.set_xscale("log")
        ns = sorted({r["listeners_total"] for r in cpu})
        ax.set_xticks(ns, [str(n) for n in ns])
        ax.minorticks_off()
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


# --- main ----------------------------------------------------------------------------------


async def main_async(args: argparse.Namespace) -> int:
    import logging

    logging.basicConfig(level=logging.WARNING)
    from server.media import aiortc_hooks

    aiortc_hooks.use_host_addresses(["127.0.0.1"])
    parts = {p.strip() for p in args.parts.split(",")}
    ns = [int(x) for x in args.listeners.split(",")]
    work = Path(tempfile.mkdtemp(prefix="vpdesk-cluster-"))
    import redis

    facts = {**machine_facts(), "redis_server": redis_server_version(), "redis_py": redis.__version__}
    print(f"machine: {facts}", file=sys.stderr)
    talk_s = max(args.hop_seconds, args.seconds) + args.warmup + 1.0
    payloads = encoded_source(int(talk_s / FRAME_S) + 10, work)
    access: list[dict] = []
    hop_result: dict | None = None
    cpu: list[dict] = []
    skipped: list[str] = []
    deadline = time.monotonic() + args.max_minutes * 60
    groups: list[RemoteGroup] = []
    try:
        with Site(work / "site") as site:
            if "access" in parts:
                for label, names, redis_on in (("1 node, memory store", ["solo"], False),
                                               ("1 node, Redis", ["solo"], True),
                                               ("2 nodes, Redis (client on b)", ["a", "b"], True)):
                    print(f"[access] {label} ...", file=sys.stderr, flush=True)
                    r = await access_setup(site, label, names, redis=redis_on, args=args)
                    access.append(r)
                    print(f"[access] {json.dumps(r)}", file=sys.stderr, flush=True)
            if parts & {"hop", "cpu"}:
                groups = [RemoteGroup(), RemoteGroup()]
            if "hop" in parts:
                print("[hop] ...", file=sys.stderr, flush=True)
                hop_result = await hop(site, groups, payloads, args)
                for key, r in hop_result.items():
                    print(f"[hop] {key}: {json.dumps({k: v for k, v in r.items() if k != 'node_stats'})}",
                          file=sys.stderr, flush=True)
            if "cpu" in parts:
                for n in ns:
                    for names in (["a", "b"], ["solo"]):
                        if time.monotonic() > deadline:
                            skipped.append(f"N={n} on {names}: time budget (--max-minutes) spent")
                            continue
                        print(f"[cpu] N={n} on {names} ...", file=sys.stderr, flush=True)
                        try:
                            rows = await cpu_point(site, names, n, groups, payloads, args)
                        except Exception as exc:  # noqa: BLE001 - report the point and go on
                            print(f"[cpu] N={n} on {names} failed: {exc!r}", file=sys.stderr)
                            skipped.append(f"N={n} on {names}: failed: {exc!r}")
                            continue
                        cpu.extend(rows)
                        for row in rows:
                            print(f"[cpu] {json.dumps(row)}", file=sys.stderr, flush=True)
            await site.stop()
    finally:
        for g in groups:
            await g.exit()

    tables = {
        "access": access_table(access) if access else "",
        "hop": hop_table(hop_result) if hop_result else "",
        "cpu": cpu_table(cpu) if cpu else "",
    }
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    command = " ".join(["unshare -n sh -c 'ip link set lo up && .venv/bin/python bench/cluster.py", *sys.argv[1:]]) + "'"
    (out / "cluster-results.json").write_text(json.dumps({
        "command": command,
        "machine": facts,
        "settings": {k: v for k, v in vars(args).items() if k != "out_dir"},
        "notes": {
            "access": "client-measured on loopback: floor_request sent to the reply received "
                      "(perf_counter around the signaling request); floor_taken stamped in the "
                      "member's signaling reader callback, from the same press",
            "hop": "kernel receive stamps on lo (AF_PACKET, SO_TIMESTAMPNS), per talker packet; "
                   "hop = listener b's copy entering lo minus listener a's copy entering lo; "
                   "single_node: the same talker and one listener on one node (no relay)",
            "cpu": "node CPU (utime + stime) over the window / that node's /api/stats deltas; "
                   "copies out = packets_forwarded + relay_sent; incoming = packets_in (node a) "
                   "or packets_relayed_in (node b)",
        },
        "access": access,
        "hop": hop_result,
        "cpu": cpu,
        "payload_bytes_mean": round(statistics.mean(len(p) for p in payloads), 1),
        "skipped": skipped,
        "tables_markdown": tables,
    }, indent=2))
    plot(access, cpu, out / "cluster.png")
    for name, md in tables.items():
        if md:
            print(f"\n{name}:\n{md}")
    for s in skipped:
        print(f"skipped: {s}")
    print(f"\nmachine: {facts['nproc']} CPUs ({facts['cpu_model']}), Python {facts['python']}, "
          f"aiortc {facts['aiortc']}, redis-server {facts['redis_server']}; wrote "
          f"{out / 'cluster-results.json'} and {out / 'cluster.png'}")
    shutil.rmtree(work, ignore_errors=True)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--parts", default="access,hop,cpu", help="comma-separated: access, hop, cpu")
    parser.add_argument("--presses", type=int, default=400, help="access-time samples per setup")
    parser.add_argument("--access-warmup", type=int, default=10, help="presses not counted, per setup")
    parser.add_argument("--pause", type=float, default=0.02, help="pause between presses (s)")
    parser.add_argument("--hop-seconds", type=float, default=10.0, help="talk measured for the hop")
    parser.add_argument("--listeners", default="20,100,200", help="N values (total over the nodes)")
    parser.add_argument("--seconds", type=float, default=8.0, help="CPU measurement window per point")
    parser.add_argument("--warmup", type=float, default=1.0, help="talk time before a window")
    parser.add_argument("--settle", type=float, default=1.5,
                        help="after the listeners joined: b's listeners reach a's routes (record + bus)")
    parser.add_argument("--idle", type=float, default=2.0, help="idle window (N connected, silent)")
    parser.add_argument("--out-dir", default=str(ROOT / "docs"))
    parser.add_argument("--max-minutes", type=float, default=10.0, help="skip remaining CPU points after this")
    args = parser.parse_args()
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
