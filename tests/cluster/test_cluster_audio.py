"""Audio across nodes: a talker on node a is heard by listeners on a and on b, and the
relay between the nodes takes nothing from anyone without the site's key."""

from __future__ import annotations

import asyncio
import json
import socket

import aiohttp
import numpy as np
import pytest
import redis.asyncio as aioredis

from tests.audio_tools import TrackRecorder, WavTrack, aligned_correlation, read_wav, speech_wav
from tests.server.harness import PttClient, close_all

SPEECH = "Control to all units on the north side. The convoy leaves at nine."


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> np.ndarray:
    return read_wav(speech_wav(tmp_path_factory.mktemp("speech"), SPEECH, seconds_min=3.0))


async def node_stats(url: str, token: str) -> dict:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{url}/api/stats", headers={"Authorization": f"Bearer {token}"}) as r:
            assert r.status == 200
            return await r.json()


async def test_talker_on_a_is_heard_on_a_and_on_b(two_nodes, speech):
    a, b, channels = two_nodes
    alpha = channels["alpha"]
    mic = WavTrack(speech, autostart=False)
    talker = await PttClient.connect(a.url, "u0", slots=1, microphone=mic)
    near = await PttClient.connect(a.url, "u1", slots=1)
    far = await PttClient.connect(b.url, "u2", slots=1)
    try:
        for listener in (near, far):
            await listener.join(alpha)
        recorders = {c.name: TrackRecorder(c.track(alpha)).start() for c in (near, far)}
        await asyncio.sleep(0.5)  # b's listener reaches a's routes (record + bus)
        for recorder in recorders.values():
            recorder.clear()
        assert (await talker.talk(alpha))["granted"] is True
        mic.start()
        await asyncio.wait_for(mic.on_done.wait(), timeout=30)
        await asyncio.sleep(0.5)
        await talker.release(alpha)
        for name, recorder in recorders.items():
            heard = await recorder.stop()
            score, _ = aligned_correlation(speech, heard)
            assert score >= 0.9, f"{name}: correlation {score:.3f}"
        stats_a = await node_stats(a.url, talker.token)
        stats_b = await node_stats(b.url, talker.token)
        assert stats_a["node"] == "a" and stats_b["node"] == "b"
        # Every packet of the talk went to b once (one copy for the node, not per listener).
        assert stats_a["relay_sent"] >= 100
        relayed = stats_b["packets_relayed_in"] + stats_b["packets_relayed_stale"]
        assert relayed == stats_b["relay_received"] <= stats_a["relay_sent"]
        # A first packet may reach b before b has heard of the grant: b drops it as stale
        # and reads the floor from the store. Only the grant's first packets can be: its
        # first 100 ms at 50 packets a second.
        assert stats_b["packets_relayed_stale"] <= 5
        assert stats_b["relay_received"] >= 0.95 * stats_a["relay_sent"]
        assert stats_b["relay_refused"] == 0
    finally:
        await close_all(talker, near, far)


async def test_no_listener_on_b_means_nothing_is_relayed(two_nodes, speech):
    a, b, channels = two_nodes
    alpha, bravo = channels["alpha"], channels["bravo"]
    mic = WavTrack(speech, autostart=False, loop=True)
    talker = await PttClient.connect(a.url, "u0", slots=1, microphone=mic)
    near = await PttClient.connect(a.url, "u1", slots=1)
    elsewhere = await PttClient.connect(b.url, "u2", slots=1)  # listens to bravo only
    try:
        await near.join(alpha)
        await elsewhere.join(bravo)
        await asyncio.sleep(0.5)
        assert (await talker.talk(alpha))["granted"] is True
        mic.start()
        await asyncio.sleep(1.5)
        await talker.release(alpha)
        assert await near.inbound_packets(alpha) >= 40
        stats_a = await node_stats(a.url, talker.token)
        assert stats_a["relay_sent"] == 0
    finally:
        await close_all(talker, near, elsewhere)


async def test_a_stranger_cannot_inject_or_replay_relay_packets(two_nodes, speech, redis_server):
    """The stranger captures the genuine sealed packets (by posing as a node with a
    listener, which only someone who can write to Redis can do) and sends them, replayed
    and altered, plus packets of its own making, to b's relay port. b's listener gets
    exactly the packets a sent, no more."""
    a, b, channels = two_nodes
    alpha = channels["alpha"]
    mic = WavTrack(speech, autostart=False)
    talker = await PttClient.connect(a.url, "u0", slots=1, microphone=mic)
    far = await PttClient.connect(b.url, "u2", slots=1)
    spy = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    spy.bind(("127.0.0.1", 0))
    spy.setblocking(False)
    raw = aioredis.Redis.from_url(redis_server.url)
    try:
        await far.join(alpha)
        record_b = json.loads(await raw.get("vpdesk:node:b"))
        relay_b = (record_b["relay_host"], record_b["relay_port"])
        fake = {**record_b, "node_id": "spy", "public_url": "http://127.0.0.1:9",
                "relay_host": "127.0.0.1", "relay_port": spy.getsockname()[1], "channels": [alpha]}
        await raw.set("vpdesk:node:spy", json.dumps(fake), px=60_000)
        await raw.sadd("vpdesk:nodes", "spy")
        await asyncio.sleep(1.5)  # a's heartbeat reads the registry every second

        assert (await talker.talk(alpha))["granted"] is True
        mic.start()
        await asyncio.wait_for(mic.on_done.wait(), timeout=30)
        await talker.release(alpha)  # the microphone sends silence after the speech
        await asyncio.sleep(0.3)
        captured = []
        while True:
            try:
                captured.append(spy.recv(4096))
            except BlockingIOError:
                break
        assert len(captured) >= 100
        before = await node_stats(b.url, talker.token)
        heard_before = await far.inbound_packets(alpha)

        forged = (
            captured  # replayed as they were
            + [d[:-20] + bytes([d[-20] ^ 1]) + d[-19:] for d in captured]  # one bit flipped
            + [d[:16] + (9999).to_bytes(4, "big") + d[20:] for d in captured]  # other channel
            + [b"VR\x01\x00" + bytes(24) + bytes([i]) * 80 for i in range(100)]  # made up
        )
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            for i, datagram in enumerate(forged):
                sender.sendto(datagram, relay_b)
                if i % 10 == 9:
                    await asyncio.sleep(0.002)  # within b's socket buffer: every one is judged
        finally:
            sender.close()
        await asyncio.sleep(0.5)
        after = await node_stats(b.url, talker.token)
        assert after["relay_refused"] - before["relay_refused"] == len(forged)
        assert after["relay_received"] == before["relay_received"]
        assert after["packets_relayed_in"] == before["packets_relayed_in"]
        assert await far.inbound_packets(alpha) == heard_before
    finally:
        spy.close()
        await raw.aclose()
        await close_all(talker, far)
