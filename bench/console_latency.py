"""Console latency: mouth-to-ear through the real audio stack, and PTT access time.

Two consoles, each the real application (vpdesk.app.Console minus its dialogs: session,
view model, main window on qasync, offscreen) in its own process (bench/console_agent.py):

- the talker, u0, a dispatcher PC running the server embedded (vpdesk's small-site mode;
  `--server standalone` puts the server in its own process instead). Its microphone is
  the rig's mouth; its speaker (talk-permit tones) the tests' vp_speaker sink.
- the listener, u1, another console on that server. Its speaker is the rig's ear.

The rig (bench/console_rig.py) records mouth and ear as the two channels of ONE PulseAudio
null sink, so mouth-to-ear = right onset − left onset, sample-exact, no calibration.
Path: rig → vp_rig_mouth → vp_rig (left) → monitor → vp_rig_mic → PortAudio → Microphone
→ Opus → server → listener's RTP tap → ChannelReceiver's jitter buffer → Opus decode (on
the Speaker's callback, as the frame is due) → Speaker → PortAudio → vp_rig_ear → vp_rig
(right).

Phases:
1. press: each burst is its own transmission: press, wait for the grant, 150–300 ms, a
   100 ms 1 kHz tone burst, release. Gives access times (press → talk-permit tone) too.
2. held: u0 holds the floor while the rig plays the bursts ~0.5 s apart (jittered, so
   onsets fall anywhere in a 20 ms frame).
3. baseline: no consoles, no network: a process that writes its Microphone's blocks
   straight into a Speaker sink (same devices, same stream settings): the audio path alone.
4. rig check: `parec` of the microphone source piped into `pacat` on the ear sink (10 ms
   buffers): what the rig itself adds.

Each console process time-stamps every burst at each stage (bench/console_probes.py); the
stages give the breakdown.

`--loss P --jitter-ms J` impair the listener's tap (bench/console_probes.Impairment):
each packet is dropped with probability P, else delayed uniformly 0..J ms (so packets
also reorder); the figures go under the key `latency_impaired`, with the listener's
jitter-buffer counters (FEC recoveries, concealments, late packets, target delay).

Run inside a loopback-only network namespace (~3 minutes; --quick: ~1):
  unshare -n sh -c 'ip link set lo up && .venv/bin/python bench/console_latency.py'
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.console_analysis import (  # noqa: E402
    THRESHOLD, access_summary, analyse, pair_onsets, refcount_drift, summarise_buffer,
)
from bench.console_rig import (  # noqa: E402
    EAR_SINK, MIC_SOURCE, RATE, Agent, AudioRig, ServerProcess, alsa_xruns, burst_samples,
    console_machine_facts, merge_results, pct, provision, write_wav,
)

# --- the run ---------------------------------------------------------------------------


def burst_train(count: int, rng: random.Random) -> np.ndarray:
    """`count` bursts 450–550 ms apart after 300 ms of silence."""
    burst = burst_samples()
    pieces = [np.zeros(int(0.3 * RATE), np.float32)]
    for _ in range(count):
        pieces += [burst, np.zeros(int(rng.uniform(0.35, 0.45) * RATE), np.float32)]
    return np.concatenate(pieces)


def what_if_args(args) -> list[str]:
    """The listener's (and baseline's) Speaker settings for a what-if run."""
    out = []
    if args.prefill_ms is not None:
        out += ["--prefill-ms", str(args.prefill_ms)]
    if args.speaker_latency is not None:
        out += ["--speaker-latency", str(args.speaker_latency)]
    return out


async def play(rig: AudioRig, wav: Path) -> None:
    player = rig.play(wav)
    await asyncio.to_thread(player.wait, 120)


async def start_consoles(args, rig: AudioRig, work: Path):
    site = work / "site"
    provision(site, {"u0": "admin", "u1": "dispatch"},
              {"u0": ["alpha", "bravo"], "u1": ["alpha", "bravo"]}, ["alpha", "bravo"])
    server = None
    mode = f"--{args.mode}"
    if args.server == "standalone":
        server = ServerProcess(site, work / "server.log")
        await server.start()
        talker_args = [mode, "--url", server.url, "--user", "u0"]
    else:
        talker_args = [mode, "--embedded", str(site), "--listen", "127.0.0.1:0", "--user", "u0"]
    env = rig.env(source=MIC_SOURCE)
    env["VPDESK_CONFIG_DIR"] = str(work / "config-talker")
    talker = await Agent("talker", talker_args, env, work / "talker.log").start()
    hello = await talker.call("ready", timeout=90)
    talker.ready = hello
    env = rig.env(sink=EAR_SINK)
    env["VPDESK_CONFIG_DIR"] = str(work / "config-listener")
    if args.loss or args.jitter_ms:
        env["VPDESK_BENCH_IMPAIR"] = f"loss={args.loss},jitter_ms={args.jitter_ms},seed={args.seed}"
    else:
        env.pop("VPDESK_BENCH_IMPAIR", None)
    listener = await Agent("listener", [mode, "--url", hello["url"], "--user", "u1", "--trace-buffer",
                                        *what_if_args(args)], env, work / "listener.log").start()
    listener.ready = await listener.call("ready", timeout=90)
    await talker.call("target", channel=hello["channels"]["alpha"])
    return server, talker, listener, hello["channels"]["alpha"]


async def run_consoles(args, rig: AudioRig, work: Path, rng: random.Random) -> dict:
    burst_wav = write_wav(work / "burst.wav", np.concatenate([burst_samples(), np.zeros(2400, np.float32)]))
    train_wav = write_wav(work / "train.wav", burst_train(args.bursts, rng))
    server, talker, listener, alpha = await start_consoles(args, rig, work)
    try:
        await asyncio.sleep(1.0)
        rec = rig.record(work / "rig.raw")
        await talker.call("clear")
        await listener.call("clear")
        presses = []
        press_span = (rec.samples_so_far(), None)
        print(f"press phase: {args.presses} transmissions", file=sys.stderr, flush=True)
        for i in range(args.presses):
            r = await talker.call("press")
            presses.append(r)
            if r["state"] != "transmitting":
                print(f"  press {i}: {r['state']}", file=sys.stderr)
            await asyncio.sleep(rng.uniform(0.15, 0.3))
            await play(rig, burst_wav)
            await asyncio.sleep(0.3)
            await talker.call("release")
            await asyncio.sleep(rng.uniform(0.3, 0.45))
        press_span = (press_span[0], rec.samples_so_far())
        print(f"held phase: {args.bursts} bursts", file=sys.stderr, flush=True)
        r = await talker.call("press")
        if r["state"] != "transmitting":
            raise RuntimeError(f"held phase: floor not granted ({r})")
        await asyncio.sleep(0.5)
        held_start = rec.samples_so_far()
        before = await listener.call("stats", events=False)
        await play(rig, train_wav)
        await asyncio.sleep(0.6)
        held_span = (held_start, rec.samples_so_far())
        after = await listener.call("stats", events=False)
        await talker.call("release")
        left, right = rec.stop()
        talk_stats = await talker.call("stats")
        listen_stats = await listener.call("stats")
    finally:
        await talker.close()
        await listener.close()
        if server is not None:
            await server.stop()
    phases = {}
    for name, span in (("press", press_span), ("held", held_span)):
        phases[name] = analyse(left, right, span, rec, talk_stats["events"], listen_stats["events"],
                               key=str(alpha))
    refcount_drop = {agent: refcount_drift(a.ready, st)
                     for agent, a, st in (("talker", talker, talk_stats), ("listener", listener, listen_stats))}
    buffer_trace = [(t, ms) for t, k, ms in listen_stats["buffer_trace"] if k == str(alpha)]
    return {
        "phases": phases,
        "presses": presses,
        "refcount_drop": refcount_drop,
        "alsa_xruns": {"talker": alsa_xruns(talker.log), "listener": alsa_xruns(listener.log)},
        "talker": {k: v for k, v in talk_stats.items() if k not in ("events", "buffer_trace")},
        "listener": {k: v for k, v in listen_stats.items() if k not in ("events", "buffer_trace")},
        "listener_buffer_ms": summarise_buffer(buffer_trace, held_span, rec),
        # Underruns while the floor was held (the counter's 0.5 s rule also counts a new
        # transmission that starts < 0.5 s after the last one ran dry, as in the press phase).
        "held_underruns": after["speaker"]["underruns"] - before["speaker"]["underruns"],
        "held_output_underflows": after["speaker"]["output_underflows"] - before["speaker"]["output_underflows"],
    }


async def run_baseline(args, rig: AudioRig, work: Path, rng: random.Random) -> dict:
    """The audio path alone: Microphone → PlaybackSink → Speaker in one process."""
    wav = write_wav(work / "baseline.wav", burst_train(args.baseline_bursts, rng))
    env = rig.env(source=MIC_SOURCE, sink=EAR_SINK)
    agent = await Agent("loopback", ["--loopback", *what_if_args(args)], env, work / "loopback.log").start()
    try:
        await agent.call("ready")
        await asyncio.sleep(1.0)
        rec = rig.record(work / "baseline.raw")
        await agent.call("clear")
        start = rec.samples_so_far()
        await play(rig, wav)
        await asyncio.sleep(0.6)
        span = (start, rec.samples_so_far())
        left, right = rec.stop()
        stats = await agent.call("stats")
    finally:
        await agent.close()
    result = analyse(left, right, span, rec, stats["events"], stats["events"], key="loopback",
                     stages=[("mic_cb", "mic_loop", ""), ("mic_loop", "sink_write", ""),
                             ("sink_write", "spk_cb", "")])
    result["speaker"] = stats.get("speaker")
    result["microphone"] = stats.get("microphone")
    return result


async def run_rig_check(args, rig: AudioRig, work: Path, rng: random.Random) -> dict:
    """The rig with plain PulseAudio clients in the consoles' place: `parec` of the
    microphone source piped into `pacat` on the ear sink, both with 10 ms buffers. What
    the rig itself adds between mouth and ear (remap source/sink, null sink rendering)."""
    wav = write_wav(work / "rigcheck.wav", burst_train(args.baseline_bursts, rng))
    env = rig.pulse.env
    source = subprocess.Popen(["parec", f"--device={MIC_SOURCE}", "--format=s16le", f"--rate={RATE}",
                               "--channels=1", "--latency-msec=10"], stdout=subprocess.PIPE, env=env)
    sink = subprocess.Popen(["pacat", f"--device={EAR_SINK}", "--format=s16le", f"--rate={RATE}",
                             "--channels=1", "--latency-msec=10"], stdin=source.stdout, env=env)
    source.stdout.close()  # pacat owns the pipe now
    try:
        await asyncio.sleep(1.0)
        rec = rig.record(work / "rigcheck.raw")
        start = rec.samples_so_far()
        await play(rig, wav)
        await asyncio.sleep(0.6)
        span = (start, rec.samples_so_far())
        left, right = rec.stop()
    finally:
        for proc in (source, sink):
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
    return pair_onsets(left, right, span)


# --- analysis ----------------------------------------------------------------------------


# --- output ------------------------------------------------------------------------------


def table(results: dict) -> str:
    def f(v):
        return "–" if v is None else f"{v:.1f}"

    rows = ["| measurement | n | p50 (ms) | p95 (ms) | max (ms) | target |", "|---|---:|---:|---:|---:|---|"]
    for name, label in (("press", "mouth-to-ear, one transmission per burst"),
                        ("held", "mouth-to-ear, floor held, bursts 0.5 s apart")):
        p = results["consoles"]["phases"][name]
        met = p["m2e_p95_ms"] is not None and p["m2e_p95_ms"] <= 100
        rows.append(f"| {label} | {p['bursts_heard']} / {p['bursts_in']} | {f(p['m2e_p50_ms'])} | "
                    f"{f(p['m2e_p95_ms'])} | {f(p['m2e_max_ms'])} | ≤ 100 p95: {'met' if met else 'MISSED'} |")
    b = results.get("baseline")
    if b:
        rows.append(f"| audio path alone (mic → sink → speaker, no network) | {b['bursts_heard']} / "
                    f"{b['bursts_in']} | {f(b['m2e_p50_ms'])} | {f(b['m2e_p95_ms'])} | {f(b['m2e_max_ms'])} | |")
    c = results.get("rig_check")
    if c:
        rows.append(f"| the rig alone (parec → pacat, 10 ms buffers, in the consoles' place) | "
                    f"{c['bursts_heard']} / {c['bursts_in']} | {f(c['m2e_p50_ms'])} | {f(c['m2e_p95_ms'])} | "
                    f"{f(c['m2e_max_ms'])} | |")
    a = results["access"]
    met = a["access_p95_ms"] is not None and a["access_p95_ms"] <= 50
    rows.append(f"| access time: press → talk-permit tone (session) | {a['granted']} / {a['presses']} | "
                f"{f(a['access_p50_ms'])} | {f(a['access_p95_ms'])} | {f(a['access_max_ms'])} | "
                f"≤ 50 p95: {'met' if met else 'MISSED'} |")
    rows.append(f"| press → tone mixed by the speaker callback | | {f(a['tone_callback_p50_ms'])} | "
                f"{f(a['tone_callback_p95_ms'])} | | |")
    rows.append(f"| press → tone out of PortAudio (+ its reported output latency) | | "
                f"{f(a['tone_out_p50_ms'])} | {f(a['tone_out_p95_ms'])} | | |")
    return "\n".join(rows)


def breakdown_table(results: dict) -> str:
    rows = ["| stage (mean per burst) | one transmission per burst (ms) | floor held (ms) |",
            "|---|---:|---:|"]
    phases = results["consoles"]["phases"]
    labels = phases["held"]["stage_labels"]
    names = list(labels) + ["outside"]
    labels = dict(labels, outside="capture + playback buffers outside the app (PulseAudio, "
                                  "PortAudio, filling the 20 ms capture block)")
    for name in names:
        a, b = phases["press"]["breakdown_mean_ms"].get(name), phases["held"]["breakdown_mean_ms"].get(name)
        rows.append(f"| {labels[name]} | {'–' if a is None else a} | {'–' if b is None else b} |")
    rows.append(f"| **total: mean mouth-to-ear of these bursts** | **{phases['press']['m2e_mean_complete_ms']}** | "
                f"**{phases['held']['m2e_mean_complete_ms']}** |")
    for name, label in (("capture_pa", "… of which capture, by PortAudio's timestamps (onset ADC → input callback)"),
                        ("playback_pa", "… of which playback, by PortAudio's timestamps (output callback → onset DAC)")):
        a, b = phases["press"]["breakdown_mean_ms"].get(name), phases["held"]["breakdown_mean_ms"].get(name)
        rows.append(f"| {label} | {'–' if a is None else a} | {'–' if b is None else b} |")
    rows.append(f"| (listener sink's buffered audio when the burst's packet arrived) | "
                f"{phases['press']['breakdown_mean_ms']['buffered_ms_at_rtp_in']} | "
                f"{phases['held']['breakdown_mean_ms']['buffered_ms_at_rtp_in']} |")
    return "\n".join(rows)


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(15, 4.4))
    phases = results["consoles"]["phases"]
    series = [("1 tx per burst", phases["press"]["m2e_ms"], "tab:blue"),
              ("floor held", phases["held"]["m2e_ms"], "tab:green")]
    if results.get("baseline"):
        series.append(("audio path alone", results["baseline"]["m2e_ms"], "tab:gray"))
    if results.get("rig_check"):
        series.append(("rig alone", results["rig_check"]["m2e_ms"], "tab:olive"))
    for label, values, color in series:
        if values:
            v = np.sort(values)
            ax1.step(v, np.arange(1, len(v) + 1) / len(v), where="post", color=color,
                     label=f"{label}: p95 {pct(values, 95):.0f} ms")
    ax1.axvline(100, color="tab:red", linestyle=":", label="target: p95 ≤ 100")
    ax1.set_xlim(0, 250)  # room on the right for the legend
    ax1.set_xlabel("mouth-to-ear (ms)")
    ax1.set_ylabel("fraction of bursts")
    ax1.set_title("Mouth-to-ear through the real audio stack")
    ax1.legend(fontsize=8, loc="center right")
    ax1.grid(alpha=0.3)

    names = list(phases["held"]["stage_labels"]) + ["outside"]
    short = {"mic_cb>mic_loop": "PortAudio → loop", "mic_loop>mic_send": "wait for encoder",
             "mic_send>sink_write": "encode+net", "sink_write>spk_cb": "jitter buffer+decode",
             "outside": "audio buffers outside app"}
    colors = ["tab:purple", "tab:orange", "tab:blue", "tab:green", "tab:gray"]
    for i, ph in enumerate(("press", "held")):
        left = 0.0
        for name, color in zip(names, colors):
            v = phases[ph]["breakdown_mean_ms"].get(name) or 0.0
            ax2.barh(i, v, left=left, color=color, label=short[name] if i == 0 else None)
            left += v
    ax2.set_yticks([0, 1], ["one tx per burst", "floor held"])
    ax2.set_xlabel("ms (mean per stage; the bar is the mean mouth-to-ear)")
    ax2.set_title("Where the time goes")
    ax2.legend(fontsize=8, loc="upper right")
    ax2.grid(alpha=0.3, axis="x")

    acc = results["access"]["access_ms"]
    if acc:
        ax3.hist(acc, bins=30, color="tab:blue", alpha=0.8)
        ax3.axvline(pct(acc, 95), color="black", linestyle="--", label=f"p95 {pct(acc, 95):.1f} ms")
    ax3.axvline(50, color="tab:red", linestyle=":", label="target p95 ≤ 50 ms")
    ax3.set_xlabel("press → talk-permit tone (ms)")
    ax3.set_ylabel("presses")
    ax3.set_title(f"Access time ({results['settings']['server']} server)")
    ax3.legend(fontsize=8)
    ax3.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


# --- main ----------------------------------------------------------------------------------


async def main_async(args: argparse.Namespace) -> int:
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="vpdesk-console-latency-"))
    rig = AudioRig()
    rig.start(work)
    try:
        consoles = await run_consoles(args, rig, work, rng)
        baseline = await run_baseline(args, rig, work, rng) if args.baseline_bursts else None
        rig_check = await run_rig_check(args, rig, work, rng) if args.baseline_bursts else None
    finally:
        rig.stop()
    results = {
        "command": "unshare -n sh -c 'ip link set lo up && .venv/bin/python bench/console_latency.py "
                   + " ".join(sys.argv[1:]) + "'",
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
        "settings": {"server": args.server, "mode": args.mode, "what_if_prefill_ms": args.prefill_ms,
                     "what_if_speaker_latency_s": args.speaker_latency, "presses": args.presses,
                     "impaired_loss": args.loss, "impaired_jitter_ms": args.jitter_ms,
                     "bursts": args.bursts, "baseline_bursts": args.baseline_bursts,
                     "burst": "100 ms, 1 kHz, 0.5 full scale", "threshold": THRESHOLD},
        "consoles": consoles,
        "baseline": baseline,
        "rig_check": rig_check,
        "access": access_summary(consoles["presses"]),
        "machine": console_machine_facts(),
    }
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md = table(results)
    bd = breakdown_table(results)
    results["table_markdown"] = md
    results["breakdown_markdown"] = bd
    # The plot is the default run's (embedded server, product settings); a standalone or
    # what-if run adds its figures to the JSON only.
    what_if = args.prefill_ms is not None or args.speaker_latency is not None
    impaired = bool(args.loss or args.jitter_ms)
    key = ("latency" + ("_standalone" if args.server == "standalone" else "") + ("_what_if" if what_if else "")
           + ("_impaired" if impaired else ""))
    merge_results(out / "console-results.json", key, results)
    if key == "latency":
        plot(results, out / "console-latency.png")
    print(md)
    print()
    print(bd)
    lb = consoles["listener_buffer_ms"]
    print(f"\nlistener sink buffered_ms at packet arrival (held): p50 {lb['p50']} p95 {lb['p95']} max {lb['max']}; "
          f"listener speaker {json.dumps(consoles['listener'].get('speaker', {}).get('underruns'))} underruns")
    rx = consoles["listener"].get("receivers", {})
    for cid, figures in rx.items():
        print(f"listener receiver {cid}: {json.dumps(figures)}")
    print(f"wrote {out / 'console-results.json'} ({key})"
          + (f" and {out / 'console-latency.png'}" if key == "latency" else ""))
    shutil.rmtree(work, ignore_errors=True)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--presses", type=int, default=60, help="transmissions in the press phase")
    parser.add_argument("--bursts", type=int, default=60, help="bursts in the held phase")
    parser.add_argument("--baseline-bursts", type=int, default=30, help="0: skip the audio-only baseline")
    parser.add_argument("--server", choices=("embedded", "standalone"), default="embedded")
    parser.add_argument("--mode", choices=("ui", "headless"), default="ui",
                        help="consoles with the full UI on qasync, or the session on plain asyncio")
    parser.add_argument("--prefill-ms", type=float,
                        help="what-if: the PlaybackSink prefill for written PCM (product default 40 ms): "
                             "the audio-path-alone loopback; channels go through the jitter buffer")
    parser.add_argument("--loss", type=float, default=0.0,
                        help="impair the listener's tap: drop each packet with this probability")
    parser.add_argument("--jitter-ms", type=float, default=0.0,
                        help="impair the listener's tap: delay each packet by uniform 0..this ms")
    parser.add_argument("--speaker-latency", type=float,
                        help="what-if: the listener's PortAudio output latency in s (default 'low')")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--quick", action="store_true",
                        help="a short smoke run, written to a temporary folder unless --out-dir")
    parser.add_argument("--out-dir", help="default: docs/ (a temporary folder with --quick)")
    args = parser.parse_args()
    if args.quick:
        args.presses, args.bursts, args.baseline_bursts = 8, 8, 5
    if args.out_dir is None:
        args.out_dir = tempfile.mkdtemp(prefix="console-latency-quick-") if args.quick else str(ROOT / "docs")
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
