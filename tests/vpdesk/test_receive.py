"""The receive path's packet handling: mid routing, sequence checks, Opus decoding, and
the two ways audio reaches a sink (pulled through the jitter buffer, or written)."""

from __future__ import annotations

import struct

import av
import numpy as np

from server.media.forwarder import one_byte_extension_block
from vpdesk.media.receive import ChannelReceiver, rtp_mid


def rtp(seq: int, payload: bytes, *, mid: str | None = "3", ext_id: int = 9, ts: int = 0) -> bytes:
    ext = one_byte_extension_block(ext_id, mid.encode()) if mid is not None else b""
    first = 0x80 | (0x10 if ext else 0)
    return struct.pack("!BBHII", first, 111, seq, ts, 1234) + ext + payload


def opus_packets(n: int) -> list[bytes]:
    enc = av.CodecContext.create("libopus", "w")
    enc.sample_rate, enc.layout, enc.format = 48000, "mono", "s16"
    enc.open()
    t = np.arange(960 * n) / 48000
    x = (np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16)
    out = []
    for i in range(n):
        frame = av.AudioFrame.from_ndarray(x[None, i * 960 : (i + 1) * 960], format="s16", layout="mono")
        frame.sample_rate, frame.pts = 48000, i * 960
        out += [bytes(p) for p in enc.encode(frame)]
    return out


class Sink:
    def __init__(self):
        self.chunks = []

    def write(self, pcm):
        self.chunks.append(pcm)


def test_mid_is_read_from_the_one_byte_extension():
    assert rtp_mid(rtp(1, b"x", mid="12"), 9) == "12"
    assert rtp_mid(rtp(1, b"x", mid="12"), 4) is None  # another extension id
    assert rtp_mid(rtp(1, b"x", mid=None), 9) is None  # no extension at all
    assert rtp_mid(b"\x90" + b"\x00" * 11, 9) is None  # truncated
    assert rtp_mid(b"", 9) is None


def test_receiver_decodes_in_order_and_drops_duplicates_and_late_packets():
    packets = opus_packets(6)
    sink = Sink()
    active = []
    receiver = ChannelReceiver(5, sink, active.append, clock=lambda: 0.0)
    assert not receiver.pulled  # a sink that only takes writes: decoded on arrival
    receiver.feed(rtp(100, packets[0]))
    receiver.feed(rtp(101, packets[1]))
    receiver.feed(rtp(101, packets[1]))  # duplicate
    receiver.feed(rtp(100, packets[0]))  # late
    receiver.feed(rtp(104, packets[2]))  # two lost
    assert receiver.packets == 3 and receiver.lost == 2
    # 102 concealed, 103 recovered from 104's FEC, then 104 itself.
    assert [len(c) for c in sink.chunks] == [960] * 5
    assert receiver.concealed == 1 and receiver.recovered_by_fec == 1
    assert receiver.stats()["duplicates"] == 2  # 100 was received before: not "late"
    assert all(c.dtype == np.float32 for c in sink.chunks)
    assert active == [5]  # activity is reported at most every ACTIVITY_EVERY_S


class PullingSink:
    """What ChannelReceiver needs of a PlaybackSink that pulls."""

    def __init__(self):
        self.source = None

    def attach(self, source):
        self.source = source

    def write(self, pcm):
        raise AssertionError("a pulling sink is never written to")


def test_a_pulling_sink_gets_frames_after_the_start_delay():
    packets = opus_packets(4)
    now = [10.0]
    sink = PullingSink()
    receiver = ChannelReceiver(5, sink, clock=lambda: now[0])
    assert receiver.pulled and sink.source is receiver
    assert receiver.next_frame() is None  # nothing yet
    receiver.feed(rtp(7, packets[0], ts=0))
    receiver.feed(rtp(8, packets[1], ts=960))
    assert receiver.next_frame() is None  # the start delay (initially one frame)
    now[0] += receiver.target_delay_ms / 1000.0
    first = receiver.next_frame()
    assert first is not None and len(first) == 960 and first.dtype == np.float32
    assert len(receiver.next_frame()) == 960
    assert len(receiver.next_frame()) == 960  # 9 is missing: concealed (an underrun so far)
    assert receiver.concealed == 1
    # Moving to another sink detaches from the first.
    other = PullingSink()
    receiver.sink = other
    assert other.source is receiver and sink.source is None


def test_receiver_survives_garbage():
    sink = Sink()
    receiver = ChannelReceiver(5, sink)
    receiver.feed(b"\x00\x01")  # not RTP
    receiver.feed(rtp(1, b"\xff\xff\xff\xff\xff"))  # not Opus
    receiver.feed(rtp(2, opus_packets(1)[0]))
    assert receiver.bad >= 1
    assert len(sink.chunks) >= 1


def test_sequence_wraps_around():
    packets = opus_packets(2)
    receiver = ChannelReceiver(1, Sink())
    receiver.feed(rtp(0xFFFF, packets[0]))
    receiver.feed(rtp(0, packets[1]))
    assert receiver.packets == 2 and receiver.lost == 0
