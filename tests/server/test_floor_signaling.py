"""Floor control over the real signaling: busy, release, crash, emergency, max talk time."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.server.harness import PttClient, close_all, start_site

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def site(tmp_path):
    site = await start_site(tmp_path, users=4, floor_lease_ms=1500, max_talk_ms=60_000)
    yield site
    await site.server.stop()


async def test_busy_denial_names_the_holder_and_release_frees_it(site):
    alpha = site.channels["alpha"]
    a, b = [await PttClient.connect(site.url, n, media=False) for n in ("u0", "u1")]
    try:
        assert (await a.talk(alpha))["granted"] is True
        taken = await b.signaling.next_event("floor_taken")
        assert taken["channel"] == alpha and taken["holder"]["name"] == "u0"
        denied = await b.talk(alpha)
        assert denied == {"id": denied["id"], "ok": True, "granted": False, "reason": "busy",
                          "holder": {"user_id": taken["holder"]["user_id"], "name": "u0"}}
        await a.release(alpha)
        idle = await b.signaling.next_event("floor_idle")
        assert idle["channel"] == alpha
        assert (await b.talk(alpha))["granted"] is True
        # The other channel was never affected.
        assert (await a.talk(site.channels["bravo"]))["granted"] is True
    finally:
        await close_all(a, b)


async def test_killed_talker_frees_the_floor_within_the_lease(site):
    alpha = site.channels["alpha"]
    listener = await PttClient.connect(site.url, "u1", media=False)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    talker = subprocess.Popen(
        [sys.executable, "-m", "tests.server.talker_process", site.url, "u0", str(alpha)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True,
    )
    try:
        line = await asyncio.wait_for(asyncio.to_thread(talker.stdout.readline), timeout=30)
        assert line.strip() == "granted"
        taken = await listener.signaling.next_event("floor_taken", timeout=5)
        assert taken["holder"]["name"] == "u0"
        killed_at = time.monotonic()
        talker.send_signal(signal.SIGKILL)
        idle = await listener.signaling.next_event("floor_idle", timeout=5)
        elapsed = time.monotonic() - killed_at
        assert idle["channel"] == alpha
        assert elapsed <= 1.5 + 0.5, f"floor freed after {elapsed:.2f} s"
        assert (await listener.talk(alpha))["granted"] is True
    finally:
        talker.kill()
        talker.wait(timeout=10)
        await listener.close()


async def test_emergency_preempts_a_normal_talker(site):
    alpha = site.channels["alpha"]
    normal, urgent, third = [await PttClient.connect(site.url, n, media=False) for n in ("u0", "u1", "u2")]
    try:
        assert (await normal.talk(alpha))["granted"]
        assert (await urgent.talk(alpha, priority="emergency"))["granted"] is True
        revoked = await normal.signaling.next_event("floor_revoked")
        assert revoked == {"type": "floor_revoked", "channel": alpha, "reason": "preempted"}
        holders = []
        for _ in range(2):
            holders.append((await third.signaling.next_event("floor_taken"))["holder"]["name"])
        assert holders == ["u0", "u1"]
        # An emergency talker cannot be pre-empted, not even by another emergency.
        denied = await normal.talk(alpha, priority="emergency")
        assert denied["granted"] is False and denied["holder"]["name"] == "u1"
    finally:
        await close_all(normal, urgent, third)


async def test_max_talk_time_revokes(tmp_path):
    site = await start_site(tmp_path, users=2, floor_lease_ms=900, max_talk_ms=1000)
    talker, listener = [await PttClient.connect(site.url, n, media=False) for n in ("u0", "u1")]
    try:
        alpha = site.channels["alpha"]
        reply = await talker.talk(alpha)
        assert reply["granted"] and reply["max_ms"] == 1000
        started = time.monotonic()
        revoked = await talker.signaling.next_event("floor_revoked", timeout=4)
        assert revoked["reason"] == "max_duration"
        assert 0.9 <= time.monotonic() - started <= 2.0
        await listener.signaling.next_event("floor_idle", timeout=2)
    finally:
        await close_all(talker, listener)
        await site.server.stop()
