"""The packet path: a talker's RTP in, one rewritten copy per listening m-line out.

Nothing here decodes audio. Each listener m-line (a `ListenerOutput`) carries one steady
stream per channel: its own SSRC, its own contiguous sequence numbers and a timestamp line
that advances with wall time across talker changes, so a receiver's jitter buffer sees a
single source that sometimes pauses.

Everything runs on the server's event loop; the hot path is synchronous and allocates only
the outgoing packet.
"""

from __future__ import annotations

import logging
import random
import struct
import time
from collections.abc import Callable
from typing import Protocol

logger = logging.getLogger(__name__)

CLOCK_RATE = 48_000
FRAME_SAMPLES = 960  # 20 ms at 48 kHz

_HEADER = struct.Struct("!BBHII")
_pack_header_into = _HEADER.pack_into
# A rewritten sequence number this far behind the last one sent is a late packet, passed
# on (the listener's SRTP replay window is 64); further behind, or more than JUMP_AHEAD
# ahead, the talker's stream restarted: begin a new run so the output stays contiguous.
LATE_WINDOW = 32
JUMP_AHEAD = 0x1000
SRTP_TRAILER_ROOM = 16  # the largest auth tag of the SRTP profiles aiortc negotiates


class MalformedRtp(ValueError):
    """A packet too short or inconsistent to be RTP."""


def rtp_payload_bounds(data: bytes) -> tuple[int, int]:
    """(start, end) of the payload in an RTP packet, skipping CSRCs, extension, padding."""
    size = len(data)
    if size < 12 or data[0] >> 6 != 2:
        raise MalformedRtp(f"not RTP ({size} bytes)")
    first = data[0]
    start = 12 + 4 * (first & 0x0F)
    if first & 0x10:
        if size < start + 4:
            raise MalformedRtp("truncated header extension")
        start += 4 + 4 * ((data[start + 2] << 8) | data[start + 3])
    end = size
    if first & 0x20:
        end -= data[-1]
    if start > end:
        raise MalformedRtp("header longer than packet")
    return start, end


def talker_header(data: bytes) -> tuple[int, int, int, int, int, int] | None:
    """(seq, timestamp, ssrc, marker bit, payload start, payload end) of a talker packet
    worth forwarding; None for one that is not RTP or carries no audio (padding only)."""
    try:
        start, end = rtp_payload_bounds(data)
    except MalformedRtp:
        return None
    if start == end:
        return None
    return (
        (data[2] << 8) | data[3], int.from_bytes(data[4:8], "big"), int.from_bytes(data[8:12], "big"),
        data[1] & 0x80, start, end,
    )


def one_byte_extension_block(ext_id: int, value: bytes) -> bytes:
    """An RFC 8285 one-byte header-extension block holding one element, padded to 32 bits."""
    if not 1 <= ext_id <= 14 or not 1 <= len(value) <= 16:
        raise ValueError(f"extension id {ext_id} / length {len(value)} out of range")
    body = bytes([(ext_id << 4) | (len(value) - 1)]) + value
    body += b"\x00" * (-len(body) % 4)
    return struct.pack("!HH", 0xBEDE, len(body) // 4) + body


class PacketBuffer(Protocol):
    """A packet buffer of an egress's making; `view` is where the output builds packets."""

    view: memoryview


class PacketEgress(Protocol):
    """Where a ListenerOutput's packets go: aiortc_hooks.RawRtpWriter, or a test's capture.

    The output builds each packet in place in a buffer of the egress's making, so the hot
    path allocates nothing before the socket call.
    """

    def new_buffer(self) -> PacketBuffer: ...

    def send_buffer(self, packet: PacketBuffer, length: int) -> bool: ...


class Outbox(Protocol):
    """Holds the copies of one fan-out for one send (server/media/udp_batch.Outbox)."""

    def open(self) -> None: ...

    def flush(self) -> None: ...


class ListenerOutput:
    """One listener m-line bound to one channel: rewrites and sends each forwarded packet.

    It keeps its own packet buffer holding its header template (its SSRC, payload type and
    the mid header extension, written once); per packet it writes sequence number, timestamp
    and marker over it, copies the payload behind, and hands the buffer to `egress`
    (SRTP in place, one sendto). Its counters and last timestamp feed the m-line's RTCP
    sender reports (server/media/rtcp.py reads them when a report is due).
    """

    __slots__ = (
        "label", "ssrc", "_first_byte", "_second_byte", "_send", "_packet", "_view",
        "_header_len", "_limit", "_source", "_seq_offset", "_ts_offset", "_last_seq", "_last_ts",
        "_last_time", "packets_sent", "bytes_sent", "_clock",
    )

    def __init__(
        self,
        *,
        ssrc: int,
        payload_type: int,
        egress: PacketEgress,
        extension: bytes = b"",
        label: str = "",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.label = label
        self.ssrc = ssrc
        self._first_byte = 0x90 if extension else 0x80  # V=2, X when we add an extension
        self._second_byte = payload_type & 0x7F
        self._send = egress.send_buffer
        self._packet = egress.new_buffer()
        self._view = self._packet.view
        self._header_len = 12 + len(extension)
        self._view[12 : self._header_len] = extension  # stays: SRTP leaves headers clear
        # SRTP appends its auth tag (up to 16 bytes) behind the payload, in the same buffer.
        self._limit = len(self._view) - SRTP_TRAILER_ROOM
        self._clock = clock
        self._source: object = None
        self._seq_offset = 0
        self._ts_offset = 0
        # Random starting points, as RFC 3550 asks; sequence in the lower half so that an
        # early wrap cannot confuse SRTP's rollover counter.
        self._last_seq = random.randrange(0, 0x8000)
        self._last_ts = random.randrange(0, 0x1_0000_0000)
        self._last_time: float | None = None
        self.packets_sent = 0
        self.bytes_sent = 0

    @property
    def max_payload(self) -> int:
        """The largest payload this output can carry (buffer minus header and SRTP trailer)."""
        return self._limit - self._header_len

    @property
    def octets_sent(self) -> int:
        """Payload octets sent so far (RTCP sender report's octet count)."""
        return self.bytes_sent

    @property
    def last_rtp_timestamp(self) -> int:
        """The RTP timestamp of the last packet sent (random start before any)."""
        return self._last_ts

    @property
    def last_sent_at(self) -> float | None:
        """Clock reading (time.monotonic by default) of the last send; None before any."""
        return self._last_time

    def resync(self) -> None:
        """Forget the current source: the next packet starts a new run (after unmute)."""
        self._source = None

    def _rebase(self, source: object, seq: int, ts: int) -> None:
        # A new talker (or the same one after a pause we did not forward): continue our
        # sequence right after the last packet, and our timestamps by the wall time that
        # passed, at least one frame, so the receiver sees silence rather than a jump back.
        now = self._clock()
        if self._last_time is None:
            advance = FRAME_SAMPLES
        else:
            advance = max(FRAME_SAMPLES, int((now - self._last_time) * CLOCK_RATE))
        self._seq_offset = (self._last_seq + 1 - seq) & 0xFFFF
        self._ts_offset = (self._last_ts + advance - ts) & 0xFFFFFFFF
        self._source = source

    def send(self, source: object, seq: int, ts: int, marker: int, payload: bytes, now: float | None = None) -> None:
        """Rewrite and send one packet. `now` is the fan-out's clock reading for this
        packet (read once for all its copies); None reads the clock here."""
        if source is not self._source:
            self._rebase(source, seq, ts)
        out_seq = (seq + self._seq_offset) & 0xFFFF
        step = (out_seq - self._last_seq) & 0xFFFF
        if step == 0:
            return  # the same packet again: SRTP would refuse it as a replay
        if JUMP_AHEAD <= step < 0x10000 - LATE_WINDOW:
            self._rebase(source, seq, ts)
            out_seq = (seq + self._seq_offset) & 0xFFFF
        out_ts = (ts + self._ts_offset) & 0xFFFFFFFF
        view = self._view
        _pack_header_into(view, 0, self._first_byte, self._second_byte | marker, out_seq, out_ts, self.ssrc)
        start = self._header_len
        end = start + len(payload)
        if end > self._limit:
            return  # would not fit with the SRTP trailer: no Opus frame is this large
        view[start:end] = payload
        if self._send(self._packet, end):
            self._last_seq = out_seq
            self._last_ts = out_ts
            self._last_time = self._clock() if now is None else now
            self.packets_sent += 1
            self.bytes_sent += len(payload)


class ChannelFanout:
    """The unmuted listener outputs of one channel on this node, and its counters.

    With an `outbox`, each packet's copies are queued while the outputs build them and
    leave together when the last is built (one sendmmsg on the server's media port).
    """

    __slots__ = (
        "channel_id", "outputs", "packets_in", "packets_out", "bytes_out", "_clock",
        "_talker", "_talker_ssrc", "_run", "_outbox",
    )

    def __init__(
        self, channel_id: int, clock: Callable[[], float] = time.monotonic, outbox: Outbox | None = None
    ) -> None:
        self.channel_id = channel_id
        self._clock = clock
        self._outbox = outbox
        self.outputs: list[ListenerOutput] = []
        self.packets_in = 0
        self.packets_out = 0
        self.bytes_out = 0
        # The run downstream: new per talker (`source`) and per SSRC of that talker.
        self._talker: object = None
        self._talker_ssrc = -1
        self._run: object = None

    def add(self, output: ListenerOutput) -> None:
        if output not in self.outputs:
            output.resync()
            self.outputs.append(output)

    def remove(self, output: ListenerOutput) -> None:
        try:
            self.outputs.remove(output)
        except ValueError:
            pass

    def forward(self, source: object, data: bytes, exclude: ListenerOutput | None = None) -> None:
        """Send one talker packet to every output but `exclude` (the talker's own slot:
        nobody wants their own voice back). `source` identifies the talker's stream (any
        object, compared by identity); a change of it rebases each output."""
        header = talker_header(data)
        if header is None:
            return
        seq, ts, ssrc, marker, start, end = header
        if source is not self._talker or ssrc != self._talker_ssrc:
            # A second SSRC from one talker has its own sequence and timestamp line.
            self._talker, self._talker_ssrc, self._run = source, ssrc, self._new_run()
        self.packets_in += 1
        sent = self._send_copies(self._run, seq, ts, marker, data, start, end, exclude)
        self.packets_out += sent
        self.bytes_out += sent * (end - start)

    @staticmethod
    def _new_run() -> object:
        return object()

    def _send_copies(
        self, run: object, seq: int, ts: int, marker: int, data: bytes, start: int, end: int,
        exclude: ListenerOutput | None,
    ) -> int:
        """Send the copies; how many outputs the packet was for."""
        payload = data[start:end]
        now = self._clock()
        sent = 0
        outbox = self._outbox
        if outbox is not None:
            outbox.open()
        try:
            for output in self.outputs:
                if output is not exclude:
                    output.send(run, seq, ts, marker, payload, now)
                    sent += 1
        finally:
            if outbox is not None:
                outbox.flush()
        return sent
