"""Kernel timestamps of one talker's packets on `lo`, for the node-to-node hop.

bench.forward's capture keeps RTP only; this one also keeps the relay's datagrams (magic
"VR", see server.cluster.relay), whose header is in the clear (it is the AEAD's associated
data), so one packet's path can be timed at each step:

    talker → node a (SRTP in) ─┬─ node a → listener on a (SRTP out)
                                └─ node a → node b (relay datagram) → listener on b

All times are SO_TIMESTAMPNS receive stamps of an AF_PACKET socket bound to lo (one
clock, taken inside each sender's sendto()), so they include neither client's event loop.
"""

from __future__ import annotations

import bisect
import socket
import struct

from bench.forward import WireCapture

SO_TIMESTAMPNS = 35
SO_ATTACH_FILTER = 26
RELAY = -1  # the "ssrc" recorded for a relay datagram; its "seq" is the relay counter


def _capture_main(conn, snap: int = 64) -> None:
    """Record (kernel time, SSRC or RELAY, seq or relay counter) of every RTP/SRTP packet
    and relay datagram on `lo` until the parent sends anything on `conn`."""
    import ctypes

    s = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(0x0800))
    prog = [
        (0x30, 0, 0, 9),     # ldb ip->protocol
        (0x15, 0, 1, 17),    # == UDP, else drop
        (0x06, 0, 0, snap),  # accept snap bytes
        (0x06, 0, 0, 0),     # drop
    ]
    raw = b"".join(struct.pack("HBBI", *ins) for ins in prog)
    buf = ctypes.create_string_buffer(raw)
    s.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, struct.pack("HL", len(prog), ctypes.addressof(buf)))
    s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 * 2**20)
    s.bind(("lo", 0))
    s.settimeout(0.1)
    records: list[tuple[float, int, int]] = []
    append = records.append
    anc = socket.CMSG_SPACE(16)
    unpack_ts = struct.Struct("qq").unpack
    conn.send("ready")
    while not conn.poll():
        try:
            data, ancdata, _, _ = s.recvmsg(snap, anc)
        except TimeoutError:
            continue
        body = data[(data[0] & 0x0F) * 4 + 8:]
        if body[:3] == b"VR\x01" and len(body) >= 20:
            key = (RELAY, int.from_bytes(body[12:16], "big"))
        elif len(body) >= 12 and body[0] >> 6 == 2 and not 192 <= body[1] <= 223:
            key = (int.from_bytes(body[8:12], "big"), (body[2] << 8) | body[3])
        else:
            continue  # STUN, DTLS, RTCP, Redis, HTTP
        for level, kind, value in ancdata:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                sec, nsec = unpack_ts(value[:16])
                append((sec + nsec * 1e-9, *key))
    conn.recv()
    conn.send(records)


class HopCapture(WireCapture):
    """bench/forward.py's capture process, with this module's loop (relay datagrams too)."""

    def __init__(self) -> None:
        super().__init__(target=_capture_main)


def packet_times(records, talker_ssrc: int, talker_seq0: int,
                 mappings: dict[str, tuple[int, int, int]], max_gap_s: float = 0.010
                 ) -> dict[str, dict[int, float]]:
    """Per talker packet index: when it entered lo from the talker ("in"), when node a's
    relay datagram for it did ("relay"), and when each listener's copy did (one key per
    name in `mappings`: name -> (copy SSRC, talker index of its first copy, its seq)).

    A relay datagram is the one node a sent within `max_gap_s` after the talker's packet
    (node a relays each packet as it ingests it, and packets are 20 ms apart).
    """
    times: dict[str, dict[int, float]] = {"in": {}, "relay": {}, **{name: {} for name in mappings}}
    by_ssrc = {ssrc: (name, base, first_seq) for name, (ssrc, base, first_seq) in mappings.items()}
    relays: list[float] = []
    for t, ssrc, seq in records:
        if ssrc == talker_ssrc:
            times["in"].setdefault((seq - talker_seq0) & 0xFFFF, t)
        elif ssrc == RELAY:
            relays.append(t)
        elif ssrc in by_ssrc:
            name, base, first_seq = by_ssrc[ssrc]
            times[name].setdefault(base + ((seq - first_seq) & 0xFFFF), t)
    ins = sorted((t, i) for i, t in times["in"].items())
    starts = [t for t, _ in ins]
    for t in relays:
        k = bisect.bisect_right(starts, t) - 1
        if k >= 0 and t - starts[k] <= max_gap_s:
            times["relay"].setdefault(ins[k][1], t)
    return times
