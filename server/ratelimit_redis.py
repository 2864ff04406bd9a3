"""Failed logins counted in Redis, so that the per-user and per-address limits hold across
every node of a site: five failures for a user spread over two nodes refuse the sixth on
either.

One sorted set per key, ``{prefix}login-failures:{scope}:{key}``, scored by the failure's
time (the nodes' wall clock: a monotonic clock means nothing to another machine), trimmed
to the last `max_failures` entries and to the window, and expiring `window_s` after the
latest failure by Redis's clock, so keys nobody asks about again go by themselves.

During a Redis outage every method raises ThrottleUnavailable (a LoginStoreUnavailable),
which the login routes answer with 503. Deliberately not "fail open" (retry_after 0): with
the logins in Redis too, a login cannot succeed anyway during the outage, but the password
check would still run and answer 401 for a wrong password, and something else for a right
one: an unthrottled password oracle for as long as the outage lasts. Refusing before the
check costs nobody a login they could have had.

Methods are synchronous (one round trip, see server.logins_redis for the timeouts and
the circuit breaker); one thread at a time, in the server its event loop.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import redis

from .logins import LoginStoreUnavailable
from .logins_redis import DEFAULT_PREFIX, FAILURE_BACKOFF_S, RedisCalls, redis_client
from .ratelimit import FailureLimiter
from .state.redis_store import redacted_url

if TYPE_CHECKING:
    from .config import ServerConfig

logger = logging.getLogger(__name__)

# Keys looked at by one SCAN step of __len__.
SCAN_COUNT = 1000


class ThrottleUnavailable(LoginStoreUnavailable):
    """The failure counts in Redis cannot be reached (see the module docstring)."""


class RedisFailureLimiter:
    """FailureLimiter's interface with the failures in Redis: at most `max_failures` per
    key within a sliding `window_s`, counted by every node that shares the Redis.

    `scope` ("user", "address") keeps two limiters on one Redis apart. `clock` is wall
    time (shared by the nodes), not monotonic.
    """

    def __init__(
        self,
        client: redis.Redis,
        max_failures: int,
        window_s: float,
        *,
        scope: str,
        prefix: str = DEFAULT_PREFIX,
        clock: Callable[[], float] = time.time,
        name: str = "redis",
        backoff_s: float = FAILURE_BACKOFF_S,
    ) -> None:
        if max_failures < 1 or window_s <= 0:
            raise ValueError("max_failures and window_s must be positive")
        self.max_failures = max_failures
        self.window_s = window_s
        self._client = client
        self._key_prefix = f"{prefix}login-failures:{scope}:"
        self._clock = clock
        self._calls = RedisCalls(f"login throttle ({scope}) in {name}", ThrottleUnavailable, backoff_s)

    def close(self) -> None:
        self._client.close()

    def _key(self, key: object) -> str:
        return f"{self._key_prefix}{key}"

    def __len__(self) -> int:
        """How many keys have failures on record (all nodes'); a SCAN over the keyspace,
        so for tests and occasional looks, not for every request."""
        pattern = self._key_prefix.replace("[", "\\[").replace("*", "\\*").replace("?", "\\?") + "*"
        return self._calls.run(
            "count", lambda: sum(1 for _ in self._client.scan_iter(match=pattern, count=SCAN_COUNT))
        )

    def retry_after(self, key: object) -> float:
        """Seconds until `key` may try again; 0 when it may now."""
        now = self._clock()
        times = self._calls.run("retry_after", lambda: self._client.zrangebyscore(
            self._key(key), f"({now - self.window_s!r}", "+inf", withscores=True,
        ))
        if len(times) < self.max_failures:
            return 0.0
        oldest = times[-self.max_failures][1]
        return max(0.0, oldest + self.window_s - now)

    def failed(self, key: object) -> None:
        now = self._clock()
        name = self._key(key)
        # Unique members: two failures in the same instant both count.
        member = f"{now!r}:{secrets.token_hex(4)}"

        def record() -> None:
            pipe = self._client.pipeline(transaction=True)
            pipe.zadd(name, {member: now})
            pipe.zremrangebyscore(name, "-inf", now - self.window_s)
            pipe.zremrangebyrank(name, 0, -self.max_failures - 1)  # only the last ones count
            pipe.pexpire(name, max(1, int(self.window_s * 1000)))
            pipe.execute()

        self._calls.run("failed", record)

    def succeeded(self, key: object) -> None:
        self._calls.run("succeeded", lambda: self._client.delete(self._key(key)))


def login_limiters(
    config: "ServerConfig",
) -> tuple[FailureLimiter | RedisFailureLimiter, FailureLimiter | RedisFailureLimiter]:
    """The node's failed-login limiters (per user name, per client address): in Redis
    (one client for both) when `config.redis_url` is set, else in this process."""
    if config.redis_url is None:
        return (
            FailureLimiter(config.login_failures_per_user, config.login_window_s),
            FailureLimiter(config.login_failures_per_address, config.login_window_s),
        )
    client = redis_client(config.redis_url)
    common = dict(prefix=config.redis_prefix, name=redacted_url(config.redis_url))
    return (
        RedisFailureLimiter(client, config.login_failures_per_user, config.login_window_s,
                            scope="user", **common),
        RedisFailureLimiter(client, config.login_failures_per_address, config.login_window_s,
                            scope="address", **common),
    )
