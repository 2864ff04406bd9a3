"""Logins in Redis: the same logins and refresh-token rotation as server.logins, shared by
every node of a site.

Keys (all under the prefix, "vpdesk:" by default):
- ``login:{id}``: a hash (user_id, refresh_hash, expires_at, created_at, last_used_at,
  address, client) that expires, by Redis's clock, when its refresh token would;
- ``refresh:{sha256}``: the login id, for the current refresh hash and for every
  rotated-out one, each expiring when its token would have. A hash that names a live
  login but is not that login's ``refresh_hash`` is a spent one: presenting it again is
  taken as theft and revokes the login (as in server.logins);
- ``user-logins:{user_id}``: a set of the user's login ids, for ``revoke_user``;
- ``logins:by-expiry``: a sorted set (score = expires_at by the nodes' clock), so that
  ``purge`` finds logins that expired by that clock without scanning;
- ``logins:revision``: a counter every revocation increments, which is what makes
  ``changed_by_others`` one GET.

Rotation, revocation and purging are Lua scripts, so two nodes presenting the same
refresh token at once cannot both succeed: one rotates, the other finds a spent hash. The
scripts build the keys they touch from the prefix, so they need a standalone (non-cluster)
Redis, like the live-state store.

Expiry is checked twice: the node's clock against the stored ``expires_at`` (as in
server.logins, and what the tests' fake clocks drive), and Redis's own key expiry, set
relative to Redis's clock, which also removes what nobody purges.

Failure behaviour: calls use the synchronous client with 0.5 s socket timeouts and one
immediate retry on a dropped connection (not on a timeout). A failure raises
LoginStoreUnavailable, and for the next second every call is refused at once without
trying (a circuit breaker: a dead Redis host costs the event loop at most one timeout a
second). ``changed_by_others`` never raises: it answers False during an outage; what
other nodes revoked meanwhile shows in the counter once Redis answers again.

A Redis that restarts without persistence has forgotten every login: clients log in again
(their refresh is "unknown", their next hello "token revoked"). Sessions already open are
not ended for it at once (``changed_by_others`` takes a counter that went backwards for
that loss, not for revocations), so run the site's Redis with persistence (appendonly).

Every method is synchronous: one Redis round trip (a script or a pipeline), about 0.1 ms
on loopback. Call them from one thread at a time, in the server from its event loop.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import redis
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.retry import Retry

from .directory import User
from .logins import (
    MAX_CLIENT_LENGTH, PURGE_INTERVAL_S, SELECT_CHUNK, LoginStore, LoginStoreUnavailable,
    RefreshRefused, _hash, _new_refresh_token,
)
from .state.redis_store import redacted_url

logger = logging.getLogger(__name__)

DEFAULT_PREFIX = "vpdesk:"
TIMEOUT_S = 0.5
# After a failed call, calls are refused without trying for this long.
FAILURE_BACKOFF_S = 1.0
# Logins ended by one purge script at most (a long purge would block Redis for everyone).
PURGE_BATCH = 500

T = TypeVar("T")

# --- Lua scripts -------------------------------------------------------------------
# Redis turns a Lua false into nil (None) and a table into a list; numbers are passed as
# strings both ways, so that fractional times are not truncated.

# Shared: end one login (its hash, current refresh key, set and index entries); true when
# there was one. Its spent refresh keys stay until they expire: they name a login that no
# longer exists, which reads as "unknown".
_END_LOGIN = """
local function end_login(prefix, login_id)
  local key = prefix .. 'login:' .. login_id
  local fields = redis.call('HMGET', key, 'user_id', 'refresh_hash')
  redis.call('ZREM', prefix .. 'logins:by-expiry', login_id)
  if not fields[1] then return false end
  redis.call('DEL', key)
  if fields[2] then redis.call('DEL', prefix .. 'refresh:' .. fields[2]) end
  redis.call('SREM', prefix .. 'user-logins:' .. fields[1], login_id)
  return true
end
local function bump(prefix)
  return redis.call('INCR', prefix .. 'logins:revision')
end
local function extend(key, ttl_ms)
  if redis.call('PTTL', key) < tonumber(ttl_ms) then redis.call('PEXPIRE', key, ttl_ms) end
end
"""

# KEYS     none (built from ARGV[1])
# ARGV     prefix, login id, user id, refresh hash, now, expires_at, ttl ms, address, client
# returns  1
CREATE = _END_LOGIN + """
local prefix, login_id, user_id, refresh_hash = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local key = prefix .. 'login:' .. login_id
redis.call('HSET', key, 'user_id', user_id, 'refresh_hash', refresh_hash,
           'created_at', ARGV[5], 'last_used_at', ARGV[5], 'expires_at', ARGV[6],
           'address', ARGV[8], 'client', ARGV[9])
redis.call('PEXPIRE', key, ARGV[7])
redis.call('SET', prefix .. 'refresh:' .. refresh_hash, login_id, 'PX', ARGV[7])
local user_key = prefix .. 'user-logins:' .. user_id
redis.call('SADD', user_key, login_id)
extend(user_key, ARGV[7])
redis.call('ZADD', prefix .. 'logins:by-expiry', ARGV[6], login_id)
return 1
"""

# KEYS     none (built from ARGV[1])
# ARGV     prefix, presented refresh hash, new refresh hash, now, new expires_at, ttl ms
# returns  {'unknown'}; {'reused' | 'expired', login id, revision} (the login is ended);
#          {'ok', login id, user id} (rotated: the presented hash is now a spent one)
ROTATE = _END_LOGIN + """
local prefix, old_hash, new_hash = ARGV[1], ARGV[2], ARGV[3]
local login_id = redis.call('GET', prefix .. 'refresh:' .. old_hash)
if not login_id then return {'unknown'} end
local key = prefix .. 'login:' .. login_id
local fields = redis.call('HMGET', key, 'refresh_hash', 'user_id', 'expires_at')
if not fields[1] then return {'unknown'} end
if fields[1] ~= old_hash then
  end_login(prefix, login_id)
  return {'reused', login_id, tostring(bump(prefix))}
end
if tonumber(ARGV[4]) >= tonumber(fields[3]) then
  end_login(prefix, login_id)
  return {'expired', login_id, tostring(bump(prefix))}
end
-- The presented key is left to expire when its token would have: from now on it marks a
-- spent token.
redis.call('HSET', key, 'refresh_hash', new_hash, 'expires_at', ARGV[5], 'last_used_at', ARGV[4])
redis.call('PEXPIRE', key, ARGV[6])
redis.call('SET', prefix .. 'refresh:' .. new_hash, login_id, 'PX', ARGV[6])
extend(prefix .. 'user-logins:' .. fields[2], ARGV[6])
redis.call('ZADD', prefix .. 'logins:by-expiry', ARGV[5], login_id)
return {'ok', login_id, fields[2]}
"""

# KEYS     none (built from ARGV[1])
# ARGV     prefix, login id
# returns  the new revision when the login was ended; 0 when there was none
REVOKE = _END_LOGIN + """
if end_login(ARGV[1], ARGV[2]) then return bump(ARGV[1]) end
return 0
"""

# KEYS     none (built from ARGV[1])
# ARGV     prefix, user id
# returns  {logins ended, new revision (0 when none)}
REVOKE_USER = _END_LOGIN + """
local prefix = ARGV[1]
local user_key = prefix .. 'user-logins:' .. ARGV[2]
local ended = 0
for _, login_id in ipairs(redis.call('SMEMBERS', user_key)) do
  if end_login(prefix, login_id) then ended = ended + 1 end
end
redis.call('DEL', user_key)
if ended > 0 then return {ended, bump(prefix)} end
return {0, 0}
"""

# KEYS     none (built from ARGV[1])
# ARGV     prefix, now, batch size
# returns  {logins ended, ids looked at, new revision (0 when none ended)}
PURGE = _END_LOGIN + """
local prefix = ARGV[1]
local index = prefix .. 'logins:by-expiry'
local due = redis.call('ZRANGEBYSCORE', index, '-inf', ARGV[2], 'LIMIT', 0, tonumber(ARGV[3]))
local ended = 0
for _, login_id in ipairs(due) do
  if end_login(prefix, login_id) then ended = ended + 1 end
end
if ended > 0 then return {ended, #due, bump(prefix)} end
return {0, #due, 0}
"""


# --- the client and its circuit breaker ----------------------------------------------


def redis_client(url: str, timeout_s: float = TIMEOUT_S) -> redis.Redis:
    """A synchronous client for ``redis://[:password@]host[:port][/db]`` (or rediss://,
    unix://) with short timeouts. Connects lazily. ValueError for a URL it cannot parse
    (the message leaves the password out)."""
    try:
        return redis.Redis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            decode_responses=True,
            # One immediate retry replaces a pooled connection that a Redis restart
            # dropped; a timeout is not retried (it would double the stall).
            retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
        )
    except ValueError as exc:
        raise ValueError(f"invalid redis url {redacted_url(url)!r}: {exc}") from None


class RedisCalls:
    """Runs a store's Redis calls: a Redis failure becomes `error` naming the operation;
    after a failure, calls are refused at once for `backoff_s`. Logs one warning per
    outage and one line when it ends. One thread at a time."""

    def __init__(
        self,
        name: str,
        error: type[Exception],
        backoff_s: float = FAILURE_BACKOFF_S,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self._error = error
        self._backoff_s = backoff_s
        self._monotonic = monotonic
        self._retry_at = 0.0
        self._down = False

    @property
    def down(self) -> bool:
        """Whether the last call failed."""
        return self._down

    def run(self, operation: str, call: Callable[[], T]) -> T:
        if self._down and self._monotonic() < self._retry_at:
            raise self._error(f"{self.name} unreachable ({operation}; retried shortly)")
        try:
            result = call()
        except (RedisError, OSError) as exc:
            self._retry_at = self._monotonic() + self._backoff_s
            if not self._down:
                self._down = True
                logger.warning("%s unreachable (%s): %s", self.name, operation, exc)
            raise self._error(f"{self.name} unreachable ({operation}): {exc}") from exc
        if self._down:
            self._down = False
            logger.warning("%s reachable again", self.name)
        return result


# --- the store -----------------------------------------------------------------------


class RedisLoginStore:
    """LoginStore's interface on Redis (see the module docstring); the caller's `clock`
    gives the times stored and compared, as in LoginStore."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        prefix: str = DEFAULT_PREFIX,
        clock: Callable[[], float] = time.time,
        name: str = "redis",
        backoff_s: float = FAILURE_BACKOFF_S,
    ) -> None:
        self._client = client
        self._prefix = prefix
        self._clock = clock
        self._calls = RedisCalls(f"logins in {name}", LoginStoreUnavailable, backoff_s)
        self._create = client.register_script(CREATE)
        self._rotate = client.register_script(ROTATE)
        self._revoke = client.register_script(REVOKE)
        self._revoke_user = client.register_script(REVOKE_USER)
        self._purge = client.register_script(PURGE)
        self._next_purge = 0.0
        # The revision this store last saw: its own revocations move it along, so that
        # only other processes' count in changed_by_others. None until Redis answered.
        self._seen_revision: int | None = None
        try:
            self._seen_revision = self._read_revision()
        except LoginStoreUnavailable:
            pass  # read on the first changed_by_others that reaches Redis

    @classmethod
    def from_url(
        cls, url: str, prefix: str = DEFAULT_PREFIX, clock: Callable[[], float] = time.time
    ) -> "RedisLoginStore":
        """The logins on the Redis server at `url` (see redis_client); ValueError for a
        URL that cannot be parsed. An unreachable server is not an error here."""
        return cls(redis_client(url), prefix=prefix, clock=clock, name=redacted_url(url))

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> "RedisLoginStore":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _run(self, operation: str, call: Callable[[], T]) -> T:
        return self._calls.run(operation, call)

    def _key(self, login_id: str) -> str:
        return f"{self._prefix}login:{login_id}"

    # -- logins -----------------------------------------------------------------------

    def create(
        self, user: User, *, address: str | None, client: str | None, refresh_ttl_s: int
    ) -> tuple[str, str, float]:
        """A new login for `user`: (login_id, refresh_token, refresh_expires_at)."""
        self._purge_now_and_then()
        now = self._clock()
        login_id = secrets.token_urlsafe(18)
        refresh_token = _new_refresh_token()
        expires_at = now + refresh_ttl_s
        args = [self._prefix, login_id, user.id, _hash(refresh_token), repr(now),
                repr(expires_at), _ttl_ms(refresh_ttl_s), address or "",
                client[:MAX_CLIENT_LENGTH] if client else ""]
        self._run("create", lambda: self._create(args=args))
        logger.info("logins: %s for user %s (%s) from %s", login_id, user.id, client, address)
        return login_id, refresh_token, expires_at

    def rotate(self, refresh_token: str, refresh_ttl_s: int) -> tuple[str, int, str, float]:
        """Trade a refresh token for a new one: (login_id, user_id, new_token, expires_at).

        RefreshRefused("unknown" | "expired" | "reused"); "reused" has revoked the login.
        """
        if not isinstance(refresh_token, str) or not refresh_token:
            raise RefreshRefused("unknown")
        now = self._clock()
        new_token = _new_refresh_token()
        new_expires_at = now + refresh_ttl_s
        args = [self._prefix, _hash(refresh_token), _hash(new_token), repr(now),
                repr(new_expires_at), _ttl_ms(refresh_ttl_s)]
        reply = self._run("rotate", lambda: self._rotate(args=args))
        outcome = reply[0]
        if outcome != "ok":
            if outcome == "unknown":
                raise RefreshRefused("unknown")
            self._saw_own_revision(int(reply[2]))
            if outcome == "reused":
                logger.warning("logins: %s revoked: a rotated-out refresh token came back", reply[1])
            raise RefreshRefused(outcome)
        # After the lookup, so that a token that just expired is told "expired".
        self._purge_now_and_then()
        return reply[1], int(reply[2]), new_token, new_expires_at

    def is_active(self, login_id: str) -> bool:
        """True while the login exists and its refresh token has not expired."""
        expires_at = self._run("is_active", lambda: self._client.hget(self._key(login_id), "expires_at"))
        return _unexpired(expires_at, self._clock())

    def active_among(self, login_ids: Iterable[str]) -> set[str]:
        """Those of `login_ids` that are still active (one pipeline per 500 ids)."""
        ids = list(dict.fromkeys(login_ids))
        now = self._clock()
        active: set[str] = set()
        for start in range(0, len(ids), SELECT_CHUNK):
            chunk = ids[start:start + SELECT_CHUNK]
            replies = self._run("active_among", lambda chunk=chunk: self._hget_all(chunk, "expires_at"))
            active.update(i for i, expires_at in zip(chunk, replies) if _unexpired(expires_at, now))
        return active

    def _hget_all(self, login_ids: list[str], field: str) -> list[Any]:
        pipe = self._client.pipeline(transaction=False)
        for login_id in login_ids:
            pipe.hget(self._key(login_id), field)
        return pipe.execute()

    def changed_by_others(self) -> bool:
        """True when another process (another node, the CLI) has revoked logins since the
        last call: then sessions' logins are worth a look. One GET; never raises (False
        while Redis is unreachable)."""
        try:
            revision = self._read_revision()
        except LoginStoreUnavailable:
            return False
        seen, self._seen_revision = self._seen_revision, revision
        if seen is not None and revision < seen:
            # The counter only grows: Redis lost its data (see the module docstring).
            logger.warning("%s: forgotten (Redis restarted without persistence?); "
                           "clients will have to log in again", self._calls.name)
            return False
        return seen is not None and revision != seen

    def _read_revision(self) -> int:
        value = self._run("changed_by_others", lambda: self._client.get(f"{self._prefix}logins:revision"))
        return int(value or 0)

    def _saw_own_revision(self, revision: int) -> None:
        # Our own increment is not news; one that skips a value means another process
        # revoked in between, which the next changed_by_others must still report.
        if self._seen_revision is not None and revision == self._seen_revision + 1:
            self._seen_revision = revision

    def user_of(self, login_id: str) -> int | None:
        """The user id of an active login, or None."""
        user_id, expires_at = self._run(
            "user_of", lambda: self._client.hmget(self._key(login_id), ["user_id", "expires_at"])
        )
        return int(user_id) if _unexpired(expires_at, self._clock()) else None

    def revoke(self, login_id: str) -> bool:
        """End one login (logout). False when there was no such login."""
        revision = int(self._run("revoke", lambda: self._revoke(args=[self._prefix, login_id])))
        if revision:
            self._saw_own_revision(revision)
            logger.info("logins: %s revoked", login_id)
        return revision > 0

    def revoke_user(self, user_id: int) -> int:
        """End every login of a user (password changed, user deleted); how many there were."""
        ended, revision = self._run("revoke_user", lambda: self._revoke_user(args=[self._prefix, user_id]))
        if ended:
            self._saw_own_revision(int(revision))
            logger.info("logins: %d of user %s revoked", ended, user_id)
        return int(ended)

    def purge(self) -> int:
        """End logins that expired by this node's clock (Redis drops the keys of those
        that expired by its own, and spent refresh hashes, by itself); how many went."""
        now, purged = self._clock(), 0
        while True:
            ended, looked_at, revision = self._run(
                "purge", lambda: self._purge(args=[self._prefix, repr(now), PURGE_BATCH])
            )
            if ended:
                self._saw_own_revision(int(revision))
            purged += int(ended)
            if int(looked_at) < PURGE_BATCH:
                return purged

    def _purge_now_and_then(self) -> None:
        now = self._clock()
        if now >= self._next_purge:
            self._next_purge = now + PURGE_INTERVAL_S
            purged = self.purge()
            if purged:
                logger.info("logins: purged %d expired", purged)


def _ttl_ms(ttl_s: float) -> int:
    return max(1, int(ttl_s * 1000))


def _unexpired(expires_at: str | None, now: float) -> bool:
    return expires_at is not None and float(expires_at) > now


def open_login_store(
    data_dir: Path, redis_url: str | None = None, prefix: str = DEFAULT_PREFIX
) -> LoginStore | RedisLoginStore:
    """A node's logins: in Redis when `redis_url` is set (shared by the site's nodes),
    else in the data folder's SQLite file. ValueError for a Redis URL that cannot be
    parsed; an unreachable Redis is not an error here."""
    if redis_url is None:
        return LoginStore.open(data_dir)
    store = RedisLoginStore.from_url(redis_url, prefix=prefix)
    logger.info("logins in %s (prefix %r)", redacted_url(redis_url), prefix)
    return store
