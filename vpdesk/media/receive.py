"""The console's receive path: RTP straight from the transport to the speaker.

aiortc's own receive path puts every packet through a fixed jitter buffer and a decoder
thread per transceiver before `track.recv()` hands out frames: 80 ms or more of added
delay, and one idle thread per monitored channel. A dispatcher listens to up to 50
channels, so the console taps the decrypted RTP off the peer's one (BUNDLE) transport
instead and routes each packet to its channel by the RTP `mid` header extension the
server writes on every copy.

Each channel's ChannelReceiver puts its packets into an adaptive jitter buffer
(vpdesk.core.jitter) and decodes with libopus (vpdesk.audio.opus), which can also
recover a lost packet from the next one's in-band FEC and conceal what cannot be
recovered. With a sink that pulls (vpdesk.audio.playback.PlaybackSink.attach), the
decode happens when the speaker's callback needs the next frame, so the jitter
buffer's start delay, adapted to the measured arrival jitter, is the only buffering.
A sink that only takes writes (a test's recorder) gets each packet decoded on arrival,
with the same FEC and concealment for gaps.

Packets arrive on the event loop that owns the peer; `next_frame()` runs on the audio
callback's thread. The jitter buffer is shared under a lock held for its bookkeeping
only; the decoder belongs to whichever thread decodes (one at a time: its own lock).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from server.media import aiortc_hooks
from server.media.forwarder import MalformedRtp, rtp_payload_bounds
from vpdesk.audio.opus import OpusDecoder, OpusError, packet_samples
from vpdesk.core.jitter import Action, JitterBuffer, JitterConfig, Playout

logger = logging.getLogger(__name__)

MID_EXTENSION_URI = "urn:ietf:params:rtp-hdrext:sdes:mid"
# Tell the board a channel is active at most this often: a lamp needs no 50 Hz updates.
ACTIVITY_EVERY_S = 0.2
FRAME_SAMPLES = 960  # 20 ms at 48 kHz, until a packet says otherwise
# A decoded frame below this RMS (about −50 dBFS) is silence: the jitter buffer may skip
# the next one to shrink its delay.
QUIET_RMS = 0.003
# A sink that only takes writes gets each packet decoded at once: no start delay.
WRITE_THROUGH = JitterConfig(min_delay=0.0, max_delay=0.0, initial_delay=0.0)


class AudioSink(Protocol):
    """Where decoded audio goes: vpdesk.audio.playback.PlaybackSink (which pulls through
    attach()), or anything with write() (decoded audio is pushed as it arrives)."""

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
    """One monitored channel: jitter buffer and Opus decoder feeding its playback sink.

    Counters: packets (received, without duplicates), lost (RFC 3550), bad (not RTP or
    not Opus), late, recovered_by_fec, concealed, underruns; stats() has them all.
    `sink` may be replaced (the speaker changed): the receiver moves over to the new one.
    """

    def __init__(
        self,
        channel_id: int,
        sink: AudioSink,
        on_activity: Callable[[int], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        jitter: JitterConfig | None = None,
    ) -> None:
        self.channel_id = channel_id
        self._on_activity = on_activity
        self._clock = clock
        self._jitter_config = jitter
        self._lock = threading.Lock()  # the jitter buffer: loop vs audio thread
        self._decode_lock = threading.Lock()
        self._decoder = OpusDecoder()
        self._frame_samples = FRAME_SAMPLES
        self._last_quiet = False  # the audio thread's: the last frame played was silence
        self._last_activity = float("-inf")
        self._malformed = 0
        self._undecodable = 0
        self._sink: Any = None
        self._buffer = JitterBuffer(jitter, clock)
        self.sink = sink

    # --- the sink ----------------------------------------------------------------------

    @property
    def sink(self) -> Any:
        return self._sink

    @sink.setter
    def sink(self, sink: Any) -> None:
        old, self._sink = self._sink, sink
        if old is not None and getattr(old, "source", None) is self:
            old.attach(None)
        pulls = hasattr(sink, "attach")
        with self._lock:
            if pulls != self.pulled:
                # Pulled: the adaptive buffer; written: decode each packet on arrival.
                config = (self._jitter_config or JitterConfig()) if pulls else WRITE_THROUGH
                self._buffer = JitterBuffer(config, self._clock)
            else:
                self._buffer.reset()
        if pulls:
            sink.attach(self)

    @property
    def pulled(self) -> bool:
        """Whether the sink pulls frames (else each packet is decoded and written)."""
        return self._buffer.config is not WRITE_THROUGH

    # --- counters -----------------------------------------------------------------------

    @property
    def packets(self) -> int:
        return self._buffer.received

    @property
    def lost(self) -> int:
        return self._buffer.lost

    @property
    def bad(self) -> int:
        return self._malformed + self._undecodable

    @property
    def late(self) -> int:
        return self._buffer.late

    @property
    def recovered_by_fec(self) -> int:
        return self._buffer.recovered_by_fec

    @property
    def concealed(self) -> int:
        return self._buffer.concealed

    @property
    def underruns(self) -> int:
        return self._buffer.underruns

    @property
    def buffered_ms(self) -> float:
        return self._buffer.depth * self._frame_samples * 1000.0 / 48000

    @property
    def target_delay_ms(self) -> float:
        return self._buffer.target_delay * 1000.0

    def stats(self) -> dict[str, Any]:
        b = self._buffer
        return {"packets": b.received, "lost": b.lost, "bad": self.bad, "late": b.late,
                "duplicates": b.duplicates, "recovered_by_fec": b.recovered_by_fec,
                "concealed": b.concealed, "underruns": b.underruns, "skipped": b.skipped,
                "discarded": b.discarded,
                "target_delay_ms": round(b.target_delay * 1000.0, 2),
                "jitter_ms": None if b.jitter_estimate is None else round(b.jitter_estimate * 1000.0, 2)}

    # --- the network side (event loop) ------------------------------------------------

    def feed(self, data: bytes) -> None:
        """One RTP packet of this channel (SRTP already removed)."""
        try:
            start, end = rtp_payload_bounds(data)
        except MalformedRtp:
            self._malformed += 1
            return
        payload = data[start:end]
        try:
            packet_samples(payload)
        except OpusError:
            self._malformed += 1
            return
        seq = (data[2] << 8) | data[3]
        timestamp = int.from_bytes(data[4:8], "big")
        with self._lock:
            self._buffer.push(seq, timestamp, payload)
        if not self.pulled:
            self._write_through()
        now = self._clock()
        if self._on_activity is not None and now - self._last_activity >= ACTIVITY_EVERY_S:
            self._last_activity = now
            self._on_activity(self.channel_id)

    def _write_through(self) -> None:
        """A writing sink: decode what the packet made playable, now."""
        while True:
            with self._lock:
                if self._buffer.depth == 0:
                    return
                playout = self._buffer.next()
            pcm = self._decode(playout)
            if pcm is None:
                return
            self._sink.write(pcm)

    # --- the playout side (the audio callback's thread) --------------------------------

    def next_frame(self) -> np.ndarray | None:
        """The next frame to play (float32), or None: nothing to play now."""
        with self._lock:
            playout = self._buffer.next(self._last_quiet)
        return self._decode(playout)

    def end_of_burst(self) -> None:
        with self._lock:
            self._buffer.end_of_burst()

    def reset(self) -> None:
        with self._lock:
            self._buffer.reset()

    def _decode(self, playout: Playout) -> np.ndarray | None:
        """Carry out one jitter-buffer decision with the decoder."""
        action, packet = playout.action, playout.packet
        if action is Action.NOTHING:
            return None
        with self._decode_lock:
            try:
                if action is Action.PLAY:
                    assert packet is not None
                    pcm = self._decoder.decode(packet.payload)
                    self._frame_samples = len(pcm) or self._frame_samples
                    self._last_quiet = float(np.dot(pcm, pcm)) < QUIET_RMS * QUIET_RMS * len(pcm)
                    return pcm
                self._last_quiet = False
                if action is Action.FEC:
                    assert packet is not None
                    return self._decoder.decode_fec(packet.payload, packet_samples(packet.payload))
                return self._decoder.conceal(self._frame_samples)
            except OpusError as exc:
                self._undecodable += 1
                logger.debug("channel %s: undecodable packet: %s", self.channel_id, exc)
                return self._decoder.conceal(self._frame_samples)


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
