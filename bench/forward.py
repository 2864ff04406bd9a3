"""Forwarding benchmark: one talker, N listeners, vpdesk's server vs a naive MediaRelay.

For each server and each N, a fresh server process is started (so its CPU and RSS can be
read from /proc/PID), a talker and N listeners connect with the console's own client code
(vpdesk.session.signaling, vpdesk.media.peer), the talker takes the floor and sends
pre-encoded PTT Opus at 50 packets/s, and the listeners count what arrives.

- The talker never encodes: a speech WAV is encoded once (PTT Opus settings) before the
  run, and the packets are written with server.media.aiortc_hooks.RawRtpWriter (SRTP
  protect + sendto) from a paced loop that stamps each packet's send time.
- Listeners never decode: aiortc_hooks.tap_incoming_rtp on each listener's DTLS transport
  records (arrival time, RTP bytes) before aiortc's jitter buffer; their decoder threads are
  stopped.
- Listeners may live in worker processes (--workers) so that the generator keeps up; all
  times are time.perf_counter() (CLOCK_MONOTONIC, shared by every process on the host).

Run inside a loopback-only network namespace:
  unshare -n sh -c 'ip link set lo up && .venv/bin/python bench/forward.py'
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import multiprocessing as mp
import os
import platform
import random
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PASSWORD = "bench-pw"
CHANNEL = "bench"
FRAME_S = 0.020
FRAME_SAMPLES = 960
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


# --- /proc -----------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * PAGE / 2**20


def machine_facts() -> dict:
    import aiohttp
    import aioice
    import aiortc
    import av

    model = "?"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": os.cpu_count(),
        "sched_affinity": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "aiortc": aiortc.__version__,
        "aioice": aioice.__version__,
        "aiohttp": aiohttp.__version__,
        "av": av.__version__,
    }


# --- the pre-encoded source -----------------------------------------------------------


def encoded_source(frames: int, workdir: Path) -> list[bytes]:
    """`frames` PTT Opus packets (20 ms each) of speech, every payload distinct.

    Speech from espeak-ng (tests/audio_tools.speech_wav) when available, else a voiced
    tone; a little noise keeps pauses from encoding to identical packets, so a payload
    identifies its packet (vpdesk forwards payloads byte for byte).
    """
    import av
    import numpy as np
    from aiortc.codecs import opus as aiortc_opus

    from server.media import aiortc_hooks

    rate = 48_000
    n = frames * FRAME_SAMPLES
    try:
        from tests.audio_tools import read_wav, speech_wav

        speech = read_wav(speech_wav(workdir, "Unit four to dispatch, on scene, requesting backup at "
                                              "the north gate, over.", seconds_min=4.0))
    except Exception:  # noqa: BLE001 - espeak-ng/sox missing: a voiced tone will do
        print("source: espeak-ng/sox unavailable, using a voiced tone", file=sys.stderr)
        t = np.arange(4 * rate) / rate
        f0 = 140 + 30 * np.sin(2 * np.pi * 0.7 * t)
        speech = (6000 * np.sin(2 * np.pi * np.cumsum(f0) / rate) * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t)))
    reps = -(-n // len(speech))
    samples = np.tile(np.asarray(speech, dtype=np.float64), reps)[:n]
    rng = np.random.default_rng(7)
    samples = np.clip(samples + rng.normal(0, 40, n), -32768, 32767).astype(np.int16)

    aiortc_hooks.configure_opus_encoder()
    encoder = aiortc_opus.OpusEncoder()
    packets: list[bytes] = []
    i = 0
    while len(packets) < frames:
        chunk = samples[(i * FRAME_SAMPLES) % n:][:FRAME_SAMPLES]
        if len(chunk) < FRAME_SAMPLES:
            chunk = np.concatenate([chunk, samples[: FRAME_SAMPLES - len(chunk)]])
        frame = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = rate
        frame.pts = i * FRAME_SAMPLES
        payloads, _ = encoder.encode(frame)
        packets.extend(payloads)
        i += 1
    return packets[:frames]


# --- clients ---------------------------------------------------------------------------



async def stop_process(proc) -> None:
    """SIGTERM, up to 10 s to exit, then SIGKILL."""
    proc.terminate()
    for _ in range(100):  # bounded: 10 s
        if proc.poll() is not None:
            return
        await asyncio.sleep(0.1)
    proc.kill()
    proc.wait(5)


async def wait_healthy(proc, url: str, log, what: str = "server") -> None:
    """Wait (at most 20 s) until `proc`'s /api/health answers 200; fail if it exits."""
    import aiohttp

    async with aiohttp.ClientSession() as http:
        for _ in range(200):  # bounded: 20 s
            if proc.poll() is not None:
                raise RuntimeError(f"{what} exited: see {log}")
            with contextlib.suppress(aiohttp.ClientError, OSError):
                async with http.get(url + "/api/health") as r:
                    if r.status == 200:
                        return
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{what} did not come up: see {log}")

class Client:
    """A logged-in session with one peer connection (mic m-line + `slots` receive slots)."""

    def __init__(self) -> None:
        self.http = None
        self.signaling = None
        self.peer = None
        self.arrivals: list[tuple[float, bytes]] = []
        self.mid: str | None = None

    @classmethod
    async def connect(cls, url: str, token: str, channel: int | None, *, listen: bool) -> "Client":
        import aiohttp

        from server.media import aiortc_hooks
        from vpdesk.media.peer import ClientPeer
        from vpdesk.session.signaling import SignalingClient

        self = cls()
        self.http = aiohttp.ClientSession()
        self.signaling = await SignalingClient.connect(url, session=self.http)
        await self.signaling.hello(token, name="bench")
        # A parked microphone keeps the sender's RTP loop asleep (no 20 ms polling).
        self.peer = ClientPeer(1, aiortc_hooks.ParkedTrack())
        offer = await self.peer.create_offer()
        answer = await self.signaling.request("offer", sdp=offer, timeout=30)
        await self.peer.apply_answer(answer["sdp"])
        if listen:
            arrivals = self.arrivals
            now = time.perf_counter

            def tap(data: bytes) -> None:
                arrivals.append((now(), data))

            aiortc_hooks.tap_incoming_rtp(aiortc_hooks.dtls_transport_of(self.peer.pc), tap)
        await self.peer.wait_connected(timeout=30)
        for t in self.peer.pc.getTransceivers()[1:]:
            # Tapped RTP never reaches the receivers: their decoder threads would idle.
            aiortc_hooks.stop_receiver_decoder(t.receiver)
        if listen and channel is not None:
            self.mid = (await self.signaling.request("join", channel=channel, timeout=30))["mid"]
        return self

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            if self.peer is not None:
                await self.peer.close()
        with contextlib.suppress(Exception):
            if self.signaling is not None:
                await self.signaling.close()
        with contextlib.suppress(Exception):
            await self.http.close()


async def login_token(url: str, user: str) -> str:
    from vpdesk.session.signaling import login

    return (await login(url, user, PASSWORD))["token"]


def quiet_gc() -> None:
    """Move everything alive now out of the collector's sight: a full collection over
    hundreds of peer connections stalls a generator loop for ~100 ms, which would show
    up as (client-side) latency that the server did not add."""
    gc.collect()
    gc.freeze()


class ListenerGroup:
    """Listeners on this process's loop."""

    def __init__(self) -> None:
        self.clients: list[Client] = []

    async def connect(self, url: str, user: str, channel: int, count: int, batch: int = 10,
                      host_addresses: list[str] | None = None) -> int:
        from server.media import aiortc_hooks

        aiortc_hooks.use_host_addresses(host_addresses or ["127.0.0.1"])
        token = await login_token(url, user)
        return await self._connect_batches(lambda: Client.connect(url, token, channel, listen=True), count, batch)

    async def _connect_batches(self, connect_one, count: int, batch: int) -> int:
        """Connect `count` listeners, `batch` at a time; the ones that fail are reported."""
        for start in range(0, count, batch):
            n = min(batch, count - start)
            results = await asyncio.gather(*(connect_one() for _ in range(n)), return_exceptions=True)
            for r in results:
                if isinstance(r, BaseException):
                    print(f"  listener failed to connect: {r!r}", file=sys.stderr)
                else:
                    self.clients.append(r)
        return len(self.clients)

    async def reset(self) -> None:
        for c in self.clients:
            c.arrivals.clear()
        quiet_gc()

    async def collect(self) -> list[list[tuple[float, bytes]]]:
        return [list(c.arrivals) for c in self.clients]

    async def close(self) -> None:
        await asyncio.gather(*(c.close() for c in self.clients), return_exceptions=True)
        self.clients.clear()

    @property
    def pid(self) -> int:
        return os.getpid()


def _worker_main(conn, group_class=None) -> None:
    import logging

    logging.basicConfig(level=logging.WARNING)
    asyncio.run(_worker_loop(conn, group_class or ListenerGroup))


async def _worker_loop(conn, group_class) -> None:
    group = group_class()
    loop = asyncio.get_running_loop()
    while True:
        command, args = await loop.run_in_executor(None, conn.recv)
        if command == "exit":
            await group.close()
            conn.send(None)
            return
        try:
            result = await getattr(group, command)(*args)
        except Exception as exc:  # noqa: BLE001 - report to the parent
            result = exc
        conn.send(result)


class RemoteGroup:
    """A ListenerGroup in a worker process, driven over a pipe.

    `group_class` (importable by the spawned process, with ListenerGroup's connect / reset /
    collect / close coroutines) lets other clients' listeners run the same way.
    """

    def __init__(self, group_class: type | None = None) -> None:
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_worker_main, args=(child, group_class), daemon=True)
        self.process.start()
        self._lock = asyncio.Lock()

    async def _call(self, command: str, *args):
        async with self._lock:
            self._conn.send((command, args))
            loop = asyncio.get_running_loop()
            result = await asyncio.wait_for(loop.run_in_executor(None, self._conn.recv), 300)
        if isinstance(result, Exception):
            raise result
        return result

    async def connect(self, *args):
        return await self._call("connect", *args)

    async def reset(self):
        return await self._call("reset")

    async def collect(self):
        return await self._call("collect")

    async def close(self):
        return await self._call("close")

    async def exit(self):
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._call("exit"), 20)
        self.process.join(5)
        if self.process.is_alive():
            self.process.kill()

    @property
    def pid(self) -> int:
        return self.process.pid


# --- the talker ------------------------------------------------------------------------


class Talker:
    """Sends pre-encoded Opus on its microphone m-line at 50 packets/s, stamping each."""

    def __init__(self, client: Client | None, payloads: list[bytes], pc=None) -> None:
        """`pc`: another client's connected RTCPeerConnection (its first transceiver sends);
        by default the Client's own."""
        from server.media import aiortc_hooks

        self.client = client
        self.payloads = payloads
        pc = pc if pc is not None else client.peer.pc
        mic = pc.getTransceivers()[0]
        self.ssrc = mic.sender._ssrc
        self.pt = aiortc_hooks.negotiated_opus_payload_type(mic)
        self.writer = aiortc_hooks.RawRtpWriter(aiortc_hooks.dtls_transport_of(pc))
        self.seq0 = random.randrange(0, 0x8000)
        self.ts0 = random.randrange(0, 2**32)
        self.sent: list[float] = []  # send time of packet i (seq0 + i)
        self.late = 0

    async def run(self, duration: float) -> None:
        pack = struct.Struct("!BBHII").pack
        now = time.perf_counter
        t0 = now() + 0.005
        count = min(int(duration / FRAME_S), len(self.payloads))
        for i in range(count):
            due = t0 + i * FRAME_S
            delay = due - now()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -FRAME_S:
                self.late += 1
            packet = pack(0x80, self.pt | (0x80 if i == 0 else 0), (self.seq0 + i) & 0xFFFF,
                          (self.ts0 + i * FRAME_SAMPLES) & 0xFFFFFFFF, self.ssrc) + self.payloads[i]
            self.sent.append(now())
            self.writer.write(packet)


# --- servers ---------------------------------------------------------------------------


async def idle_cpu_rates(pids: dict[str, int], seconds: float) -> dict[str, float]:
    """Each process's CPU seconds per second over `seconds` of waiting (nobody talking)."""
    before, start = {k: cpu_seconds(p) for k, p in pids.items()}, time.perf_counter()
    await asyncio.sleep(seconds)
    elapsed = time.perf_counter() - start
    return {k: (cpu_seconds(p) - before[k]) / elapsed for k, p in pids.items()}


async def start_talking(client: Client, channel: int, groups: list, payloads: list[bytes]) -> "Talker":
    """Take the floor on `channel`, clear the listeners' counts, and return the talker
    ready to send (the collector quieted first)."""
    grant = await client.signaling.request("floor_request", channel=channel)
    if not grant.get("granted"):
        raise RuntimeError(f"floor not granted: {grant}")
    for group in groups:
        await group.reset()
    talker = Talker(client, payloads)
    quiet_gc()
    return talker


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ServerProc:
    kind: str  # "vpdesk" | "naive"
    data_dir: Path
    port: int = 0
    proc: subprocess.Popen | None = None
    log: Path | None = None
    # Where it listens (HTTP and ICE), and what its command runs under (e.g. `ip netns exec NS`).
    host: str = "127.0.0.1"
    prefix: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def provision(self) -> None:
        if self.kind != "vpdesk":
            return
        cli = [sys.executable, "-m", "server", "--data", str(self.data_dir)]
        for args in (
            ["user", "add", "talker", "--role", "dispatch", "--password", PASSWORD],
            ["user", "add", "listener", "--role", "dispatch", "--password", PASSWORD],
            ["channel", "add", CHANNEL],
            ["member", "add", "talker", CHANNEL],
            ["member", "add", "listener", CHANNEL],
        ):
            subprocess.run(cli + args, check=True, cwd=ROOT, capture_output=True)

    async def start(self) -> None:
        self.port = free_port()
        self.log = self.data_dir / f"{self.kind}-{self.port}.log"
        where = ["--listen", f"{self.host}:{self.port}", "--ice-address", self.host]
        if self.kind == "vpdesk":
            cmd = [sys.executable, "-m", "server", "--data", str(self.data_dir), *where]
            if self.host != "127.0.0.1":
                cmd.append("--plain-http")  # a private veth, not a network
        else:
            cmd = [sys.executable, str(ROOT / "bench" / "relay_server.py"), *where]
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(self.prefix + cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        await wait_healthy(self.proc, self.url, self.log, f"{self.kind} server")

    async def stats(self, token: str) -> dict | None:
        if self.kind != "vpdesk":
            return None
        import aiohttp

        async with aiohttp.ClientSession() as http:
            async with http.get(self.url + "/api/stats", headers={"Authorization": f"Bearer {token}"}) as r:
                return await r.json()

    async def stop(self) -> None:
        if self.proc is not None:
            await stop_process(self.proc)
            self.proc = None



# --- optional wire capture: AF_PACKET on lo (or a veth), kernel timestamps -------------

SO_TIMESTAMPNS = 35
SO_ATTACH_FILTER = 26
ETH_P_ALL = 0x0003
ETH_P_IP = 0x0800


def rtp_key(body: bytes) -> tuple[int, int] | None:
    """(SSRC, seq) of an RTP/SRTP packet's UDP payload; None for anything else (STUN,
    DTLS, RTCP)."""
    if len(body) < 12 or body[0] >> 6 != 2 or 192 <= body[1] <= 223:
        return None
    return int.from_bytes(body[8:12], "big"), (body[2] << 8) | body[3]


def _capture_main(conn, classify=rtp_key, snap: int = 64, interface: str = "lo") -> None:
    """Record (kernel time, *classify(UDP payload)) of every UDP packet on `interface` that
    `classify` names (by default RTP/SRTP: (SSRC, seq)).

    A classic BPF filter keeps only IPv4 UDP, and only the first `snap` bytes (IP + UDP + the RTP header, which SRTP leaves in the clear).
    Runs in its own process until the parent sends anything on `conn`.
    """
    import ctypes

    # On lo, bound to ETH_P_IP (not ETH_P_ALL), the socket sees each packet once, on lo's
    # receive side, which loopback_xmit reaches inside the sender's sendto(). On any
    # other interface (a veth end) ETH_P_ALL is needed to see what this host sends as
    # well as what it receives: outgoing packets are stamped as they leave for the driver.
    proto = ETH_P_IP if interface == "lo" else ETH_P_ALL
    s = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(proto))
    prog = [
        (0x30, 0, 0, 0),                            # ldb ip[0]
        (0x54, 0, 0, 0xF0),                         # & 0xf0: the version nibble
        (0x15, 0, 3, 0x40),                         # == IPv4, else drop
        (0x30, 0, 0, 9),                            # ldb ip->protocol
        (0x15, 0, 1, 17),                           # == UDP, else drop
        (0x06, 0, 0, snap),                         # accept snap bytes
        (0x06, 0, 0, 0),                            # drop
    ]
    raw = b"".join(struct.pack("HBBI", *ins) for ins in prog)
    buf = ctypes.create_string_buffer(raw)
    s.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, struct.pack("HL", len(prog), ctypes.addressof(buf)))
    s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 * 2**20)
    s.bind((interface, 0))
    s.settimeout(0.1)
    records: list[tuple[float, int, int]] = []
    append = records.append
    anc = socket.CMSG_SPACE(16)
    unpack_ts = struct.Struct("qq").unpack
    conn.send("ready")
    while not conn.poll():
        try:
            data, ancdata, _, _ = s.recvmsg(snap, anc)
        except TimeoutError:
            continue
        key = classify(data[(data[0] & 0x0F) * 4 + 8:])  # past the IP and UDP headers
        if key is None:
            continue
        for level, kind, value in ancdata:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                sec, nsec = unpack_ts(value[:16])
                append((sec + nsec * 1e-9, *key))
    conn.recv()
    conn.send(records)


class WireCapture:
    """A capture process on `interface` (lo by default): start() before the talk, stop()
    returns its records. `classify` (a module-level function, so the spawned process can
    import it) picks the packets and their keys; see _capture_main."""

    def __init__(self, classify=rtp_key, interface: str = "lo") -> None:
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_capture_main, args=(child, classify, 64, interface), daemon=True)

    async def start(self) -> None:
        self.process.start()
        loop = asyncio.get_running_loop()
        ready = await asyncio.wait_for(loop.run_in_executor(None, self._conn.recv), 30)
        assert ready == "ready"

    async def stop(self) -> list[tuple[float, int, int]]:
        self._conn.send("stop")
        loop = asyncio.get_running_loop()
        records = await asyncio.wait_for(loop.run_in_executor(None, self._conn.recv), 60)
        self.process.join(5)
        if self.process.is_alive():
            self.process.kill()
        return records

    @property
    def pid(self) -> int:
        return self.process.pid


def wire_latency(talker: "Talker", records, mapping: dict[int, tuple[int, int]], window_idx: set[int],
                 n: int) -> dict:
    """SFU-added latency from kernel timestamps: talker packet out -> listener copy out."""
    t_in: dict[int, float] = {}
    last: dict[int, float] = {}
    copies: dict[int, int] = {}
    all_lat: list[float] = []
    for t, ssrc, seq in records:
        if ssrc == talker.ssrc:
            t_in.setdefault((seq - talker.seq0) & 0xFFFF, t)
    for t, ssrc, seq in records:
        m = mapping.get(ssrc)
        if m is None:
            continue
        base, first_seq = m
        idx = base + ((seq - first_seq) & 0xFFFF)
        if idx not in window_idx or idx not in t_in:
            continue
        lat = t - t_in[idx]
        all_lat.append(lat)
        copies[idx] = copies.get(idx, 0) + 1
        if lat > last.get(idx, -1.0):
            last[idx] = lat
    complete = [v for i, v in last.items() if copies[i] == n]
    ms = 1000.0
    return {
        "wire_packets_captured": len(records),
        "wire_last_copy_packets": len(complete),
        "wire_latency_last_p50_ms": _none_scale(_pct(complete, 50), ms),
        "wire_latency_last_p99_ms": _none_scale(_pct(complete, 99), ms),
        "wire_latency_all_p50_ms": _none_scale(_pct(all_lat, 50), ms),
        "wire_latency_all_p99_ms": _none_scale(_pct(all_lat, 99), ms),
    }


# --- one measurement point ---------------------------------------------------------------


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    k = min(len(values) - 1, max(0, int(round(q / 100 * (len(values) - 1)))))
    return values[k]


def analyse(kind: str, talker: Talker, arrivals: list[list[tuple[float, bytes]]],
            payloads: list[bytes], ws: float, we: float) -> dict:
    """Delivered packets in the window, and per-packet latency of the last copy.

    Every server but the naive baseline (`kind` "naive", which re-encodes) forwards Opus
    payloads byte for byte, so a payload names its packet.
    """
    from server.media.forwarder import MalformedRtp, rtp_payload_bounds

    forwards_payloads = kind != "naive"

    sent = talker.sent
    in_window = [i for i, t in enumerate(sent) if ws <= t < we]
    index_of_payload = {p: i for i, p in enumerate(payloads[: len(sent)])}
    delivered = 0
    misaligned = 0
    last_copy: dict[int, float] = {}
    copies: dict[int, int] = {}
    all_lat: list[float] = []
    mapping: dict[int, tuple[int, int]] = {}
    first_idx = set(in_window)
    for listener in arrivals:
        delivered += sum(1 for t, _ in listener if ws <= t < we)
        if not listener:
            continue
        # Map the listener's sequence numbers to the talker's packet index.
        t_first, first = listener[0]
        first_seq = (first[2] << 8) | first[3]
        if forwards_payloads:
            # Payloads are forwarded byte for byte: the first packet's payload names it.
            try:
                a, b = rtp_payload_bounds(first)
                base = index_of_payload[first[a:b]]
            except (MalformedRtp, KeyError):
                misaligned += len(listener)
                continue
        else:
            base = 0  # re-encoded: the first packet out is the first packet in (fresh server)
        mapping[int.from_bytes(first[8:12], "big")] = (base, first_seq)
        for t, data in listener:
            idx = base + ((((data[2] << 8) | data[3]) - first_seq) & 0xFFFF)
            if idx >= len(sent):
                misaligned += 1
                continue
            if forwards_payloads:
                a, b = rtp_payload_bounds(data)
                if data[a:b] != payloads[idx]:
                    misaligned += 1
                    continue
            if idx in first_idx:
                lat = t - sent[idx]
                all_lat.append(lat)
                copies[idx] = copies.get(idx, 0) + 1
                if lat > last_copy.get(idx, -1.0):
                    last_copy[idx] = lat
    n = len(arrivals)
    complete = [last_copy[i] for i in in_window if copies.get(i) == n]
    ms = 1000.0
    return {
        "talker_packets_in_window": len(in_window),
        "delivered_in_window": delivered,
        # Copies of the packets the talker sent in the window that reached a listener
        # (whenever): the loss figure, free of window-edge effects.
        "received_of_window_packets": sum(copies.values()),
        "misaligned": misaligned,
        "last_copy_packets": len(complete),
        "latency_last_p50_ms": _none_scale(_pct(complete, 50), ms),
        "latency_last_p99_ms": _none_scale(_pct(complete, 99), ms),
        "latency_all_p50_ms": _none_scale(_pct(all_lat, 50), ms),
        "latency_all_p99_ms": _none_scale(_pct(all_lat, 99), ms),
    }, mapping


def _none_scale(v: float | None, k: float) -> float | None:
    return None if v is None else round(v * k, 2)


async def run_point(server: ServerProc, n: int, groups: list, payloads: list[bytes],
                    args: argparse.Namespace) -> dict:
    await server.start()
    try:
        talker_token = await login_token(server.url, "talker")
        talker_client = await Client.connect(server.url, talker_token, None, listen=False)
        hello_channels = await _channels(server, talker_token)
        channel = hello_channels[CHANNEL]
        # Spread the listeners over the groups.
        shares = [n // len(groups) + (1 if i < n % len(groups) else 0) for i in range(len(groups))]
        t_connect = time.perf_counter()
        connected = await asyncio.gather(*(
            g.connect(server.url, "listener", channel, k) for g, k in zip(groups, shares) if k
        ))
        t_connect = time.perf_counter() - t_connect
        connected_n = sum(connected)
        await asyncio.sleep(1.0)
        # Idle cost: N connected listeners, nobody talking.
        pid = server.proc.pid
        c0, t0 = cpu_seconds(pid), time.perf_counter()
        await asyncio.sleep(args.idle)
        idle_cpu = (cpu_seconds(pid) - c0) / (time.perf_counter() - t0)

        grant = await talker_client.signaling.request("floor_request", channel=channel)
        if not grant.get("granted"):
            raise RuntimeError(f"floor not granted: {grant}")
        for g in groups:
            await g.reset()
        talker = Talker(talker_client, payloads)
        quiet_gc()
        capture = WireCapture() if args.wire else None
        if capture is not None:
            await capture.start()
        gen_pids = sorted({os.getpid()} | {g.pid for g in groups})
        marks: dict[str, tuple[float, float, list[float]]] = {}

        async def mark(name: str, at: float) -> None:
            await asyncio.sleep(max(0.0, at - time.perf_counter()))
            marks[name] = (time.perf_counter(), cpu_seconds(pid), [cpu_seconds(p) for p in gen_pids],
                           cpu_seconds(capture.pid) if capture is not None else 0.0)

        start = time.perf_counter()
        total = args.warmup + args.seconds + 0.3
        await asyncio.gather(
            talker.run(total),
            mark("start", start + args.warmup),
            mark("end", start + args.warmup + args.seconds),
        )
        rss = rss_mib(pid)
        await asyncio.sleep(args.grace)
        await talker_client.signaling.request("floor_release", channel=channel)
        stats = await server.stats(talker_token)
        arrivals: list = []
        for g in groups:
            arrivals.extend(await g.collect())
        ws, cpu_s0, gen0, cap0 = marks["start"]
        we, cpu_s1, gen1, cap1 = marks["end"]
        records = await capture.stop() if capture is not None else []
        window = we - ws
        result, mapping = analyse(server.kind, talker, arrivals, payloads, ws, we)
        if capture is not None:
            window_idx = {i for i, t in enumerate(talker.sent) if ws <= t < we}
            result.update(wire_latency(talker, records, mapping, window_idx, n))
            result["capture_cpu_pct"] = round(100 * (cap1 - cap0) / (we - ws), 1)
        expected = result["talker_packets_in_window"] * n
        delivered = result["delivered_in_window"]
        server_cpu = cpu_s1 - cpu_s0
        result.update({
            "server": server.kind,
            "listeners": n,
            "connected": connected_n,
            "connect_s": round(t_connect, 1),
            "window_s": round(window, 3),
            "server_cpu_s": round(server_cpu, 3),
            "server_cpu_pct": round(100 * server_cpu / window, 1),
            "server_idle_cpu_pct": round(100 * idle_cpu, 2),
            "cpu_us_per_packet": round(1e6 * server_cpu / delivered, 1) if delivered else None,
            # The same, less what the server spends with N listeners connected and silent.
            "cpu_us_per_packet_above_idle": (
                round(1e6 * (server_cpu - idle_cpu * window) / delivered, 1) if delivered else None),
            "expected_in_window": expected,
            "delivered_pct": (round(100 * result["received_of_window_packets"] / expected, 2)
                              if expected else None),
            "server_rss_mib": round(rss, 1),
            "generator_cpu_pct": round(100 * (sum(gen1) - sum(gen0)) / window, 1),
            "generator_processes": len(gen_pids),
            "talker_late_sends": talker.late,
            "server_stats": stats,
        })
        await talker_client.close()
        return result
    finally:
        for g in groups:
            with contextlib.suppress(Exception):
                await g.close()
        await server.stop()


async def _channels(server: ServerProc, token: str) -> dict[str, int]:
    from vpdesk.session.signaling import SignalingClient

    sig = await SignalingClient.connect(server.url)
    try:
        hello = await sig.hello(token, name="bench-probe")
        return {c["name"]: c["id"] for c in hello["channels"]}
    finally:
        await sig.close()


# --- output ----------------------------------------------------------------------------


def table(results: list[dict], skipped: list[tuple[str, int, str]]) -> str:
    def f(v, fmt="{:,.1f}"):
        return "–" if v is None else fmt.format(v)

    head = ("| server | N | server CPU µs / forwarded packet (above idle) | delivered / expected | "
            "client latency p50 / p99, last copy (ms) | wire latency p50 / p99, last copy (ms) | server CPU % | server RSS (MiB) | generator CPU % |")
    rows = [head, "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    label = {"vpdesk": "vpdesk", "naive": "naive MediaRelay"}
    for r in results:
        rows.append(
            f"| {label[r['server']]} | {r['listeners']} | {f(r['cpu_us_per_packet'])} "
            f"({f(r['cpu_us_per_packet_above_idle'])}) | "
            f"{r['received_of_window_packets']:,} / {r['expected_in_window']:,} ({f(r['delivered_pct'], '{:.1f}')} %) | "
            f"{f(r['latency_last_p50_ms'], '{:.1f}')} / {f(r['latency_last_p99_ms'], '{:.1f}')} | "
            f"{f(r.get('wire_latency_last_p50_ms'), '{:.2f}')} / {f(r.get('wire_latency_last_p99_ms'), '{:.2f}')} | "
            f"{f(r['server_cpu_pct'], '{:.0f}')} | {f(r['server_rss_mib'], '{:.0f}')} | "
            f"{f(r['generator_cpu_pct'], '{:.0f}')} |"
        )
    for kind, n, why in skipped:
        rows.append(f"| {label[kind]} | {n} | skipped: {why} | | | | | | |")
    return "\n".join(rows)


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    styles = {"vpdesk": ("vpdesk (tap + rewrite + SRTP)", "tab:blue"),
              "naive": ("naive MediaRelay (decode + re-encode)", "tab:red")}
    for kind, (label, color) in styles.items():
        rs = [r for r in results if r["server"] == kind and r["cpu_us_per_packet"]]
        if not rs:
            continue
        ns = [r["listeners"] for r in rs]
        ax1.plot(ns, [r["cpu_us_per_packet"] for r in rs], "o-", color=color, label=label)
        for r in rs:
            if r["delivered_pct"] is not None and r["delivered_pct"] < 99:
                ax1.annotate(f"{r['delivered_pct']:.0f}% delivered", (r["listeners"], r["cpu_us_per_packet"]),
                             textcoords="offset points", xytext=(4, 6), fontsize=8, color=color)
        lat = [r for r in rs if r["latency_last_p50_ms"] is not None]
        ax2.plot([r["listeners"] for r in lat], [r["latency_last_p50_ms"] for r in lat], "o-",
                 color=color, label=f"{kind} p50")
        ax2.plot([r["listeners"] for r in lat], [r["latency_last_p99_ms"] for r in lat], "s--",
                 color=color, label=f"{kind} p99")
        wire = [r for r in lat if r.get("wire_latency_last_p50_ms") is not None]
        if wire:
            ax2.plot([r["listeners"] for r in wire], [r["wire_latency_last_p50_ms"] for r in wire], "^:",
                     color=color, alpha=0.6, label=f"{kind} p50, wire (lo capture)")
    ax1.axhline(30, color="gray", linestyle=":", label="target 30 µs")
    for ax in (ax1, ax2):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("listeners N (one talker, 50 packets/s)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    ax1.set_ylabel("server CPU µs per forwarded packet")
    ax1.set_title("Server CPU per forwarded packet")
    ax2.set_ylabel("ms")
    ax2.set_title("One-way latency through the server, last copy (loopback)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


# --- main ------------------------------------------------------------------------------


async def main_async(args: argparse.Namespace) -> int:
    import logging

    logging.basicConfig(level=logging.WARNING)
    from server.media import aiortc_hooks

    aiortc_hooks.use_host_addresses(["127.0.0.1"])
    work = Path(tempfile.mkdtemp(prefix="vpdesk-forward-"))
    ns = [int(x) for x in args.listeners.split(",")]
    kinds = [k.strip() for k in args.servers.split(",")]
    frames = int((args.warmup + args.seconds + 1.0) / FRAME_S) + 10
    payloads = encoded_source(frames, work)
    distinct = len(set(payloads))
    print(f"source: {len(payloads)} pre-encoded Opus packets ({distinct} distinct), "
          f"mean {statistics.mean(len(p) for p in payloads):.0f} bytes", file=sys.stderr)
    facts = machine_facts()
    print(f"machine: {facts}", file=sys.stderr)

    groups: list = [RemoteGroup() for _ in range(args.workers)] if args.workers else [ListenerGroup()]
    results: list[dict] = []
    skipped: list[tuple[str, int, str]] = []
    deadline = time.monotonic() + args.max_minutes * 60
    try:
        for kind in kinds:
            server = ServerProc(kind, work / kind)
            server.data_dir.mkdir(parents=True)
            server.provision()
            for n in ns:
                if kind == "naive" and n > args.naive_max:
                    skipped.append((kind, n, f"N > {args.naive_max} (--naive-max): the baseline saturates"))
                    continue
                if time.monotonic() > deadline:
                    skipped.append((kind, n, "time budget (--max-minutes) spent"))
                    continue
                print(f"[{kind} N={n}] ...", file=sys.stderr, flush=True)
                try:
                    r = await run_point(server, n, groups, payloads, args)
                except Exception as exc:  # noqa: BLE001 - report the point and go on
                    print(f"[{kind} N={n}] failed: {exc!r}", file=sys.stderr)
                    skipped.append((kind, n, f"failed: {exc}"))
                    continue
                results.append(r)
                print(f"[{kind} N={n}] {json.dumps({k: v for k, v in r.items() if k != 'server_stats'})}",
                      file=sys.stderr, flush=True)
    finally:
        for g in groups:
            if isinstance(g, RemoteGroup):
                await g.exit()

    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md = table(results, skipped)
    command = "unshare -n sh -c 'ip link set lo up && .venv/bin/python bench/forward.py " + " ".join(sys.argv[1:]) + "'"
    (out / "forward-results.json").write_text(json.dumps({
        "command": command,
        "machine": facts,
        "settings": {"listeners": ns, "seconds": args.seconds, "warmup": args.warmup,
                     "workers": args.workers, "packets_per_s": 50, "opus_payload_bytes_mean":
                     round(statistics.mean(len(p) for p in payloads), 1)},
        "latency_note": "client-measured one-way latency through the server on loopback: talker "
                        "send stamp (before SRTP protect) to listener tap (after SRTP unprotect); "
                        "includes both clients' SRTP and event-loop overhead",
        "results": results,
        "skipped": [{"server": k, "listeners": n, "why": w} for k, n, w in skipped],
        "table_markdown": md,
    }, indent=2))
    plot(results, out / "forward.png")
    print(md)
    print(f"\nmachine: {facts['nproc']} CPUs ({facts['cpu_model']}), Python {facts['python']}, "
          f"aiortc {facts['aiortc']}; wrote {out / 'forward-results.json'} and {out / 'forward.png'}")
    shutil.rmtree(work, ignore_errors=True)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--listeners", default="1,10,50,200", help="comma-separated N values")
    parser.add_argument("--seconds", type=float, default=10.0, help="measurement window per point")
    parser.add_argument("--warmup", type=float, default=1.0, help="talk time before the window")
    parser.add_argument("--idle", type=float, default=2.0, help="idle window (N connected, silent)")
    parser.add_argument("--grace", type=float, default=1.0, help="wait for late packets after talking")
    parser.add_argument("--servers", default="vpdesk,naive")
    parser.add_argument("--naive-max", type=int, default=50, help="skip larger N for the naive baseline")
    parser.add_argument("--workers", type=int, default=1,
                        help="listener worker processes (0: listeners on the talker's loop)")
    parser.add_argument("--no-wire", dest="wire", action="store_false",
                        help="skip the AF_PACKET capture on lo (kernel-timestamped wire latency)")
    parser.add_argument("--out-dir", default=str(ROOT / "docs"))
    parser.add_argument("--max-minutes", type=float, default=20.0, help="skip remaining points after this")
    args = parser.parse_args()
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
