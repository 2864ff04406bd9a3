"""RTCP reports for every server connection, sent from one scheduler.

aiortc gives each started RTP sender and receiver its own RTCP coroutine, waking every
0.5-1.5 s whether or not anything was sent: with hundreds of idle listeners that is most
of the server's idle CPU. The server parks those coroutines (aiortc_hooks.park_rtcp_loops)
and one `RtcpScheduler` per event loop visits each connection's `ReportingConnection`
about once a second on a timer wheel; most visits find nothing to say and send nothing.

What a connection sends (RFC 3550 6.2-6.4, RFC 8108 5.4, RFC 4585 3.4):
- Sender reports while the server sends media: each listener m-line (a ListenerOutput,
  read only) that sent RTP since its last report gets an SR in the connection's next
  compound packet, every 0.5-1.5 s (1 s on average, as aiortc did; AVPF lifts RFC 3550's
  5 s minimum). The round after a transmission ends carries the final counts, then the
  m-line is no longer an active sender and stops reporting.
- All of a connection's SRs go in one compound packet (RFC 8108: one report per SSRC,
  aggregated), followed by one SDES with a CNAME chunk per SSRC. Report blocks are empty:
  the microphone's RTP is tapped before aiortc counts it, so there is nothing to report
  about it.
- An idle connection sends an RR (the microphone m-line's SSRC, no blocks) with its CNAME
  every IDLE_INTERVAL_S (5 s, randomised 0.5-1.5x): RFC 3550's minimum interval for a
  non-sender and the interval browsers use for audio RTCP. Liveness is ICE consent's job
  (RFC 7675); this keeps the connection an RTCP participant at 1/5 of aiortc's rate.

The SR's NTP/RTP pair describes one instant: the RTP timestamp is the last packet's,
advanced by the (monotonic) time since it was sent at 48 kHz, exactly how the forwarder
continues its timestamps across pauses.
"""

from __future__ import annotations

import asyncio
import random
import struct
import time
import weakref
from collections.abc import Callable, Iterable
from typing import Protocol

from .timer_wheel import TimerWheel

CLOCK_RATE = 48_000
INTERVAL_S = 1.0
IDLE_INTERVAL_S: float | None = 5.0
TICK_S = 0.25
# SRs (28 bytes) and CNAME chunks (~44 bytes) per compound packet: ~1.2 kB at most.
MAX_SOURCES_PER_PACKET = 16

NTP_UNIX_OFFSET = 2_208_988_800  # seconds from 1900-01-01 to 1970-01-01
RTCP_SR, RTCP_RR, RTCP_SDES = 200, 201, 202
SDES_CNAME = 1

_SR = struct.Struct("!BBHIIIIII")  # header, SSRC, NTP (2 words), RTP ts, packets, octets
_RR = struct.Struct("!BBHI")


class SenderFigures(Protocol):
    """What a ListenerOutput exposes for its sender reports (read only)."""

    ssrc: int
    packets_sent: int
    octets_sent: int
    last_rtp_timestamp: int
    last_sent_at: float | None


# --- packets ---------------------------------------------------------------------------


def ntp_timestamp(unix_seconds: float) -> int:
    """64-bit NTP timestamp (RFC 3550 4) of a Unix time."""
    return int((unix_seconds + NTP_UNIX_OFFSET) * (1 << 32)) & 0xFFFF_FFFF_FFFF_FFFF


def sender_report(ssrc: int, ntp: int, rtp_timestamp: int, packets: int, octets: int) -> bytes:
    """An SR without report blocks (28 bytes)."""
    return _SR.pack(0x80, RTCP_SR, 6, ssrc, ntp >> 32, ntp & 0xFFFFFFFF,
                    rtp_timestamp & 0xFFFFFFFF, packets & 0xFFFFFFFF, octets & 0xFFFFFFFF)


def receiver_report(ssrc: int) -> bytes:
    """An RR without report blocks (8 bytes)."""
    return _RR.pack(0x80, RTCP_RR, 1, ssrc)


def cname_sdes(ssrcs: list[int], cname: bytes) -> bytes:
    """An SDES packet with one CNAME chunk per SSRC (RFC 3550 6.5)."""
    if not 1 <= len(ssrcs) <= 31 or len(cname) > 255:
        raise ValueError(f"{len(ssrcs)} chunks / CNAME of {len(cname)} bytes out of range")
    item = bytes([SDES_CNAME, len(cname)]) + cname
    item += b"\x00" * (4 - (len(item) + 4) % 4)  # the null terminator, padded to 32 bits
    body = b"".join(ssrc.to_bytes(4, "big") + item for ssrc in ssrcs)
    return struct.pack("!BBH", 0x80 | len(ssrcs), RTCP_SDES, len(body) // 4) + body


# --- one connection --------------------------------------------------------------------


class ReportingConnection:
    """The RTCP reporting state of one peer connection.

    `write` sends a compound packet (aiortc_hooks.RawRtcpWriter.write); `outputs` lists
    the connection's listener m-lines now; `own_ssrc` is the SSRC for receiver reports.
    """

    __slots__ = ("label", "_write", "_outputs", "_own_ssrc", "_cname", "_reported",
                 "_idle_due", "_due_tick", "reports_sent", "sender_reports_sent")

    def __init__(
        self,
        *,
        write: Callable[[bytes], bool],
        outputs: Callable[[], Iterable[SenderFigures]],
        own_ssrc: int,
        cname: str,
        label: str = "",
    ) -> None:
        self.label = label
        self._write = write
        self._outputs = outputs
        self._own_ssrc = own_ssrc
        self._cname = cname.encode()
        self._reported: dict[int, int] = {}  # SSRC -> packet count in its last SR
        self._idle_due: float | None = None
        self._due_tick: int | None = None  # the scheduler's; None when not scheduled
        self.reports_sent = 0
        self.sender_reports_sent = 0

    def report(self, now: float, wall: float, idle_interval: float | None, rng: random.Random) -> int:
        """Send what is due at monotonic `now` (Unix time `wall`); the packets sent.

        Cheap when nothing is due: one pass over the outputs' counters.
        """
        due: list[tuple[int, bytes, int]] = []  # (SSRC, SR, packet count)
        ntp = -1
        for output in self._outputs():
            packets = output.packets_sent
            sent_at = output.last_sent_at
            if sent_at is None or self._reported.get(output.ssrc) == packets:
                continue
            if ntp < 0:
                ntp = ntp_timestamp(wall)
            rtp = output.last_rtp_timestamp + round((now - sent_at) * CLOCK_RATE)
            due.append((output.ssrc, sender_report(output.ssrc, ntp, rtp, packets, output.octets_sent), packets))
        sent = 0
        if due:
            # Several compound packets when many m-lines are active, each within one MTU.
            for start in range(0, len(due), MAX_SOURCES_PER_PACKET):
                group = due[start : start + MAX_SOURCES_PER_PACKET]
                ssrcs = [ssrc for ssrc, _, _ in group]
                if not self._write(b"".join(sr for _, sr, _ in group) + cname_sdes(ssrcs, self._cname)):
                    break
                for ssrc, _, packets in group:
                    self._reported[ssrc] = packets
                sent += 1
                self.sender_reports_sent += len(group)
        elif idle_interval is not None:
            if self._idle_due is None:
                # Not before a first interval: a fresh connection has nothing to say yet.
                self._idle_due = now + idle_interval * (0.5 + rng.random())
            if now >= self._idle_due and self._write(
                receiver_report(self._own_ssrc) + cname_sdes([self._own_ssrc], self._cname)
            ):
                sent = 1
        if sent:
            self.reports_sent += sent
            if idle_interval is not None:
                self._idle_due = now + idle_interval * (0.5 + rng.random())
        return sent


# --- the scheduler ---------------------------------------------------------------------


class RtcpScheduler(TimerWheel[ReportingConnection]):
    """Visits every registered connection every 0.5-1.5 x `interval` seconds, from one task
    (server/media/timer_wheel.py)."""

    def __init__(
        self,
        *,
        interval: float = INTERVAL_S,
        idle_interval: float | None = IDLE_INTERVAL_S,
        tick: float = TICK_S,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(interval=interval, spread=(0.5, 1.5), tick=tick, clock=clock, rng=rng, name="rtcp reports")
        self.idle_interval = idle_interval
        self._wall = wall_clock

    def visit(self, connection: ReportingConnection, now: float) -> int:
        return connection.report(now, self._wall(), self.idle_interval, self._rng)


_schedulers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, RtcpScheduler] = weakref.WeakKeyDictionary()


def shared_scheduler() -> RtcpScheduler:
    """The running loop's scheduler, made on first use (one per server process)."""
    loop = asyncio.get_running_loop()
    scheduler = _schedulers.get(loop)
    if scheduler is None:
        scheduler = _schedulers[loop] = RtcpScheduler()
    return scheduler


__all__ = [
    "RtcpScheduler", "ReportingConnection", "SenderFigures", "shared_scheduler",
    "sender_report", "receiver_report", "cname_sdes", "ntp_timestamp",
]
