"""RTCP from the server's one scheduler: packet layout, when reports go out, and the sender
reports a real aiortc listener gets through a running server."""

from __future__ import annotations

import asyncio
import random
import statistics
import time

import numpy as np
import pytest
from aiortc.rtp import (
    RtcpByePacket,
    RtcpPacket,
    RtcpReceiverInfo,
    RtcpRrPacket,
    RtcpSdesPacket,
    RtcpSrPacket,
)

from server.media import aiortc_hooks
from server.media.forwarder import rtp_payload_bounds
from server.media.rtcp import (
    MAX_SOURCES_PER_PACKET,
    ReportingConnection,
    RtcpScheduler,
    cname_sdes,
    ntp_timestamp,
    receiver_report,
    sender_report,
)
from tests.audio_tools import WavTrack
from tests.server.harness import PttClient, close_all, start_site

CNAME = "3f1c9a2e-8d4b-4f6e-9a1c-2b7d5e8f0a11"


# --- packets ---------------------------------------------------------------------------


def test_packets_parse_as_rtcp():
    ntp = ntp_timestamp(1_700_000_000.25)
    assert ntp >> 32 == 1_700_000_000 + 2_208_988_800
    assert ntp & 0xFFFFFFFF == 1 << 30  # a quarter second
    compound = (sender_report(0xDEADBEEF, ntp, 2**32 + 5, 1234, 56789)
                + receiver_report(7) + cname_sdes([0xDEADBEEF, 7], CNAME.encode()))
    sr, rr, sdes = RtcpPacket.parse(compound)
    assert isinstance(sr, RtcpSrPacket) and sr.ssrc == 0xDEADBEEF and sr.reports == []
    info = sr.sender_info
    assert (info.ntp_timestamp, info.rtp_timestamp, info.packet_count, info.octet_count) == (ntp, 5, 1234, 56789)
    assert isinstance(rr, RtcpRrPacket) and rr.ssrc == 7 and rr.reports == []
    assert isinstance(sdes, RtcpSdesPacket)
    assert [(c.ssrc, c.items) for c in sdes.chunks] == [(0xDEADBEEF, [(1, CNAME.encode())]), (7, [(1, CNAME.encode())])]


@pytest.mark.parametrize("length", [1, 2, 3, 4, 5, 36])
def test_sdes_chunks_are_null_terminated_and_aligned(length):
    packet = cname_sdes([1], b"x" * length)
    assert len(packet) % 4 == 0
    body = packet[8:]
    assert body[: 2 + length] == bytes([1, length]) + b"x" * length
    assert body[2 + length:] and set(body[2 + length:]) == {0}  # at least one null octet


# --- one connection, with outputs standing in for ListenerOutputs ------------------------


class Output:
    def __init__(self, ssrc: int) -> None:
        self.ssrc = ssrc
        self.packets_sent = 0
        self.octets_sent = 0
        self.last_rtp_timestamp = 1000
        self.last_sent_at: float | None = None

    def sent(self, at: float, packets: int = 1, octets: int = 70) -> None:
        self.packets_sent += packets
        self.octets_sent += octets * packets
        self.last_rtp_timestamp = (self.last_rtp_timestamp + 960 * packets) & 0xFFFFFFFF
        self.last_sent_at = at


def connection(outputs: list[Output], written: list[bytes], ok: bool = True) -> ReportingConnection:
    def write(data: bytes) -> bool:
        written.append(data)
        return ok

    return ReportingConnection(write=write, outputs=lambda: outputs, own_ssrc=99, cname=CNAME)


def test_sender_report_only_for_outputs_that_sent_since_the_last():
    rng = random.Random(1)
    a, b, silent = Output(1), Output(2), Output(3)
    written: list[bytes] = []
    conn = connection([a, b, silent], written)
    a.sent(at=10.0, packets=50)
    b.sent(at=10.1, packets=10)
    assert conn.report(10.2, 1_700_000_000.0, None, rng) == 1
    srs = [p for p in RtcpPacket.parse(written[-1]) if isinstance(p, RtcpSrPacket)]
    assert {sr.ssrc: sr.sender_info.packet_count for sr in srs} == {1: 50, 2: 10}
    sdes = RtcpPacket.parse(written[-1])[-1]
    assert isinstance(sdes, RtcpSdesPacket) and [c.ssrc for c in sdes.chunks] == [1, 2]

    # The NTP/RTP pair is one instant: the last timestamp plus the time since, at 48 kHz.
    by_ssrc = {sr.ssrc: sr.sender_info for sr in srs}
    assert by_ssrc[1].rtp_timestamp == a.last_rtp_timestamp + round(0.2 * 48_000)
    assert by_ssrc[2].rtp_timestamp == b.last_rtp_timestamp + round(0.1 * 48_000)
    assert by_ssrc[1].ntp_timestamp == by_ssrc[2].ntp_timestamp == ntp_timestamp(1_700_000_000.0)

    # Nothing new: nothing sent (no idle reports configured).
    assert conn.report(11.2, 1_700_000_001.0, None, rng) == 0
    assert len(written) == 1
    # Only `a` sent: only `a` is reported, with its octets.
    a.sent(at=11.5, packets=5, octets=80)
    assert conn.report(12.0, 1_700_000_002.0, None, rng) == 1
    (sr, sdes) = RtcpPacket.parse(written[-1])
    assert sr.ssrc == 1 and sr.sender_info.packet_count == 55
    assert sr.sender_info.octet_count == 50 * 70 + 5 * 80
    assert conn.sender_reports_sent == 3


def test_idle_connection_sends_receiver_reports_at_the_idle_interval_only():
    rng = random.Random(2)
    written: list[bytes] = []
    conn = connection([Output(1)], written)
    sent_at = []
    for step in range(200):  # 0.25 s steps over 50 s
        now = step * 0.25
        if conn.report(now, 1_700_000_000.0 + now, 5.0, rng):
            sent_at.append(now)
    assert all(isinstance(RtcpPacket.parse(p)[0], RtcpRrPacket) for p in written)
    assert RtcpPacket.parse(written[0])[0].ssrc == 99
    gaps = [b - a for a, b in zip(sent_at, sent_at[1:])]
    assert sent_at[0] >= 2.5 and gaps and all(2.5 <= g <= 7.75 for g in gaps)
    assert conn.sender_reports_sent == 0


def test_a_report_that_could_not_be_sent_is_sent_again():
    rng = random.Random(3)
    out = Output(1)
    written: list[bytes] = []
    conn = connection([out], written, ok=False)
    out.sent(at=1.0, packets=3)
    assert conn.report(1.5, 1e9, None, rng) == 0
    conn._write = lambda data: written.append(data) or True
    assert conn.report(2.5, 1e9, None, rng) == 1
    assert RtcpPacket.parse(written[-1])[0].sender_info.packet_count == 3


def test_many_active_outputs_are_split_over_compound_packets():
    rng = random.Random(4)
    outputs = [Output(100 + i) for i in range(MAX_SOURCES_PER_PACKET * 2 + 3)]
    for out in outputs:
        out.sent(at=1.0)
    written: list[bytes] = []
    conn = connection(outputs, written)
    assert conn.report(1.5, 1e9, None, rng) == 3
    reported = []
    for data in written:
        assert len(data) <= 1200
        packets = RtcpPacket.parse(data)
        srs = [p.ssrc for p in packets if isinstance(p, RtcpSrPacket)]
        assert [c.ssrc for c in packets[-1].chunks] == srs  # each SR's CNAME in its packet
        reported += srs
    assert reported == [out.ssrc for out in outputs]


# --- the scheduler -----------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Counted:
    """Stands in for a ReportingConnection: counts the scheduler's visits."""

    def __init__(self) -> None:
        self.visits: list[float] = []
        self._due_tick = None
        self.label = "counted"

    def report(self, now, wall, idle_interval, rng) -> int:
        self.visits.append(now)
        return 0


async def test_scheduler_visits_each_connection_every_half_to_one_and_a_half_intervals():
    clock = Clock()
    scheduler = RtcpScheduler(clock=clock, rng=random.Random(5))
    conns = [Counted() for _ in range(20)]
    try:
        for conn in conns:
            scheduler.add(conn)
        scheduler.add(conns[0])  # idempotent
        for _ in range(400):  # 100 s in 0.25 s ticks, no awaits: the task stays asleep
            clock.now += 0.25
            scheduler.run_due()
        for conn in conns:
            gaps = [b - a for a, b in zip(conn.visits, conn.visits[1:])]
            assert 60 <= len(conn.visits) <= 210
            assert min(gaps) >= 0.5 - 1e-9 and max(gaps) <= 1.5 + 1e-9
        first_visits = {conn.visits[0] for conn in conns}
        assert len(first_visits) > 1  # spread, not all in one tick
        scheduler.remove(conns[1])
        visits = len(conns[1].visits)
        for _ in range(20):
            clock.now += 0.25
            scheduler.run_due()
        assert len(conns[1].visits) == visits
        assert len(scheduler) == 19
    finally:
        await scheduler.stop()


async def test_scheduler_task_runs_only_while_connections_are_registered():
    scheduler = RtcpScheduler(interval=0.2, tick=0.05)
    conn = Counted()
    scheduler.add(conn)
    for _ in range(100):  # bounded: 5 s
        if len(conn.visits) >= 2:
            break
        await asyncio.sleep(0.05)
    assert len(conn.visits) >= 2
    task = scheduler._task
    scheduler.remove(conn)
    await asyncio.sleep(0)  # the cancel lands on the task's next step
    assert task.done() and scheduler._task is None  # ended at once, not at its next slot
    scheduler.add(conn)
    assert scheduler._task is not task and not scheduler._task.done()
    await scheduler.stop()


# --- through a running server ----------------------------------------------------------


@pytest.fixture
async def site(tmp_path):
    site = await start_site(tmp_path, users=4)
    yield site
    await site.server.stop()


def tone() -> np.ndarray:
    return (np.sin(np.arange(48_000) * 2 * np.pi * 440 / 48_000) * 8000).astype(np.int16)


class Tap:
    """What one listener connection receives: RTP (arrival time, ts, payload octets) of
    one SSRC and every compound RTCP packet (arrival time, parsed)."""

    def __init__(self, client: PttClient) -> None:
        self.rtp: list[tuple[float, int, int, int]] = []  # (arrival, ssrc, rtp ts, payload octets)
        self.rtcp: list[tuple[float, list]] = []
        dtls = aiortc_hooks.dtls_transport_of(client.peer.pc)
        aiortc_hooks.observe_incoming_rtp(dtls, self._on_rtp)
        aiortc_hooks.observe_incoming_rtcp(dtls, self._on_rtcp)

    def _on_rtp(self, data: bytes) -> None:
        start, end = rtp_payload_bounds(data)
        self.rtp.append((time.time(), int.from_bytes(data[8:12], "big"), int.from_bytes(data[4:8], "big"), end - start))

    def _on_rtcp(self, data: bytes) -> None:
        self.rtcp.append((time.time(), RtcpPacket.parse(data)))

    def sender_reports(self, ssrc: int | None = None) -> list[tuple[float, RtcpSrPacket]]:
        return [(t, p) for t, packets in self.rtcp for p in packets
                if isinstance(p, RtcpSrPacket) and (ssrc is None or p.ssrc == ssrc)]


async def test_listener_gets_true_sender_reports_and_an_idle_one_gets_none(site):
    alpha, bravo = site.channels["alpha"], site.channels["bravo"]
    talker = await PttClient.connect(site.url, "u0", slots=1, microphone=WavTrack(tone(), loop=True))
    listener = await PttClient.connect(site.url, "u1", slots=1)
    idle = await PttClient.connect(site.url, "u2", slots=1)
    try:
        await listener.join(alpha)
        await idle.join(bravo)  # nobody talks there
        heard, quiet = Tap(listener), Tap(idle)
        assert (await talker.talk(alpha))["granted"]
        await asyncio.sleep(3.0)
        await talker.release(alpha)
        await asyncio.sleep(2.0)  # the final report goes out within 1.5 s

        assert len(heard.rtp) >= 100
        ssrc = heard.rtp[0][1]
        assert {s for _, s, _, _ in heard.rtp} == {ssrc}
        reports = heard.sender_reports(ssrc)
        assert len(reports) >= 2
        octets_after = [0]
        for _, _, _, octets in heard.rtp:
            octets_after.append(octets_after[-1] + octets)
        for arrival, sr in reports:
            info = sr.sender_info
            received_by_then = sum(1 for t, *_ in heard.rtp if t <= arrival)
            # Counts as sent, within the packets in flight (RTP and RTCP take different
            # paths through the client).
            assert received_by_then - 3 <= info.packet_count <= received_by_then + 3, (info, received_by_then)
            # Loopback loses nothing: the octets are exactly those of the first packets.
            assert info.octet_count == octets_after[info.packet_count]
            # NTP/RTP pair: each packet's RTP timestamp mapped through the report gives its
            # send time; on loopback that is its arrival within one 20 ms frame.
            ntp_s = (info.ntp_timestamp >> 32) - 2_208_988_800 + (info.ntp_timestamp & 0xFFFFFFFF) / 2**32
            near = [(t, ts) for t, _, ts, _ in heard.rtp if abs(t - arrival) < 0.5]
            if near:
                errors = [t - (ntp_s + (((ts - info.rtp_timestamp + 2**31) % 2**32) - 2**31) / 48_000)
                          for t, ts in near]
                assert abs(statistics.median(errors)) < 0.020, statistics.median(errors)
        # The last report carries the final counts, and the stream stopped reporting.
        assert reports[-1][1].sender_info.packet_count == len(heard.rtp)
        # aiortc's own receiver took the reports: its remote-outbound-rtp stats agree.
        receiver = next(t.receiver for t in listener.peer.pc.getTransceivers() if t.mid == listener.mids[alpha])
        stats = [s for s in (await receiver.getStats()).values() if s.type == "remote-outbound-rtp"]
        assert stats and stats[0].packetsSent == len(heard.rtp)
        # The server's sender takes a receiver report about its stream, as a browser sends
        # one (the console's own client reports only as a sender: its loops are parked).
        server_peer = site.hub.sessions[listener.session_id].peer
        sender = next(t.sender for t in server_peer._pc.getTransceivers() if t.mid == listener.mids[alpha])
        assert not any(s.type == "remote-inbound-rtp" for s in (await sender.getStats()).values())
        block = RtcpReceiverInfo(ssrc=ssrc, fraction_lost=0, packets_lost=0,
                                 highest_sequence=len(heard.rtp), jitter=0, lsr=0, dlsr=0)
        writer = aiortc_hooks.RawRtcpWriter(aiortc_hooks.dtls_transport_of(listener.peer.pc))
        assert writer.write(bytes(RtcpRrPacket(ssrc=0x5EED, reports=[block])))
        for _ in range(50):
            stats = [s for s in (await sender.getStats()).values() if s.type == "remote-inbound-rtp"]
            if stats:
                break
            await asyncio.sleep(0.02)
        assert stats and stats[0].packetsLost == 0

        # The idle listener got no sender report at all; any report it got is an RR.
        assert quiet.rtp == [] and quiet.sender_reports() == []
        assert all(isinstance(packets[0], RtcpRrPacket) for _, packets in quiet.rtcp)
        assert server_peer.reporting.sender_reports_sent >= 2
        assert site.hub.sessions[idle.session_id].peer.reporting.sender_reports_sent == 0
    finally:
        await close_all(talker, listener, idle)


async def test_closing_the_session_says_bye_for_the_listener_stream(site):
    alpha = site.channels["alpha"]
    listener = await PttClient.connect(site.url, "u1", slots=1)
    try:
        await listener.join(alpha)
        tap = Tap(listener)
        expected = site.hub.sessions[listener.session_id].peer.slot_for(alpha).output.ssrc
        await site.hub.sessions[listener.session_id].peer.close()
        for _ in range(50):  # bounded: 2.5 s
            if any(isinstance(p, RtcpByePacket) for _, packets in tap.rtcp for p in packets):
                break
            await asyncio.sleep(0.05)
        byes = [p for _, packets in tap.rtcp for p in packets if isinstance(p, RtcpByePacket)]
        assert any(expected in bye.sources for bye in byes)
    finally:
        await close_all(listener)
