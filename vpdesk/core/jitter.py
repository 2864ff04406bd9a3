"""A per-channel packet jitter buffer for Opus over RTP, driven by the playout side.

The network side pushes each RTP packet as it arrives (`push`); the playout side, once
per frame it needs, asks what to play (`next`) and gets one of:

- PLAY(packet): decode this packet, the next in sequence;
- FEC(packet): the frame due is missing but the packet after it is here: decode that
  packet's in-band FEC (Opus LBRR), which carries a coarser copy of the missing frame;
- CONCEAL: nothing usable is here: let the decoder invent a frame (Opus PLC);
- NOTHING: play silence (no transmission, or waiting out the start delay).

Policy (kept simple on purpose: PTT talk comes in transmissions of a few seconds with
gaps between them):

- **Sequence, not time, drives playout.** Within a transmission the frames are played in
  RTP sequence order, one per `next()`; timestamps only feed the jitter estimate. The
  server keeps a channel's sequence contiguous across talkers, so a talker change needs
  no special case.
- **Start delay.** A transmission starts with the first packet that arrives while the
  buffer is idle. Playout begins at the first `next()` at least `target_delay` after that
  packet arrived, so every later packet has that much time to be late.
- **The target adapts between transmissions only.** For each packet, its transit
  (arrival − timestamp / rate) minus the smallest transit seen so far in its transmission
  measures how late it was against the fastest packet; a window of the last `window` of
  these, across transmissions, gives the estimate. At each start: target = the
  `quantile` of the window + `margin`, plus one frame if a packet went missing within
  the last `loss_window` packets (so that the packet after a lost one, carrying its FEC,
  is usually here when the lost one is due), clamped to [min_delay, max_delay]. Until
  `min_samples` are measured, `initial_delay`.
- **Within a transmission, only whole frames move the delay.** When the frame due has
  not arrived and nothing after it has either (an underrun), one frame is concealed
  without advancing: the delay grows by a frame and the late packet still plays. After
  `max_stall` such frames in a row (or at once, if `end_of_burst()` said the talk is
  over) the buffer goes idle and the next packet starts a new transmission with the
  then-current target. The delay shrinks back by skipping one frame, only in silence:
  when every packet played over the last `shrink_window` frames waited at least one
  frame longer than the target delay, and the caller says the frame it just played was
  quiet (`next(quiet=True)`), the next packet is dropped unplayed (so every packet still
  waits at least the target: no oscillation). The hard bound: the
  buffer never holds more than `max_delay` of audio; the oldest packets go first.
- **Losses.** A missing frame with a later packet buffered is concealed; if the packet
  right after it is buffered, that packet's FEC recovers it instead. A packet that
  arrives after its frame was played or concealed is late and dropped; so is a
  duplicate.

Counters (read by the console's bench): received, duplicates, late, lost (RFC 3550:
expected − received), recovered_by_fec, concealed, underruns (stalls inside a
transmission that it then recovered from), skipped (silent frames dropped to shrink
the delay), discarded (by the max_delay bound).

Pure logic: no threads, no I/O, time only from the injected clock. The caller serialises
access (the console holds a lock: packets come from the event loop, `next()` from the
audio callback).
"""

from __future__ import annotations

import bisect
import collections
import enum
import time
from collections.abc import Callable
from dataclasses import dataclass

SEQ_MOD = 1 << 16
TS_MOD = 1 << 32
# A packet this far behind while idle is a new stream (a server restart, a new node),
# not a late one.
RESTART_BEHIND = 1000
# How many recent sequence numbers are remembered to tell a duplicate from a late packet.
RECENT_SEQS = 128
# A transmission that starts this soon after the last one gave up in an underrun (with
# no end_of_burst) is that one going on: the give-up was an underrun.
MID_BURST_GAP_S = 0.5


class Action(enum.Enum):
    PLAY = "play"
    FEC = "fec"
    CONCEAL = "conceal"
    NOTHING = "nothing"


class BufferState(enum.Enum):
    IDLE = "idle"  # no transmission: silence
    STARTING = "starting"  # holding a new transmission's first packets for the start delay
    PLAYING = "playing"


class PushResult(enum.Enum):
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    LATE = "late"


@dataclass(frozen=True)
class Packet:
    seq: int  # extended (unwrapped) sequence number
    timestamp: int  # extended RTP timestamp
    payload: bytes
    arrival: float


@dataclass(frozen=True)
class Playout:
    """What to do for the next frame. `packet`: the one to decode (PLAY) or whose FEC to
    decode (FEC); None otherwise."""

    action: Action
    packet: Packet | None = None


NOTHING = Playout(Action.NOTHING)
CONCEAL = Playout(Action.CONCEAL)


@dataclass(frozen=True)
class JitterConfig:
    clock_rate: int = 48_000
    frame_s: float = 0.020  # the usual packet duration (Opus at 20 ms)
    min_delay: float = 0.010
    max_delay: float = 0.200
    initial_delay: float = 0.020
    margin: float = 0.002  # on top of the estimate: the audio callback's own wobble
    quantile: float = 0.98
    window: int = 250  # packets (5 s of talk)
    min_samples: int = 10
    loss_window: int = 250
    max_stall: int = 3  # frames concealed in an underrun before going idle
    shrink_window: int = 10  # frames (200 ms) of steady excess before a silent frame is skipped


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(q * len(ordered))))]


class JitterBuffer:
    """See the module docstring. `clock`: seconds, monotonic."""

    def __init__(self, config: JitterConfig | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config or JitterConfig()
        self._clock = clock
        self._packets: list[Packet] = []  # sorted by seq
        self._seqs: list[int] = []  # their seqs, for bisect
        self.state = BufferState.IDLE
        self._next_seq: int | None = None  # the frame due next (PLAYING), or after the last played
        self._highest_seq: int | None = None
        self._base_seq: int | None = None
        self._last_ts: int | None = None
        self._recent: collections.deque[int] = collections.deque(maxlen=RECENT_SEQS)
        self._recent_set: set[int] = set()
        self._lateness: collections.deque[float] = collections.deque(maxlen=self.config.window)
        self._talk_min_transit = float("inf")
        self._start_at = 0.0
        self._stalls = 0
        self._over = False
        self._stalled_out_at: float | None = None  # when an underrun last gave up
        # `lost` after each of the last loss_window packets: a loss is recent if the count
        # grew since the oldest (reordering that resolved itself does not count).
        self._lost_history: collections.deque[int] = collections.deque(maxlen=self.config.loss_window)
        self.target_delay = self.config.initial_delay
        self.start_delay = self.config.initial_delay  # the current transmission's
        self.received = 0
        self.duplicates = 0
        self.late = 0
        self.recovered_by_fec = 0
        self.concealed = 0
        self.underruns = 0
        self.skipped = 0
        self.discarded = 0
        self._window_plays = 0
        self._window_min_wait = 0.0
        self._excess = False

    # --- figures ---------------------------------------------------------------------

    @property
    def lost(self) -> int:
        """RFC 3550's cumulative loss: expected − received (late ones count as received)."""
        if self._highest_seq is None or self._base_seq is None:
            return 0
        return max(0, self._highest_seq - self._base_seq + 1 - self.received)

    @property
    def depth(self) -> int:
        """Packets buffered."""
        return len(self._packets)

    @property
    def jitter_estimate(self) -> float | None:
        """The window's quantile of lateness (s), or None before min_samples."""
        if len(self._lateness) < self.config.min_samples:
            return None
        return _quantile(list(self._lateness), self.config.quantile)

    def compute_target(self) -> float:
        cfg = self.config
        estimate = self.jitter_estimate
        if estimate is None:
            target = cfg.initial_delay
        else:
            target = estimate + cfg.margin
            if self._lost_history and self.lost > self._lost_history[0]:
                target += cfg.frame_s
        return min(cfg.max_delay, max(cfg.min_delay, target))

    # --- the network side ------------------------------------------------------------

    def push(self, seq: int, timestamp: int, payload: bytes) -> PushResult:
        """One packet as it arrives: 16-bit RTP sequence number, 32-bit timestamp."""
        now = self._clock()
        ext = self._extend_seq(seq)
        if ext in self._recent_set:
            self.duplicates += 1
            return PushResult.DUPLICATE
        self._remember(ext)
        self.received += 1
        if self._highest_seq is None or ext > self._highest_seq:
            self._highest_seq = ext
        self._lost_history.append(self.lost)
        ts = self._extend_ts(timestamp)
        transit = now - ts / self.config.clock_rate
        if self._next_seq is not None and ext < self._next_seq:
            self.late += 1
            self._measure(transit)  # the very evidence of jitter
            return PushResult.LATE
        self._over = False
        if self.state is BufferState.IDLE:
            self._begin_transmission(now)
        self._measure(transit)
        packet = Packet(ext, ts, bytes(payload), now)
        at = bisect.bisect_left(self._seqs, ext)
        self._seqs.insert(at, ext)
        self._packets.insert(at, packet)
        self._bound()
        return PushResult.ACCEPTED

    def end_of_burst(self) -> None:
        """The transmission is over (floor idle, or changed hands): once what is buffered
        has played, go idle at once instead of concealing a missing tail."""
        self._over = True
        self._stalled_out_at = None

    def _measure(self, transit: float) -> None:
        """One packet's lateness against the fastest of its transmission so far."""
        self._talk_min_transit = min(self._talk_min_transit, transit)
        self._lateness.append(transit - self._talk_min_transit)

    def reset(self) -> None:
        """Forget the buffered packets (the device changed); the estimate stays."""
        self._packets.clear()
        self._seqs.clear()
        self.state = BufferState.IDLE
        self._stalls = 0

    def _extend_seq(self, seq: int) -> int:
        if self._highest_seq is None:
            ext = SEQ_MOD + seq
            self._base_seq = ext
            return ext
        delta = (seq - self._highest_seq) % SEQ_MOD
        if delta >= SEQ_MOD // 2:
            delta -= SEQ_MOD
        ext = self._highest_seq + delta
        if self.state is BufferState.IDLE and delta < -RESTART_BEHIND:
            self._restart_stream(ext)
        return ext

    def _restart_stream(self, ext: int) -> None:
        """A new sequence line: forget the old one's numbers (its counts stay)."""
        self._next_seq = None
        self._recent.clear()
        self._recent_set.clear()
        assert self._highest_seq is not None and self._base_seq is not None
        # Keep `lost` as it was: shift the base along with the new line.
        self._base_seq = ext - (self._highest_seq - self._base_seq) - 1
        self._highest_seq = ext - 1

    def _extend_ts(self, timestamp: int) -> int:
        if self._last_ts is None:
            self._last_ts = TS_MOD + timestamp
            return self._last_ts
        delta = (timestamp - self._last_ts) % TS_MOD
        if delta >= TS_MOD // 2:
            delta -= TS_MOD
        ts = self._last_ts + delta
        if delta > 0:
            self._last_ts = ts
        return ts

    def _remember(self, ext: int) -> None:
        if len(self._recent) == self._recent.maxlen:
            self._recent_set.discard(self._recent[0])
        self._recent.append(ext)
        self._recent_set.add(ext)

    def _begin_transmission(self, now: float) -> None:
        if self._stalled_out_at is not None and now - self._stalled_out_at < MID_BURST_GAP_S:
            self.underruns += 1  # the last one starved and gave up; this is its rest
        self._stalled_out_at = None
        self.target_delay = self.compute_target()
        self.start_delay = self.target_delay
        self.state = BufferState.STARTING
        self._start_at = now + self.start_delay
        self._talk_min_transit = float("inf")
        self._stalls = 0
        self._restart_window()

    def _bound(self) -> None:
        """Never hold more than max_delay of audio: drop the oldest."""
        limit = max(1, int(round(self.config.max_delay / self.config.frame_s)))
        while len(self._packets) > limit:
            dropped = self._packets.pop(0)
            self._seqs.pop(0)
            self.discarded += 1
            if self._next_seq is not None and dropped.seq >= self._next_seq:
                self._next_seq = dropped.seq + 1

    # --- the playout side ------------------------------------------------------------

    def next(self, quiet: bool = False) -> Playout:
        """What to play for the next frame (call once per frame, when it is needed).
        `quiet`: the frame played last was silence (so skipping one is inaudible)."""
        if self.state is BufferState.IDLE:
            return NOTHING
        if self.state is BufferState.STARTING:
            if self._clock() < self._start_at:
                return NOTHING
            self.state = BufferState.PLAYING
            self._next_seq = self._seqs[0]
        assert self._next_seq is not None
        if self._packets:
            head = self._packets[0]
            gap = head.seq - self._next_seq
            if gap > self.config.max_stall:
                # A long hole (an outage): conceal no further, go on from what is here.
                self._next_seq = head.seq
                gap = 0
            if gap == 0:
                if quiet and len(self._packets) > 1 and self._seqs[1] == head.seq + 1 \
                        and self._excess_steady():
                    self._packets.pop(0)  # skipped unplayed: the delay shrinks by a frame
                    self._seqs.pop(0)
                    self.skipped += 1
                    self._restart_window()
                    self._next_seq += 1
                    head = self._packets[0]
                self._packets.pop(0)
                self._seqs.pop(0)
                self._next_seq += 1
                self._recovered_from_stall()
                self._note_wait(self._clock() - head.arrival)
                return Playout(Action.PLAY, head)
            self._next_seq += 1
            if gap == 1:
                self.recovered_by_fec += 1
                self._recovered_from_stall()
                return Playout(Action.FEC, head)
            self.concealed += 1
            return CONCEAL
        # Nothing here: the talk is over, or the next packet is late.
        if self._over or self._stalls >= self.config.max_stall:
            self.state = BufferState.IDLE
            if not self._over:
                self._stalled_out_at = self._clock()
            self._stalls = 0
            return NOTHING
        self._stalls += 1
        self._restart_window()
        self.concealed += 1
        return CONCEAL

    def _note_wait(self, waited: float) -> None:
        """A packet is played: the least time a packet waited, per window of frames."""
        if self._window_plays == 0 or waited < self._window_min_wait:
            self._window_min_wait = waited
        self._window_plays += 1
        if self._window_plays >= self.config.shrink_window:
            self._excess = self._window_min_wait >= self.target_delay + self.config.frame_s
            self._window_plays = 0

    def _excess_steady(self) -> bool:
        """Over the last whole window, every packet waited a frame more than the target."""
        return self._excess

    def _restart_window(self) -> None:
        self._window_plays = 0
        self._excess = False

    def _recovered_from_stall(self) -> None:
        if self._stalls:
            self.underruns += 1
            self._stalls = 0
