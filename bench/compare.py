"""Side by side in one run: vpdesk's server, a naive aiortc MediaRelay server and Janus.

One talker and N listeners, as in bench/forward.py (whose pieces this reuses: the
pre-encoded talker, packet-counting listeners in a worker process, the kernel-timestamp
capture, the analysis), against each server in turn:

- vpdesk: `python -m server --listen SERVER_IP:PORT --ice-address SERVER_IP`;
- naive MediaRelay: bench/relay_server.py (decode once, re-encode per listener);
- Janus 1.1.2 VideoRoom with its defaults (a thread and event loop per handle), and again
  with `event_loops = 2`; driven over its HTTP JSON API (bench/janus_client.py).

libnice never offers 127.0.0.1, so each server runs inside a network namespace reached over
a veth pair (bench/compare_net.py), and so do the others, so that all take the same path.
The load generator runs on the host end (ICE bound to HOST_IP), and the wire capture
watches the host end of the veth.

Per server and N: server CPU per forwarded packet (utime + stime of the server's process
tree over the window / copies delivered), delivered / expected, wire latency of the last
copy of the fan-out (p50 / p99), and the idle cost of a connected listener (server CPU
with N listeners connected and nobody talking, less the CPU with none connected, per
listener). With --rounds R every point is measured R times, the servers interleaved, and
the table (bench/compare_report.py) shows medians.

Run inside a loopback-only network namespace (as root, for `ip netns`):
  unshare -n sh -c 'ip link set lo up && .venv/bin/python bench/compare.py'
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.compare_net import (  # noqa: E402
    HOST_IP, SERVER_IP, JanusProc, ServerNamespace, janus_binary, janus_version,
)
from bench.forward import (  # noqa: E402
    CHANNEL, FRAME_S, Client, ListenerGroup, RemoteGroup, ServerProc, Talker, WireCapture, _channels,
    analyse, cpu_seconds, encoded_source, login_token, machine_facts, quiet_gc, rss_mib, wire_latency,
)
from bench.compare_report import IDLE_MIN_N, combine, machine_line, plot, ratio_at, table  # noqa: E402
from bench.janus_client import ROOM, JanusListenerGroup, JanusPublisher  # noqa: E402



# --- /proc: a server's process tree --------------------------------------------------------


def _stat_fields(pid: int) -> list[str]:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()


def tree_cpu_seconds(pid: int) -> float:
    """utime + stime of `pid` and its live descendants (a server may fork workers)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, IndexError):
                children.setdefault(int(_stat_fields(int(entry))[1]), []).append(int(entry))
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        with contextlib.suppress(OSError, IndexError):
            fields = _stat_fields(p)
            total += int(fields[11]) + int(fields[12])
            todo.extend(children.get(p, []))
    return total / os.sysconf("SC_CLK_TCK")


def stop_children(grace_s: float = 5.0) -> None:
    """SIGTERM this process's children (servers, listener workers, capture), then SIGKILL
    what is left after `grace_s`."""
    mine = os.getpid()
    children = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, IndexError):
                if int(_stat_fields(int(entry))[1]) == mine:
                    children.append(int(entry))
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, sig)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and any(Path(f"/proc/{c}").exists() for c in children):
            for child in children:
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(child, os.WNOHANG)
            time.sleep(0.1)


async def cpu_rate(pid: int, seconds: float) -> float:
    """The process tree's CPU over the next `seconds`, in seconds per second."""
    c0, t0 = tree_cpu_seconds(pid), time.perf_counter()
    await asyncio.sleep(seconds)
    return (tree_cpu_seconds(pid) - c0) / (time.perf_counter() - t0)


# --- the servers under test ---------------------------------------------------------------


class AiortcTarget:
    """vpdesk's server or the naive baseline, as bench/forward.py runs them, in the namespace."""

    group_class = ListenerGroup

    def __init__(self, kind: str, work: Path, ns: ServerNamespace) -> None:
        self.kind = kind
        self.server = ServerProc(kind, work / kind, host=SERVER_IP, prefix=ns.prefix)
        self.server.data_dir.mkdir(parents=True)
        self.server.provision()
        self.talker: Client | None = None
        self.token = ""
        self.channel = 0

    @property
    def pid(self) -> int:
        return self.server.proc.pid

    async def start(self) -> None:
        await self.server.start()

    async def connect_talker(self):
        self.token = await login_token(self.server.url, "talker")
        self.talker = await Client.connect(self.server.url, self.token, None, listen=False)
        self.channel = (await _channels(self.server, self.token))[CHANNEL]
        return self.talker.peer.pc

    def listener_args(self, count: int) -> tuple:
        return (self.server.url, "listener", self.channel, count, 10, [HOST_IP])

    async def floor(self, take: bool) -> None:
        if take:
            grant = await self.talker.signaling.request("floor_request", channel=self.channel)
            if not grant.get("granted"):
                raise RuntimeError(f"floor not granted: {grant}")
        else:
            await self.talker.signaling.request("floor_release", channel=self.channel)

    async def stats(self) -> dict | None:
        return await self.server.stats(self.token)

    async def stop(self) -> None:
        if self.talker is not None:
            await self.talker.close()
            self.talker = None
        await self.server.stop()


class JanusTarget:
    """Janus with the VideoRoom plugin; the talker is a publisher, listeners subscribe."""

    group_class = JanusListenerGroup

    def __init__(self, kind: str, work: Path, ns: ServerNamespace, event_loops: int | None) -> None:
        self.kind = kind
        self.janus = JanusProc(work / kind, ROOM, event_loops, prefix=ns.prefix)
        self.starts = 0
        self.http = None
        self.publisher: JanusPublisher | None = None

    @property
    def pid(self) -> int:
        return self.janus.proc.pid

    async def start(self) -> None:
        import aiohttp

        self.starts += 1
        self.janus.port = 8087 + self.starts  # a fresh port: the last one may linger in TIME_WAIT
        await self.janus.start()
        self.http = aiohttp.ClientSession()

    async def connect_talker(self):
        self.publisher = await JanusPublisher.connect(self.http, self.janus.url)
        return self.publisher.pc

    def listener_args(self, count: int) -> tuple:
        return (self.janus.url, self.publisher.publisher_id, count, 10, [HOST_IP])

    async def floor(self, take: bool) -> None:
        """A VideoRoom publisher needs no floor: it sends when it has something to say."""

    async def stats(self) -> dict | None:
        return None

    async def stop(self) -> None:
        if self.publisher is not None:
            await self.publisher.close()
            self.publisher = None
        if self.http is not None:
            await self.http.close()
            self.http = None
        await self.janus.stop()


def source_version() -> str:
    """The commit the vpdesk server ran from, and whether server/ had uncommitted changes."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=20).stdout.strip()

    with contextlib.suppress(OSError, subprocess.SubprocessError):
        head = git("rev-parse", "--short", "HEAD")
        if head:
            return head + (" + uncommitted changes in server/" if git("status", "--porcelain", "--", "server") else "")
    return "?"


def make_target(kind: str, work: Path, ns: ServerNamespace):
    if kind in ("vpdesk", "naive"):
        return AiortcTarget(kind, work, ns)
    if kind == "janus":
        return JanusTarget(kind, work, ns, None)
    if kind == "janus-el2":
        return JanusTarget(kind, work, ns, 2)
    raise ValueError(f"unknown server {kind!r}")


# --- one measurement point -------------------------------------------------------------------


async def run_point(target, ns: ServerNamespace, n: int, groups: list, payloads: list[bytes],
                    args: argparse.Namespace) -> dict:
    await target.start()
    try:
        pc = await target.connect_talker()
        pid = target.pid
        await asyncio.sleep(1.0)
        # The server's own idle cost: the talker connected, no listener yet.
        idle0 = await cpu_rate(pid, args.idle_base)
        shares = [n // len(groups) + (1 if i < n % len(groups) else 0) for i in range(len(groups))]
        t_connect = time.perf_counter()
        connected = await asyncio.gather(*(
            g.connect(*target.listener_args(k)) for g, k in zip(groups, shares) if k))
        t_connect = time.perf_counter() - t_connect
        connected_n = sum(connected)
        await asyncio.sleep(1.0)
        # N connected listeners, nobody talking (only reported where N is large enough).
        idle = await cpu_rate(pid, args.idle if n >= IDLE_MIN_N else min(args.idle, 2.0))

        await target.floor(True)
        for g in groups:
            await g.reset()
        talker = Talker(None, payloads, pc=pc)
        quiet_gc()
        capture = WireCapture(interface=ns.host_if) if args.wire else None
        if capture is not None:
            await capture.start()
        # Each generator process on its own (the bench process is also the server's parent).
        gen_pids = sorted({os.getpid()} | {g.pid for g in groups})
        marks: dict[str, tuple] = {}

        async def mark(name: str, at: float) -> None:
            await asyncio.sleep(max(0.0, at - time.perf_counter()))
            marks[name] = (time.perf_counter(), tree_cpu_seconds(pid), [cpu_seconds(p) for p in gen_pids],
                           cpu_seconds(capture.pid) if capture is not None else 0.0)

        start = time.perf_counter()
        await asyncio.gather(
            talker.run(args.warmup + args.seconds + 0.3),
            mark("start", start + args.warmup),
            mark("end", start + args.warmup + args.seconds),
        )
        rss = rss_mib(pid)
        await asyncio.sleep(args.grace)
        stats = await target.stats()
        await target.floor(False)
        arrivals: list = []
        for g in groups:
            arrivals.extend(await g.collect())
        records = await capture.stop() if capture is not None else []
        ws, cpu0, gen0, cap0 = marks["start"]
        we, cpu1, gen1, cap1 = marks["end"]
        window = we - ws
        result, mapping = analyse(target.kind, talker, arrivals, payloads, ws, we)
        if capture is not None:
            window_idx = {i for i, t in enumerate(talker.sent) if ws <= t < we}
            result.update(wire_latency(talker, records, mapping, window_idx, len(arrivals)))
            result["capture_cpu_pct"] = round(100 * (cap1 - cap0) / window, 1)
        expected = result["talker_packets_in_window"] * connected_n
        delivered = result["delivered_in_window"]
        server_cpu = cpu1 - cpu0
        result.update({
            "server": target.kind,
            "listeners": n,
            "connected": connected_n,
            "connect_s": round(t_connect, 1),
            "window_s": round(window, 3),
            "server_cpu_s": round(server_cpu, 3),
            "server_cpu_pct": round(100 * server_cpu / window, 1),
            "cpu_us_per_packet": round(1e6 * server_cpu / delivered, 1) if delivered else None,
            "cpu_us_per_packet_above_idle": (
                round(1e6 * (server_cpu - idle * window) / delivered, 1) if delivered else None),
            "expected_in_window": expected,
            "delivered_pct": (round(100 * result["received_of_window_packets"] / expected, 2)
                              if expected else None),
            "idle_base_cpu_ms_per_s": round(1000 * idle0, 2),
            "idle_cpu_ms_per_s": round(1000 * idle, 2),
            "idle_ms_per_s_per_listener": round(1000 * (idle - idle0) / connected_n, 3) if connected_n else None,
            "server_rss_mib": round(rss, 1),
            "generator_cpu_pct": round(100 * (sum(gen1) - sum(gen0)) / window, 1),
            "talker_late_sends": talker.late,
            "server_stats": stats,
        })
        return result
    finally:
        for g in groups:
            with contextlib.suppress(Exception):
                await g.close()
        await target.stop()


# --- main ------------------------------------------------------------------------------------


async def main_async(args: argparse.Namespace, ns: ServerNamespace, work: Path) -> int:
    import logging

    logging.basicConfig(level=logging.WARNING)
    from server.media import aiortc_hooks

    aiortc_hooks.use_host_addresses([HOST_IP])
    ns_list = [int(x) for x in args.listeners.split(",")]
    kinds = [k.strip() for k in args.servers.split(",")]
    if janus_binary() is None:
        print("janus not installed: skipping it", file=sys.stderr)
    frames = int((args.warmup + args.seconds + 1.0) / FRAME_S) + 10
    payloads = encoded_source(frames, work)
    facts = {**machine_facts(), "janus": janus_version(), "vpdesk_source": source_version()}
    print(f"machine: {facts}", file=sys.stderr)

    measured: dict[tuple[str, int], list[dict]] = {}
    skipped: list[tuple[str, int, str]] = []
    deadline = time.monotonic() + args.max_minutes * 60
    if janus_binary() is None:
        skipped.extend((k, n, "janus not installed") for k in kinds if k.startswith("janus") for n in ns_list)
        kinds = [k for k in kinds if not k.startswith("janus")]
    skipped.extend((k, n, f"N > {args.naive_max} (--naive-max): the baseline saturates")
                   for k in kinds if k == "naive" for n in ns_list if n > args.naive_max)
    # Rounds go through every server in turn, so that a slow drift of the machine's other
    # load touches them alike; each point's figures are then the median of its rounds.
    for round_no in range(args.rounds):
        for kind in kinds:
            points = [n for n in ns_list if not (kind == "naive" and n > args.naive_max)]
            target = make_target(kind, work / f"round{round_no}", ns)
            groups = ([RemoteGroup(target.group_class) for _ in range(args.workers)] if args.workers
                      else [target.group_class()])
            try:
                for n in points:
                    name = f"[{kind} N={n} round {round_no + 1}/{args.rounds}]"
                    if time.monotonic() > deadline:
                        print(f"{name} skipped: time budget (--max-minutes) spent", file=sys.stderr)
                        continue
                    print(f"{name} ...", file=sys.stderr, flush=True)
                    try:
                        r = await run_point(target, ns, n, groups, payloads, args)
                    except Exception as exc:  # noqa: BLE001 - report the point and go on
                        print(f"{name} failed: {exc!r}", file=sys.stderr)
                        continue
                    r["round"] = round_no + 1
                    measured.setdefault((kind, n), []).append(r)
                    print(f"{name} {json.dumps({k: v for k, v in r.items() if k != 'server_stats'})}",
                          file=sys.stderr, flush=True)
            finally:
                for g in groups:
                    if isinstance(g, RemoteGroup):
                        await g.exit()
    results = []
    for kind in kinds:
        for n in ns_list:
            if (kind, n) in measured:
                results.append(combine(measured[(kind, n)]))
            elif not (kind == "naive" and n > args.naive_max):
                skipped.append((kind, n, "failed or out of time in every round"))

    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md = table(results, skipped)
    ratio = ratio_at(results, max(ns_list))
    command = "unshare -n sh -c 'ip link set lo up && " + " ".join([".venv/bin/python bench/compare.py", *sys.argv[1:]]) + "'"
    (out / "compare-results.json").write_text(json.dumps({
        "command": command,
        "machine": facts,
        "settings": {"listeners": ns_list, "rounds": args.rounds, "seconds": args.seconds, "warmup": args.warmup, "idle": args.idle,
                     "idle_base": args.idle_base, "workers": args.workers, "packets_per_s": 50,
                     "network": f"veth {HOST_IP} (load generator, capture) <-> {SERVER_IP} (server, own netns)",
                     "opus_payload_bytes_mean": round(statistics.mean(len(p) for p in payloads), 1)},
        "vpdesk_over_janus_cpu_per_packet": {"listeners": max(ns_list), "ratio": ratio},
        "results": results,
        "rounds": [r for rows in measured.values() for r in rows] if args.rounds > 1 else [],
        "skipped": [{"server": k, "listeners": n, "why": w} for k, n, w in skipped],
        "table_markdown": md,
    }, indent=2))
    title = machine_line(facts)
    plot(results, out / "compare.png", title)
    print(md)
    print(f"\nvpdesk / Janus (defaults) CPU per forwarded packet at N = {max(ns_list)}: "
          f"{'–' if ratio is None else f'{ratio:.2f}'}")
    print(f"machine: {title}; wrote {out / 'compare-results.json'} and {out / 'compare.png'}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--listeners", default="1,10,50,200", help="comma-separated N values")
    parser.add_argument("--servers", default="vpdesk,janus,janus-el2,naive")
    parser.add_argument("--rounds", type=int, default=1,
                        help="measure every point this many times, servers interleaved; report medians")
    parser.add_argument("--seconds", type=float, default=10.0, help="measurement window per point")
    parser.add_argument("--warmup", type=float, default=1.0, help="talk time before the window")
    parser.add_argument("--idle", type=float, default=10.0,
                        help=f"idle window (N connected, silent) at N >= {IDLE_MIN_N}; 2 s below")
    parser.add_argument("--idle-base", type=float, default=5.0, help="idle window with no listener connected")
    parser.add_argument("--grace", type=float, default=1.0, help="wait for late packets after talking")
    parser.add_argument("--naive-max", type=int, default=50, help="skip larger N for the naive baseline")
    parser.add_argument("--workers", type=int, default=1,
                        help="listener worker processes (0: listeners on the talker's loop)")
    parser.add_argument("--no-wire", dest="wire", action="store_false", help="skip the veth capture")
    parser.add_argument("--out-dir", default=str(ROOT / "docs"))
    parser.add_argument("--max-minutes", type=float, default=30.0, help="skip remaining points after this")
    parser.add_argument("--replot", action="store_true",
                        help="only redraw OUT_DIR/compare.png from OUT_DIR/compare-results.json")
    args = parser.parse_args()
    if args.replot:
        out = Path(args.out_dir)
        saved = json.loads((out / "compare-results.json").read_text())
        facts = saved["machine"]
        plot(saved["results"], out / "compare.png", machine_line(facts))
        return 0

    work = Path(tempfile.mkdtemp(prefix="vpdesk-compare-"))
    try:
        with ServerNamespace() as ns:

            def abort(signum, frame) -> None:
                # Unwinding hundreds of peer connections through asyncio's cancellation can
                # hang; end what this run started, by pid, and remove the namespace.
                print(f"signal {signum}: stopping servers and workers, removing {ns.name}", file=sys.stderr)
                stop_children()
                ns.remove()
                shutil.rmtree(work, ignore_errors=True)
                os._exit(128 + signum)

            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, abort)  # set before asyncio.run, which then leaves SIGINT alone
            return asyncio.run(main_async(args, ns, work))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
