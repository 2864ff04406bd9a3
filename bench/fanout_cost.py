"""Where one forwarded copy's CPU goes: the real fan-out, split into its user-space part
(header rewrite, SRTP) and the socket send, with warm and with cold caches.

The real ChannelFanout, ListenerOutput and aiortc_hooks.RawRtpWriter run against real
libsrtp sessions (AEAD_AES_128_GCM, what aiortc's DTLS negotiates) and real UDP sockets on
loopback; a second process drains the receiving sockets. Only the DTLS and ICE objects
around the writer are stand-ins (their state is "connected" and the nominated pair is the
socket). Three ways out:
- "sendto": a socket per listener, one sendto per copy (aioice's socket per connection,
  the server's `media_port = "off"`);
- "sendmmsg": the server's default, one shared media socket whose batch takes every copy
  of a packet and sends them with one sendmmsg (server/media/udp_batch.py);
- "no send": the writer's send swapped for a no-op: what is left is Python and libsrtp;
- "C": the C fan-out (server/media/fast_fanout.py, fanout.c) on the shared socket: one
  call per packet rewrites, protects and sendmmsg's every copy (where it is built).

- warm: packets back to back, so the N listeners' state stays in the CPU caches;
- cold: one packet every 5 ms with a 4 MiB buffer written in between, as 20 ms of other
  work (the clients, the event loop) leave the caches in a real server. bench/forward.py's
  server measures about what the cold rows show for its fan-out.
- "no send" swaps the socket's sendto for a no-op: what is left is Python and libsrtp.

Run inside a loopback-only namespace (about 30 s):
    unshare -n sh -c 'ip link set lo up && .venv/bin/python bench/fanout_cost.py'
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import selectors
import socket
import sys
import time
import types
from pathlib import Path

import numpy as np
import pylibsrtp
from aiortc.rtcdtlstransport import State as DtlsState

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from server.media import aiortc_hooks as hooks  # noqa: E402
from server.media import fast_fanout  # noqa: E402
from server.media.forwarder import ChannelFanout, ListenerOutput, one_byte_extension_block  # noqa: E402
from server.media.udp_batch import OUTBOX  # noqa: E402

MODES = ("sendto", "sendmmsg", "no send") + (("C",) if fast_fanout.c_fanout_built() else ())
PAYLOAD_BYTES = 70  # the PTT Opus frames of bench/forward.py average 70 bytes


def _drain(ports_out, count: int, seconds: float) -> None:
    """Receive and discard on `count` sockets until `seconds` have passed."""
    selector = selectors.DefaultSelector()
    sockets = []
    for _ in range(count):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ)
        sockets.append(sock)
    ports_out.put([s.getsockname()[1] for s in sockets])
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for key, _ in selector.select(0.5):
            try:
                while True:
                    key.fileobj.recv(2048)
            except BlockingIOError:
                pass


def _srtp_session() -> pylibsrtp.Session:
    policy = pylibsrtp.Policy(
        key=os.urandom(28),
        ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND,
        srtp_profile=pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_128_GCM,
    )
    policy.allow_repeat_tx = True
    return pylibsrtp.Session(policy)


class _Datagram(asyncio.DatagramProtocol):
    def connection_made(self, transport) -> None:
        self.transport = transport


class _SharedTransport:
    """The shared media socket as media_port's per-connection transport shows it."""

    def __init__(self, transport) -> None:
        self._transport = transport
        self.batch = OUTBOX.batch_for(transport.get_extra_info("socket")._sock)

    def get_extra_info(self, name, default=None):
        return self._transport.get_extra_info(name, default)


class _Dtls(types.SimpleNamespace):
    """The DTLS transport's state and statechange event (the C fan-out watches it)."""

    def on(self, event, handler) -> None:
        pass


async def _fanout(ports: list[int], mode: str) -> ChannelFanout:
    loop = asyncio.get_running_loop()
    send = mode != "no send"
    batched = mode in ("sendmmsg", "C")
    fanout_class = fast_fanout.FastChannelFanout if mode == "C" else ChannelFanout
    output_class = fast_fanout.FastListenerOutput if mode == "C" else ListenerOutput
    fanout = fanout_class(1, outbox=OUTBOX if batched else None)
    shared = None
    if batched:
        transport, _ = await loop.create_datagram_endpoint(_Datagram, local_addr=("127.0.0.1", 0))
        shared = types.SimpleNamespace(transport=_SharedTransport(transport))
    for i, port in enumerate(ports):
        if shared is None:
            _, protocol = await loop.create_datagram_endpoint(_Datagram, local_addr=("127.0.0.1", 0))
        else:
            protocol = shared
        pair = types.SimpleNamespace(protocol=protocol, remote_addr=("127.0.0.1", port))
        ice = types.SimpleNamespace(_nominated={1: pair})
        dtls = _Dtls(
            _state=DtlsState.CONNECTED, transport=types.SimpleNamespace(_connection=ice), _tx_srtp=_srtp_session()
        )
        writer = hooks.RawRtpWriter(dtls)
        if not send:
            writer._use_pair(pair)
            writer._sendto = lambda data, addr: None
        fanout.add(output_class(
            ssrc=0x1000 + i, payload_type=111, egress=writer,
            extension=one_byte_extension_block(4, str(i % 10).encode()),
        ))
    return fanout


async def _measure(fanout: ChannelFanout, packets: int, cold: bool, first_seq: int) -> float:
    """Thread CPU µs per copy over `packets` packets through the fan-out."""
    payload = os.urandom(PAYLOAD_BYTES)
    thrash = np.ones(4 << 20, dtype=np.uint8)
    spent = 0
    before = fanout.packets_out
    for k in range(packets):
        seq = first_seq + k
        packet = bytes([0x80, 111]) + seq.to_bytes(2, "big") + (seq * 960).to_bytes(4, "big") + b"\0\0\0\7" + payload
        if cold:
            thrash += 1
            await asyncio.sleep(0.005)
        start = time.thread_time_ns()
        fanout.forward("talker", packet)
        spent += time.thread_time_ns() - start
    copies = fanout.packets_out - before
    return spent / 1e3 / copies


async def main_async(args: argparse.Namespace) -> list[dict]:
    rows = []
    for mode in MODES:
        queue = multiprocessing.Queue()
        drain = multiprocessing.Process(target=_drain, args=(queue, args.listeners, 120), daemon=True)
        drain.start()
        fanout = await _fanout(queue.get(), mode)
        seq = 0
        for cold in (False, True):
            best = None
            for _ in range(args.repeats):
                figure = await _measure(fanout, args.packets, cold, seq)
                seq += args.packets
                best = figure if best is None else min(best, figure)
            rows.append({"caches": "cold" if cold else "warm", "mode": mode, "us_per_copy": round(best, 2)})
        drain.kill()
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--listeners", type=int, default=200)
    parser.add_argument("--packets", type=int, default=200, help="packets per repeat")
    parser.add_argument("--repeats", type=int, default=3, help="the lowest of these is kept")
    args = parser.parse_args()
    rows = asyncio.run(main_async(args))
    by = {(r["caches"], r["mode"]): r["us_per_copy"] for r in rows}
    print(f"fan-out CPU per copy, N = {args.listeners}, lowest of {args.repeats} x {args.packets} packets\n")
    print("| caches | whole copy, sendto per copy (µs) | whole copy, one sendmmsg (µs) "
          "| Python + SRTP, no send (µs) | sending: sendto / sendmmsg (difference, µs) | whole copy, C fan-out (µs) |")
    print("|---|---:|---:|---:|---:|---:|")
    for caches in ("warm", "cold"):
        each, batched, alone = (by[(caches, mode)] for mode in MODES[:3])
        in_c = by.get((caches, "C"))
        print(f"| {caches} | {each:.2f} | {batched:.2f} | {alone:.2f} | {each - alone:.2f} / {batched - alone:.2f} "
              f"| {'–' if in_c is None else f'{in_c:.2f}'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
