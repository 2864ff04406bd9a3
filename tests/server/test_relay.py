"""The node-to-node relay's sealing: genuine datagrams open once, nothing else opens."""

from __future__ import annotations

import asyncio
import secrets

import pytest

from server.cluster.relay import (
    HEADER_BYTES,
    REPLAY_WINDOW,
    MediaRelay,
    RelaySealer,
    ReplayWindow,
    lease_tag,
)

KEY = bytes(range(32))
RTP = bytes([0x80, 111, 0, 1]) + bytes(8) + b"opus payload" * 5


def test_a_sealed_packet_opens_once_with_the_same_key():
    sender, receiver = RelaySealer(KEY), RelaySealer(KEY)
    datagram = sender.seal(7, lease_tag("token-1"), RTP)
    assert RTP not in datagram  # the audio is not readable on the wire
    assert receiver.open(datagram) == (7, lease_tag("token-1"), RTP)
    assert receiver.open(datagram) is None  # a replay


def test_another_key_or_any_altered_byte_is_refused():
    sender = RelaySealer(KEY)
    datagram = sender.seal(7, lease_tag("t"), RTP)
    assert RelaySealer(secrets.token_bytes(32)).open(datagram) is None
    for position in (0, 3, 4, 12, 16, 20, HEADER_BYTES, len(datagram) - 1):
        altered = bytearray(datagram)
        altered[position] ^= 0x01
        assert RelaySealer(KEY).open(bytes(altered)) is None, position
    assert RelaySealer(KEY).open(datagram[:-1]) is None
    assert RelaySealer(KEY).open(b"") is None


def test_the_replay_window_takes_reordered_packets_once_and_old_ones_never():
    window = ReplayWindow()
    assert [window.accept(c) for c in (0, 2, 1, 1, 2)] == [True, True, True, False, False]
    assert window.accept(100)
    assert window.accept(100 - REPLAY_WINDOW + 1)
    assert not window.accept(100 - REPLAY_WINDOW)  # fell out of the window
    assert not window.accept(5)


def test_senders_have_windows_of_their_own():
    receiver = RelaySealer(KEY)
    first, second = RelaySealer(KEY), RelaySealer(KEY)  # two nodes, one site key
    assert receiver.open(first.seal(1, lease_tag("a"), RTP)) is not None
    assert receiver.open(second.seal(1, lease_tag("b"), RTP)) is not None  # counter 0 too


def test_a_wrong_sized_key_is_refused():
    with pytest.raises(ValueError):
        RelaySealer(b"short")


async def test_relay_sockets_deliver_to_the_other_node_only_genuine_packets():
    received: list[tuple[int, bytes, bytes]] = []
    a = MediaRelay(KEY, lambda *packet: None)
    b = MediaRelay(KEY, lambda *packet: received.append(packet))
    await a.start("127.0.0.1", 0)
    address_b = await b.start("127.0.0.1", 0)
    try:
        for _ in range(5):
            a.send(3, "lease-token", RTP, [address_b])
        transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
            asyncio.DatagramProtocol, remote_addr=address_b)
        transport.sendto(b"VR\x01\x00" + bytes(60))
        for _ in range(100):
            if len(received) == 5 and b.refused == 1:
                break
            await asyncio.sleep(0.01)
        transport.close()
        assert received == [(3, lease_tag("lease-token"), RTP)] * 5
        assert (a.sent, b.received, b.refused) == (5, 5, 1)
    finally:
        a.close()
        b.close()
