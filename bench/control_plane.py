"""The control plane, measured against a real in-process server on loopback.

- Removal during a transmission: a dispatcher takes the talker (or a listener) off the
  channel over the REST API; from sending the REST request to the last RTP packet the
  listener gets (its inbound packet counter, polled every 5 ms, so a figure carries up
  to 5 ms of polling plus the 20 ms packet spacing). The issue's bound is 500 ms.
- A membership change with S live sessions connected: the REST call's round trip (it
  applies the change to every live session before it answers) and the added user's
  `channels_changed` arriving over its WebSocket, for S = 1, 50, 200.
- Sign-in costs: `POST /api/login` (scrypt, off the loop) and `POST /api/refresh`.

Prints a table, writes docs/control-plane-results.json and docs/control-plane.png.
Run inside a loopback-only network namespace (~2 minutes):
  unshare -n sh -c 'ip link set lo up && .venv/bin/python bench/control_plane.py'
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from server.directory import Directory, Role  # noqa: E402
from tests.audio_tools import WavTrack  # noqa: E402
from tests.server.api_client import ApiClient  # noqa: E402
from tests.server.harness import PASSWORD, PttClient, close_all, start_site  # noqa: E402

DOCS = ROOT / "docs"
POLL_S = 0.005
QUIET_S = 0.3  # no new packet for this long: the stream has stopped


def tone() -> WavTrack:
    t = np.arange(48_000) / 48_000
    return WavTrack((np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16), autostart=True, loop=True)


def percentiles(values: list[float]) -> dict[str, float]:
    a = np.asarray(values, dtype=float)
    return {
        "n": len(values),
        "p50": round(float(np.percentile(a, 50)), 2),
        "p95": round(float(np.percentile(a, 95)), 2),
        "max": round(float(a.max()), 2),
    }


async def last_packet_after(
    client: PttClient, channel: int, since: float, count: int, limit_s: float = 3.0
) -> float:
    """Milliseconds from `since` (loop time, when the packet count was `count`) to the
    last packet counted before the stream went quiet for QUIET_S."""
    loop = asyncio.get_running_loop()
    last_change = since
    deadline = since + limit_s
    while loop.time() < deadline:
        await asyncio.sleep(POLL_S)
        now_count = await client.inbound_packets(channel)
        now = loop.time()
        if now_count != count:
            count, last_change = now_count, now
        elif now - last_change >= QUIET_S:
            break
    return max(0.0, (last_change - since) * 1000.0)


async def removal_trials(tmp: Path, trials: int) -> tuple[dict[str, list[float]], int]:
    site = await start_site(tmp / "removal", users=3)
    directory = site.directory
    event = directory.event_by_name("Exercise")
    directory.assign_dispatcher(event.id, directory.user_by_name("u0").id)
    alpha = site.channels["alpha"]
    dispatcher = await ApiClient.login(site.url, "u0")
    talker = await PttClient.connect(site.url, "u1", slots=1, microphone=tone())
    listener = await PttClient.connect(site.url, "u2", slots=1)
    results: dict[str, list[float]] = {"talker_removed": [], "listener_removed": []}
    flowing: dict[str, list[int]] = {kind: [] for kind in results}  # packets in the 0.4 s before
    loop = asyncio.get_running_loop()
    try:
        for kind in results:
            who = talker if kind == "talker_removed" else listener
            user_id = directory.user_by_name(who.name).id
            for _ in range(trials):
                await listener.join(alpha)
                await talker.join(alpha)
                granted = await talker.talk(alpha)
                assert granted["granted"], granted
                before = await listener.inbound_packets(alpha)
                await asyncio.sleep(0.4)
                baseline = await listener.inbound_packets(alpha)
                flowing[kind].append(baseline - before)
                clicked = loop.time()
                (await dispatcher.delete(f"/api/channels/{alpha}/members/{user_id}")).ok()
                results[kind].append(await last_packet_after(listener, alpha, clicked, baseline))
                await who.signaling.next_event("channels_changed", timeout=3)
                (await dispatcher.put(f"/api/channels/{alpha}/members/{user_id}")).ok()
                await who.signaling.next_event("channels_changed", timeout=3)
                if kind == "listener_removed":
                    await talker.release(alpha)
                await asyncio.sleep(0.1)
    finally:
        await close_all(talker, listener)
        await dispatcher.close()
        await site.server.stop()
    for kind, counts in flowing.items():
        # Audio must have been flowing, or a 0 ms figure would mean nothing.
        assert min(counts) >= 15, (kind, counts)
    return results, min(c for counts in flowing.values() for c in counts)


async def membership_with_sessions(tmp: Path, sessions: int, changes: int) -> dict[str, list[float]]:
    """REST round trip and `channels_changed` delivery with `sessions` live sessions."""
    site = await start_site(tmp / f"sessions-{sessions}", users=2)
    directory: Directory = site.directory
    bravo = site.channels["bravo"]
    # Extra general users on alpha, each with a live signaling session (no media).
    names = [f"g{i}" for i in range(sessions)]
    for name in names:
        directory.add_user(name, Role.GENERAL, PASSWORD)
        directory.add_member(name, "alpha")
    admin = await ApiClient.login(site.url, "admin")
    clients = []
    try:
        for name in names:
            clients.append(await PttClient.connect(site.url, name, media=False))
        subject = clients[0]
        subject_id = directory.user_by_name(subject.name).id
        loop = asyncio.get_running_loop()
        rest_ms, event_ms = [], []
        for i in range(changes):
            path = f"/api/channels/{bravo}/members/{subject_id}"
            started = loop.time()
            reply = await (admin.put(path) if i % 2 == 0 else admin.delete(path))
            reply.ok()
            rest_ms.append((loop.time() - started) * 1000.0)
            await subject.signaling.next_event("channels_changed", timeout=3)
            event_ms.append((loop.time() - started) * 1000.0)
        return {"rest_ms": rest_ms, "channels_changed_ms": event_ms}
    finally:
        await close_all(*clients)
        await admin.close()
        await site.server.stop()


async def sign_in_costs(tmp: Path, rounds: int) -> dict[str, list[float]]:
    site = await start_site(tmp / "signin", users=1)
    login_ms, refresh_ms = [], []
    try:
        client = ApiClient(site.url)
        try:
            body = None
            for _ in range(rounds):
                started = time.perf_counter()
                body = (await client.post("/api/login", {"username": "u0", "password": PASSWORD})).ok()
                login_ms.append((time.perf_counter() - started) * 1000.0)
            refresh = body["refresh_token"]
            for _ in range(rounds):
                started = time.perf_counter()
                body = (await client.post("/api/refresh", {"refresh_token": refresh})).ok()
                refresh_ms.append((time.perf_counter() - started) * 1000.0)
                refresh = body["refresh_token"]
        finally:
            await client.close()
    finally:
        await site.server.stop()
    return {"login_ms": login_ms, "refresh_ms": refresh_ms}


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    removal = results["removal_raw"]
    left.boxplot([removal["talker_removed"], removal["listener_removed"]],
                 tick_labels=["talker removed", "listener removed"])
    left.axhline(500, color="tab:red", linestyle="--", label="issue bound 500 ms")
    left.set_ylabel("REST request sent → last packet at the listener (ms)")
    left.set_title("Removal during a transmission")
    left.legend(loc="upper right")
    sessions = sorted(int(s) for s in results["membership"])
    for key, label in (("rest_ms", "REST round trip"), ("channels_changed_ms", "channels_changed received")):
        right.plot(sessions, [results["membership"][str(s)][key]["p50"] for s in sessions], marker="o", label=f"{label} p50")
        right.plot(sessions, [results["membership"][str(s)][key]["p95"] for s in sessions], marker="x",
                   linestyle=":", label=f"{label} p95")
    right.set_xlabel("live sessions on the node")
    right.set_ylabel("ms")
    right.set_title("A membership change over REST")
    right.legend()
    fig.suptitle(f"vpdesk control plane — {results['machine']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=15, help="removals per kind")
    parser.add_argument("--sessions", default="1,50,200", help="live session counts")
    parser.add_argument("--changes", type=int, default=30, help="membership changes per count")
    parser.add_argument("--rounds", type=int, default=20, help="logins and refreshes")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        removal, flowing = await removal_trials(tmp, args.trials)
        membership = {}
        for count in (int(s) for s in args.sessions.split(",")):
            raw = await membership_with_sessions(tmp, count, args.changes)
            membership[str(count)] = {key: percentiles(values) for key, values in raw.items()}
        signin = await sign_in_costs(tmp, args.rounds)
    results = {
        "machine": f"{platform.machine()}, {len(__import__('os').sched_getaffinity(0))} cores, Python {platform.python_version()}",
        "removal": {key: percentiles(values) for key, values in removal.items()},
        "removal_raw": {key: [round(v, 2) for v in values] for key, values in removal.items()},
        "removal_min_packets_in_the_0.4s_before": flowing,
        "membership": membership,
        "sign_in": {key: percentiles(values) for key, values in signin.items()},
    }
    print(f"audio before each removal: at least {flowing} packets in 0.4 s")
    print(f"\n{'figure':<52} {'n':>4} {'p50':>9} {'p95':>9} {'max':>9}")
    rows = [(f"removal: {k} → last packet (ms)", v) for k, v in results["removal"].items()]
    for count, figures in membership.items():
        rows += [(f"S={count}: {k}", v) for k, v in figures.items()]
    rows += [(f"sign-in: {k}", v) for k, v in results["sign_in"].items()]
    for name, v in rows:
        print(f"{name:<52} {v['n']:>4} {v['p50']:>9.2f} {v['p95']:>9.2f} {v['max']:>9.2f}")
    DOCS.mkdir(exist_ok=True)
    (DOCS / "control-plane-results.json").write_text(json.dumps(results, indent=2) + "\n")
    plot(results, DOCS / "control-plane.png")
    print(f"\nwrote {DOCS / 'control-plane-results.json'} and {DOCS / 'control-plane.png'}")


if __name__ == "__main__":
    asyncio.run(main())
