"""Console under load: one dispatcher monitoring 50 channels, 10 of them talking at once.

The console is the real application (vpdesk.app.Console minus its dialogs: MainWindow,
ConsoleViewModel, ConsoleSession on qasync, QT_QPA_PLATFORM=offscreen, the GUI-thread
garbage collector) in its own process (bench/console_agent.py), with its real Speaker on
the tests' PulseAudio null sink vp_speaker and its Microphone on vp_mic's monitor. User
`console` is a member of all 50 channels, so the console joins (monitors) all of them.

Ten scripted talkers (bench/console_talkers.py, another process) each hold the floor on
one of ten channels and send pre-encoded speech at 50 packets/s, all at once.

Per scenario (`--servers standalone,embedded`: the server in its own process, or inside
the console as on a small site):
1. idle: 50 channels joined, nobody talking, `--seconds` long;
2. load: the ten talkers talk; the window is `--seconds` long, inside the talk.
Measured in each window: the console process's CPU (utime+stime from /proc/PID/stat,
sampled each second, plus per-thread names from /proc/PID/task), event-loop lag (a task
on the console's loop sleeping 10 ms and recording how late it woke; p50/p99/max),
Speaker.underruns and output_underflows, and per channel the RTP packets the console's
ChannelReceiver counted (packets, lost) against what the talker sent.

Run inside a loopback-only network namespace (~4 minutes; --quick: ~1):
  unshare -n sh -c 'ip link set lo up && .venv/bin/python bench/console_load.py'
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.console_rig import (  # noqa: E402
    Agent, AudioRig, ServerProcess, alsa_xruns, cpu_seconds, console_machine_facts, merge_results, pct, provision,
    rss_mib, thread_cpu,
)

TALKERS_SCRIPT = ROOT / "bench" / "console_talkers.py"
LAG_TARGET_MS = 20.0


class CpuSampler:
    """The console process's CPU % each second, read from /proc by this process."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.samples: list[tuple[float, float]] = []  # (t, cpu % over the last second)
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        t0, c0 = time.monotonic(), cpu_seconds(self.pid)
        for _ in range(100_000):  # bounded
            await asyncio.sleep(1.0)
            t1, c1 = time.monotonic(), cpu_seconds(self.pid)
            self.samples.append((t1, 100.0 * (c1 - c0) / (t1 - t0)))
            t0, c0 = t1, c1

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


async def measure_window(console: Agent, seconds: float) -> dict:
    """CPU, loop lag, speaker and receiver counters over `seconds` on the console."""
    pid = console.pid
    before = await console.call("stats", events=False)
    xruns0 = alsa_xruns(console.log)
    threads0 = thread_cpu(pid)
    c0, t0 = cpu_seconds(pid), time.monotonic()
    await console.call("lag_start")
    await asyncio.sleep(seconds)
    lag = (await console.call("lag_stop", timeout=60))["samples"]
    c1, t1 = cpu_seconds(pid), time.monotonic()
    threads1 = thread_cpu(pid)
    after = await console.call("stats", events=False)
    xruns1 = alsa_xruns(console.log)
    window = t1 - t0
    lags_ms = [v * 1000.0 for _, v in lag]
    threads = {name: round(100.0 * (threads1.get(name, 0.0) - threads0.get(name, 0.0)) / window, 1)
               for name in threads1}
    received = {cid: {"packets": r["packets"] - before["receivers"].get(cid, {}).get("packets", 0),
                      "lost": r["lost"] - before["receivers"].get(cid, {}).get("lost", 0)}
                for cid, r in after["receivers"].items()}
    sp0, sp1 = before["speaker"], after["speaker"]
    return {
        "t0": t0, "t1": t1, "seconds": round(window, 2),
        "cpu_pct": round(100.0 * (c1 - c0) / window, 1),
        "rss_mib": round(rss_mib(pid), 1),
        "threads_cpu_pct": dict(sorted(threads.items(), key=lambda kv: -kv[1])[:8]),
        "lag_samples": len(lags_ms),
        "lag_p50_ms": _r(pct(lags_ms, 50)), "lag_p99_ms": _r(pct(lags_ms, 99)),
        "lag_max_ms": _r(max(lags_ms) if lags_ms else None),
        "lag_series": lag,  # per-second aggregates once the run's time origin is known
        "underruns": sp1["underruns"] - sp0["underruns"],
        "output_underflows": sp1["output_underflows"] - sp0["output_underflows"],
        "speaker_callbacks": sp1["callbacks"] - sp0["callbacks"],
        "alsa_xruns": {k: xruns1[k] - xruns0[k] for k in xruns1},
        "microphone_overflows": after["microphone"]["overflows"] - before["microphone"]["overflows"],
        "received_in_window": received,
        "refcounts": {"before": before["refcounts"], "after": after["refcounts"]},
        "none_drop_per_s": round((before["refcounts"]["None"] - after["refcounts"]["None"]) / window, 1),
        "true_drop_per_s": round((before["refcounts"]["True"] - after["refcounts"]["True"]) / window, 1),
    }


def lag_per_second(samples: list, start: float) -> list[tuple]:
    """(second since `start`, wake-ups, p50, p99, max lag in ms) for each whole second."""
    by_second: dict[int, list[float]] = {}
    for t, lag in samples:
        by_second.setdefault(int(t - start), []).append(lag * 1000.0)
    return [(sec, len(v), _r(pct(v, 50)), _r(pct(v, 99)), _r(max(v))) for sec, v in sorted(by_second.items())]


def _r(v: float | None) -> float | None:
    return None if v is None else round(v, 2)


async def run_scenario(server_kind: str, args, rig: AudioRig, work: Path) -> dict:
    site = work / f"site-{server_kind}"
    channels = [f"ch{i:02d}" for i in range(1, args.channels + 1)]
    talker_users = {f"t{i}": channels[i] for i in range(args.talkers)}
    provision(site, {"console": "admin", **{u: "general" for u in talker_users}},
              {"console": channels, **{u: [c] for u, c in talker_users.items()}}, channels)
    server = None
    if server_kind == "standalone":
        server = ServerProcess(site, work / f"server-{server_kind}.log",
                               config={"max_talk_ms": 3_600_000})
        await server.start()
        console_args = ["--ui", "--url", server.url, "--user", "console"]
    else:
        console_args = ["--ui", "--embedded", str(site), "--listen", "127.0.0.1:0", "--user", "console"]
    env = rig.env()
    env["VPDESK_CONFIG_DIR"] = str(work / f"config-{server_kind}")
    console = await Agent("console", console_args, env, work / f"console-{server_kind}.log").start()
    talkers = await Agent("talkers", [], rig.env(), work / f"talkers-{server_kind}.log",
                          script=TALKERS_SCRIPT).start()
    sampler = CpuSampler(console.pid)
    try:
        t0 = time.monotonic()
        hello = await console.call("ready", timeout=180)
        connect_s = time.monotonic() - t0
        ids = hello["channels"]
        print(f"[{server_kind}] console joined {len(ids)} channels in {connect_s:.1f} s", file=sys.stderr, flush=True)
        await talkers.call("connect", url=hello["url"], timeout=120,
                           talkers=[[u, ids[c]] for u, c in talker_users.items()])
        sampler.start()
        await asyncio.sleep(args.settle)
        print(f"[{server_kind}] idle window {args.seconds:.0f} s", file=sys.stderr, flush=True)
        idle = await measure_window(console, args.seconds)
        print(f"[{server_kind}] load window {args.seconds:.0f} s", file=sys.stderr, flush=True)
        talk_s = args.seconds + 2 * args.warmup
        counts0 = (await console.call("stats", events=False))["receivers"]
        talk = asyncio.get_running_loop().create_task(talkers.call("talk", seconds=talk_s, timeout=talk_s + 120))
        await asyncio.sleep(args.warmup)
        load = await measure_window(console, args.seconds)
        talked = await talk
        await asyncio.sleep(1.0)  # the last packets
        counts1 = (await console.call("stats", events=False))["receivers"]
        await sampler.stop()
    finally:
        await sampler.stop()
        await talkers.close()
        await console.close()
        if server is not None:
            await server.stop()
    per_channel = []
    for t in talked["talkers"]:
        cid = str(t["channel"])
        got = counts1[cid]["packets"] - counts0.get(cid, {}).get("packets", 0)
        lost = counts1[cid]["lost"] - counts0.get(cid, {}).get("lost", 0)
        per_channel.append({"channel": t["channel"], "sent": t["sent"], "received": got, "lost": lost,
                            "late_sends": t["late_sends"]})
    silent = [cid for cid, r in counts1.items()
              if cid not in {str(t["channel"]) for t in talked["talkers"]}
              and r["packets"] - counts0.get(cid, {}).get("packets", 0) > 0]
    start = sampler.samples[0][0] - 1.0 if sampler.samples else t0
    for w in (idle, load):
        w["lag_per_second"] = lag_per_second(w.pop("lag_series"), start)
        w["t0"], w["t1"] = round(w["t0"] - start, 2), round(w["t1"] - start, 2)
    return {
        "server": server_kind,
        "channels": len(ids),
        "talkers": args.talkers,
        "connect_s": round(connect_s, 1),
        "granted": talked["granted"],
        "idle": idle,
        "load": load,
        "per_channel": per_channel,
        "sent_total": sum(c["sent"] for c in per_channel),
        "received_total": sum(c["received"] for c in per_channel),
        "lost_total": sum(c["lost"] for c in per_channel),
        "packets_on_silent_channels": silent,
        "cpu_series": [(round(t - start, 2), round(v, 1)) for t, v in sampler.samples],
    }


def table(scenarios: list[dict]) -> str:
    rows = ["| server | window | console CPU % | loop lag p50 / p99 / max (ms) | underruns | "
            "output underflows (ALSA xruns) | packets received / sent (10 talking channels) | lost | RSS (MiB) |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for s in scenarios:
        for name in ("idle", "load"):
            w = s[name]
            if name == "load":
                packets = f"{s['received_total']:,} / {s['sent_total']:,}"
                lost = str(s["lost_total"])
                label = f"{s['talkers']} talking"
            else:
                packets, lost, label = "–", "–", "idle"
            rows.append(f"| {s['server']} | {s['channels']} channels, {label} ({w['seconds']:.0f} s) | "
                        f"{w['cpu_pct']:.1f} | {w['lag_p50_ms']} / {w['lag_p99_ms']} / {w['lag_max_ms']} | "
                        f"{w['underruns']} | {w['output_underflows']} ({sum(w['alsa_xruns'].values())}) | {packets} | {lost} | {w['rss_mib']:.0f} |")
    return "\n".join(rows)


def plot(scenarios: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.4))
    colors = {"standalone": "tab:blue", "embedded": "tab:orange"}
    ax1, ax2, ax3 = axes
    for s in scenarios:
        c = colors.get(s["server"], "tab:gray")
        t, v = zip(*s["cpu_series"]) if s["cpu_series"] else ((), ())
        ax1.plot(t, v, color=c, label=f"{s['server']} server")
        ax1.axvspan(s["load"]["t0"], s["load"]["t1"], color=c, alpha=0.08)
        per_s = [row for row in s["idle"]["lag_per_second"] + s["load"]["lag_per_second"] if row[1] > 5]
        ax2.plot([r[0] + 0.5 for r in per_s], [r[3] for r in per_s], color=c, label=f"{s['server']}: p99 per second")
        ax2.axvspan(s["load"]["t0"], s["load"]["t1"], color=c, alpha=0.08)
        width = 0.35
        off = -width / 2 if s["server"] == "standalone" else width / 2
        x = np.arange(2)
        ax3.bar(x + off, [s["idle"]["cpu_pct"], s["load"]["cpu_pct"]], width, color=c, label=f"{s['server']}")
    ax1.set_title("Console process CPU (shaded: 10 talking)")
    ax1.set_xlabel("s")
    ax1.set_ylabel("% of one core")
    ax1.grid(alpha=0.3)
    ax1.legend(fontsize=8)
    ax2.axhline(LAG_TARGET_MS, color="tab:red", linestyle=":", label=f"target p99 ≤ {LAG_TARGET_MS:.0f} ms")
    ax2.set_title("Event-loop lag (10 ms sleeps, p99 per second; shaded: 10 talking)")
    ax2.set_xlabel("s")
    ax2.set_ylabel("ms late")
    ax2.grid(alpha=0.3)
    ax2.legend(fontsize=8)
    ax3.set_xticks([0, 1], ["50 idle", "50, 10 talking"])
    ax3.set_ylabel("% of one core")
    ax3.set_title("Console CPU per window")
    ax3.legend(fontsize=8)
    ax3.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


async def main_async(args) -> int:
    work = Path(tempfile.mkdtemp(prefix="vpdesk-console-load-"))
    rig = AudioRig()
    rig.start(work)
    scenarios = []
    try:
        for kind in args.servers.split(","):
            scenarios.append(await run_scenario(kind.strip(), args, rig, work))
    finally:
        rig.stop()
    md = table(scenarios)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results = {
        "command": "unshare -n sh -c 'ip link set lo up && .venv/bin/python bench/console_load.py "
                   + " ".join(sys.argv[1:]) + "'",
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
        "settings": {"channels": args.channels, "talkers": args.talkers, "seconds": args.seconds,
                     "warmup": args.warmup, "lag_probe_interval_ms": 10},
        "scenarios": scenarios,
        "table_markdown": md,
        "machine": console_machine_facts(),
    }
    merge_results(out / "console-results.json", "load", results)
    plot(scenarios, out / "console-load.png")
    print(md)
    for s in scenarios:
        print(f"\n[{s['server']}] per channel (sent/received/lost): "
              + ", ".join(f"{c['channel']}: {c['sent']}/{c['received']}/{c['lost']}" for c in s["per_channel"]))
        print(f"[{s['server']}] load threads CPU %: {s['load']['threads_cpu_pct']}")
        print(f"[{s['server']}] None refs dropped/s idle {s['idle']['none_drop_per_s']}, "
              f"load {s['load']['none_drop_per_s']}; True refs/s load {s['load']['true_drop_per_s']}")
        if s["packets_on_silent_channels"]:
            print(f"[{s['server']}] packets on channels nobody talked on: {s['packets_on_silent_channels']}")
    print(f"wrote {out / 'console-results.json'} (load) and {out / 'console-load.png'}")
    shutil.rmtree(work, ignore_errors=True)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--channels", type=int, default=50)
    parser.add_argument("--talkers", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=30.0, help="each measurement window")
    parser.add_argument("--warmup", type=float, default=2.0, help="talk before (and after) the load window")
    parser.add_argument("--settle", type=float, default=3.0, help="after connecting, before the idle window")
    parser.add_argument("--servers", default="standalone,embedded")
    parser.add_argument("--quick", action="store_true",
                        help="a short smoke run, written to a temporary folder unless --out-dir")
    parser.add_argument("--out-dir", help="default: docs/ (a temporary folder with --quick)")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.warmup, args.settle, args.servers = 5.0, 1.0, 1.0, "standalone"
    if args.out_dir is None:
        args.out_dir = tempfile.mkdtemp(prefix="console-load-quick-") if args.quick else str(ROOT / "docs")
    if "embedded" in args.servers and args.seconds + 2 * args.warmup > 55:
        parser.error("the embedded server revokes a floor after 60 s (max_talk_ms): keep "
                     "--seconds + 2 × --warmup ≤ 55")
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
