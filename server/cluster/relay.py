"""Node-to-node media: a talker's RTP, sealed with the site's relay key, over UDP.

A node whose session holds a channel's floor sends each packet once to every other node
that has listeners on the channel; the receiving node fans it out to its own listeners
as if its talker were local. Nothing is decoded.

Each datagram is AES-256-GCM sealed with the site's relay key (shared by the nodes
through Redis, see server.cluster.secrets): a stranger who can reach the relay port can
neither read the audio nor inject any, and a replayed datagram is dropped by a sliding
window per sender. Layout (big-endian):

    magic "VR" | version 1 | 0 | sender (8) | counter (4) | channel (4) | lease tag (8)
    | AES-GCM(RTP packet) with its 16-byte tag

The 28-byte header is the AEAD's associated data, so none of it can be altered either.
The nonce is sender + counter: the sender id is random per process (and renewed if the
counter ever wraps), so no nonce repeats under the shared key. The lease tag names the
grant the packet was sent under; a receiver forwards only packets of the lease it
knows for the channel, so a talker's late packets cannot leak into the next talker's
turn.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import struct
from collections.abc import Callable, Iterable
from functools import lru_cache

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

logger = logging.getLogger(__name__)

MAGIC = b"VR"
VERSION = 1
_HEADER = struct.Struct("!2sBx8sII8s")
HEADER_BYTES = _HEADER.size  # 28
TAG_BYTES = 16
KEY_BYTES = 32
# An Opus packet of 20 ms is a few hundred bytes at most, and a UDP datagram that crossed
# a 1500-byte MTU is smaller than this: anything bigger is not ours.
MAX_DATAGRAM_BYTES = 2048
REPLAY_WINDOW = 64
MAX_SENDERS = 1024  # replay windows kept; a node that restarts is a new sender


@lru_cache(maxsize=4096)
def lease_tag(token: str) -> bytes:
    """The 8 bytes that name a floor grant on the wire (the lease token is longer)."""
    return hashlib.blake2b(token.encode(), digest_size=8).digest()


class ReplayWindow:
    """RFC 4303-style anti-replay: accepts each counter once, and only the newest
    REPLAY_WINDOW counters of a sender (UDP may reorder a little, never by 64)."""

    __slots__ = ("highest", "seen")

    def __init__(self) -> None:
        self.highest = -1
        self.seen = 0  # bit i: highest - i was accepted

    def accept(self, counter: int) -> bool:
        if counter > self.highest:
            shift = counter - self.highest
            self.seen = ((self.seen << shift) | 1) & ((1 << REPLAY_WINDOW) - 1) if shift < REPLAY_WINDOW else 1
            self.highest = counter
            return True
        back = self.highest - counter
        if back >= REPLAY_WINDOW or self.seen >> back & 1:
            return False
        self.seen |= 1 << back
        return True


class RelaySealer:
    """Seals and opens relay datagrams with one site key. Pure CPU, no I/O."""

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise ValueError(f"relay key is {len(key)} bytes, not {KEY_BYTES}")
        self._aead = AESGCM(key)
        self._sender = secrets.token_bytes(8)
        self._counter = 0
        self._windows: dict[bytes, ReplayWindow] = {}

    def seal(self, channel_id: int, tag: bytes, rtp: bytes) -> bytes:
        if self._counter > 0xFFFFFFFF:
            # Never reuse a nonce: a new sender id starts a new nonce space.
            self._sender, self._counter = secrets.token_bytes(8), 0
        header = _HEADER.pack(MAGIC, VERSION, self._sender, self._counter, channel_id, tag)
        nonce = header[4:16]
        self._counter += 1
        return header + self._aead.encrypt(nonce, rtp, header)

    def open(self, datagram: bytes) -> tuple[int, bytes, bytes] | None:
        """(channel id, lease tag, RTP) of a genuine, fresh datagram; None for anything
        else (not ours, forged, altered, replayed)."""
        if len(datagram) < HEADER_BYTES + TAG_BYTES + 12 or datagram[:3] != b"VR\x01":
            return None
        header = datagram[:HEADER_BYTES]
        _, _, sender, counter, channel_id, tag = _HEADER.unpack(header)
        try:
            rtp = self._aead.decrypt(header[4:16], datagram[HEADER_BYTES:], header)
        except InvalidTag:
            return None
        window = self._windows.get(sender)
        if window is None:
            if len(self._windows) >= MAX_SENDERS:
                self._windows.pop(next(iter(self._windows)))  # the oldest sender
            window = self._windows[sender] = ReplayWindow()
        if not window.accept(counter):
            return None
        return channel_id, tag, rtp


class MediaRelay(asyncio.DatagramProtocol):
    """The node's relay socket. `send` seals a packet once and sends it to each address;
    genuine datagrams that arrive go to `on_packet(channel_id, lease_tag, rtp)`.

    Counters: `sent`, `received` (genuine), `refused` (anything else), for /api/stats.
    """

    def __init__(self, key: bytes, on_packet: Callable[[int, bytes, bytes], None]) -> None:
        self._sealer = RelaySealer(key)
        self._on_packet = on_packet
        self._transport: asyncio.DatagramTransport | None = None
        self.address: tuple[str, int] | None = None
        self.sent = 0
        self.received = 0
        self.refused = 0

    async def start(self, host: str, port: int) -> tuple[str, int]:
        """Bind the UDP socket; returns the bound (host, port)."""
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: self, local_addr=(host, port))
        self._transport = transport
        self.address = transport.get_extra_info("sockname")[:2]
        return self.address

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    def send(self, channel_id: int, token: str, rtp: bytes, addresses: Iterable[tuple[str, int]]) -> None:
        transport = self._transport
        if transport is None:
            return
        datagram = self._sealer.seal(channel_id, lease_tag(token), rtp)
        for address in addresses:
            transport.sendto(datagram, address)
            self.sent += 1

    # --- asyncio.DatagramProtocol ------------------------------------------------

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        opened = self._sealer.open(data) if len(data) <= MAX_DATAGRAM_BYTES else None
        if opened is None:
            self.refused += 1
            if self.refused & (self.refused - 1) == 0:  # 1, 2, 4, 8...: a trickle in the log
                logger.warning("relay: refused a datagram from %s (%d so far)", addr, self.refused)
            return
        self.received += 1
        try:
            self._on_packet(*opened)
        except Exception:
            logger.exception("relay: forwarding a packet failed")

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable from a node that just died: the registry drops it soon.
        logger.debug("relay: %s", exc)
