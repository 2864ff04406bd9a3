"""bench/compare.py's output: rounds combined, the Markdown table, the PNG plot."""

from __future__ import annotations

import statistics
from pathlib import Path

# Below this N the idle cost per listener drowns in /proc's 10 ms CPU ticks.
IDLE_MIN_N = 50

LABELS = {
    "vpdesk": "vpdesk",
    "janus": "Janus VideoRoom (defaults)",
    "janus-el2": "Janus VideoRoom, event_loops = 2",
    "naive": "naive MediaRelay",
}

# Counts add up over rounds; every other number is the median of the rounds.
SUMMED = {"talker_packets_in_window", "delivered_in_window", "received_of_window_packets", "expected_in_window",
          "misaligned", "last_copy_packets", "wire_last_copy_packets", "wire_packets_captured", "talker_late_sends"}


def combine(rows: list[dict]) -> dict:
    """One (server, N) point measured in several rounds, as one row."""
    if len(rows) == 1:
        return {**rows[0], "rounds": 1}
    out: dict = {}
    for key, value in rows[-1].items():
        values = [r.get(key) for r in rows]
        numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if key in SUMMED:
            out[key] = sum(numbers)
        elif numbers and key not in ("listeners", "round"):
            out[key] = round(statistics.median(numbers), 3)
        else:
            out[key] = value
    out["connected"] = min(r["connected"] for r in rows)
    expected = out["expected_in_window"]
    out["delivered_pct"] = round(100 * out["received_of_window_packets"] / expected, 2) if expected else None
    out["rounds"] = len(rows)
    out["cpu_us_per_packet_rounds"] = [r["cpu_us_per_packet"] for r in rows]
    out.pop("round", None)
    return out


# --- table and plot --------------------------------------------------------------------------------


def _f(v, fmt="{:,.1f}") -> str:
    return "–" if v is None else fmt.format(v)


def table(results: list[dict], skipped: list[tuple[str, int, str]]) -> str:
    rows = [
        "| server | N | server CPU µs / forwarded packet (above idle) [range over rounds] | delivered / expected | "
        "wire latency p50 / p99, last copy (ms) | idle: ms CPU / s per listener | server CPU % | "
        "server RSS (MiB) | generator CPU % |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        rows.append(
            f"| {LABELS[r['server']]} | {r['listeners']} | {_f(r['cpu_us_per_packet'])} "
            f"({_f(r['cpu_us_per_packet_above_idle'])}){_spread(r)} | "
            f"{r['received_of_window_packets']:,} / {r['expected_in_window']:,} ({_f(r['delivered_pct'], '{:.1f}')} %) | "
            f"{_f(r.get('wire_latency_last_p50_ms'), '{:.2f}')} / {_f(r.get('wire_latency_last_p99_ms'), '{:.2f}')} | "
            f"{_f(idle_per_listener(r), '{:.3f}')} | {_f(r['server_cpu_pct'], '{:.0f}')} | "
            f"{_f(r['server_rss_mib'], '{:.0f}')} | {_f(r['generator_cpu_pct'], '{:.0f}')} |"
        )
    for kind, n, why in skipped:
        rows.append(f"| {LABELS[kind]} | {n} | skipped: {why} | | | | | | |")
    return "\n".join(rows)


def _spread(r: dict) -> str:
    each = [v for v in r.get("cpu_us_per_packet_rounds", []) if v is not None]
    return f" [{min(each):,.1f}–{max(each):,.1f}]" if len(each) > 1 else ""


def idle_per_listener(r: dict) -> float | None:
    return r["idle_ms_per_s_per_listener"] if r["listeners"] >= IDLE_MIN_N else None


def ratio_at(results: list[dict], n: int) -> float | None:
    """vpdesk's CPU per forwarded packet over Janus's (default configuration) at N = n."""
    by = {(r["server"], r["listeners"]): r["cpu_us_per_packet"] for r in results}
    ours, janus = by.get(("vpdesk", n)), by.get(("janus", n))
    return round(ours / janus, 3) if ours and janus else None


def plotted_latency(r: dict) -> bool:
    # A saturated server's seconds of queueing would flatten everyone else's curve.
    return r.get("wire_latency_last_p50_ms") is not None and (r["delivered_pct"] or 0) >= 90


def machine_line(facts: dict) -> str:
    return (f"{facts['nproc']} CPUs ({facts['cpu_model']}), kernel {facts['kernel']}, Python {facts['python']}, "
            f"aiortc {facts['aiortc']}, Janus {facts['janus']}")


def plot(results: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(15, 4.6))
    colors = {"vpdesk": "tab:blue", "janus": "tab:green", "janus-el2": "tab:olive", "naive": "tab:red"}
    for kind, color in colors.items():
        rs = [r for r in results if r["server"] == kind and r["cpu_us_per_packet"]]
        if not rs:
            continue
        ns = [r["listeners"] for r in rs]
        ax1.plot(ns, [r["cpu_us_per_packet"] for r in rs], "o-", color=color, label=LABELS[kind])
        for r in rs:
            if r["delivered_pct"] is not None and r["delivered_pct"] < 99:
                ax1.annotate(f"{r['delivered_pct']:.0f}% delivered", (r["listeners"], r["cpu_us_per_packet"]),
                             textcoords="offset points", xytext=(4, 6), fontsize=8, color=color)
        wire = [r for r in rs if plotted_latency(r)]
        ax2.plot([r["listeners"] for r in wire], [r["wire_latency_last_p50_ms"] for r in wire], "o-",
                 color=color, label=f"{LABELS[kind]} p50")
        ax2.plot([r["listeners"] for r in wire], [r["wire_latency_last_p99_ms"] for r in wire], "s--",
                 color=color, label=f"{LABELS[kind]} p99")
        idle = [r for r in rs if idle_per_listener(r) is not None]
        if not idle:
            continue
        ax3.plot([r["listeners"] for r in idle], [max(idle_per_listener(r), 1e-3) for r in idle],
                 "o-", color=color, label=LABELS[kind])
    ax1.axhline(15, color="gray", linestyle=":", label="target 15 µs")
    ax2.axhline(2, color="gray", linestyle=":", label="target p99 2 ms (N = 50)")
    ax3.axhline(0.2, color="gray", linestyle=":", label="target 0.2 ms/s")
    log_axes = [ax1, ax2, ax3]
    if not any(idle_per_listener(r) is not None for r in results):
        ax3.text(0.5, 0.5, f"no point with N ≥ {IDLE_MIN_N}", transform=ax3.transAxes, ha="center")
        log_axes.remove(ax3)  # nothing to put on a log scale
    if not any(plotted_latency(r) for r in results):
        log_axes.remove(ax2)
    for ax in (ax1, ax2, ax3):
        if ax in log_axes:
            ax.set_xscale("log")
            ax.set_yscale("log")
        ax.set_xlabel("listeners N (one talker, 50 packets/s)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    ax1.set_ylabel("server CPU µs per forwarded packet")
    ax1.set_title("Server CPU per forwarded packet")
    ax2.set_ylabel("ms")
    ax2.set_title("Wire latency in → out, last copy (points with ≥ 90 % delivered)")
    ax3.set_ylabel("server CPU ms per second per listener")
    ax3.set_title(f"Idle cost of a connected, silent listener (N ≥ {IDLE_MIN_N})")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


