"""The server's side of one client session's RTCPeerConnection.

The client's first m-line is its microphone (we only receive on it); each further m-line is
a receive slot that `join` binds to a channel (we only send on it). Microphone RTP is
tapped before aiortc's jitter buffer and handed to `on_rtp`; listener slots are written by
the forwarder through `ListenerOutput`s built here. aiortc's per-stream RTCP loops are parked:
the connection's reports come from the process's RTCP scheduler (rtcp.py) once it is up.
All methods run on the server's loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.rtcrtptransceiver import RTCRtpTransceiver

from . import aiortc_hooks as hooks
from .fast_fanout import listener_output
from .forwarder import ListenerOutput, one_byte_extension_block
from .media_port import MediaPort
from .rtcp import ReportingConnection, RtcpScheduler, shared_scheduler
from .sdp import BadOffer, OfferShape, check_offer, shape_answer

logger = logging.getLogger(__name__)


class NoFreeSlot(Exception):
    """Every receive m-line is bound to a channel; the client must re-offer with more."""


class MediaNotReady(Exception):
    """No offer/answer has been exchanged yet."""


@dataclass
class ReceiveSlot:
    mid: str
    transceiver: RTCRtpTransceiver
    output: ListenerOutput
    channel_id: int | None = None


class ServerPeer:
    """Media for one session. `on_rtp(bytes)` receives the microphone's RTP."""

    def __init__(
        self,
        label: str,
        on_rtp: Callable[[bytes], None],
        *,
        max_receive_slots: int = 64,
        announced_address: str | None = None,
        rtcp: RtcpScheduler | None = None,
        media_port: MediaPort | None = None,
    ) -> None:
        self.label = label
        self._on_rtp = on_rtp
        self._max_slots = max_receive_slots
        self._announced = announced_address
        self._pc: RTCPeerConnection | None = None
        self._slots: dict[str, ReceiveSlot] = {}
        self._slot_order: list[str] = []
        self._by_channel: dict[int, ReceiveSlot] = {}  # the per-packet lookup
        self._writer: hooks.RawRtpWriter | None = None
        self._tapped = False
        self._lock = asyncio.Lock()
        self._parked: list[hooks.ParkedTrack] = []
        self._rtcp = rtcp  # None: the loop's shared scheduler, looked up when connected
        self._media_port = media_port  # None: aioice's own socket for this connection
        self._reporting: ReportingConnection | None = None
        self.closed = False

    # --- negotiation ---------------------------------------------------------------

    async def answer(self, offer_sdp: object) -> str:
        """Apply a client offer (first or re-offer) and return the answer's SDP.

        Raises BadOffer for SDP we refuse; existing slots keep their channels.
        """
        shape = check_offer(offer_sdp, self._max_slots)
        async with self._lock:
            if self.closed:
                raise MediaNotReady("session media is closed")
            created = self._pc is None
            if created:
                self._pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
                self._pc.on("connectionstatechange", self._on_state)
            elif self._slot_order and shape.mids[: 1 + len(self._slot_order)] != (
                [self._mic_mid] + self._slot_order
            ):
                raise BadOffer("a re-offer must keep the existing m-lines in order")
            pc = self._pc
            first = not self._slots
            try:
                await pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
                if created and self._media_port is not None:
                    # Before the answer gathers: its candidates are on the shared port.
                    self._media_port.attach(hooks.ice_connection_of(pc))
                self._configure_transceivers(shape)
                answer = await pc.createAnswer()
                await pc.setLocalDescription(answer)
                self._install_taps()
            except Exception as exc:  # aiortc raises many types for SDP it refuses
                if first:
                    # Nothing was negotiated yet: start the next offer from scratch, so a
                    # refused offer leaves the session as if it had never been sent.
                    self._pc, self._slots, self._slot_order = None, {}, []
                    self._by_channel.clear()
                    self._tapped, self._writer, self._reporting = False, None, None
                    await pc.close()
                if isinstance(exc, BadOffer):
                    raise
                raise BadOffer(f"offer rejected: {exc}") from exc
            return shape_answer(pc.localDescription.sdp, self._announced)

    @property
    def _mic_mid(self) -> str:
        return self._pc.getTransceivers()[0].mid

    def _configure_transceivers(self, shape: OfferShape) -> None:
        transceivers = {t.mid: t for t in self._pc.getTransceivers()}
        for transceiver in transceivers.values():
            transceiver.setCodecPreferences(hooks.opus_only())
            # Before the answer starts them: the scheduler reports for this connection.
            hooks.park_rtcp_loops(transceiver)
        mic = transceivers[shape.microphone_mid]
        mic.direction = "recvonly"
        for mid in shape.receive_mids:
            transceiver = transceivers[mid]
            if mid in self._slots:
                continue
            transceiver.direction = "sendonly"
            track = hooks.ParkedTrack()
            self._parked.append(track)
            transceiver.sender.replaceTrack(track)
            self._slots[mid] = ReceiveSlot(mid=mid, transceiver=transceiver, output=None)  # type: ignore[arg-type]
            self._slot_order.append(mid)

    def _install_taps(self) -> None:
        transceivers = self._pc.getTransceivers()
        dtls = hooks.dtls_transport_of(self._pc)
        if not self._tapped:
            hooks.tap_incoming_rtp(dtls, self._on_rtp)
            self._writer = hooks.RawRtpWriter(dtls)
            self._reporting = ReportingConnection(
                write=hooks.RawRtcpWriter(dtls).write,
                outputs=self._report_outputs,
                own_ssrc=hooks.local_ssrc(transceivers[0]),
                cname=hooks.connection_cname(self._pc),
                label=self.label,
            )
            self._tapped = True
        for transceiver in transceivers[1:]:
            slot = self._slots.get(transceiver.mid)
            if slot is None or slot.output is not None:
                continue
            if transceiver.sender.transport is not dtls:
                raise BadOffer("offer must BUNDLE all m-lines on one transport")
            slot.output = self._make_output(transceiver)

    def _make_output(self, transceiver: RTCRtpTransceiver) -> ListenerOutput:
        mid_ext = hooks.negotiated_extension_id(transceiver, hooks.OPUS_MID_URI)
        extension = one_byte_extension_block(mid_ext, transceiver.mid.encode()) if mid_ext else b""
        return listener_output(
            ssrc=transceiver.sender._ssrc,
            payload_type=hooks.negotiated_opus_payload_type(transceiver),
            egress=self._writer,
            extension=extension,
            label=f"{self.label}/{transceiver.mid}",
        )

    def _report_outputs(self) -> list[ListenerOutput]:
        return [slot.output for slot in self._slots.values() if slot.output is not None]

    def _on_state(self) -> None:
        if self._pc is None:
            return
        state = self._pc.connectionState
        logger.info("session=%s media %s", self.label, state)
        if state == "connected":
            # Tapped microphone RTP never reaches aiortc's receiver: its decoder idles.
            hooks.stop_receiver_decoder(self._pc.getTransceivers()[0].receiver)
            if self._reporting is not None:
                if self._rtcp is None:
                    self._rtcp = shared_scheduler()
                self._rtcp.add(self._reporting)
        elif state in ("failed", "closed"):
            self._stop_reports()

    def _stop_reports(self) -> None:
        if self._rtcp is not None and self._reporting is not None:
            self._rtcp.remove(self._reporting)

    @property
    def reporting(self) -> ReportingConnection | None:
        """This connection's RTCP reporting state (None before the first answer)."""
        return self._reporting

    @property
    def microphone_payload_type(self) -> int | None:
        """The Opus payload type the client sends its microphone with (None before offer)."""
        if self._pc is None:
            return None
        return hooks.negotiated_opus_payload_type(self._pc.getTransceivers()[0])

    @property
    def connection_state(self) -> str:
        return self._pc.connectionState if self._pc else "new"

    # --- slots ---------------------------------------------------------------------

    def bind(self, channel_id: int) -> ReceiveSlot:
        """Bind a free receive slot to `channel_id` (idempotent for a bound channel)."""
        if self._pc is None:
            raise MediaNotReady("send an offer before joining")
        bound = self._by_channel.get(channel_id)
        if bound is not None:
            return bound
        for mid in self._slot_order:
            slot = self._slots[mid]
            if slot.channel_id is None and slot.output is not None:
                slot.channel_id = channel_id
                self._by_channel[channel_id] = slot
                return slot
        raise NoFreeSlot(f"all {len(self._slots)} receive m-lines are bound")

    def unbind(self, channel_id: int) -> ReceiveSlot | None:
        slot = self._by_channel.pop(channel_id, None)
        if slot is not None:
            slot.channel_id = None
        return slot

    def slot_for(self, channel_id: int) -> ReceiveSlot | None:
        """The slot bound to `channel_id`; one dict lookup (called per forwarded packet)."""
        return self._by_channel.get(channel_id)

    @property
    def free_slots(self) -> int:
        return sum(1 for s in self._slots.values() if s.channel_id is None)

    @property
    def has_media(self) -> bool:
        return self._pc is not None

    async def close(self) -> None:
        """Close the connection and everything it owns (idempotent)."""
        self.closed = True
        self._stop_reports()
        async with self._lock:
            for track in self._parked:
                track.stop()
            self._parked.clear()
            if self._pc is not None:
                pc, self._pc = self._pc, None
                await pc.close()


__all__ = ["ServerPeer", "ReceiveSlot", "NoFreeSlot", "MediaNotReady", "BadOffer"]
