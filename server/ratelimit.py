"""Rate limits: failed logins per key, and a token bucket per signaling connection.

Pure logic with an injected monotonic clock, no I/O; each object is used from one thread
(the server's event loop).
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable

# Keys a FailureLimiter remembers at most: a flood of made-up user names costs bounded
# memory; the least recently failed keys are forgotten first.
MAX_KEYS = 10_000


class FailureLimiter:
    """At most `max_failures` failures per key within a sliding `window_s`.

    Only failures count: a key that reached the limit is refused until its oldest failure
    in the window is `window_s` old. `retry_after(key)` is checked before the expensive
    work (scrypt) and costs nothing for a key that never failed.
    """

    def __init__(
        self,
        max_failures: int,
        window_s: float,
        clock: Callable[[], float] = time.monotonic,
        *,
        max_keys: int = MAX_KEYS,
    ) -> None:
        if max_failures < 1 or window_s <= 0 or max_keys < 1:
            raise ValueError("max_failures, window_s and max_keys must be positive")
        self.max_failures = max_failures
        self.window_s = window_s
        self._clock = clock
        self._max_keys = max_keys
        # key -> times of its last `max_failures` failures, oldest first; the dict is in
        # order of the latest failure, so the first key is the stalest.
        self._failures: OrderedDict[Hashable, deque[float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._failures)

    def retry_after(self, key: Hashable) -> float:
        """Seconds until `key` may try again; 0 when it may now."""
        times = self._current(key)
        if times is None or len(times) < self.max_failures:
            return 0.0
        return max(0.0, times[0] + self.window_s - self._clock())

    def failed(self, key: Hashable) -> None:
        now = self._clock()
        times = self._current(key)
        if times is None:
            times = self._failures[key] = deque(maxlen=self.max_failures)
        times.append(now)
        self._failures.move_to_end(key)
        self._forget_stale(now)

    def succeeded(self, key: Hashable) -> None:
        self._failures.pop(key, None)

    def _current(self, key: Hashable) -> deque[float] | None:
        """The key's failures within the window (older ones dropped), or None."""
        times = self._failures.get(key)
        if times is None:
            return None
        cutoff = self._clock() - self.window_s
        while times and times[0] <= cutoff:
            times.popleft()
        if not times:
            del self._failures[key]
            return None
        return times

    def _forget_stale(self, now: float) -> None:
        # Keys whose latest failure is out of the window carry no weight any more; they sit
        # at the front. Beyond max_keys the stalest go even if still counting.
        cutoff = now - self.window_s
        while self._failures:
            key, times = next(iter(self._failures.items()))
            if len(self._failures) <= self._max_keys and times[-1] > cutoff:
                break
            del self._failures[key]


class TokenBucket:
    """`burst` requests at once, refilled at `rate_per_s`: `take()` says whether one may go."""

    def __init__(self, rate_per_s: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        if rate_per_s <= 0 or burst < 1:
            raise ValueError("rate_per_s and burst must be positive")
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._last = clock()

    def _refill(self) -> None:
        now = self._clock()
        elapsed = max(0.0, now - self._last)
        self._last = now
        self._tokens = min(float(self.burst), self._tokens + elapsed * self.rate_per_s)

    def take(self) -> bool:
        """Spend one token if there is one."""
        self._refill()
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    def retry_after(self) -> float:
        """Seconds until a token will be there (0 when one is)."""
        self._refill()
        return max(0.0, (1.0 - self._tokens) / self.rate_per_s)
