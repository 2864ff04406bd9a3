"""The audit log in Redis: one log for every node of a site, so an admin reading it on any
node sees what all of them recorded.

Same interface and the same promise to the event loop as `server.audit.AuditLog` (whose
queueing front end this class shares): `record()` only serializes the entry and puts it on
the bounded queue; one writer thread sends queued entries to Redis in batches with the
synchronous client and short socket timeouts.

Keys (all under the prefix, default ``vpdesk:``):

- ``{prefix}audit`` — a stream, one stream entry per audit entry. Its stream id is
  ``{id}-0``, where `id` is the audit entry's integer id, so XREVRANGE order is id order
  and `query(before=…)` is one range read. Fields: at, kind, actor, actor_id, address,
  detail (JSON text), node (the writer's `node_id`); a None value is left out.
- ``{prefix}audit:seq`` — the id counter. One Lua script per batch takes a block of ids
  from it (INCRBY) and appends the entries, so ids are unique and increasing across nodes
  and each batch is one round trip.
- ``{prefix}audit:kind:{kind}`` and ``{prefix}audit:kind:{family}.*`` — per-kind index
  streams holding only the ids (an empty field) of that kind's entries, resp. of every kind
  starting with ``{family}.`` (``user.create`` is in ``audit:kind:user.create`` and
  ``audit:kind:user.*``). So `query(kind=…)` reads at most `limit` index ids and looks each
  up: bounded work however rare the kind, where a filtered scan of the main stream would
  either read without bound or answer short pages.

Retention: every stream is capped with ``XADD … MAXLEN ~ max_entries`` (default
1,000,000 entries: about 300 MB of Redis memory, measured at ~280 bytes per typical entry
with its indexes). Redis trims the oldest whole blocks, so the log keeps at least that
many entries; an index may keep ids whose entry was trimmed, and queries skip those.
`prune()` deletes by time as the SQLite log does. Redis must persist (AOF or RDB) for the
log to outlive a Redis restart.

Redis unreachable: the writer keeps its batch and retries with backoff (at once when
`flush()` asks); the queue holds the rest, and beyond it entries are dropped and counted
as in the SQLite log. So an outage that fills less than the queue loses nothing (a reply
lost after Redis ran a batch makes the retry write it twice: at least once, never lost
unnoticed). `flush()` returns False as soon as a write attempt made after the call fails;
`close()` gives up after its timeout, logging how many entries were lost. `query()` and
`prune()` raise AuditStoreError.

The entries' `node` is not in `query()`'s results by default: docs/openapi.json's
AuditEntry forbids additional properties. `query(include_node=True)` adds it (the CLI).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from server.audit import MAX_QUERY_LIMIT, QUEUE_SIZE, AuditLog, _loads, _Row
from server.state.redis_store import DEFAULT_PREFIX, redacted_url

logger = logging.getLogger(__name__)

DEFAULT_MAX_ENTRIES = 1_000_000
SOCKET_TIMEOUT_S = 0.5
RETRY_FIRST_S = 0.1
RETRY_MAX_S = 2.0
# While Redis stays down, say so again at most this often (the first failure always).
FAILURE_LOG_INTERVAL_S = 60.0
# An index stream per dot of a kind, up to this many: kinds are names from the code, and a
# runaway one must not cost a key per character.
MAX_KIND_FAMILIES = 8
PRUNE_PAGE = 500
# Entries are in id order, their `at` only roughly (node clocks, queue delays): prune stops
# at the first entry this much newer than the cut, not at the first newer one.
PRUNE_SLACK_S = 300.0
# Redis stream ids are unsigned 64-bit; a larger `before` means "from the newest".
MAX_STREAM_ID = 2**64 - 1

# KEYS[1]   the audit stream
# KEYS[2]   the id counter
# KEYS[3..] the kind index streams some entry of this batch goes to
# ARGV[1]   approximate MAXLEN of every stream
# ARGV[2]   the number of entries n
# then per entry: k, k positions in KEYS of its index streams, m, m field/value arguments
# returns   the id of the first entry (the others follow it one by one)
WRITE_BATCH = """
local stream, counter, maxlen = KEYS[1], KEYS[2], ARGV[1]
local n = tonumber(ARGV[2])
local first = redis.call('INCRBY', counter, n) - n + 1
-- A counter lost while the stream lived on must not hand out ids the stream has used.
if redis.call('EXISTS', stream) == 1 then
  local info = redis.call('XINFO', 'STREAM', stream)
  for i = 1, #info, 2 do
    if info[i] == 'last-generated-id' then
      local last = tonumber(string.match(info[i + 1], '^%d+'))
      if last >= first then
        first = last + 1
        redis.call('SET', counter, string.format('%d', first + n - 1))
      end
      break
    end
  end
end
local a = 3
for e = 0, n - 1 do
  local id = string.format('%d-0', first + e)
  local k = tonumber(ARGV[a])
  local indexes = {}
  for j = 1, k do indexes[j] = KEYS[tonumber(ARGV[a + j])] end
  a = a + k + 1
  local m = tonumber(ARGV[a])
  local fields = {}
  for j = 1, m do fields[j] = ARGV[a + j] end
  a = a + m + 1
  redis.call('XADD', stream, 'MAXLEN', '~', maxlen, id, unpack(fields))
  for _, index in ipairs(indexes) do
    -- pcall: an index someone reset must not fail the entry itself (scripts do not roll back).
    redis.pcall('XADD', index, 'MAXLEN', '~', maxlen, id, 'i', '')
  end
end
return first
"""

# KEYS[1]  the audit stream
# KEYS[2]  a kind index stream
# ARGV[1]  the newest id to consider ('+', or an id: its entries up to id-max)
# ARGV[2]  at most this many
# returns  the indexed entries, newest first, as XREVRANGE answers (trimmed ones skipped)
READ_KIND = """
local refs = redis.call('XREVRANGE', KEYS[2], ARGV[1], '-', 'COUNT', ARGV[2])
local entries = {}
for _, ref in ipairs(refs) do
  local found = redis.call('XRANGE', KEYS[1], ref[1], ref[1])
  if found[1] then entries[#entries + 1] = found[1] end
end
return entries
"""


class AuditStoreError(Exception):
    """The Redis audit log cannot be read (or the URL is invalid); the message names the
    server without its password."""


def kind_indexes(kind: str) -> list[str]:
    """The index names an entry of `kind` is listed under: the kind itself and, for each
    dot, the family up to it (``a.b.c`` → ``a.b.c``, ``a.*``, ``a.b.*``). A query's kind
    (exact, or ``family.*``) is the name of the one index that answers it."""
    names = [kind]
    for position, char in enumerate(kind):
        if char == "." and len(names) <= MAX_KIND_FAMILIES:
            names.append(kind[: position + 1] + "*")
    return list(dict.fromkeys(names))  # a kind ending in ".*" is its own family


class RedisAuditLog(AuditLog):
    """Append-only audit entries in Redis, shared by every node of a site.

    Threading as in AuditLog: `record()`/`transmission()` from anywhere, never blocking;
    `flush()`, `query()`, `prune()` and `close()` do network I/O (each bounded by
    `timeout_s` socket timeouts): call them off the event loop. The writer thread and the
    readers use separate clients, so a writer retrying an outage never holds up a read.
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = DEFAULT_PREFIX,
        node_id: str = "",
        max_entries: int = DEFAULT_MAX_ENTRIES,
        queue_size: int = QUEUE_SIZE,
        clock: Callable[[], float] = time.time,
        timeout_s: float = SOCKET_TIMEOUT_S,
    ) -> None:
        # AuditLog.__init__ opens SQLite; set the state its queueing front end uses instead.
        self.name = redacted_url(url)
        self.node_id = str(node_id)
        self.max_entries = int(max_entries)
        if self.max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, not {max_entries}")
        self._prefix = prefix
        self.stream_key = f"{prefix}audit"
        self.seq_key = f"{prefix}audit:seq"
        self._clock = clock
        self._queue: queue.Queue[_Row] = queue.Queue(maxsize=queue_size)
        self._seq_lock = threading.Lock()
        self._next_seq = 1
        self._written = threading.Condition()
        self._written_seq = 0
        self._attempts = 0  # write attempts begun (under _written)
        self._failed_attempt = 0  # the number of the latest failed attempt (under _written)
        self._hurry = threading.Event()
        self._stopping = threading.Event()
        self._dropping = False
        self.dropped = 0
        self._closed = False
        try:
            # Reads get one immediate retry (it carries a pooled connection over a Redis
            # restart); the writer none: it has its own backoff.
            self._reader = _client(url, timeout_s, retries=1)
            writer = _client(url, timeout_s, retries=0)
        except ValueError as exc:
            raise AuditStoreError(f"invalid redis url {self.name!r}: {exc}") from exc
        self._write_batch = writer.register_script(WRITE_BATCH)
        self._read_kind = self._reader.register_script(READ_KIND)
        self._thread = threading.Thread(target=self._write_loop, args=(writer,),
                                        name="audit writer (redis)", daemon=True)
        self._thread.start()

    @classmethod
    def open(cls, data_dir: Path | None = None, *, url: str, **kwargs: Any) -> RedisAuditLog:
        """The site's audit log on the Redis at `url`; `data_dir` is not used (accepted so
        both classes open alike)."""
        return cls(url, **kwargs)

    def index_key(self, kind: str) -> str:
        """The index stream of a kind or of a ``family.*``."""
        return f"{self._prefix}audit:kind:{kind}"

    # --- the writer thread --------------------------------------------------------------

    def _write_loop(self, client: redis.Redis) -> None:
        pending: list[_Row] = []
        delay = RETRY_FIRST_S
        failing_since: float | None = None
        last_report = 0.0
        try:
            while True:
                if not pending:
                    batch = self._next_batch()
                    if batch is None:
                        return
                    pending = batch
                    if not pending:
                        continue
                with self._written:
                    self._attempts += 1
                    attempt = self._attempts
                try:
                    self._send(pending)
                except Exception as exc:  # the writer must outlive any failure
                    with self._written:
                        self._failed_attempt = attempt
                        self._written.notify_all()
                    now = time.monotonic()
                    if failing_since is None or now - last_report >= FAILURE_LOG_INTERVAL_S:
                        logger.warning("audit: cannot write to redis at %s (%s); %d entries wait",
                                       self.name, exc, len(pending) + self._queue.qsize())
                        last_report = now
                    if failing_since is None:
                        failing_since = now
                    if self._stopping.is_set():
                        lost = len(pending) + self._queue.qsize()
                        logger.error("audit: closing with redis at %s unreachable; %d entries lost",
                                     self.name, lost)
                        return
                    if self._hurry.wait(delay):  # flush() or close() asks for a retry now
                        self._hurry.clear()
                    delay = min(delay * 2, RETRY_MAX_S)
                    continue
                if failing_since is not None:
                    logger.info("audit: redis at %s is back after %.1f s", self.name,
                                time.monotonic() - failing_since)
                    failing_since, delay = None, RETRY_FIRST_S
                with self._written:
                    self._written_seq = pending[-1].seq
                    self._written.notify_all()
                pending = []
        finally:
            client.close()

    def _send(self, batch: list[_Row]) -> None:
        """One Lua call: ids for the batch, the entries, their kind indexes."""
        keys = [self.stream_key, self.seq_key]
        position: dict[str, int] = {}
        args: list[str | int] = [self.max_entries, len(batch)]
        for row in batch:
            indexes = []
            for name in kind_indexes(row.kind):
                key = self.index_key(name)
                if key not in position:
                    keys.append(key)
                    position[key] = len(keys)  # Lua's KEYS count from 1
                indexes.append(position[key])
            fields = _fields(row, self.node_id)
            args += [len(indexes), *indexes, len(fields), *fields]
        self._write_batch(keys=keys, args=args)

    # --- waiting, reading, closing ------------------------------------------------------

    def flush(self, timeout: float = 2.0) -> bool:
        """Block until every entry queued before this call is in Redis; False after
        `timeout` seconds or as soon as a write attempt begun after this call fails."""
        with self._seq_lock:
            target = self._next_seq - 1
        with self._written:
            begun = self._attempts
        self._hurry.set()
        with self._written:
            self._written.wait_for(
                lambda: self._written_seq >= target or self._failed_attempt > begun
                or not self._thread.is_alive(),
                timeout=timeout,
            )
            written = self._written_seq
        if written < target:
            logger.warning("audit: flush gave up with %d entries unwritten", target - written)
            return False
        return True

    def query(
        self,
        limit: int = 100,
        before: int | None = None,
        kind: str | None = None,
        *,
        include_node: bool = False,
    ) -> list[dict[str, Any]]:
        """Entries newest first: at most `limit` (1..1000), with id < `before` if given,
        of `kind` if given (`"user.*"` matches every `user.…` kind). Only entries in Redis:
        flush() first to see one just recorded. `include_node` adds each entry's `node`.
        Raises AuditStoreError when Redis cannot answer."""
        limit = max(1, min(int(limit), MAX_QUERY_LIMIT))
        newest = "+"
        if before is not None:
            if int(before) <= 1:
                return []
            if int(before) - 1 < MAX_STREAM_ID:
                newest = str(int(before) - 1)  # an id without "-seq": every entry of that id
        try:
            if kind is None:
                raw = self._reader.xrevrange(self.stream_key, newest, "-", count=limit)
            else:
                raw = self._read_kind(keys=[self.stream_key, self.index_key(kind)],
                                      args=[newest, limit])
        except (RedisError, OSError) as exc:
            raise AuditStoreError(f"cannot read the audit log in redis at {self.name}: {exc}") from exc
        return [_entry(stream_id, fields, include_node) for stream_id, fields in raw]

    def prune(self, older_than: float) -> int:
        """Delete entries recorded before unix time `older_than` (retention), with their
        index ids; returns how many went. Walks from the oldest entry and stops
        PRUNE_SLACK_S past the cut. Raises AuditStoreError when Redis cannot answer."""
        cut = float(older_than)
        removed = 0
        start = "-"
        try:
            while True:
                page = self._reader.xrange(self.stream_key, start, "+", count=PRUNE_PAGE)
                if not page:
                    return removed
                doomed: dict[bytes, str] = {}
                done = False
                for stream_id, fields in page:
                    at = _float(fields.get(b"at"))
                    if at < cut:
                        doomed[stream_id] = _text(fields.get(b"kind")) or ""
                    elif at >= cut + PRUNE_SLACK_S:
                        done = True
                        break
                if doomed:
                    removed += self._delete(doomed)
                if done or len(page) < PRUNE_PAGE:
                    return removed
                start = str(_id_number(page[-1][0]) + 1)
        except (RedisError, OSError) as exc:
            raise AuditStoreError(f"cannot prune the audit log in redis at {self.name}: {exc}") from exc

    def _delete(self, doomed: dict[bytes, str]) -> int:
        """XDEL entries and their index ids in one round trip; how many entries went."""
        by_index: dict[str, list[bytes]] = {}
        for stream_id, kind in doomed.items():
            for name in kind_indexes(kind):
                by_index.setdefault(self.index_key(name), []).append(stream_id)
        pipe = self._reader.pipeline(transaction=False)
        pipe.xdel(self.stream_key, *doomed)
        for key, ids in by_index.items():
            pipe.xdel(key, *ids)
        return int(pipe.execute()[0])

    def close(self, timeout: float = 2.0) -> None:
        """Write what is queued (while Redis answers), stop the writer, close the clients;
        returns within about `timeout` seconds. Idempotent; entries recorded afterwards
        are dropped."""
        deadline = time.monotonic() + timeout
        with self._seq_lock:
            if self._closed:
                return
            self._closed = True
        self.flush(timeout)
        self._stopping.set()
        self._hurry.set()  # out of a retry backoff: one last attempt, then give up
        self._thread.join(max(0.0, deadline - time.monotonic()))
        self._reader.close()  # the writer closes its own client when it ends


def open_audit_log(
    data_dir: Path,
    redis_url: str | None = None,
    prefix: str = DEFAULT_PREFIX,
    node_id: str = "",
    **kwargs: Any,
) -> AuditLog | RedisAuditLog:
    """The node's audit log: the site's stream in Redis when `redis_url` is set, else the
    SQLite file in `data_dir`. `kwargs` go to the constructor (queue_size, clock, …)."""
    if redis_url is None:
        return AuditLog.open(data_dir, **kwargs)
    return RedisAuditLog(redis_url, prefix=prefix, node_id=node_id, **kwargs)


def _client(url: str, timeout_s: float, *, retries: int) -> redis.Redis:
    return redis.Redis.from_url(
        url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), retries),
    )


def _fields(row: _Row, node_id: str) -> list[str]:
    """The stream fields of a queued row, None values left out."""
    fields = ["at", repr(row.at), "kind", row.kind]
    if row.actor is not None:
        fields += ["actor", row.actor]
    if row.actor_id is not None:
        fields += ["actor_id", str(int(row.actor_id))]
    if row.address is not None:
        fields += ["address", row.address]
    fields += ["detail", row.detail, "node", node_id]
    return fields


def _entry(
    stream_id: bytes, fields: dict[bytes, bytes] | list[bytes], include_node: bool
) -> dict[str, Any]:
    """A stream entry as query() answers it. `fields` is a dict (redis-py's XRANGE) or a
    flat field/value list (a script's reply)."""
    if not isinstance(fields, dict):
        fields = dict(_pairs(fields))
    actor_id = _text(fields.get(b"actor_id"))
    entry = {
        "id": _id_number(stream_id),
        "at": _float(fields.get(b"at")),
        "kind": _text(fields.get(b"kind")) or "",
        "actor": _text(fields.get(b"actor")),
        "actor_id": _int_or_none(actor_id),
        "address": _text(fields.get(b"address")),
        "detail": _loads(_text(fields.get(b"detail")) or "{}"),
    }
    if include_node:
        entry["node"] = _text(fields.get(b"node")) or None
    return entry


def _pairs(flat: Iterable[bytes]) -> Iterable[tuple[bytes, bytes]]:
    items = iter(flat)
    return zip(items, items)


def _id_number(stream_id: bytes | str) -> int:
    text = stream_id.decode() if isinstance(stream_id, bytes) else stream_id
    return int(text.split("-", 1)[0])


def _int_or_none(text: str | None) -> int | None:
    try:
        return None if text is None else int(text)
    except ValueError:
        return None


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("utf-8", "replace")


def _float(value: bytes | None) -> float:
    try:
        return float(value) if value is not None else 0.0
    except ValueError:
        return 0.0
