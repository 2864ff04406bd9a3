"""Every use of aiortc and aioice internals, in one place.

aiortc is pinned (pyproject) because these hooks reach past its public API; the tests in
tests/server/test_aiortc_hooks.py fail loudly when an upgrade moves one of them.

What we need that the public API lacks:
- ICE host addresses: aioice leaves loopback out and offers every LAN address; the
  server and the tests choose the addresses.
- Opus for PTT: aiortc's encoder is 96 kb/s stereo without FEC.
- Ingest before the jitter buffer: the talker's decrypted RTP bytes, before aiortc parses,
  buffers (>= 80 ms) and decodes them.
- Egress without a coroutine per packet: protect with the listener's SRTP session and
  write to its nominated ICE pair directly.
- RTCP from one scheduler for all connections, not two coroutines per m-line.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable

import aioice.ice
import pylibsrtp
import pylibsrtp._binding
from aiortc import RTCPeerConnection, RTCRtpReceiver, RTCRtpSender, RTCRtpTransceiver
from aiortc.codecs import opus as aiortc_opus
from aiortc.mediastreams import MediaStreamTrack
from aiortc.rtcdtlstransport import RTCDtlsTransport, State as DtlsState

from .connection_epoch import ConnectionEpoch
from .fast_fanout import EgressTarget
from .udp_batch import DatagramBatch, Outbox, SocketAddress, address_of

logger = logging.getLogger(__name__)

OPUS_BITRATE = 28_000
OPUS_MID_URI = "urn:ietf:params:rtp-hdrext:sdes:mid"


class HookError(RuntimeError):
    """An aiortc internal this module relies on is missing: the pinned version changed."""


# --- ICE host addresses ------------------------------------------------------------------

_original_get_host_addresses = aioice.ice.get_host_addresses


def use_host_addresses(addresses: Iterable[str] | None) -> None:
    """Make every ICE agent in this process gather host candidates on `addresses` only.

    None or an empty list restores aioice's default (all interfaces but loopback). The
    setting is process-wide because aioice reads a module function; the embedded server
    and the console's own client share it, which is what a one-PC site wants.
    """
    chosen = list(addresses or [])
    if not chosen:
        aioice.ice.get_host_addresses = _original_get_host_addresses
        return

    def get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return [a for a in chosen if (":" in a and use_ipv6) or (":" not in a and use_ipv4)]

    aioice.ice.get_host_addresses = get_host_addresses


# --- Opus encoder settings for push-to-talk -------------------------------------------

_original_encoder_init = aiortc_opus.OpusEncoder.__init__


def configure_opus_encoder(bitrate: int = OPUS_BITRATE) -> None:
    """Make aiortc's Opus encoder PTT-shaped: mono voice, ~28 kb/s, in-band FEC, no DTX.

    Affects this process's aiortc senders (the console and the test/bench clients); the
    server never encodes.
    """

    def init(self: aiortc_opus.OpusEncoder) -> None:
        _original_encoder_init(self)
        self.codec.bit_rate = bitrate
        self.codec.layout = "mono"
        # libopus through FFmpeg: voip mode, in-band FEC tuned for some loss. DTX is off
        # by default in libopus and stays off: PTT wants continuous 20 ms frames.
        self.codec.options = {
            "application": "voip",
            "fec": "1",
            "packet_loss": "10",
            "frame_duration": "20",
        }
        self.resampler = aiortc_opus.AudioResampler(
            format="s16",
            layout="mono",
            rate=aiortc_opus.SAMPLE_RATE,
            frame_size=aiortc_opus.SAMPLES_PER_FRAME,
        )

    aiortc_opus.OpusEncoder.__init__ = init


# --- Ingest: the talker's RTP before the jitter buffer -------------------------------

RtpTap = Callable[[bytes], None]


def dtls_transport_of(pc: RTCPeerConnection) -> RTCDtlsTransport:
    """The one DTLS transport of a BUNDLEd connection (the first transceiver's)."""
    transceivers = pc.getTransceivers()
    if not transceivers:
        raise HookError("peer connection has no transceivers yet")
    return transceivers[0].receiver.transport


def ice_connection_of(pc: RTCPeerConnection) -> aioice.ice.Connection:
    """The aioice connection under a BUNDLEd peer connection's one transport."""
    connection = getattr(getattr(dtls_transport_of(pc).transport, "iceGatherer", None), "_connection", None)
    if connection is None:
        raise HookError("RTCIceGatherer._connection is gone")
    return connection


def tap_incoming_rtp(transport: RTCDtlsTransport, tap: RtpTap) -> None:
    """Hand every decrypted RTP packet on `transport` to `tap` instead of aiortc's receivers.

    `tap` is called on the event loop with the packet bytes (header included, SRTP
    already removed) and must not block. RTCP and DTLS keep aiortc's path. aiortc never
    sees the RTP, so its receive jitter buffer and decoder stay idle.

    Once DTLS has keyed SRTP, RTP is taken off the ICE connection as the datagram
    arrives, in the socket's own callback: aioice would queue it for aiortc's transport
    task, which costs a queue hop and a task wake-up per packet (latency and CPU on the
    talker's path). Packets that still take aiortc's path reach `tap` there.
    """
    if not hasattr(transport, "_handle_rtp_data"):
        raise HookError("RTCDtlsTransport._handle_rtp_data is gone")
    ice = getattr(getattr(transport, "transport", None), "_connection", None)
    if ice is None or not hasattr(ice, "data_received") or not hasattr(transport, "_rx_srtp"):
        raise HookError("aioice Connection.data_received / RTCDtlsTransport._rx_srtp is gone")

    async def handle_rtp_data(data: bytes, arrival_time_ms: int) -> None:
        tap(data)

    transport._handle_rtp_data = handle_rtp_data  # instance attribute shadows the method
    queue_datagram = ice.data_received

    def data_received(data: bytes, component: int) -> None:
        if not data:
            return  # aiortc's transport task reads data[0] and dies on an empty datagram
        srtp = transport._rx_srtp
        # RTP and RTCP start 0b10; RTCP's packet types are 192-208 (RFC 5761 demux).
        if srtp is not None and 127 < data[0] < 192 and len(data) > 1 and not 191 < data[1] < 209:
            try:
                packet = srtp.unprotect(data)
            except pylibsrtp.Error as exc:
                logger.debug("srtp unprotect refused a packet: %s", exc)
                return  # forged, replayed or damaged: dropped, as aiortc would
            tap(packet)
            return
        queue_datagram(data, component)

    ice.data_received = data_received


def stop_receiver_decoder(receiver: RTCRtpReceiver) -> None:
    """Stop the decoder thread aiortc starts per receiver: tapped media never reaches it."""
    stop = getattr(receiver, "_RTCRtpReceiver__stop_decoder", None)
    if stop is None:
        raise HookError("RTCRtpReceiver.__stop_decoder is gone")
    stop()


# --- Egress: write RTP straight to a listener -----------------------------------------


class ParkedTrack(MediaStreamTrack):
    """A track whose recv() waits until stopped: it keeps an RTCRtpSender's own RTP loop
    asleep (with no track it polls every 20 ms), while we write packets ourselves."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._stopped = asyncio.Event()

    async def recv(self):  # noqa: D102 - MediaStreamTrack API
        await self._stopped.wait()
        from aiortc.mediastreams import MediaStreamError

        raise MediaStreamError

    def stop(self) -> None:
        super().stop()
        self._stopped.set()


def opus_only() -> list:
    """The Opus codec alone, for setCodecPreferences: the server forwards nothing else."""
    return [c for c in RTCRtpSender.getCapabilities("audio").codecs if c.mimeType.lower() == "audio/opus"]


def negotiated_opus_payload_type(transceiver: RTCRtpTransceiver) -> int:
    """The Opus payload type this connection negotiated (browsers use 111, aiortc 96)."""
    codecs = getattr(transceiver, "_codecs", None)
    if codecs is None:
        raise HookError("RTCRtpTransceiver._codecs is gone")
    for codec in codecs:
        if codec.mimeType.lower() == "audio/opus":
            return codec.payloadType
    raise HookError(f"transceiver mid={getattr(transceiver, 'mid', '?')} negotiated no Opus codec")


def negotiated_extension_id(transceiver: RTCRtpTransceiver, uri: str) -> int | None:
    """The header-extension id negotiated for `uri` on this connection, if any."""
    for ext in getattr(transceiver, "_headerExtensions", None) or []:
        if ext.uri == uri:
            return ext.id
    return None


# libsrtp through pylibsrtp's cffi binding: the fan-out protects packets it built in place
# in its own buffers, which pylibsrtp's public protect() (copy in, allocate, copy out) cannot.
# pylibsrtp is pinned (pyproject) for this: libsrtp 3 changes srtp_protect's signature.
_srtp_ffi = pylibsrtp._binding.ffi
_srtp_protect = pylibsrtp._binding.lib.srtp_protect
PACKET_BUFFER_SIZE = 1500
# The SRTP trailer (auth tag, up to 16 bytes with the profiles aiortc offers) must fit too.
MAX_PLAIN_RTP = PACKET_BUFFER_SIZE - 16


class PacketBuffer:
    """A packet buffer RawRtpWriter.send_buffer() protects in place: the C buffer, a view to
    build the packet in, and its address (for a batched send)."""

    __slots__ = ("data", "view", "address")

    def __init__(self) -> None:
        self.data = _srtp_ffi.new("char[]", PACKET_BUFFER_SIZE)
        self.view = memoryview(_srtp_ffi.buffer(self.data))
        self.address = address_of(self.data)


class RawRtpWriter:
    """Protects and sends RTP on a connection's DTLS/ICE transport, without a coroutine.

    Two ways in, both synchronous and cheap:
    - write(packet): a ready-made packet (clients, tests, benchmarks);
    - send_buffer(packet, length): a packet the caller built in place in a PacketBuffer
      (the server's fan-out: no allocation before the socket call); SRTP protects it in
      place, so the caller rewrites header and payload each time.
    On the server's shared media port (server/media/media_port.py), send_buffer() queues
    the packet in the socket's batch while the outbox is open (a fan-out), and the outbox
    sends all copies with one system call when it is flushed; otherwise it sends at once.
    Packets before DTLS is up (or after the pair is gone) are dropped, as a real network
    would; so is a packet the socket cannot take right now (a full send buffer).
    """

    __slots__ = (
        "_dtls", "_nominated", "_pair", "_sendto", "_dest", "_session", "_context", "_size",
        "_batch", "_outbox", "_name", "_epoch", "_srtp_address",
    )

    def __init__(self, dtls: RTCDtlsTransport) -> None:
        ice = getattr(dtls.transport, "_connection", None)
        if ice is None or not isinstance(getattr(ice, "_nominated", None), dict):
            raise HookError("RTCIceTransport._connection._nominated is gone")
        if not hasattr(dtls, "_state"):
            raise HookError("RTCDtlsTransport._state is gone")
        self._dtls = dtls
        # Moves on every change of DTLS state or nominated pair: the C fan-out sends for
        # this writer only while it stands where fast_egress() read it. It replaces
        # aioice's dict of nominated pairs with a watched one, so it comes first.
        self._epoch = ConnectionEpoch(dtls, ice) if hasattr(dtls, "on") else None
        self._nominated = ice._nominated
        # The nominated pair's send function and address, looked up again only when the
        # pair changes (ICE may nominate another one).
        self._pair = None
        self._sendto = None
        self._dest = None
        # On a shared media socket: its batch and the destination as a C sockaddr.
        self._batch: DatagramBatch | None = None
        self._outbox: Outbox | None = None
        self._name: SocketAddress | None = None
        # The SRTP session DTLS keyed, and libsrtp's context inside it.
        self._session = None
        self._context = None
        self._srtp_address = 0
        self._size = _srtp_ffi.new("int *")

    @property
    def ready(self) -> bool:
        return self._dtls._state is DtlsState.CONNECTED and 1 in self._nominated

    @staticmethod
    def new_buffer() -> PacketBuffer:
        """A packet buffer send_buffer() can protect in place."""
        return PacketBuffer()

    def _use_pair(self, pair) -> bool:
        transport = getattr(pair.protocol, "transport", None) if pair is not None else None
        if transport is None:
            return False
        sock = transport.get_extra_info("socket") if hasattr(transport, "get_extra_info") else None
        raw = getattr(sock, "_sock", None)  # asyncio's TransportSocket wraps the real one
        # A plain UDP socket takes the packet directly (asyncio's sendto adds ~1 µs of
        # checks); a TURN allocation's transport wraps it itself and wants bytes.
        if raw is not None:
            self._sendto = raw.sendto
        else:
            send = transport.sendto
            self._sendto = lambda data, addr: send(bytes(data), addr)
        self._pair, self._dest = pair, pair.remote_addr
        batch = getattr(transport, "batch", None)
        if batch is not None and raw is not None:
            self._batch, self._outbox = batch, batch.outbox
            self._name = SocketAddress(raw.family, pair.remote_addr)
        else:
            self._batch = self._outbox = self._name = None
        return True

    def send_buffer(self, packet: PacketBuffer, length: int) -> bool:
        """Protect the RTP packet in packet.data[:length] in place and send it (or queue
        it in the open outbox); False if dropped."""
        dtls = self._dtls
        if dtls._state is not DtlsState.CONNECTED:
            return False
        pair = self._nominated.get(1)
        if pair is not self._pair and not self._use_pair(pair):
            return False
        session = dtls._tx_srtp
        if session is not self._session:
            self._session, self._context = session, session._srtp[0]
            self._srtp_address = int(_srtp_ffi.cast("uintptr_t", self._context))
        size = self._size
        size[0] = length
        if _srtp_protect(self._context, packet.data, size):
            # One listener's refusal (e.g. a replayed index) must not stop the fan-out.
            logger.debug("srtp protect refused a packet of %d bytes", length)
            return False
        batch = self._batch
        if batch is not None and self._outbox.is_open:
            batch.add(packet.address, size[0], self._name)
            return True
        try:
            self._sendto(packet.view[: size[0]], self._dest)
        except OSError as exc:  # BlockingIOError too: a full socket buffer drops it
            logger.debug("rtp send failed: %s", exc)
            return False
        return True

    def fast_egress(self) -> EgressTarget | None:
        """What the C fan-out needs to send this writer's copies itself, right after a
        send_buffer() that queued one in the shared socket's batch; None where it cannot
        (no shared socket, not connected, no epoch to watch)."""
        batch, epoch = self._batch, self._epoch
        if batch is None or epoch is None or not self._outbox.is_open or batch.fd < 0:
            return None
        dtls = self._dtls
        if dtls._state is not DtlsState.CONNECTED or self._nominated.get(1) is not self._pair:
            return None
        if dtls._tx_srtp is not self._session or self._session is None:
            return None
        return EgressTarget(
            epoch_address=epoch.address,
            epoch=epoch.value,
            srtp_address=self._srtp_address,
            fd_address=batch.fd_address,
            sockaddr=self._name.packed,
            keep=(epoch, self._session, batch, self._name),
        )

    def write(self, packet: bytes) -> bool:
        """Send one ready-made RTP packet; False when the transport cannot carry it (yet)."""
        return self._protect_and_send(pylibsrtp.Session.protect, packet)

    def _protect_and_send(self, protect: Callable[[pylibsrtp.Session, bytes], bytes], data: bytes) -> bool:
        dtls = self._dtls
        if dtls._state is not DtlsState.CONNECTED:
            return False
        pair = self._nominated.get(1)
        if pair is not self._pair and not self._use_pair(pair):
            return False
        try:
            protected = protect(dtls._tx_srtp, data)
        except pylibsrtp.Error as exc:
            logger.debug("srtp refused %d bytes: %s", len(data), exc)
            return False
        try:
            self._sendto(protected, self._dest)
        except OSError as exc:
            logger.debug("send failed: %s", exc)
            return False
        return True


def observe_incoming_rtp(transport: RTCDtlsTransport, observer: RtpTap) -> None:
    """Show every decrypted RTP packet on `transport` to `observer`, then to aiortc as usual.

    For clients that want both the raw stream (sequence numbers, SSRCs) and decoded audio.
    """
    original = getattr(transport, "_handle_rtp_data", None)
    if original is None:
        raise HookError("RTCDtlsTransport._handle_rtp_data is gone")

    async def handle_rtp_data(data: bytes, arrival_time_ms: int) -> None:
        observer(data)
        await original(data, arrival_time_ms)

    transport._handle_rtp_data = handle_rtp_data


# --- RTCP: compound reports from one scheduler (server/media/rtcp.py) ---------------------
#
# aiortc runs one RTCP coroutine per started sender and per started receiver, each waking
# every 0.5-1.5 s. The server parks them and sends each connection's compound report from
# one server-wide scheduler instead. Incoming RTCP keeps aiortc's path: the client's RRs
# still reach the senders' stats, its SRs the microphone receiver's.


def _parked_rtcp_loop(
    started: asyncio.Event, exited: asyncio.Event, farewell: Callable[[], Awaitable[None]] | None
) -> Callable[[], Awaitable[None]]:
    async def run_rtcp() -> None:
        started.set()
        try:
            await asyncio.get_running_loop().create_future()  # only a cancel ends this
        except asyncio.CancelledError:
            pass
        if farewell is not None:
            await farewell()
        exited.set()

    return run_rtcp


def park_rtcp_loops(transceiver: RTCRtpTransceiver) -> None:
    """Keep aiortc's RTCP coroutines of this transceiver's sender and receiver asleep.

    Call before the connection starts them (before the answer is set). Each still starts
    and stops with its sender or receiver, but sleeps without a timer; a stopping sender
    still says BYE for its SSRC, as aiortc's own loop does. Idempotent.
    """
    sender, receiver = transceiver.sender, transceiver.receiver
    for owner, prefix in ((sender, "_RTCRtpSender"), (receiver, "_RTCRtpReceiver")):
        for name in ("rtcp_started", "rtcp_exited"):
            if not isinstance(getattr(owner, f"{prefix}__{name}", None), asyncio.Event):
                raise HookError(f"{prefix[1:]}.__{name} is gone")
        if not hasattr(owner, "_run_rtcp"):
            raise HookError(f"{prefix[1:]}._run_rtcp is gone")
    if "_run_rtcp" not in vars(sender):

        async def say_bye() -> None:
            from aiortc.rtp import RtcpByePacket

            await sender._send_rtcp([RtcpByePacket(sources=[sender._ssrc])])

        sender._run_rtcp = _parked_rtcp_loop(
            sender._RTCRtpSender__rtcp_started, sender._RTCRtpSender__rtcp_exited, say_bye
        )
    if "_run_rtcp" not in vars(receiver):
        receiver._run_rtcp = _parked_rtcp_loop(
            receiver._RTCRtpReceiver__rtcp_started, receiver._RTCRtpReceiver__rtcp_exited, None
        )


def local_ssrc(transceiver: RTCRtpTransceiver) -> int:
    """The SSRC aiortc chose for this transceiver's sender (and announced in the SDP); on a
    receive-only m-line aiortc uses it as the SSRC of its receiver reports."""
    ssrc = getattr(transceiver.sender, "_ssrc", None)
    if not isinstance(ssrc, int):
        raise HookError("RTCRtpSender._ssrc is gone")
    return ssrc


def connection_cname(pc: RTCPeerConnection) -> str:
    """The RTCP CNAME this connection announced in its SDP (one per connection)."""
    cname = getattr(pc, "_RTCPeerConnection__cname", None)
    if not isinstance(cname, str):
        raise HookError("RTCPeerConnection.__cname is gone")
    return cname


class RawRtcpWriter(RawRtpWriter):
    """Protects (SRTCP) and sends ready-made compound RTCP packets on a connection's
    nominated ICE pair, synchronously, the way RawRtpWriter sends RTP. The SRTCP index is
    the connection's own, shared with aiortc's RTCP (the BYE at close), because the
    libsrtp session is the same."""

    __slots__ = ()

    def __init__(self, dtls: RTCDtlsTransport) -> None:
        super().__init__(dtls)
        if not hasattr(dtls, "_tx_srtp"):
            raise HookError("RTCDtlsTransport._tx_srtp is gone")

    def write(self, compound: bytes) -> bool:
        """Send one compound RTCP packet; False when the transport cannot carry it."""
        return self._protect_and_send(pylibsrtp.Session.protect_rtcp, compound)


def observe_incoming_rtcp(transport: RTCDtlsTransport, observer: RtpTap) -> None:
    """Show every decrypted compound RTCP packet on `transport` to `observer`, then to
    aiortc as usual (tests and benchmarks read the sender reports they get)."""
    original = getattr(transport, "_handle_rtcp_data", None)
    if original is None:
        raise HookError("RTCDtlsTransport._handle_rtcp_data is gone")

    async def handle_rtcp_data(data: bytes) -> None:
        observer(data)
        await original(data)

    transport._handle_rtcp_data = handle_rtcp_data


class AiortcSenderFigures:
    """An aiortc RTCRtpSender's own RTP counters, shaped like a ListenerOutput's for
    rtcp.ReportingConnection: lets a client whose microphone goes through aiortc's RTP loop
    report from the scheduler too (its SRs then go out only while it sends)."""

    __slots__ = ("_sender",)

    def __init__(self, sender: RTCRtpSender) -> None:
        for name in ("packet_count", "octet_count", "ntp_timestamp", "rtp_timestamp"):
            if not hasattr(sender, f"_RTCRtpSender__{name}"):
                raise HookError(f"RTCRtpSender.__{name} is gone")
        self._sender = sender

    @property
    def ssrc(self) -> int:
        return self._sender._ssrc

    @property
    def packets_sent(self) -> int:
        return self._sender._RTCRtpSender__packet_count

    @property
    def octets_sent(self) -> int:
        return self._sender._RTCRtpSender__octet_count

    @property
    def last_rtp_timestamp(self) -> int:
        return self._sender._RTCRtpSender__rtp_timestamp

    @property
    def last_sent_at(self) -> float | None:
        """time.monotonic() of the last packet, from the NTP time aiortc stamped it with."""
        ntp = self._sender._RTCRtpSender__ntp_timestamp
        if not ntp:
            return None
        sent_unix = (ntp >> 32) - 2_208_988_800 + (ntp & 0xFFFFFFFF) / (1 << 32)
        return time.monotonic() - (time.time() - sent_unix)
