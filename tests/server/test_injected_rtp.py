"""Injected RTP reaches nobody: audio from a connected session without the floor, packets
from an unknown source sent straight to the server's ICE ports, and packets on the
talker's own path whose SRTP authentication fails.

aioice hands every non-STUN datagram to the DTLS transport whatever its source address,
so what keeps strangers out is SRTP authentication, then the floor check at ingest. The
tests watch both ends: every packet the server ingests (the hub's `ingest`, after SRTP)
and every packet a listener's peer connection decrypts.

Media runs on 127.0.0.1 only; run inside `unshare -n` (see the README).
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import struct
from collections.abc import Callable

import pytest
from aiortc.mediastreams import AudioStreamTrack

from server.media import aiortc_hooks as hooks
from tests.server.harness import PttClient, Site, close_all, start_site

WAIT = 10.0  # seconds: the most any single expectation here may take
INJECTED_MARK = b"INJECTED"
BAD_TAG_SSRC = 0x5EEDBAD0
CONTROL_SSRC = 0x5EED600D


class NoiseTrack(AudioStreamTrack):
    """A microphone of quiet noise: every Opus packet differs, so payloads identify packets."""

    async def recv(self):
        frame = await super().recv()
        frame.planes[0].update(bytes(b & 0x0F for b in os.urandom(frame.samples * 2)))
        return frame


class IngestLog:
    """Every packet the hub ingests (decrypted microphone RTP), per session."""

    def __init__(self, site: Site) -> None:
        self.packets: list[tuple[str, bytes]] = []
        hub = site.hub
        original: Callable = hub.ingest

        def ingest(session, data: bytes) -> None:
            self.packets.append((session.id, bytes(data)))
            original(session, data)

        hub.ingest = ingest  # ServerPeer calls hub.ingest per packet: the instance attribute wins

    def ssrcs(self) -> set[int]:
        return {ssrc_of(data) for _, data in self.packets}

    def of_ssrc(self, ssrc: int) -> list[bytes]:
        return [data for _, data in self.packets if ssrc_of(data) == ssrc]


class Received:
    """Every RTP packet a client's peer connection decrypts (before aiortc's receiver)."""

    def __init__(self, client: PttClient) -> None:
        self.packets: list[bytes] = []
        hooks.observe_incoming_rtp(hooks.dtls_transport_of(client.peer.pc), self.packets.append)

    def payloads(self) -> list[bytes]:
        return [payload_of(p) for p in self.packets]


def ssrc_of(packet: bytes) -> int:
    return struct.unpack_from("!I", packet, 8)[0]


def payload_of(packet: bytes) -> bytes:
    """The payload of a plain RTP packet (CSRCs, header extension and padding skipped)."""
    start = 12 + 4 * (packet[0] & 0x0F)
    if packet[0] & 0x10:
        (words,) = struct.unpack_from("!H", packet, start + 2)
        start += 4 + 4 * words
    end = len(packet) - (packet[-1] if packet[0] & 0x20 else 0)
    return packet[start:end]


def rtp(payload_type: int, seq: int, ts: int, ssrc: int, payload: bytes) -> bytes:
    return struct.pack("!BBHII", 0x80, payload_type & 0x7F, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc) + payload


def server_addresses(client: PttClient) -> set[tuple[str, int]]:
    """The server's ICE candidates for this client, from the answer it sent."""
    sdp = client.peer.pc.remoteDescription.sdp
    return {
        (ip, int(port))
        for ip, port in re.findall(r"a=candidate:\S+ \d+ udp \d+ (\S+) (\d+) typ host", sdp, re.IGNORECASE)
    }


async def until(condition: Callable[[], object], what: str) -> None:
    """Wait (bounded) until `condition()` is true."""
    try:
        async with asyncio.timeout(WAIT):
            while not condition():
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for: {what}") from None


@pytest.fixture
async def site(tmp_path):
    site = await start_site(tmp_path, users=4, max_talk_ms=600_000)
    try:
        yield site
    finally:
        await site.server.stop()
        hooks.use_host_addresses(None)


async def talker_and_listener(site: Site, channel: int) -> tuple[PttClient, PttClient]:
    talker = await PttClient.connect(site.url, "u1", slots=1, microphone=NoiseTrack())
    try:
        listener = await PttClient.connect(site.url, "u2", slots=1)
    except BaseException:
        await talker.close()
        raise
    await talker.join(channel)
    await listener.join(channel)
    return talker, listener


def talker_path(site: Site, talker: PttClient, ingest: IngestLog) -> tuple[int, bytes, object]:
    """The talker's microphone payload type, its latest ingested packet, and its client
    DTLS transport (to send on its own ICE pair)."""
    payload_type = site.hub.sessions[talker.session_id].microphone_payload_type
    return payload_type, ingest.packets[-1][1], hooks.dtls_transport_of(talker.peer.pc)


async def quiet(site: Site, channel: int, received: Received) -> None:
    """Wait until every packet the fan-out sent the listener has arrived (loopback does
    not lose them), then check that it is exactly that many."""
    fanout = site.hub.fanouts[channel]
    await until(lambda: len(received.packets) >= fanout.packets_out, "listener caught up")
    assert len(received.packets) == fanout.packets_out


async def test_audio_from_a_connected_non_holder_reaches_nobody(site):
    alpha, bravo = site.channels["alpha"], site.channels["bravo"]
    hub = site.hub
    talker, listener = await talker_and_listener(site, alpha)
    try:
        ingest = IngestLog(site)
        received = Received(listener)
        server_talker = hub.sessions[talker.session_id]
        # The talker's microphone sends all along, with no floor anywhere: dropped at ingest.
        await until(lambda: server_talker.packets_dropped_no_floor >= 50, "talker audio arriving")
        assert received.packets == []
        assert await listener.inbound_packets(alpha) == 0
        assert hub.fanouts[alpha].packets_in == 0 and hub.fanouts[alpha].packets_out == 0
        assert hub.stats()["packets_dropped_no_floor"] >= 50

        # Holding bravo's floor does not open alpha: its listener still gets nothing.
        assert (await talker.talk(bravo))["granted"] is True
        ingested = len(ingest.packets)
        await until(lambda: len(ingest.packets) >= ingested + 50, "audio for bravo")
        assert received.packets == []
        assert hub.fanouts[alpha].packets_in == 0
        await talker.release(bravo)

        # The control: with alpha's floor the same microphone is heard.
        assert (await talker.talk(alpha))["granted"] is True
        await until(lambda: len(received.packets) >= 20, "audio with the floor")
        await talker.release(alpha)
        dropped = server_talker.packets_dropped_no_floor
        await until(lambda: server_talker.packets_dropped_no_floor >= dropped + 10, "dropping again")
        await quiet(site, alpha, received)
        heard = set(received.payloads())
        assert heard <= {payload_of(p) for _, p in ingest.packets}
    finally:
        await close_all(talker, listener)


async def test_rtp_from_an_unknown_source_reaches_nobody(site):
    alpha = site.channels["alpha"]
    hub = site.hub
    talker, listener = await talker_and_listener(site, alpha)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind(("127.0.0.1", 0))
        ingest = IngestLog(site)
        received = Received(listener)
        assert (await talker.talk(alpha))["granted"] is True
        await until(lambda: len(received.packets) >= 10, "talker heard")

        targets = server_addresses(talker) | server_addresses(listener)
        assert targets and all(ip == "127.0.0.1" for ip, _ in targets), targets
        payload_type = hub.sessions[talker.session_id].microphone_payload_type
        talker_ssrcs = ingest.ssrcs()
        assert len(talker_ssrcs) == 1
        (talker_ssrc,) = talker_ssrcs
        injected: list[bytes] = []
        for n in range(150):
            mark = INJECTED_MARK + b"-%d-" % n
            # Plain RTP as a stranger, the same with the talker's SSRC, an SRTP-looking
            # packet (random body and 10-byte tag), and an RTCP sender report look-alike.
            injected += [
                rtp(payload_type, n, n * 960, 0xBADC0DE0, mark + os.urandom(20)),
                rtp(payload_type, 40_000 + n, n * 960, talker_ssrc, mark + os.urandom(20)),
                rtp(payload_type, n, n * 960, 0xBADC0DE1, mark + os.urandom(30) + os.urandom(10)),
                struct.pack("!BBHI", 0x80, 200, 6, 0xBADC0DE2) + mark + os.urandom(20),
            ]
            if n % 50 == 0:
                # Datagrams too short to be anything: empty, and one RTP-looking byte.
                injected += [b"", b"\x80"]
        for i, packet in enumerate(injected):
            for target in targets:
                sock.sendto(packet, target)
            if i % 20 == 19:
                await asyncio.sleep(0.01)  # spread over the transmission
        # Everything sent has long arrived once the talker's next 25 packets are heard.
        heard_before = len(received.packets)
        await until(lambda: len(received.packets) >= heard_before + 25, "talk goes on")
        await talker.release(alpha)
        await quiet(site, alpha, received)

        assert {sid for sid, _ in ingest.packets} == {talker.session_id}
        assert ingest.ssrcs() == {talker_ssrc}
        assert not any(INJECTED_MARK in data for _, data in ingest.packets)
        talker_payloads = {payload_of(p) for _, p in ingest.packets}
        heard = received.payloads()
        assert len(heard) >= 35
        assert set(heard) <= talker_payloads
        assert not any(INJECTED_MARK in p for p in received.packets)
        # Exactly the talker's packets: one listener, one fan-out copy per ingested packet.
        assert len(heard) == hub.fanouts[alpha].packets_in
    finally:
        sock.close()
        await close_all(talker, listener)


async def talking(site, alpha, talker, listener):
    """The talker holds alpha and is heard: the ingest log, what the listener receives,
    and the talker's path (payload type, its last packet, its DTLS transport)."""
    ingest = IngestLog(site)
    received = Received(listener)
    assert (await talker.talk(alpha))["granted"] is True
    await until(lambda: len(received.packets) >= 10, "talker heard")
    return ingest, received, talker_path(site, talker, ingest)


async def test_packets_on_the_talkers_path_with_a_bad_srtp_tag_never_reach_a_listener(site):
    alpha = site.channels["alpha"]
    hub = site.hub
    talker, listener = await talker_and_listener(site, alpha)
    try:
        ingest, received, (payload_type, last, dtls) = await talking(site, alpha, talker, listener)
        genuine = payload_of(last)  # a real Opus frame, decodable downstream
        for n in range(1, 51):
            protected = dtls._tx_srtp.protect(rtp(payload_type, n, n * 960, BAD_TAG_SSRC, genuine))
            bad_tag = protected[:-1] + bytes([protected[-1] ^ 0x01])
            middle = len(protected) - 20
            bad_body = protected[:middle] + bytes([protected[middle] ^ 0x80]) + protected[middle + 1:]
            # From the talker's own address and port, over its nominated ICE pair.
            await dtls.transport._send(bad_tag)
            await dtls.transport._send(bad_body)
        heard_before = len(received.packets)
        await until(lambda: len(received.packets) >= heard_before + 25, "talk goes on")
        await talker.release(alpha)
        await quiet(site, alpha, received)
        assert ingest.of_ssrc(BAD_TAG_SSRC) == []
        assert len(ingest.ssrcs()) == 1
        assert len(received.packets) == hub.fanouts[alpha].packets_in
        assert set(received.payloads()) <= {payload_of(p) for _, p in ingest.packets}

        # The control: the same path with a valid tag does get in (a new SSRC is a new
        # SRTP stream), so what kept the others out was their authentication tag. Sent
        # without the floor, it stops at ingest.
        forwarded = hub.fanouts[alpha].packets_in
        for n in range(1, 11):
            await dtls._send_rtp(rtp(payload_type, n, n * 960, CONTROL_SSRC, genuine))
        await until(lambda: len(ingest.of_ssrc(CONTROL_SSRC)) == 10, "control packets ingested")
        assert hub.fanouts[alpha].packets_in == forwarded
    finally:
        await close_all(talker, listener)


async def test_a_holders_second_ssrc_is_forwarded_to_every_listener(site):
    alpha = site.channels["alpha"]
    hub = site.hub
    talker, listener = await talker_and_listener(site, alpha)
    try:
        ingest, received, (payload_type, last, dtls) = await talking(site, alpha, talker, listener)
        genuine, seq = payload_of(last), struct.unpack_from("!H", last, 2)[0]
        # A second stream whose sequence runs 20,000 ahead of the first, then the first
        # goes on: one of the two is far outside every listener's SRTP replay window
        # unless the forwarder starts a new run for it.
        for n in range(1, 11):
            await dtls._send_rtp(rtp(payload_type, seq + 20_000 + n, n * 960, CONTROL_SSRC, genuine))
        await until(lambda: len(ingest.of_ssrc(CONTROL_SSRC)) == 10, "second SSRC ingested")
        ingested = len(ingest.packets)
        await until(lambda: len(ingest.packets) >= ingested + 25, "first SSRC goes on")
        await talker.release(alpha)
        await quiet(site, alpha, received)
        assert len(received.packets) == hub.fanouts[alpha].packets_in
    finally:
        await close_all(talker, listener)
