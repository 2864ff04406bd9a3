"""server/media/fast_fanout.py and fanout.c: the C fan-out against the Python one, and its
own sends with real libsrtp sessions and real UDP sockets on loopback.

Only the DTLS and ICE objects around aiortc_hooks.RawRtpWriter are stand-ins (a state, an
event emitter, the nominated pair); test_media_port.py runs the C path inside a real
server with real aiortc clients.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import struct
import sys
import time
from types import SimpleNamespace

import pylibsrtp
import pytest
from aiortc.rtcdtlstransport import State as DtlsState
from hypothesis import given, settings, strategies as st

from server.media import aiortc_hooks as hooks
from server.media import fast_fanout
from server.media.forwarder import FRAME_SAMPLES, ChannelFanout, ListenerOutput, one_byte_extension_block
from server.media.udp_batch import Outbox
from tests.server.test_forwarder import Capture, Clock

needs_c = pytest.mark.skipif(not fast_fanout.c_fanout_built(), reason="the C fan-out is not built here")
KEY = bytes(range(28))  # AEAD_AES_128_GCM: 16 bytes of key, 12 of salt


def test_the_c_fanout_is_built_where_it_can_be():
    # setup.py builds it on Linux with a C compiler (scripts/setup.sh installs gcc); a
    # checkout installed before it existed needs `pip install -e .` again.
    if not sys.platform.startswith("linux") or shutil.which("gcc") is None:
        pytest.skip("no C compiler here: the Python path is the one in use")
    assert fast_fanout.c_fanout_built()


def test_the_switch_picks_the_python_path(monkeypatch):
    monkeypatch.setenv(fast_fanout.ENV_SWITCH, "python")
    assert type(fast_fanout.channel_fanout(1)) is ChannelFanout
    egress = Capture()
    assert type(fast_fanout.listener_output(ssrc=1, payload_type=111, egress=egress)) is ListenerOutput


# --- the same output as forwarder.py, packet for packet -----------------------------------


def rtp(seq: int, ts: int, payload: bytes, ssrc: int = 0x5150, marker: bool = False) -> bytes:
    return struct.pack("!BBHII", 0x80, (0x80 if marker else 0) | 96, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc) + payload


# One step of a talker's life: (talker, ssrc, seq step, ts step, seconds later, payload
# length, marker, whether the listener's transport takes it, mute/unmute).
_steps = st.lists(
    st.tuples(
        st.sampled_from(["A", "B"]),
        st.sampled_from([1, 2]),
        st.one_of(st.just(1), st.integers(-40, 40), st.integers(0, 0xFFFF)),
        st.one_of(st.just(FRAME_SAMPLES), st.integers(0, 0xFFFFFFFF)),
        st.one_of(st.just(0.02), st.floats(0, 30)),
        st.one_of(st.integers(1, 200), st.just(1500)),
        st.booleans(),
        st.sampled_from([True, True, True, False]),
        st.sampled_from([None, None, None, None, "resync"]),
    ),
    max_size=60,
)


@needs_c
@settings(max_examples=150, deadline=None)
@given(steps=_steps, start_seq=st.integers(0, 0x7FFF), start_ts=st.integers(0, 0xFFFFFFFF))
def test_c_and_python_outputs_build_the_same_packets(steps, start_seq, start_ts):
    clock = Clock()
    captures = [Capture(), Capture()]
    fanouts = [ChannelFanout(1, clock=clock), fast_fanout.FastChannelFanout(1, clock=clock)]
    extension = one_byte_extension_block(3, b"7")
    python_out = ListenerOutput(ssrc=0xABCD, payload_type=111, egress=captures[0], extension=extension, clock=clock)
    c_out = fast_fanout.FastListenerOutput(
        ssrc=0xABCD, payload_type=111, egress=captures[1], extension=extension, clock=clock
    )
    python_out._last_seq, python_out._last_ts = start_seq, start_ts
    c_out.state.last_seq, c_out.state.last_ts = start_seq, start_ts
    for fanout, out in zip(fanouts, (python_out, c_out)):
        fanout.add(out)
    talkers = {"A": object(), "B": object()}
    seq, ts = 1000, 0
    for talker, ssrc, seq_step, ts_step, later, size, marker, accept, action in steps:
        seq, ts = seq + seq_step, ts + ts_step
        clock.now += later
        for capture in captures:
            capture.accept = accept
        if action == "resync":
            for fanout, out in zip(fanouts, (python_out, c_out)):
                fanout.remove(out)
                fanout.add(out)
        packet = rtp(seq, ts, os.urandom(size), ssrc=ssrc, marker=marker)
        for fanout in fanouts:
            fanout.forward(talkers[talker], packet)
    assert captures[1].packets == captures[0].packets
    assert (c_out.packets_sent, c_out.octets_sent, c_out.last_rtp_timestamp, c_out.last_sent_at) == (
        python_out.packets_sent, python_out.octets_sent, python_out.last_rtp_timestamp, python_out.last_sent_at,
    )
    assert [f.packets_out for f in fanouts[1:]] == [fanouts[0].packets_out]
    assert fanouts[1].bytes_out == fanouts[0].bytes_out


# --- the C loop's own sends: real libsrtp, real sockets -----------------------------------


class Dtls:
    """Stands in for aiortc's RTCDtlsTransport around a RawRtpWriter: its state, its
    statechange event, its SRTP session and the ICE connection's nominated pair."""

    def __init__(self, pair) -> None:
        self._state = DtlsState.CONNECTED
        self._handlers = []
        self._tx_srtp = srtp_session(outbound=True)
        self.transport = SimpleNamespace(_connection=SimpleNamespace(_nominated={1: pair}))

    def on(self, event: str, handler) -> None:
        assert event == "statechange"
        self._handlers.append(handler)

    def set_state(self, state: DtlsState) -> None:
        self._state = state
        for handler in self._handlers:
            handler()


def srtp_session(outbound: bool) -> pylibsrtp.Session:
    policy = pylibsrtp.Policy(
        key=KEY,
        ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND if outbound else pylibsrtp.Policy.SSRC_ANY_INBOUND,
        srtp_profile=pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_128_GCM,
    )
    return pylibsrtp.Session(policy)


class SharedSocket:
    """The server's shared media socket as media_port's per-connection transport shows it."""

    def __init__(self, outbox: Outbox) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.batch = outbox.batch_for(self.sock)
        self.transport = self  # a pair's protocol.transport

    def get_extra_info(self, name, default=None):
        return SimpleNamespace(_sock=self.sock) if name == "socket" else default

    def close(self) -> None:
        self.batch.close()
        self.sock.close()


class Receiver:
    """A listener's socket: receives and decrypts what the fan-out sent it."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(1.0)
        self.address = self.sock.getsockname()
        self._sessions: dict[int, pylibsrtp.Session] = {}  # replay windows are per SSRC

    def receive(self, count: int) -> list[dict]:
        got = []
        for _ in range(count):
            data = self.sock.recv(2048)
            ssrc = struct.unpack("!I", data[8:12])[0]
            session = self._sessions.setdefault(ssrc, srtp_session(outbound=False))
            plain = session.unprotect(data)
            seq, ts = struct.unpack("!HI", plain[2:8])
            got.append({"ssrc": ssrc, "seq": seq, "ts": ts, "payload": plain[12 + 8 :]})
        return got

    def nothing_more(self) -> bool:
        self.sock.settimeout(0.2)
        try:
            self.sock.recv(2048)
        except TimeoutError:
            return True
        return False


def listener(shared: SharedSocket, receiver: Receiver, ssrc: int) -> tuple[fast_fanout.FastListenerOutput, Dtls]:
    pair = SimpleNamespace(protocol=shared, remote_addr=receiver.address)
    dtls = Dtls(pair)
    writer = hooks.RawRtpWriter(dtls)
    out = fast_fanout.FastListenerOutput(
        ssrc=ssrc, payload_type=111, egress=writer, extension=one_byte_extension_block(1, b"a1")
    )
    return out, dtls


@pytest.fixture
def outbox():
    return Outbox()


@pytest.fixture
def one_listener(outbox):
    """A fan-out with one listener output on a shared socket, and that listener's socket."""
    shared, receiver = SharedSocket(outbox), Receiver()
    fanout = fast_fanout.FastChannelFanout(1, outbox=outbox)
    out, dtls = listener(shared, receiver, 0x200)
    fanout.add(out)
    yield SimpleNamespace(shared=shared, receiver=receiver, fanout=fanout, out=out, dtls=dtls)
    shared.close()  # again after a test's own close: harmless


@needs_c
def test_after_one_python_copy_the_c_loop_sends_and_the_listener_decrypts(outbox):
    shared, receiver = SharedSocket(outbox), Receiver()
    fanout = fast_fanout.FastChannelFanout(1, outbox=outbox)
    outs = [listener(shared, receiver, 0x100 + i)[0] for i in range(3)]
    for out in outs:
        fanout.add(out)
    talker = object()
    before, python_before = fast_fanout.counters(), shared.batch.sent
    for n in range(5):
        fanout.forward(talker, rtp(700 + n, 960 * n, b"voice-%d" % n))
    got = receiver.receive(15)
    assert all(out.armed for out in outs)
    assert shared.batch.sent - python_before == 3  # the first copy of each: the Python way
    assert fast_fanout.counters()["sent"] - before["sent"] == 12  # the rest: C
    by_ssrc = {}
    for packet in got:
        by_ssrc.setdefault(packet["ssrc"], []).append(packet)
    assert sorted(by_ssrc) == [0x100, 0x101, 0x102]
    for out in outs:
        packets = by_ssrc[out.ssrc]
        assert [p["payload"] for p in packets] == [b"voice-%d" % n for n in range(5)]
        assert [(p["seq"] - packets[0]["seq"]) & 0xFFFF for p in packets] == [0, 1, 2, 3, 4]
        assert [(p["ts"] - packets[0]["ts"]) & 0xFFFFFFFF for p in packets] == [0, 960, 1920, 2880, 3840]
        assert out.packets_sent == 5 and out.last_rtp_timestamp == packets[-1]["ts"]
    shared.close()


@needs_c
def test_a_connection_change_sends_the_next_copy_the_python_way(one_listener):
    shared, receiver, fanout, out, dtls = (
        one_listener.shared, one_listener.receiver, one_listener.fanout, one_listener.out, one_listener.dtls
    )
    talker = object()
    fanout.forward(talker, rtp(1, 0, b"one"))
    fanout.forward(talker, rtp(2, 960, b"two"))
    assert out.armed
    # The DTLS transport closes: nothing may leave for it, by either path.
    dtls.set_state(DtlsState.CLOSED)
    assert not out.armed
    fanout.forward(talker, rtp(3, 1920, b"three"))
    assert [p["payload"] for p in receiver.receive(2)] == [b"one", b"two"]
    assert receiver.nothing_more()
    assert out.packets_sent == 2
    # ICE nominates another pair (the client moved): the Python path checks it, C follows.
    receiver2 = Receiver()
    dtls._state = DtlsState.CONNECTED
    dtls.transport._connection._nominated[1] = SimpleNamespace(protocol=shared, remote_addr=receiver2.address)
    fanout.forward(talker, rtp(4, 2880, b"four"))
    fanout.forward(talker, rtp(5, 3840, b"five"))
    assert out.armed
    assert [p["payload"] for p in receiver2.receive(2)] == [b"four", b"five"]
    assert receiver.nothing_more()


@needs_c
def test_a_closed_socket_is_never_written_by_the_c_loop(one_listener):
    shared, receiver, fanout, out = one_listener.shared, one_listener.receiver, one_listener.fanout, one_listener.out
    fanout.forward("t", rtp(1, 0, b"one"))
    assert out.armed
    shared.close()
    before = fast_fanout.counters()
    fanout.forward("t", rtp(2, 960, b"two"))
    assert fast_fanout.counters() == before  # left to Python, which the closed batch drops
    assert [p["payload"] for p in receiver.receive(1)] == [b"one"]
    assert receiver.nothing_more()


@needs_c
def test_the_talker_is_excluded_and_one_srtp_refusal_does_not_stop_the_others(outbox):
    shared, receiver = SharedSocket(outbox), Receiver()
    fanout = fast_fanout.FastChannelFanout(1, outbox=outbox)
    (a, _), (b, dtls_b), (c, _), (talker_out, _) = (listener(shared, receiver, s) for s in (1, 2, 3, 4))
    for out in (a, b, c, talker_out):
        fanout.add(out)
    fanout.forward("t", rtp(10, 0, b"first"), exclude=talker_out)
    assert receiver.receive(3) and receiver.nothing_more()
    # b's line is set to send the index its session sent already: libsrtp refuses the
    # replay, and b's line stays where it was.
    b.state.seq_offset -= 1
    b.state.last_seq -= 1
    refused = fast_fanout.counters()["refused"]
    fanout.forward("t", rtp(11, 960, b"second"), exclude=talker_out)
    assert fast_fanout.counters()["refused"] == refused + 1
    got = receiver.receive(2)
    assert sorted(p["ssrc"] for p in got) == [1, 3] and receiver.nothing_more()
    assert (a.packets_sent, b.packets_sent, c.packets_sent, talker_out.packets_sent) == (2, 1, 2, 0)
    assert fanout.packets_out == 6
    shared.close()


@needs_c
def test_hundreds_of_copies_on_two_sockets(outbox):
    # More copies than one sendmmsg chunk (256), on two shared sockets (two ICE addresses).
    sockets = [SharedSocket(outbox), SharedSocket(outbox)]
    receivers = [Receiver(), Receiver()]
    fanout = fast_fanout.FastChannelFanout(1, outbox=outbox)
    counts = [0, 0]
    for i in range(300):
        side = random.Random(i).randrange(2)
        counts[side] += 1
        fanout.add(listener(sockets[side], receivers[side], 0x1000 + i)[0])
    for n in range(3):
        fanout.forward("t", rtp(n, 960 * n, b"copy-%d" % n))
        time.sleep(0.01)  # the receivers' buffers drain between packets
    for receiver, count in zip(receivers, counts):
        got = receiver.receive(3 * count)
        assert sorted({p["payload"] for p in got}) == [b"copy-0", b"copy-1", b"copy-2"]
        assert len({p["ssrc"] for p in got}) == count
        assert receiver.nothing_more()
    assert all(o.armed for o in fanout.outputs)
    for shared in sockets:
        shared.close()
