"""The directory in Redis, for a site of several nodes: one SQLite image, copied everywhere.

The directory is small and written rarely, so Redis holds all of it as one serialized
SQLite database: the hash ``{prefix}directory`` with the fields ``image`` (the bytes of
``Connection.serialize()``) and ``revision`` (the image's revision counter), always set
together in one HSET so that a reader never sees a mismatched pair. Every process keeps an
in-memory SQLite copy of that image, and every read of the base `Directory` runs on it
unchanged: reads never touch the network.

A write takes the Redis lock ``{prefix}directory:lock`` (SET NX PX, a random token),
catches the local copy up with Redis, runs the base class's transaction on the copy,
pushes the new image with a Lua script that checks the lock token and the revision it
started from, publishes the revision on ``{prefix}directory:changed``, and unlocks. A
write that fails in SQLite pushes nothing; a push that fails puts the last pushed image
back and raises DirectoryUnavailable, so the copy never holds a write Redis lacks.

A watcher thread per process keeps the copy current (pub/sub, plus a poll of the revision
as a fallback), re-seeds Redis from the copy when Redis lost the hash (restarted without
persistence), and keeps a backup of the image in ``data_dir/directory.sqlite3``: a node
started against an empty Redis seeds it from there. While Redis is unreachable, reads
serve the last copy and writes raise DirectoryUnavailable within about a second.
"""

from __future__ import annotations

import logging
import os
import secrets
import sqlite3
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.client import PubSub
from redis.exceptions import RedisError
from redis.retry import Retry

from server.directory import DIRECTORY_FILENAME, SCHEMA_VERSION, Directory, DirectoryError
from server.directory_model import DirectoryUnavailable
from server.directory_schema import create_schema
from server.state.redis_store import DEFAULT_PREFIX, redacted_url

__all__ = ["RedisDirectory", "open_directory"]

logger = logging.getLogger(__name__)

# Every Redis call is bounded by these and at most one immediate retry, so a write while
# Redis is down fails in about a second instead of hanging a request.
TIMEOUT_S = 0.5
# The write lock's lifetime: far longer than a write (milliseconds), short enough that a
# writer that died holding it stalls the others only briefly.
LOCK_TTL_MS = 5000
LOCK_WAIT_S = 5.0
LOCK_SPIN_S = 0.005
# The watcher's fallback poll (pub/sub usually wakes it first), and its backoff while
# Redis is unreachable.
POLL_S = 0.25
MAX_BACKOFF_S = 5.0
JOIN_TIMEOUT_S = 5.0

# KEYS[1]  the directory hash
# ARGV[1]  the image   ARGV[2]  its revision   ARGV[3]  the change channel
# returns  1 when seeded; 0 when the hash exists already (another node seeded first)
SEED_SCRIPT = """
if redis.call('HSETNX', KEYS[1], 'image', ARGV[1]) == 0 then
  return 0
end
redis.call('HSET', KEYS[1], 'revision', ARGV[2])
redis.call('PUBLISH', ARGV[3], ARGV[2])
return 1
"""

# KEYS[1]  the directory hash   KEYS[2]  the write lock
# ARGV[1]  the lock token   ARGV[2]  the revision the write started from
# ARGV[3]  the new image    ARGV[4]  its revision   ARGV[5]  the change channel
# returns  1 when pushed; 0 when the lock is no longer ours; -1 when the stored revision
#          is not the one the write started from (Redis lost or replaced the hash)
PUSH_SCRIPT = """
if redis.call('GET', KEYS[2]) ~= ARGV[1] then
  return 0
end
if redis.call('HGET', KEYS[1], 'revision') ~= ARGV[2] then
  return -1
end
redis.call('HSET', KEYS[1], 'image', ARGV[3], 'revision', ARGV[4])
redis.call('PUBLISH', ARGV[5], ARGV[4])
return 1
"""

# KEYS[1]  the write lock   ARGV[1]  the lock token
# returns  1 when released; 0 when the lock had expired or is another writer's
UNLOCK_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


# -- images --------------------------------------------------------------------------


def image_of(conn: sqlite3.Connection) -> bytes:
    """The serialized database of `conn`, loadable into an in-memory connection."""
    image = bytearray(conn.serialize())
    # Bytes 18-19 say "WAL" (2) for an image of a WAL file; an in-memory database cannot
    # open in WAL mode, so mark it as a rollback-journal database (1).
    if image[18:20] == b"\x02\x02":
        image[18:20] = b"\x01\x01"
    return bytes(image)


def connection_from_image(image: bytes, origin: str) -> sqlite3.Connection:
    """An in-memory connection holding `image`, migrated to this program's schema.

    DirectoryError when the image has a newer schema than this program knows (`origin`
    names where it came from).
    """
    conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
    try:
        conn.deserialize(image)
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise DirectoryError(
                f"directory in {origin} has schema version {version}, newer than this "
                f"program's {SCHEMA_VERSION}"
            )
        if version != SCHEMA_VERSION:  # as Directory._create_schema: keys off to migrate
            conn.execute("PRAGMA foreign_keys = OFF")
            conn.execute("BEGIN IMMEDIATE")
            try:
                create_schema(conn)
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        conn.execute("PRAGMA foreign_keys = ON")
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise DirectoryError(f"directory in {origin} is not a usable database: {exc}") from None
    except BaseException:
        conn.close()
        raise
    return conn


def _revision_of(conn: sqlite3.Connection) -> int:
    return conn.execute("SELECT value FROM meta WHERE key = 'revision'").fetchone()[0]


def initial_image(data_dir: Path) -> tuple[bytes, int]:
    """The image and revision to start from: the SQLite directory in `data_dir` (a v1 file
    is migrated by opening it), else an empty directory."""
    path = Path(data_dir) / DIRECTORY_FILENAME
    memory = sqlite3.connect(":memory:", isolation_level=None)
    try:
        if path.exists():
            with Directory(path) as directory:
                directory._conn.backup(memory)
        else:
            memory.execute("BEGIN IMMEDIATE")
            create_schema(memory)
            memory.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            memory.execute("COMMIT")
        return image_of(memory), _revision_of(memory)
    finally:
        memory.close()


def write_backup(path: Path, image: bytes) -> None:
    """Replace the file at `path` by `image` atomically (a temporary file, then rename)."""
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(image)
            file.flush()
            os.fsync(file.fileno())
        # A journal left by a SQLite process that crashed on the old file would be
        # replayed onto the new one; in Redis mode nothing else has the file open.
        for suffix in ("-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


# -- the Redis side ------------------------------------------------------------------


class _Link:
    """What a RedisDirectory shares with its worker copies: the Redis client (thread-safe,
    pooled), the keys and scripts, and the family of copies in this process, which a
    write of any member brings up to date at once."""

    def __init__(self, client: redis.Redis, prefix: str, data_dir: Path, name: str) -> None:
        self.client = client
        self.name = name
        self.data_dir = Path(data_dir)
        self.key = f"{prefix}directory"
        self.lock_key = f"{prefix}directory:lock"
        self.channel = f"{prefix}directory:changed"
        self.seed = client.register_script(SEED_SCRIPT)
        self.push = client.register_script(PUSH_SCRIPT)
        self.unlock = client.register_script(UNLOCK_SCRIPT)
        self.members: set[RedisDirectory] = set()
        self.members_lock = threading.Lock()

    @property
    def backup_path(self) -> Path:
        return self.data_dir / DIRECTORY_FILENAME

    def remote_revision(self) -> int | None:
        value = self.client.hget(self.key, "revision")
        return None if value is None else int(value)

    def fetch(self) -> tuple[bytes, int] | None:
        """The stored image and revision (one consistent pair), or None when absent."""
        image, revision = self.client.hmget(self.key, ["image", "revision"])
        return None if image is None or revision is None else (image, int(revision))

    def try_seed(self, image: bytes, revision: int) -> bool:
        return bool(self.seed(keys=[self.key], args=[image, revision, self.channel]))

    def lock(self) -> str:
        """Take the write lock; its token. DirectoryUnavailable when Redis does not answer
        or another writer holds the lock for longer than LOCK_WAIT_S."""
        token = secrets.token_hex(16)
        deadline = time.monotonic() + LOCK_WAIT_S
        try:
            while not self.client.set(self.lock_key, token, nx=True, px=LOCK_TTL_MS):
                if time.monotonic() > deadline:
                    raise DirectoryUnavailable(
                        f"directory in {self.name}: the write lock stayed taken for "
                        f"{LOCK_WAIT_S:g} s"
                    )
                time.sleep(LOCK_SPIN_S)
        except RedisError as exc:
            raise DirectoryUnavailable(f"directory in {self.name} is unreachable: {exc}") from None
        return token

    def release(self, token: str) -> None:
        try:
            self.unlock(keys=[self.lock_key], args=[token])
        except RedisError as exc:  # it expires by itself
            logger.debug("directory in %s: unlock failed: %s", self.name, exc)


# -- the directory -------------------------------------------------------------------


class RedisDirectory(Directory):
    """A `Directory` whose data lives in Redis, read from an in-memory copy.

    Use `RedisDirectory.open` (or `open_directory`). As with the SQLite directory, one
    thread uses an instance (the server's loop thread, or the CLI's main thread); its
    watcher thread swaps in newer copies under `_lock`, which every write holds too.
    `revision()` and every read are local; a write does a few Redis round trips.
    `open_worker_copy()` gives another thread an instance of its own.
    """

    def __init__(
        self, link: _Link, image: bytes, revision: int, *, synced: bool, watch: bool
    ) -> None:
        # Not Directory.__init__: that opens a file. What the base methods need is `_conn`;
        # `path` says where the backup lives.
        self.path = link.backup_path
        self._link = link
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._conn = connection_from_image(image, link.name)
        # (image, revision) of the copy in `_conn`: one tuple, so that other threads read
        # a matching pair without the lock.
        self._current = (image, revision)
        # False while the copy came from the backup file, not from Redis: the first
        # contact with Redis then loads Redis's copy whatever its revision.
        self._synced = synced
        self._backed_up = revision if not synced else -1
        self._backup_failing: int | None = None
        self._closed = False
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        with link.members_lock:
            link.members.add(self)
        if watch:
            self._watcher = threading.Thread(
                target=self._watch, name=f"directory watch {link.key}", daemon=True
            )
            self._watcher.start()

    @classmethod
    def open(cls, data_dir: Path, url: str, prefix: str = DEFAULT_PREFIX) -> "RedisDirectory":
        """The directory in the Redis at `url`, keys starting with `prefix`.

        When Redis holds no directory yet it is seeded from `data_dir/directory.sqlite3`
        (or an empty directory); when several nodes start at once one seed wins. When
        Redis does not answer, the copy starts from that file and the watcher keeps
        trying. DirectoryError for a URL that cannot be parsed or an image this program
        cannot read.
        """
        name = redacted_url(url)
        try:
            client = redis.Redis.from_url(
                url, socket_timeout=TIMEOUT_S, socket_connect_timeout=TIMEOUT_S,
                retry=Retry(NoBackoff(), 1),
            )
        except ValueError as exc:
            raise DirectoryError(f"invalid redis url {name!r}: {exc}") from None
        link = _Link(client, prefix, Path(data_dir), name)
        try:
            link.data_dir.mkdir(parents=True, exist_ok=True)
            try:
                stored = link.fetch()
                if stored is None:
                    image, revision = initial_image(data_dir)
                    if link.try_seed(image, revision):
                        logger.info("directory in %s: seeded from %s (revision %d)", name,
                                    link.backup_path if link.backup_path.exists() else
                                    "an empty directory", revision)
                    stored = link.fetch()
                if stored is None:
                    raise DirectoryUnavailable(f"directory in {name} vanished while seeding")
                image, revision = stored
                synced = True
            except (RedisError, DirectoryUnavailable) as exc:
                logger.warning("directory in %s is unreachable (%s): serving the copy in %s "
                               "until it answers; changes fail until then", name, exc,
                               link.backup_path)
                image, revision = initial_image(data_dir)
                synced = False
            directory = cls(link, image, revision, synced=synced, watch=True)
        except BaseException:
            client.close()
            raise
        logger.debug("directory in %s: open at revision %d", name, revision)
        return directory

    def open_worker_copy(self) -> "RedisDirectory":
        """An instance of its own for another thread (e.g. a worker hashing a password),
        starting from this copy; its writes bring this one up to date before returning.
        Close it after use. Safe to call from any thread."""
        image, revision = self._current
        return RedisDirectory(self._link, image, revision, synced=self._synced, watch=False)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join(JOIN_TIMEOUT_S)
            self._save_backup()
        with self._link.members_lock:
            self._link.members.discard(self)
            last = not self._link.members
        if last:
            self._link.client.close()
        self._conn.close()

    def revision(self) -> int:
        """The local copy's revision (no network: the hub polls it on its loop)."""
        return self._current[1]

    def wait_for_revision(self, revision: int, timeout: float) -> bool:
        """Block until the local copy is at `revision` or later; False after `timeout`
        seconds. For callers that just wrote through another node. Not inside a write."""
        with self._changed:
            return self._changed.wait_for(lambda: self._current[1] >= revision, timeout)

    # -- writing ----------------------------------------------------------------------

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write: Redis lock, catch up, the base class's transaction, push, unlock.

        DirectoryUnavailable when Redis does not answer or the push is refused; the copy
        then holds what Redis last had, as if the write had not been tried.
        """
        link = self._link
        with self._lock:
            token = link.lock()
            try:
                try:
                    self._catch_up_locked()
                except RedisError as exc:
                    raise DirectoryUnavailable(
                        f"directory in {link.name} is unreachable: {exc}") from None
                conn = self._conn
                base = self._current[1]
                conn.execute("BEGIN IMMEDIATE")
                try:
                    yield conn
                    conn.execute("UPDATE meta SET value = value + 1 WHERE key = 'revision'")
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                image, revision = image_of(conn), base + 1
                self._push_locked(token, base, image, revision)
            finally:
                link.release(token)
            self._current = (image, revision)
            self._changed.notify_all()
        # Outside our lock: a sibling in its own write holds its lock while waiting for
        # the Redis one, which we have released.
        with link.members_lock:
            siblings = [m for m in link.members if m is not self]
        for sibling in siblings:
            sibling._offer(image, revision)

    def _push_locked(self, token: str, base: int, image: bytes, revision: int) -> None:
        link = self._link
        try:
            pushed = link.push(keys=[link.key, link.lock_key],
                               args=[token, base, image, revision, link.channel])
            problem = {0: "the write lock expired", -1: "its revision changed meanwhile"}.get(
                pushed)
        except RedisError as exc:
            problem = f"unreachable: {exc}"
        if problem is None:
            return
        # Back to what Redis had: the copy must never hold a write Redis lacks. (A push
        # whose reply was lost may have landed; the watcher then loads it back.)
        self._install_locked(connection_from_image(self._current[0], link.name),
                             *self._current)
        raise DirectoryUnavailable(f"directory in {link.name}: change not saved ({problem})")

    def _catch_up_locked(self) -> None:
        """Load Redis's copy when it differs from ours; re-seed Redis when it lost it."""
        link = self._link
        remote = link.remote_revision()
        if remote is None:
            self._seed()
        if remote != self._current[1] or not self._synced:
            self._load_locked()

    # -- following Redis ----------------------------------------------------------------

    def _seed(self) -> None:
        image, revision = self._current
        if self._link.try_seed(image, revision):
            logger.warning("directory in %s was missing (Redis restarted without its data?): "
                           "restored it from this node's copy at revision %d",
                           self._link.name, revision)

    def _load_locked(self) -> None:
        stored = self._link.fetch()
        if stored is None:
            return
        image, revision = stored
        if revision == self._current[1] and self._synced:
            return
        if revision < self._current[1] and self._synced:
            logger.warning("directory in %s went back from revision %d to %d (Redis restored "
                           "from an older copy?): following it", self._link.name,
                           self._current[1], revision)
        self._install_locked(connection_from_image(image, self._link.name), image, revision)
        self._synced = True

    def _install_locked(self, conn: sqlite3.Connection, image: bytes, revision: int) -> None:
        # The old connection is not closed here: the owner thread may be iterating one of
        # its cursors right now. Dropping the last reference closes it.
        self._conn = conn
        self._current = (image, revision)
        self._changed.notify_all()

    def _offer(self, image: bytes, revision: int) -> None:
        """A sibling in this process pushed `revision`: take it if newer than ours."""
        with self._lock:
            if self._closed or revision <= self._current[1]:
                return
            self._install_locked(connection_from_image(image, self._link.name), image, revision)

    def _sync(self) -> None:
        remote = self._link.remote_revision()
        if remote is None:
            self._seed()
            remote = self._link.remote_revision()
        if remote is None or (remote == self._current[1] and self._synced):
            return
        with self._lock:
            self._load_locked()

    def _save_backup(self) -> None:
        image, revision = self._current
        if revision == self._backed_up:
            return
        try:
            write_backup(self._link.backup_path, image)
        except OSError as exc:
            if self._backup_failing != revision:  # once per revision, not once per poll
                logger.warning("directory backup %s: cannot write it: %s",
                               self._link.backup_path, exc)
            self._backup_failing = revision
            return
        self._backed_up = revision
        self._backup_failing = None

    def _watch(self) -> None:
        """The watcher thread: follow Redis until `close()`. Never dies of an error: it
        logs it (once, not once per poll) and tries again later."""
        link = self._link
        pubsub = None
        outage = False
        refusal = ""
        backoff = POLL_S
        while not self._stop.is_set():
            try:
                if pubsub is None:
                    pubsub = link.client.pubsub(ignore_subscribe_messages=True)
                    pubsub.subscribe(link.channel)
                # Wakes on a published change, else after POLL_S: then the poll below.
                pubsub.get_message(timeout=POLL_S)
                self._sync()
                if outage:
                    logger.info("directory in %s: reachable again (revision %d)", link.name,
                                self._current[1])
                outage, refusal, backoff = False, "", POLL_S
            except (RedisError, OSError) as exc:
                if not outage:
                    logger.warning("directory in %s is unreachable: %s; serving the local "
                                   "copy (revision %d), changes fail until it answers",
                                   link.name, exc, self._current[1])
                    outage = True
                _close_quietly(pubsub)
                pubsub = None
                self._stop.wait(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)
                continue
            except Exception as exc:  # e.g. an image from a newer program
                if str(exc) != refusal:
                    logger.error("directory in %s: %s; keeping the copy at revision %d",
                                 link.name, exc, self._current[1])
                    refusal = str(exc)
                self._stop.wait(MAX_BACKOFF_S)
            self._save_backup()
        _close_quietly(pubsub)


def _close_quietly(pubsub: PubSub | None) -> None:
    if pubsub is not None:
        try:
            pubsub.close()
        except (RedisError, OSError):
            pass


def open_directory(
    data_dir: Path, redis_url: str | None = None, prefix: str = DEFAULT_PREFIX
) -> Directory:
    """The site's directory: in Redis when `redis_url` is set, else the SQLite file in
    `data_dir`."""
    if redis_url is None:
        return Directory.open(data_dir)
    return RedisDirectory.open(data_dir, redis_url, prefix)
