"""The fan-out with its per-copy work in C (server/media/fanout.c), Python as the fallback.

forwarder.py's ListenerOutput and ChannelFanout spend about 7 µs of interpreter time per
copy (header rewrite, SRTP call, queueing), more than libsrtp and the kernel together.
Here one C call per talker packet does all copies: each FastListenerOutput keeps its
sequence and timestamp line in a C struct, and once its connection is checked in Python
(a first copy sent the Python way) it is "armed": the C loop then rewrites, protects and
queues its copies itself until the connection's epoch moves
(server/media/connection_epoch.py), when the next copy goes the Python way again.

`listener_output()` and `channel_fanout()` pick the C classes where the module was built
(setup.py builds it; a machine without a C compiler installs without it), and
forwarder.py's otherwise, or when VPDESK_FANOUT=python asks for them.
"""

from __future__ import annotations

import itertools
import logging
import os
import random
import time
from collections.abc import Callable
from typing import NamedTuple

import pylibsrtp._binding

from .forwarder import SRTP_TRAILER_ROOM, ChannelFanout, ListenerOutput, Outbox, PacketEgress

logger = logging.getLogger(__name__)

try:
    from . import _fanout
except ImportError:  # not built here: the Python path
    _fanout = None

ENV_SWITCH = "VPDESK_FANOUT"


class EgressTarget(NamedTuple):
    """What the C loop needs to send on an egress's behalf (aiortc_hooks.RawRtpWriter.
    fast_egress), valid while the word at `epoch_address` still holds `epoch`. `keep`
    holds the objects those addresses live in."""

    epoch_address: int
    epoch: int
    srtp_address: int
    fd_address: int
    sockaddr: bytes
    keep: tuple


def c_fanout_built() -> bool:
    return _fanout is not None


def c_fanout_enabled() -> bool:
    """Whether new outputs and fan-outs use the C path."""
    return _fanout is not None and os.environ.get(ENV_SWITCH, "c") != "python"


if _fanout is not None:
    _ffi, _lib = _fanout.ffi, _fanout.lib
    _srtp_ffi = pylibsrtp._binding.ffi
    # pylibsrtp links libsrtp in: its srtp_protect is reached through the binding.
    _lib.vp_set_protect(_ffi.cast(
        "vp_protect_fn",
        int(_srtp_ffi.cast("uintptr_t", _srtp_ffi.addressof(pylibsrtp._binding.lib, "srtp_protect"))),
    ))
    _NO_SOCKET = _ffi.new("int *", -1)
    _run_ids = itertools.count(1)  # 0 is "no run" in the C struct


def counters() -> dict[str, int]:
    """The C loop's send counters for this process: copies sent, dropped by a full or
    refusing socket, refused by SRTP."""
    if _fanout is None:
        return {"sent": 0, "dropped": 0, "refused": 0}
    totals = _ffi.new("struct vp_counters *")
    _lib.vp_read_counters(totals)
    return {"sent": totals.sent, "dropped": totals.dropped, "refused": totals.refused}


class FastListenerOutput:
    """forwarder.ListenerOutput's twin whose state lives in a C struct (`state`).

    Not armed, each copy goes the Python way: C rewrites it into the packet buffer,
    the egress protects and sends it, and C records it as sent. An egress that can
    (`fast_egress`) then hands over what the C loop needs to send the next ones itself.
    """

    __slots__ = ("label", "ssrc", "state", "_packet", "_buffer", "_send", "_fast_egress", "_kept",
                 "_clock", "_source", "_source_run")

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
        self._packet = egress.new_buffer()
        view = self._packet.view
        header_len = 12 + len(extension)
        view[12:header_len] = extension  # stays: SRTP leaves headers clear
        self._buffer = _ffi.from_buffer("unsigned char[]", view)
        state = self.state = _ffi.new("struct vp_output *")
        state.buf = self._buffer
        state.header_len = header_len
        state.limit = len(view) - SRTP_TRAILER_ROOM
        state.ssrc = ssrc
        state.first_byte = 0x90 if extension else 0x80
        state.second_byte = payload_type & 0x7F
        # Random starting points, as RFC 3550 asks (see forwarder.ListenerOutput).
        state.last_seq = random.randrange(0, 0x8000)
        state.last_ts = random.randrange(0, 0x1_0000_0000)
        state.fd = _NO_SOCKET
        self._send = egress.send_buffer
        self._fast_egress = getattr(egress, "fast_egress", None)
        self._kept: tuple = ()
        self._clock = clock
        self._source: object = None
        self._source_run = 0

    @property
    def max_payload(self) -> int:
        return self.state.limit - self.state.header_len

    @property
    def packets_sent(self) -> int:
        return self.state.packets_sent

    @property
    def bytes_sent(self) -> int:
        return self.state.bytes_sent

    @property
    def octets_sent(self) -> int:
        return self.state.bytes_sent

    @property
    def last_rtp_timestamp(self) -> int:
        return self.state.last_ts

    @property
    def last_sent_at(self) -> float | None:
        return self.state.last_time if self.state.has_sent else None

    @property
    def armed(self) -> bool:
        """Whether the C loop sends this output's next copy itself."""
        state = self.state
        return state.srtp != _ffi.NULL and state.epoch != _ffi.NULL and state.epoch[0] == state.armed_epoch

    def resync(self) -> None:
        """Forget the current source: the next packet starts a new run (after unmute)."""
        self.state.run = 0

    def send(self, source: object, seq: int, ts: int, marker: int, payload: bytes, now: float | None = None) -> None:
        """Rewrite and send one packet (forwarder.ListenerOutput.send's contract)."""
        if source is not self._source:
            self._source, self._source_run = source, next(_run_ids)
        self.send_run(self._source_run, seq, ts, marker, payload, now)

    def send_run(self, run: int, seq: int, ts: int, marker: int, payload: bytes, now: float | None = None) -> None:
        """send() with the run as the C loop numbers it; the Python way."""
        if now is None:
            now = self._clock()
        state = self.state
        length = _lib.vp_rewrite(state, run, seq, ts, marker, payload, len(payload), now)
        if length and self._send(self._packet, length):
            _lib.vp_commit(state, len(payload), now)
            if self._fast_egress is not None:
                self._arm(self._fast_egress())

    def _arm(self, target: EgressTarget | None) -> None:
        state = self.state
        if target is None:
            state.srtp = _ffi.NULL
            self._kept = ()
            return
        self._kept = target.keep  # the addresses below point into these
        state.epoch = _ffi.cast("uint32_t *", target.epoch_address)
        state.armed_epoch = target.epoch
        state.srtp = _ffi.cast("void *", target.srtp_address)
        state.fd = _ffi.cast("int *", target.fd_address)
        _ffi.memmove(state.name, target.sockaddr, len(target.sockaddr))
        state.name_len = len(target.sockaddr)


class FastChannelFanout(ChannelFanout):
    """forwarder.ChannelFanout whose copies are made by one C call per packet; outputs
    the C loop cannot send for yet (not armed) go the Python way after it."""

    __slots__ = ("_array", "_slow", "_slow_count")

    def __init__(
        self, channel_id: int, clock: Callable[[], float] = time.monotonic, outbox: Outbox | None = None
    ) -> None:
        super().__init__(channel_id, clock=clock, outbox=outbox)
        self._array = None
        self._slow = None
        self._slow_count = _ffi.new("int *")

    def add(self, output: FastListenerOutput) -> None:
        super().add(output)
        self._array = None

    def remove(self, output: FastListenerOutput) -> None:
        super().remove(output)
        self._array = None

    @staticmethod
    def _new_run() -> int:
        return next(_run_ids)

    def _send_copies(
        self, run: int, seq: int, ts: int, marker: int, data: bytes, start: int, end: int,
        exclude: FastListenerOutput | None,
    ) -> int:
        outputs = self.outputs
        if not outputs:
            return 0
        array = self._array
        if array is None:
            array = self._array = _ffi.new("struct vp_output *[]", [o.state for o in outputs])
            self._slow = _ffi.new("int[]", len(outputs))
        if type(data) is not bytes:
            data = bytes(data)
        now = self._clock()
        sent = _lib.vp_fanout(
            array, len(outputs), exclude.state if exclude is not None else _ffi.NULL, run, seq, ts, marker,
            data, start, end - start, now, self._slow, self._slow_count,
        )
        slow_count = self._slow_count[0]
        if slow_count:
            slow, payload, outbox = self._slow, data[start:end], self._outbox
            if outbox is not None:
                outbox.open()
            try:
                for k in range(slow_count):
                    outputs[slow[k]].send_run(run, seq, ts, marker, payload, now)
            finally:
                if outbox is not None:
                    outbox.flush()
        return sent


def listener_output(**kwargs) -> ListenerOutput | FastListenerOutput:
    """A listener output of the kind this process forwards with (ListenerOutput's arguments)."""
    return FastListenerOutput(**kwargs) if c_fanout_enabled() else ListenerOutput(**kwargs)


def channel_fanout(channel_id: int, outbox: Outbox | None = None) -> ChannelFanout:
    """A channel's fan-out of the kind this process forwards with."""
    if c_fanout_enabled():
        return FastChannelFanout(channel_id, outbox=outbox)
    return ChannelFanout(channel_id, outbox=outbox)
