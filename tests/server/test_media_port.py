"""Every session's media on one UDP port: real server, real aiortc clients on loopback."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import struct

import aioice.stun
import numpy as np
import pytest

from server.media import fast_fanout
from server.media.udp_batch import OUTBOX
from tests.audio_tools import WavTrack
from tests.server.harness import PttClient, close_all, start_site


def tone() -> np.ndarray:
    return (np.sin(np.arange(48_000) * 2 * np.pi * 440 / 48_000) * 8000).astype(np.int16)


def answer_candidate_ports(client: PttClient) -> set[int]:
    sdp = client.peer.pc.remoteDescription.sdp
    return {int(m.group(1)) for m in re.finditer(r"a=candidate:\S+ \d+ udp \d+ \S+ (\d+) typ host", sdp)}


def answer_ufrag(client: PttClient) -> str:
    return re.search(r"a=ice-ufrag:(\S+)", client.peer.pc.remoteDescription.sdp).group(1)


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def talk_for(talker: PttClient, channel: int, seconds: float) -> None:
    reply = await talker.talk(channel)
    assert reply["granted"] is True
    await asyncio.sleep(seconds)
    await talker.release(channel)


async def packets_of(clients: list[PttClient], channel: int) -> list[int]:
    return [await c.inbound_packets(channel) for c in clients]


@pytest.fixture
async def site(tmp_path):
    site = await start_site(tmp_path, users=6)
    yield site
    await site.server.stop()


async def test_every_session_shares_one_port_and_copies_leave_in_batches(site):
    alpha = site.channels["alpha"]
    talker = await PttClient.connect(site.url, "u0", slots=1, microphone=WavTrack(tone(), loop=True))
    listeners = [await PttClient.connect(site.url, f"u{i}", slots=1) for i in (1, 2, 3)]
    try:
        port = site.hub.media_port.bound_ports["127.0.0.1"]
        for client in (talker, *listeners):
            assert answer_candidate_ports(client) == {port}
        assert site.hub.stats()["media_ports"] == {"127.0.0.1": port}
        for client in listeners:
            await client.join(alpha)
        batch = site.hub.media_port._sockets["127.0.0.1"].batch
        assert batch is not None, "sendmmsg is available on Linux"
        sent_before, c_sent_before = batch.sent, fast_fanout.counters()["sent"]
        await talk_for(talker, alpha, 1.5)
        await asyncio.sleep(0.3)
        received = await packets_of(listeners, alpha)
        assert min(received) >= 50, received
        forwarded = site.hub.stats()["packets_forwarded"]
        # Every forwarded copy went out in a sendmmsg: the shared socket's batch's (the
        # Python path) or the C fan-out's.
        python_sent = batch.sent - sent_before
        c_sent = fast_fanout.counters()["sent"] - c_sent_before
        assert python_sent + c_sent == forwarded >= sum(received)
        assert batch.dropped == 0 and fast_fanout.counters()["dropped"] == 0
        if fast_fanout.c_fanout_enabled():
            # Only each listener's first copy went the Python way; C sent the rest.
            assert python_sent == len(listeners), (python_sent, c_sent)
    finally:
        await close_all(talker, *listeners)


async def test_a_fixed_media_port_is_the_one_in_the_answer(tmp_path):
    port = free_udp_port()
    site = await start_site(tmp_path, users=2, media_port=port)
    try:
        client = await PttClient.connect(site.url, "u0", slots=1)
        try:
            assert answer_candidate_ports(client) == {port}
        finally:
            await client.close()
    finally:
        await site.server.stop()


async def test_media_port_off_gives_each_connection_its_own(tmp_path):
    site = await start_site(tmp_path, users=3, media_port="off")
    try:
        alpha = site.channels["alpha"]
        assert site.hub.media_port is None and "media_ports" not in site.hub.stats()
        talker = await PttClient.connect(site.url, "u0", slots=1, microphone=WavTrack(tone(), loop=True))
        listener = await PttClient.connect(site.url, "u1", slots=1)
        try:
            assert answer_candidate_ports(talker) != answer_candidate_ports(listener)
            await listener.join(alpha)
            await talk_for(talker, alpha, 1.0)
            await asyncio.sleep(0.3)
            assert await listener.inbound_packets(alpha) >= 30
        finally:
            await close_all(talker, listener)
    finally:
        await site.server.stop()


def forged_binding_request(ufrag: str) -> bytes:
    """A binding request naming `ufrag` whose MESSAGE-INTEGRITY uses a wrong password."""
    request = aioice.stun.Message(
        message_method=aioice.stun.Method.BINDING, message_class=aioice.stun.Class.REQUEST
    )
    request.attributes["USERNAME"] = f"{ufrag}:intruder"
    request.attributes["PRIORITY"] = 1
    request.add_message_integrity(b"not the password")
    request.add_fingerprint()
    return bytes(request)


async def test_strangers_and_forged_checks_change_nothing(site):
    alpha = site.channels["alpha"]
    talker = await PttClient.connect(site.url, "u0", slots=1, microphone=WavTrack(tone(), loop=True))
    listener = await PttClient.connect(site.url, "u1", slots=1)
    stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        await listener.join(alpha)
        shared = site.hub.media_port._sockets["127.0.0.1"]
        port = site.hub.media_port.bound_ports["127.0.0.1"]
        routes_before = dict(shared.by_address)
        rtp = bytes([0x80, 111]) + struct.pack("!HII", 1, 960, 0x1234) + os.urandom(60)
        junk = [
            b"", b"\x00", os.urandom(200), rtp, b"\x16\xfe\xfd" + os.urandom(60),  # DTLS-looking
            forged_binding_request(answer_ufrag(listener)), forged_binding_request("nosuchufrag"),
            os.urandom(60_000),
        ]
        reply = await talker.talk(alpha)
        assert reply["granted"] is True
        await asyncio.sleep(0.5)
        before = await listener.inbound_packets(alpha)
        unrouted_before = site.hub.stats()["media_datagrams_unrouted"]
        for datagram in junk:
            stranger.sendto(datagram, ("127.0.0.1", port))
        await asyncio.sleep(1.0)
        after = await listener.inbound_packets(alpha)
        await talker.release(alpha)
        assert after - before >= 40  # the listener kept hearing the talker
        assert dict(shared.by_address) == routes_before  # nobody's address moved
        # The empty datagram is ignored outright; the other seven are counted.
        assert site.hub.stats()["media_datagrams_unrouted"] - unrouted_before == len(junk) - 1
        assert listener.peer.pc.connectionState == talker.peer.pc.connectionState == "connected"
    finally:
        stranger.close()
        await close_all(talker, listener)


async def test_a_closed_session_leaves_no_route_behind(site):
    first = await PttClient.connect(site.url, "u0", slots=1)
    second = await PttClient.connect(site.url, "u1", slots=1)
    shared = site.hub.media_port._sockets["127.0.0.1"]
    assert len(shared.by_ufrag) == 2 and len(shared.by_address) >= 2
    await first.close()
    for _ in range(50):
        if len(shared.by_ufrag) == 1:
            break
        await asyncio.sleep(0.1)
    try:
        assert list(shared.by_ufrag) == [answer_ufrag(second)]
        assert set(shared.by_address.values()) == set(shared.by_ufrag.values())
        assert not OUTBOX.is_open and not OUTBOX.pending
    finally:
        await second.close()
