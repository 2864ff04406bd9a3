"""server/media/forwarder.py with capture functions as transports: no network, no aiortc.

Every test runs twice where the C fan-out is built: with forwarder.py's classes and with
fast_fanout.py's, which must behave the same (the C classes' own tests, with real sockets
and libsrtp, are in test_fast_fanout.py)."""

from __future__ import annotations

import struct
import sys
from types import SimpleNamespace

import pytest

from server.media import fast_fanout
from server.media.forwarder import (
    CLOCK_RATE,
    FRAME_SAMPLES,
    ChannelFanout,
    ListenerOutput,
    MalformedRtp,
    one_byte_extension_block,
    rtp_payload_bounds,
)

OPUS_PT = 111
IMPLEMENTATIONS = ["python"] + (["c"] if fast_fanout.c_fanout_built() else [])


@pytest.fixture(autouse=True, params=IMPLEMENTATIONS)
def implementation(request, monkeypatch):
    """The tests below name ListenerOutput and ChannelFanout: the C run swaps them."""
    if request.param == "c":
        module = sys.modules[__name__]
        monkeypatch.setattr(module, "ListenerOutput", fast_fanout.FastListenerOutput)
        monkeypatch.setattr(module, "ChannelFanout", fast_fanout.FastChannelFanout)
    return request.param


def set_line(out, *, seq: int | None = None, ts: int | None = None) -> None:
    """Put an output's last sequence number or timestamp where a test wants it."""
    state = getattr(out, "state", None)
    if seq is not None:
        if state is not None:
            state.last_seq = seq
        else:
            out._last_seq = seq
    if ts is not None:
        if state is not None:
            state.last_ts = ts
        else:
            out._last_ts = ts


def last_seq(out) -> int:
    state = getattr(out, "state", None)
    return state.last_seq if state is not None else out._last_seq


def rtp(
    seq: int,
    ts: int,
    payload: bytes = b"\x78opus-frame",
    *,
    ssrc: int = 0x11223344,
    pt: int = 96,
    marker: bool = False,
    csrcs: tuple[int, ...] = (),
    extension: bytes | None = None,
    padding: int = 0,
) -> bytes:
    """A talker's RTP packet. `extension` is the extension body (a multiple of 4 bytes)."""
    first = 0x80 | len(csrcs)
    if extension is not None:
        first |= 0x10
    if padding:
        first |= 0x20
    data = struct.pack("!BBHII", first, (0x80 if marker else 0) | pt, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc)
    data += b"".join(struct.pack("!I", c) for c in csrcs)
    if extension is not None:
        assert len(extension) % 4 == 0
        data += struct.pack("!HH", 0xBEDE, len(extension) // 4) + extension
    data += payload
    if padding:
        data += b"\x00" * (padding - 1) + bytes([padding])
    return data


def parse(packet: bytes) -> dict:
    first, second, seq, ts, ssrc = struct.unpack("!BBHII", packet[:12])
    start, end = rtp_payload_bounds(packet)
    return {
        "version": first >> 6,
        "x": bool(first & 0x10),
        "p": bool(first & 0x20),
        "cc": first & 0x0F,
        "marker": bool(second & 0x80),
        "pt": second & 0x7F,
        "seq": seq,
        "ts": ts,
        "ssrc": ssrc,
        "ext": packet[12:start],
        "payload": packet[start:end],
    }


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Capture:
    """An egress (forwarder.PacketEgress): records the packets built in its buffers;
    `accept` False simulates a transport not ready."""

    def __init__(self) -> None:
        self.packets: list[bytes] = []
        self.accept = True

    @staticmethod
    def new_buffer() -> SimpleNamespace:
        return SimpleNamespace(view=memoryview(bytearray(1500)))

    def send_buffer(self, packet: SimpleNamespace, length: int) -> bool:
        if not self.accept:
            return False
        self.packets.append(bytes(packet.view[:length]))
        return True

    @property
    def parsed(self) -> list[dict]:
        return [parse(p) for p in self.packets]


def output(capture: Capture, clock: Clock | None = None, **kwargs) -> ListenerOutput:
    kwargs.setdefault("ssrc", 0xCAFEBABE)
    kwargs.setdefault("payload_type", OPUS_PT)
    return ListenerOutput(egress=capture, clock=clock or Clock(), **kwargs)


def send_packet(out: ListenerOutput, source: object, data: bytes) -> None:
    """What ChannelFanout.forward does for one output."""
    start, end = rtp_payload_bounds(data)
    out.send(source, (data[2] << 8) | data[3], int.from_bytes(data[4:8], "big"), data[1] & 0x80, data[start:end])


def seq_step(a: int, b: int) -> int:
    return (b - a) & 0xFFFF


def ts_step(a: int, b: int) -> int:
    return (b - a) & 0xFFFFFFFF


# --- rtp_payload_bounds -------------------------------------------------------------------


def test_bounds_of_a_plain_packet():
    data = rtp(1, 2, b"abcdef")
    assert rtp_payload_bounds(data) == (12, 18)


def test_bounds_skip_csrcs():
    data = rtp(1, 2, b"abc", csrcs=(1, 2, 3))
    assert rtp_payload_bounds(data) == (12 + 12, 12 + 12 + 3)
    assert data[slice(*rtp_payload_bounds(data))] == b"abc"


def test_bounds_skip_the_header_extension():
    ext = b"\x10\x01" + b"\x00\x00" + b"\x22\x05\x06\x07"  # two one-byte elements, padded
    data = rtp(1, 2, b"voice", extension=ext)
    start, end = rtp_payload_bounds(data)
    assert start == 12 + 4 + len(ext)
    assert data[start:end] == b"voice"


def test_bounds_skip_csrcs_extension_and_padding_together():
    data = rtp(1, 2, b"payload!", csrcs=(7,), extension=b"\x10\xaa\x00\x00", padding=4)
    start, end = rtp_payload_bounds(data)
    assert data[start:end] == b"payload!"
    assert end == len(data) - 4


def test_padding_only_packet_has_empty_payload():
    data = rtp(1, 2, b"", padding=8)
    start, end = rtp_payload_bounds(data)
    assert start == end == 12


@pytest.mark.parametrize(
    "data, why",
    [
        (b"", "empty"),
        (b"\x80\x60\x00\x01\x00\x00\x00", "shorter than a header"),
        (rtp(1, 2)[:11], "11 bytes"),
        (bytes([0x40]) + rtp(1, 2)[1:], "version 1"),
        (bytes([0x00]) + rtp(1, 2)[1:], "version 0"),
        (bytes([0xC0]) + rtp(1, 2)[1:], "version 3"),
        (bytes([0x8F]) + rtp(1, 2, b"")[1:], "15 CSRCs announced, none present"),
        (bytes([0x90]) + rtp(1, 2, b"")[1:] + b"\xbe\xde", "extension header cut short"),
        (bytes([0x90]) + rtp(1, 2, b"")[1:] + b"\xbe\xde\x00\x05\x00\x00", "extension length beyond packet"),
        (bytes([0xA0]) + rtp(1, 2, b"ab\x40")[1:], "padding count beyond packet"),
    ],
)
def test_malformed_packets_are_refused(data, why):
    with pytest.raises(MalformedRtp):
        rtp_payload_bounds(data)


# --- the extension block ------------------------------------------------------------------


def test_one_byte_extension_block_is_rfc8285():
    block = one_byte_extension_block(3, b"12")
    profile, words = struct.unpack("!HH", block[:4])
    assert profile == 0xBEDE
    assert len(block) == 4 + 4 * words
    assert words == 1
    element = block[4]
    assert element >> 4 == 3 and (element & 0x0F) + 1 == 2
    assert block[5:7] == b"12"
    assert block[7:] == b"\x00"  # padding to 32 bits


def test_extension_block_padding_and_limits():
    for length in range(1, 17):
        block = one_byte_extension_block(1, b"x" * length)
        assert len(block) % 4 == 0
        assert struct.unpack("!H", block[2:4])[0] == (len(block) - 4) // 4
        assert (block[4] & 0x0F) + 1 == length
    for ext_id, value in ((0, b"a"), (15, b"a"), (1, b""), (1, b"x" * 17)):
        with pytest.raises(ValueError):
            one_byte_extension_block(ext_id, value)


# --- ListenerOutput -----------------------------------------------------------------------


def test_output_rewrites_header_and_keeps_payload():
    cap = Capture()
    out = output(cap, ssrc=0x01020304, payload_type=OPUS_PT)
    payload = bytes(range(200))
    send_packet(out, "A", rtp(500, 9000, payload, ssrc=0xDEAD, pt=96, marker=True, csrcs=(5,)))
    [p] = cap.parsed
    assert p["version"] == 2
    assert p["ssrc"] == 0x01020304
    assert p["pt"] == OPUS_PT
    assert p["marker"] is True
    assert p["cc"] == 0 and not p["p"] and not p["x"]  # talker's CSRCs are not copied
    assert p["payload"] == payload
    assert out.packets_sent == 1 and out.bytes_sent == len(payload)


def test_output_with_extension_writes_a_well_formed_block():
    cap = Capture()
    ext = one_byte_extension_block(4, b"7")
    out = output(cap, extension=ext)
    send_packet(out, "A", rtp(1, 960, b"frame", extension=b"\x10\x99\x00\x00"))
    packet = cap.packets[0]
    assert packet[0] & 0x10  # X bit
    assert packet[12:14] == b"\xbe\xde"
    words = struct.unpack("!H", packet[14:16])[0]
    assert packet[12 : 16 + 4 * words] == ext
    # The element: id 4, one byte "7"; the talker's own extension is not forwarded.
    assert packet[16] == (4 << 4) | 0 and packet[17:18] == b"7"
    assert parse(packet)["payload"] == b"frame"


def test_one_talker_passes_sequence_and_timestamp_spacing_through():
    cap = Capture()
    out = output(cap)
    for i in range(10):
        send_packet(out, "A", rtp(100 + i, 5000 + i * FRAME_SAMPLES))
    parsed = cap.parsed
    assert {p["ssrc"] for p in parsed} == {0xCAFEBABE}
    for a, b in zip(parsed, parsed[1:]):
        assert seq_step(a["seq"], b["seq"]) == 1
        assert ts_step(a["ts"], b["ts"]) == FRAME_SAMPLES


def test_talker_loss_gap_is_kept():
    # A gap in the talker's own sequence (loss upstream) stays a gap: the receiver's
    # jitter buffer should see the loss, not a silent splice.
    cap = Capture()
    out = output(cap)
    send_packet(out, "A", rtp(10, 0))
    send_packet(out, "A", rtp(13, 3 * FRAME_SAMPLES))
    a, b = cap.parsed
    assert seq_step(a["seq"], b["seq"]) == 3
    assert ts_step(a["ts"], b["ts"]) == 3 * FRAME_SAMPLES


def test_source_change_keeps_one_stream_and_timestamps_follow_wall_time():
    clock = Clock()
    cap = Capture()
    out = output(cap, clock)
    for i in range(5):
        send_packet(out, "A", rtp(40000 + i, 123456 + i * FRAME_SAMPLES, ssrc=0xA))
        clock.now += 0.02
    clock.now += 1.5  # a pause between talkers
    for i in range(5):
        # Talker B: unrelated sequence and timestamp bases.
        send_packet(out, "B", rtp(7 + i, 4_000_000_000 + i * FRAME_SAMPLES, ssrc=0xB))
        clock.now += 0.02
    parsed = cap.parsed
    assert {p["ssrc"] for p in parsed} == {0xCAFEBABE}
    seqs = [p["seq"] for p in parsed]
    assert all(seq_step(a, b) == 1 for a, b in zip(seqs, seqs[1:])), seqs
    # Across the change the timestamp advanced by the wall time since A's last packet
    # (1.5 s + the 20 ms after it), in 48 kHz units.
    last_a, first_b = parsed[4]["ts"], parsed[5]["ts"]
    assert abs(ts_step(last_a, first_b) - 1.52 * CLOCK_RATE) <= 1
    for a, b in zip(parsed[5:], parsed[6:]):
        assert ts_step(a["ts"], b["ts"]) == FRAME_SAMPLES


def test_quick_source_change_advances_at_least_one_frame():
    clock = Clock()
    cap = Capture()
    out = output(cap, clock)
    send_packet(out, "A", rtp(1, 1000))
    send_packet(out, "B", rtp(9, 77))  # same instant
    a, b = cap.parsed
    assert seq_step(a["seq"], b["seq"]) == 1
    assert ts_step(a["ts"], b["ts"]) == FRAME_SAMPLES


def test_sources_compare_by_identity():
    clock = Clock()
    cap = Capture()
    out = output(cap, clock)
    token_a = object()
    send_packet(out, token_a, rtp(1, 0))
    clock.now += 5.0
    send_packet(out, token_a, rtp(2, FRAME_SAMPLES))  # same source: no rebase
    assert ts_step(cap.parsed[0]["ts"], cap.parsed[1]["ts"]) == FRAME_SAMPLES
    clock.now += 5.0
    send_packet(out, object(), rtp(3, 2 * FRAME_SAMPLES))  # a new grant token: rebase
    assert ts_step(cap.parsed[1]["ts"], cap.parsed[2]["ts"]) == 5 * CLOCK_RATE


def test_sequence_wraps_at_16_bits():
    cap = Capture()
    out = output(cap)
    set_line(out, seq=0xFFFD)  # the output's own counter near its wrap
    for i in range(6):
        send_packet(out, "A", rtp(30000 + i, i * FRAME_SAMPLES))
    seqs = [p["seq"] for p in cap.parsed]
    assert seqs == [0xFFFE, 0xFFFF, 0, 1, 2, 3]


def test_talker_sequence_wrap_stays_contiguous():
    cap = Capture()
    out = output(cap)
    for i in range(6):
        send_packet(out, "A", rtp(0xFFFD + i, i * FRAME_SAMPLES))  # talker wraps
    seqs = [p["seq"] for p in cap.parsed]
    assert all(seq_step(a, b) == 1 for a, b in zip(seqs, seqs[1:])), seqs


def test_timestamp_wraps_at_32_bits_across_a_source_change():
    clock = Clock()
    cap = Capture()
    out = output(cap, clock)
    set_line(out, ts=0xFFFFFFFF - 1000)
    send_packet(out, "A", rtp(1, 0xFFFFFF00))
    clock.now += 0.02
    send_packet(out, "A", rtp(2, 0xFFFFFF00 + FRAME_SAMPLES))  # talker wraps its timestamp
    clock.now += 0.1
    send_packet(out, "B", rtp(500, 12345))
    clock.now += 0.02
    send_packet(out, "B", rtp(501, 12345 + FRAME_SAMPLES))
    ts = [p["ts"] for p in cap.parsed]
    assert ts[0] == (0xFFFFFFFF - 1000 + FRAME_SAMPLES) & 0xFFFFFFFF
    assert ts[1] < ts[0]  # wrapped
    assert ts_step(ts[0], ts[1]) == FRAME_SAMPLES
    assert abs(ts_step(ts[1], ts[2]) - 0.1 * CLOCK_RATE) <= 1
    assert ts_step(ts[2], ts[3]) == FRAME_SAMPLES
    assert all(t <= 0xFFFFFFFF for t in ts)


def test_unsent_packet_does_not_advance_the_stream():
    clock = Clock()
    cap = Capture()
    out = output(cap, clock)
    send_packet(out, "A", rtp(1, 0))
    cap.accept = False  # transport down: the packet is dropped, like on a network
    send_packet(out, "A", rtp(2, FRAME_SAMPLES))
    assert out.packets_sent == 1
    cap.accept = True
    send_packet(out, "A", rtp(3, 2 * FRAME_SAMPLES))
    a, b = cap.parsed
    assert seq_step(a["seq"], b["seq"]) == 2  # the dropped packet is a visible loss
    assert out.packets_sent == 2


def test_sender_report_figures_follow_what_was_sent():
    clock = Clock()
    cap = Capture()
    out = output(cap, clock=clock)
    assert out.last_sent_at is None and out.packets_sent == 0
    for i in range(5):
        clock.now += 0.02
        send_packet(out, "A", rtp(1 + i, i * FRAME_SAMPLES, b"12345"))
    cap.accept = False  # a copy the transport refused is not counted
    send_packet(out, "A", rtp(6, 5 * FRAME_SAMPLES, b"12345"))
    last = cap.parsed[-1]
    assert (out.packets_sent, out.octets_sent) == (5, 25)
    assert out.last_rtp_timestamp == last["ts"]
    assert out.last_sent_at == clock.now


def test_resync_starts_a_new_run_for_the_same_source():
    clock = Clock()
    cap = Capture()
    out = output(cap, clock)
    send_packet(out, "A", rtp(1, 0))
    out.resync()
    clock.now += 2.0
    send_packet(out, "A", rtp(1000, 999_999))  # the talker's numbers moved on meanwhile
    a, b = cap.parsed
    assert seq_step(a["seq"], b["seq"]) == 1
    assert ts_step(a["ts"], b["ts"]) == 2 * CLOCK_RATE


# --- ChannelFanout ------------------------------------------------------------------------


def test_fanout_sends_to_every_output_but_exclude_and_counts():
    fanout = ChannelFanout(7)
    caps = [Capture() for _ in range(3)]
    outs = [output(c, ssrc=0x100 + i) for i, c in enumerate(caps)]
    for out in outs:
        fanout.add(out)
    fanout.forward("A", rtp(1, 0, b"abcd"), exclude=outs[1])
    fanout.forward("A", rtp(2, FRAME_SAMPLES, b"efgh"), exclude=outs[1])
    assert len(caps[0].packets) == 2 and len(caps[2].packets) == 2
    assert caps[1].packets == []
    assert fanout.packets_in == 2
    assert fanout.packets_out == 4
    assert fanout.bytes_out == 4 * 4
    assert [p["ssrc"] for p in caps[2].parsed] == [0x102, 0x102]
    assert [p["payload"] for p in caps[0].parsed] == [b"abcd", b"efgh"]


def test_fanout_ignores_malformed_and_empty_packets():
    fanout = ChannelFanout(1)
    cap = Capture()
    fanout.add(output(cap))
    fanout.forward("A", b"\x00" * 20)  # version 0
    fanout.forward("A", b"\x80\x60")  # too short
    fanout.forward("A", rtp(1, 0, b""))  # no payload
    fanout.forward("A", rtp(2, 0, b"", padding=4))  # padding only
    assert cap.packets == []
    assert fanout.packets_in == 0 and fanout.packets_out == 0 and fanout.bytes_out == 0
    fanout.forward("A", rtp(3, 0, b"ok"))
    assert len(cap.packets) == 1 and fanout.packets_in == 1


def test_fanout_forwards_marker_and_strips_talker_extension_and_padding():
    fanout = ChannelFanout(1)
    cap = Capture()
    fanout.add(output(cap))
    fanout.forward("A", rtp(1, 0, b"voice", marker=True, extension=b"\x10\x01\x00\x00", padding=3, csrcs=(1, 2)))
    [p] = cap.parsed
    assert p["marker"] is True
    assert p["payload"] == b"voice"
    assert not p["x"] and not p["p"] and p["cc"] == 0
    assert len(cap.packets[0]) == 12 + len(b"voice")


def test_fanout_add_is_idempotent_and_remove_tolerates_absent():
    fanout = ChannelFanout(1)
    cap = Capture()
    out = output(cap)
    fanout.add(out)
    fanout.add(out)
    assert fanout.outputs == [out]
    fanout.forward("A", rtp(1, 0))
    assert len(cap.packets) == 1
    fanout.remove(out)
    fanout.remove(out)
    fanout.forward("A", rtp(2, FRAME_SAMPLES))
    assert len(cap.packets) == 1  # removed: nothing more
    assert fanout.outputs == []


def test_readding_an_output_resyncs_it():
    # Mute then unmute: the listener missed packets; its stream must continue at its own
    # next sequence number with the timestamp advanced by the time it was out.
    clock = Clock()
    fanout = ChannelFanout(1, clock=clock)
    cap = Capture()
    out = output(cap, clock)
    fanout.add(out)
    fanout.forward("A", rtp(10, 1000))
    fanout.remove(out)
    for i in range(1, 50):  # 49 packets the muted listener does not get
        clock.now += 0.02
        fanout.forward("A", rtp(10 + i, 1000 + i * FRAME_SAMPLES))
    clock.now += 0.02
    fanout.add(out)
    fanout.forward("A", rtp(60, 1000 + 50 * FRAME_SAMPLES))
    a, b = cap.parsed
    assert seq_step(a["seq"], b["seq"]) == 1
    assert abs(ts_step(a["ts"], b["ts"]) - 1.0 * CLOCK_RATE) <= 1


def test_two_listeners_get_independent_streams():
    fanout = ChannelFanout(1)
    caps = [Capture(), Capture()]
    outs = [output(caps[0], ssrc=1), output(caps[1], ssrc=2)]
    set_line(outs[0], seq=100)
    set_line(outs[1], seq=20000)
    for out in outs:
        fanout.add(out)
    fanout.forward("A", rtp(5, 0))
    assert caps[0].parsed[0]["seq"] == 101
    assert caps[1].parsed[0]["seq"] == 20001
    assert caps[0].parsed[0]["ssrc"] == 1 and caps[1].parsed[0]["ssrc"] == 2


def test_initial_sequence_is_in_the_lower_half():
    # RFC 3550 random start, but low enough that an early wrap cannot confuse SRTP.
    for _ in range(200):
        out = output(Capture())
        assert 0 <= last_seq(out) < 0x8000


# --- a talker's stream that restarts or repeats itself ------------------------------------


def steps(capture: Capture) -> list[int]:
    seqs = [p["seq"] for p in capture.parsed]
    return [seq_step(a, b) for a, b in zip(seqs, seqs[1:])]


def test_a_second_ssrc_of_one_talker_starts_a_new_contiguous_run():
    fanout, cap = ChannelFanout(1), Capture()
    fanout.add(output(cap))
    lease = object()
    for n in range(3):
        fanout.forward(lease, rtp(100 + n, n * FRAME_SAMPLES, ssrc=1))
    for n in range(3):  # 20,000 ahead, another SSRC: far outside SRTP's replay window
        fanout.forward(lease, rtp(20_100 + n, 7_000_000 + n * FRAME_SAMPLES, ssrc=2))
    fanout.forward(lease, rtp(103, 3 * FRAME_SAMPLES, ssrc=1))
    assert steps(cap) == [1] * 6
    timestamps = [p["ts"] for p in cap.parsed]
    assert all(0 < ts_step(a, b) < CLOCK_RATE for a, b in zip(timestamps, timestamps[1:]))


def test_a_sequence_restart_within_one_ssrc_stays_contiguous():
    cap = Capture()
    out = output(cap)
    for seq in (5000, 5001, 5002, 10, 11):  # the sender restarted its sequence
        send_packet(out, "A", rtp(seq, seq * FRAME_SAMPLES))
    assert steps(cap) == [1, 1, 1, 1]


def test_a_repeated_packet_is_dropped_and_a_late_one_passes():
    cap = Capture()
    out = output(cap)
    for seq in (10, 11, 12, 12, 14, 13):
        send_packet(out, "A", rtp(seq, seq * FRAME_SAMPLES))
    assert [p["seq"] - cap.parsed[0]["seq"] for p in cap.parsed] == [0, 1, 2, 4, 3]



def test_packets_of_different_sizes_built_in_one_buffer_carry_only_their_own_bytes():
    cap = Capture()
    out = output(cap, extension=one_byte_extension_block(3, b"7"))
    long_payload, short_payload = bytes(range(200)), b"\x01\x02\x03"
    out.send("talker", 100, 960, 0, long_payload)
    out.send("talker", 101, 1920, 0x80, short_payload)
    first, second = cap.packets
    assert len(first) == 12 + 8 + 200 and first[20:] == long_payload
    assert len(second) == 12 + 8 + 3 and second[20:] == short_payload
    assert second[12:20] == one_byte_extension_block(3, b"7")  # the template survives
    assert second[1] & 0x80 and not first[1] & 0x80


def test_a_payload_too_large_for_the_buffer_and_trailer_is_dropped():
    cap = Capture()
    out = output(cap, extension=one_byte_extension_block(3, b"7"))
    out.send("talker", 1, 960, 0, b"\x00" * (out.max_payload + 1))
    assert cap.packets == [] and out.packets_sent == 0
    out.send("talker", 2, 1920, 0, b"\x00" * out.max_payload)
    assert len(cap.packets) == 1 and len(cap.packets[0]) == 1500 - 16
