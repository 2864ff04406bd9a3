"""The console's receive path: RTP straight from the transport to the speaker.

aiortc's own receive path puts every packet through a fixed jitter buffer and a decoder
thread per transceiver before `track.recv()` hands out frames: 80 ms or more of added
delay, and one idle thread per monitored channel. A dispatcher listens to up to 50
channels, so the console taps the decrypted RTP off the peer's one (BUNDLE) transport
instead, routes each packet to its channel by the RTP `mid` header extension the server
writes on every copy, decodes it with PyAV's Opus decoder and writes the samples to that
channel's playback sink, whose own small buffer absorbs the jitter.

Everything here runs on the event loop that owns the peer.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Protocol

import av
import numpy as np

from server.media import aiortc_hooks
from server.media.forwarder import MalformedRtp, rtp_payload_bounds

logger = logging.getLogger(__name__)

MID_EXTENSION_URI = "urn:ietf:params:rtp-hdrext:sdes:mid"
# Tell the board a channel is active at most this often: a lamp needs no 50 Hz updates.
ACTIVITY_EVERY_S = 0.2


class AudioSink(Protocol):
    """Where decoded audio goes (vpdesk.audio.playback.PlaybackSink)."""

    def write(self, pcm: np.ndarray) -> None: ...


def rtp_mid(data: bytes, ext_id: int) -> str | None:
    """The value of one-byte header extension `ext_id` (the mid) in an RTP packet, or None."""
    if len(data) < 12 or not data[0] & 0x10:
        return None
    start = 12 + 4 * (data[0] & 0x0F)
    if len(data) < start + 4 or data[start] != 0xBE or data[start + 1] != 0xDE:
        return None  # no extension, or two-byte form: the server writes one-byte only
    end = start + 4 + 4 * ((data[start + 2] << 8) | data[start + 3])
    i = start + 4
    end = min(end, len(data))
    while i < end:
        byte = data[i]
        if byte == 0:  # padding between elements
            i += 1
            continue
        element_id, length = byte >> 4, (byte & 0x0F) + 1
        if element_id == 15:
            break
        if element_id == ext_id:
            value = data[i + 1 : i + 1 + length]
            try:
                return value.decode("ascii")
            except UnicodeDecodeError:
                return None
        i += 1 + length
    return None


class ChannelReceiver:
    """One monitored channel: decodes its Opus packets into its playback sink."""

    def __init__(
        self,
        channel_id: int,
        sink: AudioSink,
        on_activity: Callable[[int], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.channel_id = channel_id
        self.sink = sink
        self._on_activity = on_activity
        self._clock = clock
        self._decoder = self._new_decoder()
        self._last_seq: int | None = None
        self._last_activity = float("-inf")
        self.packets = 0
        self.lost = 0
        self.bad = 0

    @staticmethod
    def _new_decoder() -> av.CodecContext:
        decoder = av.CodecContext.create("opus", "r")
        decoder.sample_rate = 48000
        decoder.layout = "mono"
        return decoder

    def feed(self, data: bytes) -> None:
        """One RTP packet of this channel (SRTP already removed)."""
        try:
            start, end = rtp_payload_bounds(data)
        except MalformedRtp:
            self.bad += 1
            return
        seq = (data[2] << 8) | data[3]
        if self._last_seq is not None:
            step = (seq - self._last_seq) & 0xFFFF
            if step == 0 or step > 0x8000:
                return  # a duplicate or a late packet: its moment has passed
            self.lost += step - 1
        self._last_seq = seq
        self.packets += 1
        try:
            frames = self._decoder.decode(av.Packet(data[start:end]))
        except av.error.FFmpegError as exc:
            self.bad += 1
            logger.debug("channel %s: undecodable packet: %s", self.channel_id, exc)
            return
        for frame in frames:
            pcm = frame.to_ndarray()
            self.sink.write(pcm[0] if pcm.ndim == 2 else pcm)
        now = self._clock()
        if self._on_activity is not None and now - self._last_activity >= ACTIVITY_EVERY_S:
            self._last_activity = now
            self._on_activity(self.channel_id)


class ReceiveRouter:
    """Taps a connected peer's transport and routes RTP to channel receivers by mid.

    Install after the answer is applied (the transport exists then and media has not
    started). Packets for a mid with no receiver (a slot not bound, or a muted channel's
    last packets in flight) are counted and dropped.
    """

    def __init__(self, pc, mid_extension_id: int | None) -> None:
        self._by_mid: dict[str, ChannelReceiver] = {}
        self._ext_id = mid_extension_id
        self.unrouted = 0
        aiortc_hooks.tap_incoming_rtp(aiortc_hooks.dtls_transport_of(pc), self._on_rtp)
        # The tapped packets never reach aiortc's receivers: stop their decoder threads.
        for transceiver in pc.getTransceivers():
            if transceiver.direction == "recvonly" or transceiver.currentDirection == "recvonly":
                try:
                    aiortc_hooks.stop_receiver_decoder(transceiver.receiver)
                except aiortc_hooks.HookError:
                    logger.warning("cannot stop aiortc's decoder thread; it idles")
                    break

    @staticmethod
    def extension_id_of(pc) -> int | None:
        """The negotiated id of the mid header extension (shared by every m-line: BUNDLE)."""
        for transceiver in pc.getTransceivers():
            ext_id = aiortc_hooks.negotiated_extension_id(transceiver, MID_EXTENSION_URI)
            if ext_id is not None:
                return ext_id
        return None

    def bind(self, mid: str, receiver: ChannelReceiver) -> None:
        self._by_mid[mid] = receiver

    def unbind(self, mid: str) -> ChannelReceiver | None:
        return self._by_mid.pop(mid, None)

    def unbind_channel(self, channel_id: int) -> None:
        for mid, receiver in list(self._by_mid.items()):
            if receiver.channel_id == channel_id:
                del self._by_mid[mid]

    def receiver_for(self, channel_id: int) -> ChannelReceiver | None:
        for receiver in self._by_mid.values():
            if receiver.channel_id == channel_id:
                return receiver
        return None

    def _on_rtp(self, data: bytes) -> None:
        mid = rtp_mid(data, self._ext_id) if self._ext_id is not None else None
        receiver = self._by_mid.get(mid) if mid is not None else None
        if receiver is None:
            self.unrouted += 1
            return
        receiver.feed(data)
