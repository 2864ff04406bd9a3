"""The Redis live-state store: floor leases shared by every node of a site.

One key per channel, ``{prefix}floor:{channel_id}``, holding the lease's JSON with a PX
expiry, so expiry follows Redis's clock and a crashed node's leases free themselves. The
token-checking operations are Lua scripts (server.state.redis_scripts).

Failure behaviour: every call is bounded by short socket timeouts and at most one
immediate retry (which is what carries a pooled connection over a Redis restart), and any
Redis failure becomes a LiveStoreError naming the operation and the server. ``ping()``
never raises. Nothing needs recreating after an outage: the pool reconnects on the next
call and the scripts are loaded again when Redis has forgotten them.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from server.state import redis_scripts
from server.state.base import (
    FloorLease,
    LiveStore,
    LiveStoreClosedError,
    LiveStoreError,
    LiveStoreRecovering,
    check_ttl,
)

log = logging.getLogger(__name__)

DEFAULT_PREFIX = "vpdesk:"
DEFAULT_TIMEOUT_S = 1.0


def redacted_url(url: str) -> str:
    """``url`` without its password, for logs and error messages."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        user = parts.username or ""
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        port = f":{parts.port}" if parts.port is not None else ""
        return urlunsplit(parts._replace(netloc=f"{user}:***@{host}{port}"))
    except ValueError:
        return "<unparsable redis url>"


class RedisLiveStore(LiveStore):
    """LiveStore on a Redis server (redis.asyncio), safe for several nodes at once.

    Every method is a coroutine for the owner's asyncio loop (the one the client was
    created on). ``prefix`` starts every key, so several sites can share one Redis.
    """

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        prefix: str = DEFAULT_PREFIX,
        name: str = "redis",
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        self._client = client
        self._prefix = prefix
        self._name = name  # says which server in messages, without secrets
        self._timeout_s = timeout_s
        self._acquire = client.register_script(redis_scripts.FLOOR_ACQUIRE)
        self._replace = client.register_script(redis_scripts.FLOOR_REPLACE)
        self._renew = client.register_script(redis_scripts.FLOOR_RENEW)
        self._release = client.register_script(redis_scripts.FLOOR_RELEASE)
        self._epoch_check = client.register_script(redis_scripts.EPOCH_CHECK)
        # The life of Redis's data as this object last saw it ('' before the first look):
        # finding it gone means Redis lost every lease (see redis_scripts._EPOCH_OF).
        self._epoch = ""
        self._closed = False

    @classmethod
    def from_url(
        cls, url: str, *, prefix: str = DEFAULT_PREFIX, timeout_s: float = DEFAULT_TIMEOUT_S
    ) -> RedisLiveStore:
        """A store on ``redis://[:password@]host[:port][/db]`` (or ``rediss://``,
        ``unix://``). Connects lazily: an unreachable server shows in ``ping()`` and as
        LiveStoreError from the operations, not here. Raises LiveStoreError for a URL
        that cannot be parsed."""
        try:
            client = aioredis.Redis.from_url(
                url,
                socket_timeout=timeout_s,
                socket_connect_timeout=timeout_s,
                # One immediate retry: enough to replace a connection Redis dropped when it
                # restarted, without stacking backoff delays on a request while it is down.
                retry=Retry(NoBackoff(), 1),
            )
        except ValueError as exc:
            raise LiveStoreError(f"invalid redis url {redacted_url(url)!r}: {exc}") from exc
        return cls(client, prefix=prefix, name=redacted_url(url), timeout_s=timeout_s)

    @property
    def name(self) -> str:
        """The server's URL without its password."""
        return self._name

    def key(self, channel_id: int) -> str:
        """The Redis key of a channel's floor lease."""
        return f"{self._prefix}floor:{channel_id}"

    @property
    def _epoch_key(self) -> str:
        return f"{self._prefix}epoch"

    @property
    def _quiet_key(self) -> str:
        return f"{self._prefix}grants-quiet"

    # ------------------------------------------------------------------ LiveStore

    async def floor_acquire(self, lease: FloorLease, ttl_ms: int) -> FloorLease | None:
        check_ttl(ttl_ms)
        self._check_open("floor_acquire")
        reply = await self._call("floor_acquire", self._acquire(
            keys=[self.key(lease.channel_id), self._epoch_key, self._quiet_key],
            args=[lease.encode(), ttl_ms, self._epoch, _new_epoch()],
        ))
        status, self._epoch = int(reply[0]), _text(reply[1])
        if status == 0:
            return None
        if status == 2:
            raise LiveStoreRecovering(int(reply[2]))
        return FloorLease.decode(reply[2])

    async def detect_data_loss(self, quiet_ms: int) -> bool:
        check_ttl(quiet_ms)
        self._check_open("detect_data_loss")
        known = self._epoch
        reply = await self._call("detect_data_loss", self._epoch_check(
            keys=[self._epoch_key, self._quiet_key], args=[known, _new_epoch(), quiet_ms],
        ))
        self._epoch = _text(reply[0])
        lost = known != "" and known != self._epoch
        if lost:
            log.warning("redis store %s lost its data (restarted without persistence?): "
                        "floors are granted again in %d ms", self._name, int(reply[1]))
        return lost

    async def floor_replace(self, lease: FloorLease, expected_token: str, ttl_ms: int) -> bool:
        check_ttl(ttl_ms)
        return bool(await self._script("floor_replace", self._replace, lease.channel_id,
                                       expected_token, lease.encode(), ttl_ms))

    async def floor_renew(self, channel_id: int, token: str, ttl_ms: int) -> bool:
        check_ttl(ttl_ms)
        return bool(await self._script("floor_renew", self._renew, channel_id, token, ttl_ms))

    async def floor_release(self, channel_id: int, token: str) -> bool:
        return bool(await self._script("floor_release", self._release, channel_id, token))

    async def floor_get(self, channel_id: int) -> FloorLease | None:
        self._check_open("floor_get")
        value = await self._call("floor_get", self._client.get(self.key(channel_id)))
        return None if value is None else FloorLease.decode(value)

    async def ping(self) -> bool:
        if self._closed:
            return False
        try:
            # The socket timeouts bound this already; wait_for also covers a retry.
            return bool(await asyncio.wait_for(self._client.ping(), timeout=2 * self._timeout_s + 0.5))
        except (RedisError, OSError, asyncio.TimeoutError) as exc:
            log.debug("redis store %s: ping failed: %s", self._name, exc)
            return False

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._client.aclose()

    # ------------------------------------------------------------------ internals

    def _check_open(self, operation: str) -> None:
        if self._closed:
            raise LiveStoreClosedError(f"redis live store {self._name} is closed ({operation})")

    async def _script(self, operation: str, script, channel_id: int, *args: str | int):
        """Run one of the Lua scripts on the channel's key (KEYS[1]) with ``args`` as
        ARGV. Closed-ness is checked first, so a closed store never builds a call."""
        self._check_open(operation)
        return await self._call(operation, script(keys=[self.key(channel_id)], args=list(args)))

    async def _call(self, operation: str, command):
        """Await one Redis command or script, turning every Redis failure into
        LiveStoreError. ``command`` is the not-yet-awaited coroutine."""
        try:
            return await command
        except (RedisError, OSError, asyncio.TimeoutError) as exc:
            # Debug only: the caller sees the LiveStoreError and logs what it means.
            log.debug("redis store %s: %s failed: %s", self._name, operation, exc)
            raise LiveStoreError(f"redis at {self._name} failed during {operation}: {exc}") from exc


def _new_epoch() -> str:
    return secrets.token_hex(8)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
