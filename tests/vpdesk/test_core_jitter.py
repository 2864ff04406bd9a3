"""The jitter buffer's rules (vpdesk.core.jitter), on an injected clock."""

from __future__ import annotations

import random

import pytest

from vpdesk.core.jitter import Action, BufferState, JitterBuffer, JitterConfig, PushResult

FRAME = 0.020
TS = 960  # RTP timestamp units per 20 ms frame


class Clock:
    def __init__(self, t: float = 100.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


def make(**config) -> tuple[JitterBuffer, Clock]:
    clock = Clock()
    return JitterBuffer(JitterConfig(**config), clock), clock


def push(buf: JitterBuffer, seq: int, ts: int | None = None) -> PushResult:
    return buf.push(seq & 0xFFFF, (seq * TS if ts is None else ts) & 0xFFFFFFFF, b"p%d" % seq)


def seq_of(playout) -> int:
    return playout.packet.seq & 0xFFFF


def start(buf: JitterBuffer, clock: Clock) -> None:
    """Wait out the start delay."""
    clock.advance(buf.start_delay)


def test_nothing_until_the_start_delay_then_in_order():
    buf, clock = make(initial_delay=0.020)
    assert buf.next().action is Action.NOTHING
    push(buf, 10)
    assert buf.state is BufferState.STARTING
    clock.advance(0.019)
    assert buf.next().action is Action.NOTHING
    clock.advance(0.001)
    push(buf, 11)
    played = buf.next()
    assert played.action is Action.PLAY and seq_of(played) == 10
    assert seq_of(buf.next()) == 11
    assert buf.state is BufferState.PLAYING


def test_reordered_packets_play_in_sequence():
    buf, clock = make()
    for seq in (12, 10, 11, 13):
        assert push(buf, seq) is PushResult.ACCEPTED
    start(buf, clock)
    assert [seq_of(buf.next()) for _ in range(4)] == [10, 11, 12, 13]


def test_duplicates_and_late_packets_are_dropped_and_counted():
    buf, clock = make()
    push(buf, 1)
    assert push(buf, 1) is PushResult.DUPLICATE
    start(buf, clock)
    push(buf, 2)
    assert seq_of(buf.next()) == 1
    assert push(buf, 0) is PushResult.LATE  # its moment (before 1) has passed
    assert buf.duplicates == 1 and buf.late == 1
    assert seq_of(buf.next()) == 2


def test_one_lost_packet_is_recovered_from_the_next_ones_fec():
    buf, clock = make()
    push(buf, 1)
    push(buf, 3)
    start(buf, clock)
    assert seq_of(buf.next()) == 1
    fec = buf.next()
    assert fec.action is Action.FEC and seq_of(fec) == 3  # 2 from 3's FEC
    played = buf.next()
    assert played.action is Action.PLAY and seq_of(played) == 3
    assert buf.recovered_by_fec == 1 and buf.concealed == 0 and buf.lost == 1


def test_two_lost_packets_conceal_one_and_recover_the_other():
    buf, clock = make()
    for seq in (1, 4):
        push(buf, seq)
    start(buf, clock)
    actions = [buf.next().action for _ in range(4)]
    assert actions == [Action.PLAY, Action.CONCEAL, Action.FEC, Action.PLAY]
    assert buf.concealed == 1 and buf.recovered_by_fec == 1 and buf.lost == 2


def test_an_underrun_stretches_by_whole_frames_and_the_late_packet_still_plays():
    buf, clock = make()
    push(buf, 1)
    start(buf, clock)
    assert seq_of(buf.next()) == 1
    assert buf.next().action is Action.CONCEAL  # 2 is late: nothing to play
    assert buf.next().action is Action.CONCEAL
    push(buf, 2)
    assert push(buf, 3) is PushResult.ACCEPTED
    played = buf.next()
    assert played.action is Action.PLAY and seq_of(played) == 2  # not skipped
    assert seq_of(buf.next()) == 3
    assert buf.underruns == 1 and buf.late == 0 and buf.lost == 0


def test_end_of_burst_goes_idle_without_a_concealed_tail():
    buf, clock = make()
    push(buf, 1)
    buf.end_of_burst()
    start(buf, clock)
    assert buf.next().action is Action.PLAY
    assert buf.next().action is Action.NOTHING
    assert buf.state is BufferState.IDLE and buf.concealed == 0
    # The next talker's first packet starts a new transmission, with its start delay.
    clock.advance(0.1)
    push(buf, 2)
    assert buf.state is BufferState.STARTING
    assert buf.next().action is Action.NOTHING
    start(buf, clock)
    assert seq_of(buf.next()) == 2
    assert buf.underruns == 0


def test_a_stall_gives_up_after_max_stall_frames():
    buf, clock = make(max_stall=3)
    push(buf, 1)
    start(buf, clock)
    buf.next()
    assert [buf.next().action for _ in range(4)] == [Action.CONCEAL] * 3 + [Action.NOTHING]
    assert buf.state is BufferState.IDLE and buf.underruns == 0
    # The talk goes on soon after (no end_of_burst came): the give-up was an underrun.
    clock.advance(0.2)
    push(buf, 9)
    assert buf.underruns == 1
    start(buf, clock)
    assert seq_of(buf.next()) == 9
    assert push(buf, 5) is PushResult.LATE


def test_a_stall_then_the_end_of_the_talk_is_no_underrun():
    buf, clock = make(max_stall=3)
    push(buf, 1)
    start(buf, clock)
    buf.next()
    assert buf.next().action is Action.CONCEAL  # floor_idle not there yet
    buf.end_of_burst()
    assert buf.next().action is Action.NOTHING
    clock.advance(0.1)
    push(buf, 2)
    assert buf.underruns == 0


def test_a_long_hole_is_not_concealed_frame_by_frame():
    buf, clock = make(max_stall=3)
    push(buf, 1)
    push(buf, 50)
    start(buf, clock)
    buf.next()
    played = buf.next()
    assert played.action is Action.PLAY and seq_of(played) == 50
    assert buf.lost == 48 and buf.concealed == 0


def test_sequence_numbers_wrap():
    buf, clock = make()
    for seq in (0xFFFE, 0xFFFF, 0x10000, 0x10001):
        push(buf, seq)
    start(buf, clock)
    assert [seq_of(buf.next()) for _ in range(4)] == [0xFFFE, 0xFFFF, 0, 1]
    assert buf.lost == 0 and buf.late == 0


def test_a_new_sequence_line_while_idle_is_a_new_stream():
    buf, clock = make()
    push(buf, 30000)
    buf.end_of_burst()
    start(buf, clock)
    buf.next()
    buf.next()
    assert buf.state is BufferState.IDLE
    assert push(buf, 100) is PushResult.ACCEPTED  # a server restart: not "late"
    start(buf, clock)
    assert seq_of(buf.next()) == 100
    assert buf.lost == 0


def test_the_buffer_never_holds_more_than_max_delay():
    buf, clock = make(max_delay=0.100)
    for seq in range(20):  # nobody pulls (no speaker)
        push(buf, seq)
        assert buf.depth <= 5
    assert buf.discarded == 15
    start(buf, clock)
    assert seq_of(buf.next()) == 15  # the newest 100 ms


def talk(buf: JitterBuffer, clock: Clock, first_seq: int, frames: int, delays: list[float]) -> int:
    """One transmission in real time: packet k leaves at k·20 ms and arrives delays[k]
    later; the playout side pulls every 20 ms. Returns the next sequence number."""
    base_t = clock.t
    events = [(base_t + k * FRAME + delays[k], "push", k) for k in range(frames)]
    events += [(base_t + k * FRAME + 0.0001, "pull", k) for k in range(frames + 20)]
    base_ts = first_seq * TS
    for t, kind, k in sorted(events):
        clock.t = max(clock.t, t)
        if kind == "push":
            buf.push((first_seq + k) & 0xFFFF, (base_ts + k * TS) & 0xFFFFFFFF, b"x")
        else:
            buf.next()
    buf.end_of_burst()
    buf.next()
    clock.advance(1.0)
    return first_seq + frames


def test_the_target_follows_the_measured_jitter_between_transmissions():
    buf, clock = make(min_delay=0.010, max_delay=0.200, margin=0.002, quantile=0.98)
    assert buf.target_delay == pytest.approx(0.020)  # nothing measured yet: initial_delay
    seq = talk(buf, clock, 1, 100, [0.001] * 100)  # a clean link
    push(buf, seq)
    assert buf.start_delay == pytest.approx(0.010)  # the floor
    buf.end_of_burst()
    start(buf, clock)
    buf.next()
    buf.next()
    clock.advance(1.0)
    rng = random.Random(3)
    jittery = [rng.uniform(0.0, 0.045) for _ in range(300)]
    seq = talk(buf, clock, seq + 1, 300, jittery)
    late_before = buf.late + buf.underruns
    assert late_before > 0  # the first talk on this link was under-buffered
    push(buf, seq)
    # The new transmission waits about the spread of the delays, plus the margin.
    assert 0.035 <= buf.start_delay <= 0.050
    buf.end_of_burst()
    start(buf, clock)
    buf.next()
    buf.next()
    clock.advance(1.0)
    jittery = [rng.uniform(0.0, 0.045) for _ in range(100)]
    seq = talk(buf, clock, seq + 1, 100, jittery)
    assert buf.late + buf.underruns - late_before <= 3  # now it mostly fits


def test_recent_loss_adds_a_frame_so_that_fec_can_arrive_in_time():
    buf, clock = make(min_delay=0.010, margin=0.002)
    frames = list(range(1, 60))
    del frames[30]  # one lost
    base = clock.t
    for k in frames:
        clock.t = base + k * FRAME
        push(buf, k)
        buf.next()
    buf.end_of_burst()
    for _ in range(5):  # what is still buffered
        buf.next()
    assert buf.state is BufferState.IDLE
    clock.advance(1.0)
    push(buf, 100)
    assert buf.start_delay == pytest.approx(0.002 + FRAME, abs=0.001)  # not the 10 ms floor


def test_the_target_is_clamped():
    buf, clock = make(min_delay=0.010, max_delay=0.060)
    talk(buf, clock, 1, 50, [0.0 if k % 2 else 0.150 for k in range(50)])
    push(buf, 500)
    assert buf.start_delay == pytest.approx(0.060)


def test_after_an_underrun_the_delay_shrinks_back_in_silence_only():
    buf, clock = make(shrink_window=10, initial_delay=0.010, min_delay=0.010)
    push(buf, 0)
    start(buf, clock)
    assert seq_of(buf.next()) == 0
    assert buf.next().action is Action.CONCEAL  # 1 is late: the delay grows by a frame
    push(buf, 1)  # late
    seq = 2
    for _ in range(30):  # from now on packets come on time: one more than needed waits
        push(buf, seq)
        seq += 1
        clock.advance(FRAME)
        buf.next(quiet=False)  # speech: never skipped
    assert buf.skipped == 0 and buf.depth == 1
    push(buf, seq)
    seq += 1
    played = buf.next(quiet=True)  # silence, after a steady window: one frame skipped
    assert buf.skipped == 1 and buf.depth == 0
    assert seq_of(played) == seq - 1
    for _ in range(30):  # back at the target: no more skips
        push(buf, seq)
        seq += 1
        buf.next(quiet=True)
    assert buf.skipped == 1 and buf.underruns == 1 and buf.lost == 0
