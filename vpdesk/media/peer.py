"""The client's one RTCPeerConnection per session (aiortc, no Qt).

Shape fixed by PROTOCOL.md: the first m-line is a `sendonly` audio transceiver carrying
the microphone, then K `recvonly` audio transceivers, one per channel listened to at
once; `join` answers with the mid of the one the server bound. All of them negotiate
Opus only, and the microphone is encoded as PTT Opus (mono, ~28 kb/s, in-band FEC).

aiortc's own RTCP runs two coroutines per m-line, each sending about once a second; with
50 monitored channels that is ~50 receiver reports a second that the server only has to
parse. They are parked: the connection reports from the process's RTCP scheduler
(server/media/rtcp.py) instead, a sender report only while the microphone sends and a
receiver report every few seconds otherwise, as browsers do.

All methods run on the loop that created the peer (the console's qasync loop, or the
test's loop).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from aiortc import (
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpSender,
    RTCRtpTransceiver,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamTrack

from server.media import aiortc_hooks
from server.media.rtcp import ReportingConnection, shared_scheduler

logger = logging.getLogger(__name__)

_ptt_opus_configured = False


def ensure_ptt_opus() -> None:
    """Make this process's aiortc Opus encoder PTT-shaped, once.

    The hook patches aiortc's encoder class, so it applies to every peer in the process;
    the console and the test clients want exactly that.
    """
    global _ptt_opus_configured
    if not _ptt_opus_configured:
        aiortc_hooks.configure_opus_encoder()
        _ptt_opus_configured = True


class PeerError(RuntimeError):
    """A ClientPeer call was made in a state that cannot serve it."""


def _opus_only() -> list:
    capabilities = RTCRtpSender.getCapabilities("audio")
    opus = [c for c in capabilities.codecs if c.mimeType.lower() == "audio/opus"]
    if not opus:
        raise PeerError("aiortc offers no Opus codec")
    return opus


def _ice_server(server: RTCIceServer | Mapping[str, Any]) -> RTCIceServer:
    """Accept aiortc's RTCIceServer or a hello response's {"urls", "username"?, "credential"?}."""
    if isinstance(server, RTCIceServer):
        return server
    return RTCIceServer(
        urls=server["urls"], username=server.get("username"), credential=server.get("credential")
    )


class ClientPeer:
    """One client session's peer connection: microphone first, then receive slots.

    `ice_servers` defaults to none at all: without an explicit configuration aiortc would
    add a public STUN server, and loopback tests must never leave the machine.
    """

    def __init__(
        self,
        receive_slots: int,
        microphone: MediaStreamTrack | None = None,
        *,
        ice_servers: Iterable[RTCIceServer | Mapping[str, Any]] | None = None,
    ) -> None:
        if receive_slots < 0:
            raise ValueError(f"receive_slots must be >= 0, not {receive_slots}")
        ensure_ptt_opus()
        self.pc = RTCPeerConnection(
            RTCConfiguration(iceServers=[_ice_server(s) for s in ice_servers or []])
        )
        # The protocol requires the microphone's sendonly m-line first, track or not: a
        # listen-only client still offers it so that PTT later needs no re-offer.
        self._mic = self.pc.addTransceiver(microphone or "audio", direction="sendonly")
        self._mic.setCodecPreferences(_opus_only())
        self._receivers: list[RTCRtpTransceiver] = []
        self._add_receivers(receive_slots)
        self._reporting: ReportingConnection | None = None
        self.pc.on("connectionstatechange", self._on_state)

    def __repr__(self) -> str:
        return f"<ClientPeer {len(self._receivers)} slots {self.pc.connectionState}>"

    def _add_receivers(self, n: int) -> None:
        opus = _opus_only()
        for _ in range(n):
            transceiver = self.pc.addTransceiver("audio", direction="recvonly")
            transceiver.setCodecPreferences(opus)
            self._receivers.append(transceiver)

    # --- negotiation -----------------------------------------------------------------

    async def create_offer(self) -> str:
        """Create and set the local offer; return its SDP with every ICE candidate in it.

        aiortc gathers candidates inside setLocalDescription, so the returned SDP is
        complete (no trickle in this protocol).
        """
        offer = await self.pc.createOffer()
        await self.pc.setLocalDescription(offer)
        # Before the answer starts the transceivers (and their RTCP loops); idempotent.
        for transceiver in self.pc.getTransceivers():
            aiortc_hooks.park_rtcp_loops(transceiver)
        if self.pc.iceGatheringState != "complete":
            # aiortc finishes gathering inside setLocalDescription; a half-gathered offer
            # would silently fail to connect, so say so instead.
            raise PeerError(
                f"ICE gathering is {self.pc.iceGatheringState} after setLocalDescription"
            )
        return self.pc.localDescription.sdp

    async def apply_answer(self, sdp: str) -> None:
        """Set the server's answer to the last offer."""
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))

    async def add_receive_slots(self, n: int) -> str:
        """Add `n` recvonly transceivers and return the re-offer for them.

        The server answers `no_slot` to a join when every slot is bound; the protocol's
        remedy is this re-offer, then apply_answer() and the join again.
        """
        if self.pc.signalingState != "stable":
            raise PeerError(f"cannot re-offer in signaling state {self.pc.signalingState}")
        self._add_receivers(n)
        return await self.create_offer()

    async def wait_connected(self, timeout: float = 10.0) -> None:
        """Wait until the connection state is "connected"; PeerError if it fails."""
        async with asyncio.timeout(timeout):
            while self.pc.connectionState != "connected":
                if self.pc.connectionState in ("failed", "closed"):
                    raise PeerError(f"peer connection is {self.pc.connectionState}")
                changed = asyncio.Event()
                self.pc.once("connectionstatechange", changed.set)
                await changed.wait()

    # --- media -----------------------------------------------------------------------

    @property
    def mids(self) -> list[str | None]:
        """The receive slots' mids in offer order (None before the first offer)."""
        return [t.mid for t in self._receivers]

    @property
    def receive_slots(self) -> int:
        return len(self._receivers)

    @property
    def microphone_sender(self) -> RTCRtpSender:
        return self._mic.sender

    @property
    def microphone_mid(self) -> str | None:
        return self._mic.mid

    def set_microphone(self, track: MediaStreamTrack | None) -> None:
        """Swap the microphone track without renegotiating (same m-line)."""
        self._mic.sender.replaceTrack(track)

    def track_for_mid(self, mid: str) -> MediaStreamTrack:
        """The remote track of the receive slot with this mid (after apply_answer)."""
        for transceiver in self._receivers:
            if transceiver.mid == mid:
                track = transceiver.receiver.track
                if track is None:
                    raise PeerError(
                        f"receive slot mid={mid} has no track yet: apply the answer first"
                    )
                return track
        raise PeerError(f"no receive slot has mid={mid}; slots are {self.mids}")

    def _on_state(self) -> None:
        state = self.pc.connectionState
        if state == "connected" and self._reporting is None:
            self._reporting = ReportingConnection(
                write=aiortc_hooks.RawRtcpWriter(aiortc_hooks.dtls_transport_of(self.pc)).write,
                outputs=lambda figures=[aiortc_hooks.AiortcSenderFigures(self._mic.sender)]: figures,
                own_ssrc=aiortc_hooks.local_ssrc(self._mic),
                cname=aiortc_hooks.connection_cname(self.pc),
                label="client",
            )
            shared_scheduler().add(self._reporting)
        elif state in ("failed", "closed"):
            self._stop_reports()

    def _stop_reports(self) -> None:
        if self._reporting is not None:
            shared_scheduler().remove(self._reporting)
            self._reporting = None

    @property
    def reporting(self) -> ReportingConnection | None:
        """This connection's RTCP reporting state (None until connected)."""
        return self._reporting

    async def close(self) -> None:
        """Close the connection; it stops every transceiver and its tasks."""
        self._stop_reports()
        await self.pc.close()
