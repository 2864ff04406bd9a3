"""The audit log: who did what, when, from where — in `audit.sqlite3` in the data folder.

Its own SQLite file (not the directory's), so an audit write never bumps the directory
revision that live sessions poll. Callers on the event loop must never wait for a disk:
`record()` only serializes the entry and puts it on a bounded queue; one writer thread
commits queued entries in batches (every ~200 ms or 100 entries, whichever comes first).
A full queue drops the entry and warns once per burst: losing an audit line under a flood
is better than stalling media or signaling.

Kinds in use: `login`, `login_failed`, `logout`, `password_changed`,
`user.create|rename|role|delete`, `event.*`, `team.*`, `channel.*`, `member.add|remove`,
`dispatcher.assign|unassign`, `settings.update`, `transmission`, `floor_denied`
(docs/audit.md).
"""

from __future__ import annotations

import asyncio
import enum
import json
import logging
import math
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .directory import User

logger = logging.getLogger(__name__)

AUDIT_FILENAME = "audit.sqlite3"
QUEUE_SIZE = 10_000
BATCH_ENTRIES = 100
BATCH_SECONDS = 0.2
MAX_QUERY_LIMIT = 1000
BUSY_TIMEOUT_MS = 5000
# Detail values nested deeper than this are stored as their str(): a detail is a few
# named facts, and a runaway structure must not cost the writer unbounded time.
MAX_DETAIL_DEPTH = 8

_SCHEMA = """
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    kind TEXT NOT NULL,
    actor TEXT,
    actor_id INTEGER,
    address TEXT,
    detail TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS audit_kind ON audit (kind, id);
CREATE INDEX IF NOT EXISTS audit_at ON audit (at);
"""


@dataclass(frozen=True, slots=True)
class _Row:
    seq: int  # enqueue order, for flush()
    at: float
    kind: str
    actor: str | None
    actor_id: int | None
    address: str | None
    detail: str  # JSON text


class AuditLog:
    """Append-only audit entries.

    `record()` and `transmission()` may be called from any thread (normally the event
    loop) and never block or raise. `flush()`, `query()`, `prune()` and `close()` do disk
    I/O: call them from tests, the CLI, shutdown, or via `asyncio.to_thread` (see
    `flush_async`). `query()` reads through its own connection, so it does not wait for
    the writer.
    """

    def __init__(
        self,
        path: Path,
        *,
        queue_size: int = QUEUE_SIZE,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = Path(path)
        self._clock = clock
        self._queue: queue.Queue[_Row] = queue.Queue(maxsize=queue_size)
        self._seq_lock = threading.Lock()
        self._next_seq = 1  # the seq the next queued entry gets
        self._written = threading.Condition()
        self._written_seq = 0  # every entry with seq <= this is on disk (or was given up)
        self._hurry = threading.Event()  # flush() asks the writer not to wait for a batch
        self._stopping = threading.Event()
        self._dropping = False  # inside a burst of drops (one warning per burst)
        self.dropped = 0  # entries lost to a full queue or a closed log, ever
        self._closed = False
        self._reader = _connect(self.path)
        self._reader_lock = threading.Lock()
        with self._reader:
            self._reader.executescript(_SCHEMA)
        self._thread = threading.Thread(target=self._write_loop, name="audit writer", daemon=True)
        self._thread.start()

    @classmethod
    def open(cls, data_dir: Path, **kwargs: Any) -> AuditLog:
        """The audit log of a data folder (created with the folder if missing)."""
        data_dir = Path(data_dir)
        data_dir.mkdir(parents=True, exist_ok=True)
        return cls(data_dir / AUDIT_FILENAME, **kwargs)

    # --- writing (any thread, never blocks) -------------------------------------------

    def record(self, kind: str, *, actor: User | None = None, address: str | None = None, **detail: Any) -> None:
        """Queue one entry. `detail` values are stored as JSON; anything JSON cannot hold
        (objects, NaN, bytes) is stored as its str()."""
        try:
            self._enqueue(
                str(kind),
                actor.name if actor is not None else None,
                actor.id if actor is not None else None,
                address,
                detail,
            )
        except Exception:  # the audit log must never break the action it records
            logger.exception("audit: could not queue a %r entry", kind)

    def transmission(
        self,
        channel_id: int,
        channel: str | None,
        user_id: int,
        user: str,
        started_at: float,
        duration_ms: int,
        outcome: str,
    ) -> None:
        """One finished transmission (kind `transmission`); the talker is the actor."""
        try:
            self._enqueue(
                "transmission",
                user,
                user_id,
                None,
                {
                    "channel_id": channel_id,
                    "channel": channel,
                    "user_id": user_id,
                    "user": user,
                    "started_at": started_at,
                    "duration_ms": duration_ms,
                    "outcome": str(outcome),
                },
            )
        except Exception:
            logger.exception("audit: could not queue a transmission entry")

    def _enqueue(
        self, kind: str, actor: str | None, actor_id: int | None, address: str | None, detail: dict[str, Any]
    ) -> None:
        text = json.dumps(_jsonable(detail, 0), ensure_ascii=False, allow_nan=False)
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates: SQLite takes only valid UTF-8
            text = json.dumps(_jsonable(detail, 0), ensure_ascii=True, allow_nan=False)
        kind, actor, address = _valid_utf8(kind), _valid_utf8(actor), _valid_utf8(address)
        with self._seq_lock:
            if self._closed:
                self._drop(kind, "the audit log is closed")
                return
            row = _Row(self._next_seq, self._clock(), kind, actor, actor_id, address, text)
            try:
                self._queue.put_nowait(row)
            except queue.Full:
                self._drop(kind, "the audit queue is full")
                return
            self._next_seq += 1
            self._dropping = False

    def _drop(self, kind: str, why: str) -> None:
        """Under _seq_lock: count a lost entry; warn at the start of a burst only."""
        self.dropped += 1
        if not self._dropping:
            self._dropping = True
            logger.warning("audit: %s; dropping entries (first: %r)", why, kind)

    # --- the writer thread --------------------------------------------------------------

    def _write_loop(self) -> None:
        conn = _connect(self.path)
        try:
            while True:
                batch = self._next_batch()
                if batch is None:
                    return
                if batch:
                    self._commit(conn, batch)
        finally:
            conn.close()

    def _next_batch(self) -> list[_Row] | None:
        """Up to BATCH_ENTRIES rows, waiting at most BATCH_SECONDS after the first one
        (less when flush() hurries us). None: stop, the queue is drained."""
        try:
            first = self._queue.get(timeout=0.05)
        except queue.Empty:
            if self._stopping.is_set():
                return None
            self._hurry.clear()
            return []
        batch = [first]
        deadline = time.monotonic() + BATCH_SECONDS
        while len(batch) < BATCH_ENTRIES:
            try:
                batch.append(self._queue.get_nowait())
                continue
            except queue.Empty:
                pass
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._hurry.is_set() or self._stopping.is_set():
                break
            try:
                batch.append(self._queue.get(timeout=min(remaining, 0.02)))
            except queue.Empty:
                pass
        return batch

    def _commit(self, conn: sqlite3.Connection, batch: list[_Row]) -> None:
        try:
            with conn:
                conn.executemany(
                    "INSERT INTO audit (at, kind, actor, actor_id, address, detail) VALUES (?, ?, ?, ?, ?, ?)",
                    [(r.at, r.kind, r.actor, r.actor_id, r.address, r.detail) for r in batch],
                )
        except Exception:
            # A disk problem must not kill the writer: the batch is lost, later ones retry.
            logger.exception("audit: could not write %d entries", len(batch))
        with self._written:
            self._written_seq = batch[-1].seq
            self._written.notify_all()

    # --- waiting, reading, closing ------------------------------------------------------

    def flush(self, timeout: float = 2.0) -> bool:
        """Block until every entry queued before this call is on disk (or `timeout`
        seconds pass). True when it is. Not for the event loop: use flush_async there."""
        with self._seq_lock:
            target = self._next_seq - 1
        self._hurry.set()
        with self._written:
            done = self._written.wait_for(
                lambda: self._written_seq >= target or not self._thread.is_alive(), timeout=timeout
            )
        if not done or self._written_seq < target:
            logger.warning("audit: flush gave up with %d entries unwritten", target - self._written_seq)
            return False
        return True

    async def flush_async(self, timeout: float = 2.0) -> bool:
        """flush() for the event loop (runs it in a worker thread)."""
        return await asyncio.to_thread(self.flush, timeout)

    def query(self, limit: int = 100, before: int | None = None, kind: str | None = None) -> list[dict[str, Any]]:
        """Entries newest first: at most `limit` (1..1000), with id < `before` if given,
        of `kind` if given (`"user.*"` matches every `user.…` kind). Only entries on disk:
        flush() first to see one just recorded."""
        limit = max(1, min(int(limit), MAX_QUERY_LIMIT))
        where, args = [], []
        if before is not None:
            where.append("id < ?")
            args.append(int(before))
        if kind is not None:
            if kind.endswith(".*"):
                # Range instead of LIKE: '_' and '%' in a kind name must not be wildcards.
                prefix = kind[:-1]
                where.append("kind >= ? AND kind < ?")
                args += [prefix, prefix[:-1] + chr(ord(prefix[-1]) + 1)]
            else:
                where.append("kind = ?")
                args.append(kind)
        sql = "SELECT id, at, kind, actor, actor_id, address, detail FROM audit"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC LIMIT ?"
        with self._reader_lock:
            rows = self._reader.execute(sql, (*args, limit)).fetchall()
        return [
            {
                "id": row[0],
                "at": row[1],
                "kind": row[2],
                "actor": row[3],
                "actor_id": row[4],
                "address": row[5],
                "detail": _loads(row[6]),
            }
            for row in rows
        ]

    def prune(self, older_than: float) -> int:
        """Delete entries recorded before unix time `older_than` (retention); returns
        how many went."""
        with self._reader_lock, self._reader:
            return self._reader.execute("DELETE FROM audit WHERE at < ?", (float(older_than),)).rowcount

    def close(self, timeout: float = 2.0) -> None:
        """Write what is queued, stop the writer, close the file. Idempotent; entries
        recorded afterwards are dropped."""
        with self._seq_lock:
            if self._closed:
                return
            self._closed = True
        self.flush(timeout)
        self._stopping.set()
        self._thread.join(timeout)
        with self._reader_lock:
            self._reader.close()


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across app crashes
    return conn


def _valid_utf8(text: str | None) -> str | None:
    if text is None:
        return None
    return str(text).encode("utf-8", "replace").decode("utf-8")


def _jsonable(value: Any, depth: int) -> Any:
    """`value` with everything JSON cannot hold turned into strings."""
    if value is None or isinstance(value, (bool, int, str)) and not isinstance(value, enum.Enum):
        return value
    if isinstance(value, enum.Enum):
        return _jsonable(value.value, depth)
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if depth >= MAX_DETAIL_DEPTH:
        return str(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_jsonable(v, depth + 1) for v in value]
    if isinstance(value, User):
        return value.to_wire()
    return str(value)


def _loads(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        return {"raw": text}
    return value if isinstance(value, dict) else {"value": value}
