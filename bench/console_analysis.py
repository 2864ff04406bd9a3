"""Analysis for bench/console_latency.py: onsets in the rig's recording paired into
mouth-to-ear latencies, each burst's stage time stamps (bench/console_probes.py) turned
into a breakdown, and summaries of access times, buffer levels and reference counts.

Plain functions over plain data; call from anywhere.
"""

from __future__ import annotations

import statistics

from bench.console_rig import RATE, onsets, pct

THRESHOLD = 0.1  # bursts are 0.5 full scale
MAX_M2E_S = 0.45  # a right onset further than this from a left one is not its echo
STAGES = [  # (name, label): consecutive stage pairs of bench/console_probes.py
    ("mic_cb", "mic_loop", "PortAudio thread → event loop (call_soon_threadsafe)"),
    ("mic_loop", "mic_send", "waiting for the encoder's recv()"),
    ("mic_send", "sink_write", "Opus encode + look-ahead (an onset in a frame's last 6.5 ms leaves "
                               "with the next packet), SRTP, server, loopback, decode"),
    ("sink_write", "spk_cb", "listener's jitter buffer (RTP arrival → mixed out; start delay, frame, decode)"),
]


# --- per burst ---------------------------------------------------------------------------


def pair_onsets(left, right, span) -> dict:
    """Mouth-to-ear from the recording alone: each left onset in `span` with the first
    right onset within MAX_M2E_S after it."""
    lo, hi = span
    outs = onsets(right, THRESHOLD)
    m2e = []
    ins = [s for s in onsets(left, THRESHOLD) if lo <= s < hi]
    for s in ins:
        out = next((o for o in outs if s <= o <= s + MAX_M2E_S * RATE), None)
        if out is not None:
            m2e.append((out - s) / RATE)
    return {"bursts_in": len(ins), "bursts_heard": len(m2e),
            "m2e_p50_ms": _ms(pct(m2e, 50)), "m2e_p95_ms": _ms(pct(m2e, 95)),
            "m2e_min_ms": _ms(min(m2e) if m2e else None), "m2e_max_ms": _ms(max(m2e) if m2e else None),
            "m2e_ms": [_ms(v) for v in m2e]}


def _first_after(events: list[dict], t: float, within: float, key: str | None = None) -> dict | None:
    for e in events:
        if t <= e["t"] <= t + within and (key is None or e.get("key") == key):
            return e
    return None


def analyse(left, right, span, rec, talk_events, listen_events, *, key: str, stages=None) -> dict:
    """Mouth-to-ear per burst from the recording; stage times per burst from the probes."""
    stages = stages or STAGES
    lo, hi = span
    ins = [s for s in onsets(left, THRESHOLD) if lo <= s < hi]
    outs = onsets(right, THRESHOLD)
    bursts = []
    for s in ins:
        out = next((o for o in outs if s <= o <= s + MAX_M2E_S * RATE), None)
        m2e = (out - s) / RATE if out is not None else None
        entry = {"sample": s, "t_s": s / RATE, "m2e_s": m2e}
        # Which probe events are this burst's: the recording's rough clock says when.
        t_mouth = rec.monotonic_of(s)
        ev = {"mic_cb": _first_after(talk_events["mic_cb"], t_mouth - 0.05, 0.35)}
        chain_ok = ev["mic_cb"] is not None
        for a, b, _ in stages:
            if not chain_ok:
                break
            pool = listen_events if b in ("sink_write", "spk_cb") else talk_events
            ev[b] = _first_after(pool[b], ev[a]["t"], 0.4, key if b == "sink_write" else None)
            chain_ok = ev[b] is not None
        if chain_ok:
            for a, b, _ in stages:
                entry[f"{a}>{b}"] = ev[b]["t"] - ev[a]["t"]
            inside = ev[stages[-1][1]]["t"] - ev["mic_cb"]["t"]
            if m2e is not None:
                # Capture and playback buffers outside the process, incl. filling the
                # 20 ms capture block and the output buffer PortAudio keeps.
                entry["outside"] = m2e - inside
            entry["in_latency"] = ev["mic_cb"].get("in_latency")
            entry["out_latency"] = ev[stages[-1][1]].get("out_latency")
            # PortAudio's own split of "outside": ADC time of the onset sample → input
            # callback, and output callback → DAC time of the onset sample.
            if entry["in_latency"] is not None and entry["in_latency"] > -0.2:
                entry["capture_pa"] = -entry["in_latency"] - ev["mic_cb"]["offset"] / RATE
            if entry["out_latency"] is not None:
                entry["playback_pa"] = entry["out_latency"] + ev[stages[-1][1]]["offset"] / RATE
            entry["buffered_ms_at_rtp_in"] = ev.get("sink_write", {}).get("buffered_ms")
            entry["capture_block_fill_s"] = (ev["mic_cb"]["frames"] - ev["mic_cb"]["offset"]) / RATE
        bursts.append(entry)
    m2e = [b["m2e_s"] for b in bursts if b["m2e_s"] is not None]
    out = {
        "bursts_in": len(ins),
        "bursts_heard": len(m2e),
        "m2e_p50_ms": _ms(pct(m2e, 50)), "m2e_p95_ms": _ms(pct(m2e, 95)),
        "m2e_min_ms": _ms(min(m2e) if m2e else None), "m2e_max_ms": _ms(max(m2e) if m2e else None),
        "m2e_ms": [_ms(v) for v in m2e],
        "breakdown_mean_ms": {},
        "breakdown_p50_ms": {},
        "bursts": bursts,
    }
    names = [f"{a}>{b}" for a, b, _ in stages] + ["outside", "capture_pa", "playback_pa",
                                                  "capture_block_fill_s", "buffered_ms_at_rtp_in"]
    # Means over the bursts whose every stage was seen: the stages then add up to the
    # mean mouth-to-ear of those bursts (medians would not add up).
    complete = [b for b in bursts if b.get("outside") is not None]
    out["complete_bursts"] = len(complete)
    out["m2e_mean_complete_ms"] = _ms(statistics.mean(b["m2e_s"] for b in complete)) if complete else None
    for name in names:
        scale = 1.0 if name == "buffered_ms_at_rtp_in" else 1000.0
        values = [b[name] for b in complete if b.get(name) is not None]
        out["breakdown_mean_ms"][name] = round(statistics.mean(values) * scale, 2) if values else None
        values = [b[name] for b in bursts if b.get(name) is not None]
        out["breakdown_p50_ms"][name] = round(statistics.median(values) * scale, 2) if values else None
    for b in bursts:  # 10 µs is plenty
        for k, v in b.items():
            if isinstance(v, float):
                b[k] = round(v, 5)
    out["stage_labels"] = {f"{a}>{b}": label for a, b, label in stages}
    return out


def refcount_drift(first: dict, last: dict) -> dict:
    """How fast None's and True's reference counts fell between two agent replies
    (the PySide6 6.12 / Python 3.11 leak) and when they would have reached zero."""
    seconds = last["t"] - first["t"]
    out = {"seconds": round(seconds, 1)}
    for name in ("None", "True"):
        a, b = first["refcounts"][name], last["refcounts"][name]
        rate = (a - b) / seconds if seconds > 0 else 0.0
        out[name] = {"at_start": a, "at_end": b, "drop_per_s": round(rate, 1),
                     "zero_after_s": round(a / rate, 0) if rate > 0 else None}
    return out


def summarise_buffer(trace, span, rec) -> dict:
    """The listener sink's buffered_ms as each packet arrived, during the held phase."""
    t0, t1 = rec.monotonic_of(span[0]), rec.monotonic_of(span[1])
    values = [ms for t, ms in trace if t0 <= t <= t1]
    return {"samples": len(values), "p50": pct(values, 50), "p95": pct(values, 95),
            "max": max(values) if values else None,
            "series": [(round(t - t0, 3), round(ms, 1)) for t, ms in trace if t0 <= t <= t1][::5]}


def _ms(v: float | None) -> float | None:
    return None if v is None else round(v * 1000.0, 1)


def access_summary(presses: list[dict]) -> dict:
    access = [p["access_s"] for p in presses if p.get("access_s") is not None]
    tone = [p["tone_cb_s"] for p in presses if p.get("tone_cb_s") is not None]
    heard = [p["tone_cb_s"] + p["tone_out_latency_s"] for p in presses
             if p.get("tone_cb_s") is not None and p.get("tone_out_latency_s") is not None]
    return {
        "presses": len(presses), "granted": len(access),
        "access_p50_ms": _ms(pct(access, 50)), "access_p95_ms": _ms(pct(access, 95)),
        "access_max_ms": _ms(max(access) if access else None),
        "tone_callback_p50_ms": _ms(pct(tone, 50)), "tone_callback_p95_ms": _ms(pct(tone, 95)),
        "tone_out_p50_ms": _ms(pct(heard, 50)), "tone_out_p95_ms": _ms(pct(heard, 95)),
        "access_ms": [_ms(v) for v in access],
    }
