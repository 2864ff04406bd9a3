"""FailureLimiter and TokenBucket with an injected clock."""

from __future__ import annotations

import pytest

from server.ratelimit import FailureLimiter, TokenBucket


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return Clock()


def test_failures_up_to_the_limit_are_allowed_then_refused(clock):
    limiter = FailureLimiter(3, 60.0, clock)
    for _ in range(3):
        assert limiter.retry_after("bob") == 0
        limiter.failed("bob")
        clock.now += 1
    assert limiter.retry_after("bob") == pytest.approx(57.0)  # first failure at 1000, now 1003
    assert limiter.retry_after("alice") == 0


def test_refusal_lifts_when_the_oldest_failure_leaves_the_window(clock):
    limiter = FailureLimiter(2, 10.0, clock)
    limiter.failed("k")
    clock.now += 4
    limiter.failed("k")
    clock.now += 5.9
    assert limiter.retry_after("k") == pytest.approx(0.1)
    clock.now += 0.1
    assert limiter.retry_after("k") == 0
    limiter.failed("k")  # the second failure (at +4) still counts
    assert limiter.retry_after("k") == pytest.approx(4.0)


def test_success_clears_the_key(clock):
    limiter = FailureLimiter(2, 60.0, clock)
    limiter.failed("k")
    limiter.failed("k")
    assert limiter.retry_after("k") > 0
    limiter.succeeded("k")
    assert limiter.retry_after("k") == 0
    assert len(limiter) == 0


def test_memory_stays_bounded_and_stale_keys_go(clock):
    limiter = FailureLimiter(5, 60.0, clock, max_keys=100)
    for i in range(1000):
        limiter.failed(f"user{i}")
    assert len(limiter) == 100
    assert limiter.retry_after("user999") == 0  # one failure of five
    # The most recent keys are the ones kept.
    limiter.failed("user999")
    assert len(limiter) == 100
    clock.now += 61
    limiter.failed("fresh")
    assert len(limiter) == 1  # everything out of the window forgotten


def test_a_key_keeps_only_its_last_failures(clock):
    limiter = FailureLimiter(3, 60.0, clock)
    for i in range(50):
        limiter.failed("k")
        clock.now += 0.1
    assert limiter.retry_after("k") == pytest.approx(60.0 - 0.3)  # the last three count


@pytest.mark.parametrize("args", [(0, 10.0), (3, 0.0), (3, -1.0)])
def test_failure_limiter_refuses_bad_settings(args):
    with pytest.raises(ValueError):
        FailureLimiter(*args)


def test_bucket_allows_a_burst_then_the_rate(clock):
    bucket = TokenBucket(10.0, 5, clock)
    assert [bucket.take() for _ in range(6)] == [True] * 5 + [False]
    assert bucket.retry_after() == pytest.approx(0.1)
    clock.now += 0.1
    assert bucket.take() is True
    assert bucket.take() is False
    clock.now += 100  # refills up to the burst, not beyond
    assert sum(bucket.take() for _ in range(20)) == 5


def test_bucket_ignores_a_clock_going_backwards(clock):
    bucket = TokenBucket(1.0, 1, clock)
    assert bucket.take()
    clock.now -= 50
    assert not bucket.take()
    clock.now += 1
    assert bucket.take()


@pytest.mark.parametrize("args", [(0.0, 5), (1.0, 0)])
def test_bucket_refuses_bad_settings(args):
    with pytest.raises(ValueError):
        TokenBucket(*args)
