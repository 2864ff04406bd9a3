"""sendmmsg batches (server/media/udp_batch.py) with real sockets on loopback."""

from __future__ import annotations

import os
import socket

import pytest

from server.media.udp_batch import MAX_BATCH, DatagramBatch, Outbox, SocketAddress, address_of
from server.media.aiortc_hooks import PacketBuffer

pytestmark = pytest.mark.skipif(not Outbox.supported, reason="sendmmsg is Linux's")


def receivers(count: int, family: int = socket.AF_INET, host: str = "127.0.0.1") -> list[socket.socket]:
    socks = []
    for _ in range(count):
        sock = socket.socket(family, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        sock.bind((host, 0))
        sock.settimeout(2.0)
        socks.append(sock)
    return socks


def filled(payload: bytes) -> PacketBuffer:
    packet = PacketBuffer()
    packet.view[: len(payload)] = payload
    return packet


@pytest.fixture
def sender():
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    yield sock
    sock.close()


def test_one_flush_delivers_each_buffer_to_its_own_address(sender):
    outbox = Outbox()
    batch = DatagramBatch(sender, outbox, capacity=4)
    socks = receivers(300)  # beyond the first capacity: the batch grows as it fills
    names = [SocketAddress(socket.AF_INET, s.getsockname()) for s in socks]
    payloads = [os.urandom(20 + i % 50) for i in range(len(socks))]
    buffers = [filled(p) for p in payloads]
    try:
        outbox.open()
        for packet, payload, name in zip(buffers, payloads, names):
            batch.add(packet.address, len(payload), name)
        assert outbox.pending == [batch] and batch.count == 300
        outbox.flush()
        assert not outbox.is_open and outbox.pending == [] and batch.count == 0
        assert batch.sent == 300 and batch.dropped == 0
        got = [s.recvfrom(2048) for s in socks]
        assert [data for data, _ in got] == payloads
        assert {addr for _, addr in got} == {sender.getsockname()}
    finally:
        for s in socks:
            s.close()


def test_a_refused_datagram_is_skipped_and_the_rest_still_go(sender):
    outbox = Outbox()
    batch = outbox.batch_for(sender)
    socks = receivers(3)
    good = [SocketAddress(socket.AF_INET, s.getsockname()) for s in socks]
    refused = SocketAddress(socket.AF_INET, ("127.0.0.1", 0))  # port 0: the kernel says EINVAL
    payload = b"rtp" * 10
    packet = filled(payload)
    try:
        outbox.open()
        for name in (good[0], refused, good[1], refused, good[2]):
            batch.add(packet.address, len(payload), name)
        outbox.flush()
        assert batch.sent == 3 and batch.dropped == 2
        assert [s.recv(2048) for s in socks] == [payload] * 3
    finally:
        for s in socks:
            s.close()


def test_ipv6_destinations():
    try:
        sender = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        sender.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback here")
    socks = receivers(2, socket.AF_INET6, "::1")
    outbox = Outbox()
    batch = outbox.batch_for(sender)
    packet = filled(b"six")
    try:
        outbox.open()
        for s in socks:
            # The batch keeps the sockaddr alive: nothing else holds this one.
            batch.add(packet.address, 3, SocketAddress(socket.AF_INET6, s.getsockname()))
        outbox.flush()
        assert [s.recv(64) for s in socks] == [b"six", b"six"]
    finally:
        sender.close()
        for s in socks:
            s.close()


def test_addresses_and_families():
    assert address_of(PacketBuffer().data) != 0
    assert SocketAddress(socket.AF_INET, ("127.0.0.1", 5004)).length == 16
    assert SocketAddress(socket.AF_INET6, ("::1", 5004, 0, 0)).length == 28
    with pytest.raises(ValueError):
        SocketAddress(socket.AF_UNIX, ("/tmp/x", 0))


def test_more_than_one_system_call_can_take_goes_in_several(sender):
    outbox = Outbox()
    batch = outbox.batch_for(sender)
    socks = receivers(4)
    names = [SocketAddress(socket.AF_INET, s.getsockname()) for s in socks]
    packet = filled(b"x" * 40)
    total = MAX_BATCH + 76
    try:
        outbox.open()
        for i in range(total):
            batch.add(packet.address, 40, names[i % 4])
        outbox.flush()
        assert batch.sent == total and batch.dropped == 0 and outbox.pending == []
        for s in socks:
            got = 0
            s.settimeout(0.5)
            try:
                while s.recv(64) == b"x" * 40:
                    got += 1
            except TimeoutError:
                pass
            assert got == total // 4
    finally:
        for s in socks:
            s.close()
