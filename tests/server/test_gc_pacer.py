"""The garbage collector run between packets (server/gc_pacer.py), with CPython's real gc."""

from __future__ import annotations

import asyncio
import gc
import weakref

import numpy as np
import pytest

from server.config import ServerConfig
from server.gc_pacer import FULL_MIN_INTERVAL_S, QUIET_S, TIMER_S, GarbagePacer
from server.node import EmbeddedServer
from tests.audio_tools import WavTrack
from tests.server.harness import PttClient, Site, close_all, provision


class Cycle:
    """A self-referencing object: only the cyclic collector frees it."""

    def __init__(self) -> None:
        self.me = self


def cyclic_garbage(count: int) -> list[weakref.ref]:
    refs = []
    for _ in range(count):
        cycle = Cycle()
        refs.append(weakref.ref(cycle))
    return refs


def alive(refs: list[weakref.ref]) -> int:
    return sum(1 for ref in refs if ref() is not None)


@pytest.fixture
def pacer():
    pacer = GarbagePacer()
    yield pacer
    pacer.stop()
    gc.collect()


async def test_allocations_do_not_collect_a_packet_does_on_the_next_turn(pacer):
    enabled_before = gc.isenabled()
    pacer.start()
    assert not gc.isenabled()
    assert gc.get_freeze_count() > 0, "start-up's objects are frozen"
    garbage = cyclic_garbage(3 * gc.get_threshold()[0])
    assert gc.get_count()[0] >= gc.get_threshold()[0]
    assert alive(garbage) == len(garbage), "no collection on allocation"
    pacer.after_packet()
    assert alive(garbage) == len(garbage), "not inside the fan-out either"
    await asyncio.sleep(0)
    assert alive(garbage) == 0
    assert sum(pacer.collections[:2]) == 1
    pacer.stop()
    assert gc.isenabled() is enabled_before
    assert gc.get_freeze_count() == 0


async def test_a_packet_below_the_threshold_schedules_nothing(pacer):
    pacer.start()
    gc.collect(0)
    garbage = cyclic_garbage(10)
    pacer.after_packet()
    await asyncio.sleep(0)
    assert alive(garbage) == 10
    assert pacer.collections == [0, 0, 0]


async def test_the_timer_collects_when_no_packet_flows(pacer):
    pacer.start()
    garbage = cyclic_garbage(2 * gc.get_threshold()[0])
    await asyncio.sleep(TIMER_S * 2.5)
    assert alive(garbage) == 0
    assert sum(pacer.collections) >= 1


async def test_the_oldest_generation_waits_for_a_quiet_node(pacer):
    now = [1000.0]
    pacer._clock = lambda: now[0]
    pacer.start()
    pacer._timer.cancel()  # driven by hand below
    for _ in range(gc.get_threshold()[2]):
        gc.collect(1)  # each counts towards the oldest generation
    assert gc.get_count()[2] >= gc.get_threshold()[2]
    now[0] += FULL_MIN_INTERVAL_S + 1
    pacer.after_packet()  # a talker is on
    await asyncio.sleep(0)
    pacer._tick()
    assert pacer.collections[2] == 0, "no full collection while packets flow"
    now[0] += QUIET_S + 0.1
    pacer._tick()
    assert pacer.collections[2] == 1
    assert gc.get_count()[2] == 0
    assert pacer.longest_pause_ms[2] > 0


async def test_a_standalone_node_paces_gc_and_forwards_every_packet(tmp_path):
    channels = provision(tmp_path, 3)
    config = ServerConfig(data_dir=tmp_path, listen_port=0, ice_addresses=["127.0.0.1"])
    server = await EmbeddedServer(config, pace_gc=True).start()
    site = Site(server=server, data_dir=tmp_path, channels=channels)
    alpha = site.channels["alpha"]
    tone = (np.sin(np.arange(48_000) * 2 * np.pi * 440 / 48_000) * 8000).astype(np.int16)
    talker = listeners = None
    try:
        assert not gc.isenabled()
        talker = await PttClient.connect(site.url, "u0", slots=1, microphone=WavTrack(tone, loop=True))
        listeners = [await PttClient.connect(site.url, f"u{i}", slots=1) for i in (1, 2)]
        for client in listeners:
            await client.join(alpha)
        garbage = cyclic_garbage(5 * gc.get_threshold()[0])
        reply = await talker.talk(alpha)
        assert reply["granted"] is True
        await asyncio.sleep(1.5)
        await talker.release(alpha)
        await asyncio.sleep(0.3)
        received = [await c.inbound_packets(alpha) for c in listeners]
        assert min(received) >= 50, received
        assert alive(garbage) == 0, "collected between packets with automatic gc off"
        stats = site.hub.stats()
        assert sum(stats["gc_collections"]) >= 1
        assert len(stats["gc_longest_pause_ms"]) == 3
    finally:
        await close_all(*(c for c in [talker, *(listeners or [])] if c is not None))
        await server.stop()
    assert gc.isenabled()
    assert gc.get_freeze_count() == 0
    assert "gc_collections" not in site.hub.stats()
