"""The STUN binding messages of ICE consent checks, read and built without aioice.

Once ICE has nominated a pair, each side sends a binding request on it every 4-6 s
(consent freshness, RFC 7675) and answers the other's. Through aioice each request was
parsed twice (once to route it, once in aioice), its integrity checked twice, and every
message built attribute by attribute with a byte-at-a-time XOR: with hundreds of idle
listeners, consent was most of the server's idle CPU. Here a message is read once (only
the attributes routing and answering need) and checked once, and the messages the server
sends are built from bytes prepared once per connection. The media port answers the
consent checks on a nominated pair (server/media/media_port.py) and sends its own
(server/media/consent.py); everything else still goes to aioice.

Formats: RFC 8489 (STUN) and RFC 8445 (ICE attributes). What is built here is byte for
byte what aioice builds (tests/server/test_stun_checks.py).
"""

from __future__ import annotations

import hmac
import socket
import struct
import zlib

COOKIE = 0x2112A442
HEADER_BYTES = 20
BINDING_REQUEST = 0x0001
BINDING_SUCCESS = 0x0101

USERNAME = 0x0006
MESSAGE_INTEGRITY = 0x0008
XOR_MAPPED_ADDRESS = 0x0020
PRIORITY = 0x0024
USE_CANDIDATE = 0x0025
FINGERPRINT = 0x8028
ICE_CONTROLLED = 0x8029
ICE_CONTROLLING = 0x802A

_FINGERPRINT_XOR = 0x5354554E
_HEADER = struct.Struct("!HHI12s")
_ATTRIBUTE = struct.Struct("!HH")
_COOKIE_BYTES = COOKIE.to_bytes(4, "big")


class BindingMessage:
    """A well-formed binding request or success response: its transaction, its USERNAME
    (requests), which attributes came before MESSAGE-INTEGRITY, and what that integrity
    covers (checked with check())."""

    __slots__ = ("transaction_id", "username", "attributes", "_signed", "_mac")

    def __init__(self, transaction_id: bytes, username: str | None, attributes: frozenset[int],
                 signed: bytes, mac: bytes) -> None:
        self.transaction_id = transaction_id
        self.username = username
        self.attributes = attributes
        self._signed = signed
        self._mac = mac

    def check(self, key: bytes) -> bool:
        """Whether MESSAGE-INTEGRITY was made with `key` (the ICE password of the side the
        request went to: ours for a request, the peer's for a response)."""
        return hmac.compare_digest(hmac.digest(key, self._signed, "sha1"), self._mac)


def _with_length(data: bytes, body_length: int) -> bytes:
    # The header's length field as it stood when the integrity or fingerprint was computed.
    return data[:2] + body_length.to_bytes(2, "big") + data[4:]


def parse_binding_request(data: bytes) -> BindingMessage | None:
    """The request in `data`, or None unless it is a binding request with a USERNAME and a
    MESSAGE-INTEGRITY, a consistent length and, if present, a matching FINGERPRINT."""
    message = _parse(data, BINDING_REQUEST)
    return message if message is not None and message.username is not None else None


def parse_binding_success(data: bytes) -> BindingMessage | None:
    """The success response in `data`, or None unless it is one with a MESSAGE-INTEGRITY,
    a consistent length and, if present, a matching FINGERPRINT."""
    return _parse(data, BINDING_SUCCESS)


def _parse(data: bytes, expected_kind: int) -> BindingMessage | None:
    if len(data) < HEADER_BYTES:
        return None
    kind, length, cookie, transaction_id = _HEADER.unpack_from(data)
    if kind != expected_kind or cookie != COOKIE or length != len(data) - HEADER_BYTES or length % 4:
        return None
    seen: set[int] = set()
    username = mac = signed = None
    pos = HEADER_BYTES
    end = len(data)
    while pos + 4 <= end:
        attribute, size = _ATTRIBUTE.unpack_from(data, pos)
        value_end = pos + 4 + size
        if value_end > end:
            return None
        if attribute == FINGERPRINT:
            if size != 4 or value_end != end:
                return None
            expected = zlib.crc32(_with_length(data[:pos], pos + 8 - HEADER_BYTES)) ^ _FINGERPRINT_XOR
            if int.from_bytes(data[pos + 4 : value_end], "big") != expected:
                return None
        elif mac is None:  # what follows MESSAGE-INTEGRITY is not covered by it: ignored
            if attribute == MESSAGE_INTEGRITY:
                if size != 20:
                    return None
                mac = data[pos + 4 : value_end]
                signed = _with_length(data[:pos], pos + 24 - HEADER_BYTES)
            else:
                seen.add(attribute)
                if attribute == USERNAME:
                    try:
                        username = data[pos + 4 : value_end].decode("utf-8")
                    except UnicodeDecodeError:
                        return None
        pos = value_end + (-size % 4)
    if pos != end or mac is None:
        return None
    return BindingMessage(transaction_id, username, frozenset(seen), signed, mac)


def _attribute(kind: int, value: bytes) -> bytes:
    return _ATTRIBUTE.pack(kind, len(value)) + value + bytes(-len(value) % 4)


def request_attributes(username: str, priority: int, controlling: bool, tie_breaker: int) -> bytes:
    """The attributes of a consent check, before its integrity: USERNAME (the peer's ufrag,
    a colon, ours), PRIORITY and our ICE role with its tie-breaker, in aioice's order. A
    consent check never nominates: no USE-CANDIDATE."""
    role = ICE_CONTROLLING if controlling else ICE_CONTROLLED
    return (_attribute(USERNAME, username.encode("utf-8")) + _attribute(PRIORITY, priority.to_bytes(4, "big"))
            + _attribute(role, tie_breaker.to_bytes(8, "big")))


def _signed_and_fingerprinted(kind: int, transaction_id: bytes, body: bytes, key: bytes) -> bytes:
    # MESSAGE-INTEGRITY over the header (its length counting the integrity) and `body`,
    # then FINGERPRINT over all that (its length counting the fingerprint too).
    header = _HEADER.pack(kind, len(body) + 24, COOKIE, transaction_id)
    body += _ATTRIBUTE.pack(MESSAGE_INTEGRITY, 20) + hmac.digest(key, header + body, "sha1")
    header = _HEADER.pack(kind, len(body) + 8, COOKIE, transaction_id)
    crc = zlib.crc32(header + body) ^ _FINGERPRINT_XOR
    return header + body + struct.pack("!HHI", FINGERPRINT, 4, crc)


def binding_request(transaction_id: bytes, attributes: bytes, key: bytes) -> bytes:
    """A binding request with `attributes` (request_attributes()), signed with `key`, the
    peer's ICE password, and fingerprinted."""
    return _signed_and_fingerprinted(BINDING_REQUEST, transaction_id, attributes, key)


def binding_success(transaction_id: bytes, addr: tuple, key: bytes) -> bytes:
    """The success response to a binding request from `addr`: XOR-MAPPED-ADDRESS,
    MESSAGE-INTEGRITY (with `key`, our ICE password) and FINGERPRINT, as aioice builds it."""
    host, port = addr[0], addr[1]
    if ":" in host:
        family, packed = 0x02, socket.inet_pton(socket.AF_INET6, host)
        pad = _COOKIE_BYTES + transaction_id
    else:
        family, packed = 0x01, socket.inet_pton(socket.AF_INET, host)
        pad = _COOKIE_BYTES
    xored = (int.from_bytes(packed, "big") ^ int.from_bytes(pad, "big")).to_bytes(len(packed), "big")
    body = struct.pack("!HHBBH", XOR_MAPPED_ADDRESS, 4 + len(packed), 0, family, port ^ (COOKIE >> 16)) + xored
    return _signed_and_fingerprinted(BINDING_SUCCESS, transaction_id, body, key)
