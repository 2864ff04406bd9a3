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

from bench.forward import WireCapture, rtp_key

RELAY = -1  # the "ssrc" recorded for a relay datagram; its "seq" is the relay counter


def hop_key(body: bytes) -> tuple[int, int] | None:
    """(RELAY, relay counter) of a relay datagram (its header is in the clear: it is the
    AEAD's associated data), (SSRC, seq) of an RTP/SRTP packet, None for the rest (STUN,
    DTLS, RTCP, Redis, HTTP)."""
    if body[:3] == b"VR\x01" and len(body) >= 20:
        return RELAY, int.from_bytes(body[12:16], "big")
    return rtp_key(body)


class HopCapture(WireCapture):
    """bench/forward.py's capture process, keeping relay datagrams too."""

    def __init__(self) -> None:
        super().__init__(classify=hop_key)


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
