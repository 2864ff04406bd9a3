"""The durable directory: users, roles, channels and memberships in one SQLite file.

The server and the `vpserver` provisioning commands open the same file at the same time:
WAL journal mode lets readers run beside a writer, `busy_timeout` makes a second writer
wait instead of failing, and every write bumps a revision counter in the same
transaction so that a running server can poll one integer to notice changes made by the
CLI.
"""

from __future__ import annotations

import base64
import enum
import functools
import hashlib
import hmac
import logging
import secrets
import sqlite3
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

DIRECTORY_FILENAME = "directory.sqlite3"
MAX_NAME_LENGTH = 64
# How long a write waits for another process's write lock. Writes are single small
# transactions, so contention lasts microseconds; this only bounds a pathological wait.
BUSY_TIMEOUT_MS = 5000
SCHEMA_VERSION = 1

# scrypt parameters for new hashes. Stored hashes carry their own, so these may be raised
# later without invalidating existing passwords.
SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
SCRYPT_SALT_BYTES = 16
SCRYPT_KEY_BYTES = 32
# OpenSSL's default limit (32 MiB) would refuse parameters only slightly above today's.
SCRYPT_MAXMEM = 256 * 1024 * 1024


class Role(str, enum.Enum):
    ADMIN = "admin"
    DISPATCH = "dispatch"
    GENERAL = "general"


@dataclass(frozen=True)
class User:
    id: int
    name: str
    role: Role

    def to_wire(self) -> dict:
        return {"id": self.id, "name": self.name, "role": self.role.value}


@dataclass(frozen=True)
class Channel:
    id: int
    name: str
    team: str | None = None
    event: str | None = None

    def to_wire(self) -> dict:
        return {"id": self.id, "name": self.name, "team": self.team, "event": self.event}


class DirectoryError(Exception):
    """A directory operation could not be done; the message names the thing."""


class NotFound(DirectoryError):
    """The named user, channel or membership does not exist."""


class AlreadyExists(DirectoryError):
    """A user or channel with that name exists already."""


class InvalidName(DirectoryError):
    """A name is empty, longer than 64 characters, or holds control characters."""


class InvalidPassword(DirectoryError):
    """A password is empty."""


class InvalidRole(DirectoryError):
    """A role is not one of admin, dispatch, general."""


# -- names, roles, passwords ------------------------------------------------------------


def normalize_name(name: str, what: str = "name") -> str:
    """The stripped name, or InvalidName naming `what` and the offending value."""
    if not isinstance(name, str):
        raise InvalidName(f"{what} must be a string, not {type(name).__name__}")
    stripped = name.strip()
    if not stripped:
        raise InvalidName(f"{what} {name!r} is empty")
    if len(stripped) > MAX_NAME_LENGTH:
        raise InvalidName(
            f"{what} {stripped[:20]!r}... is longer than {MAX_NAME_LENGTH} characters"
        )
    # Cc: C0/C1 controls (newline, tab, escape...); Zl/Zp: line and paragraph separators.
    # Either would break the one-line-per-entry listings and log lines.
    if any(unicodedata.category(ch) in ("Cc", "Zl", "Zp") for ch in stripped):
        raise InvalidName(f"{what} {stripped!r} contains control characters")
    return stripped


def _optional_name(value: str | None, what: str) -> str | None:
    return None if value is None else normalize_name(value, what)


def _role(role: Role | str) -> Role:
    try:
        return Role(role)
    except ValueError:
        choices = ", ".join(r.value for r in Role)
        raise InvalidRole(f"unknown role {role!r} (choose {choices})") from None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hash_password(password: str) -> str:
    """A self-describing scrypt hash: `scrypt$n$r$p$salt_b64$hash_b64`.

    Pure CPU (~50 ms, 16 MiB): any thread may call it.
    """
    if not isinstance(password, str) or not password:
        raise InvalidPassword("password must not be empty")
    salt = secrets.token_bytes(SCRYPT_SALT_BYTES)
    key = hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P,
        maxmem=SCRYPT_MAXMEM, dklen=SCRYPT_KEY_BYTES,
    )
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(key)}"


def verify_password(stored: str, password: str) -> bool:
    """True when `password` matches the stored hash; False for a malformed hash.

    Pure CPU: any thread may call it.
    """
    try:
        scheme, n, r, p, salt_b64, key_b64 = stored.split("$")
        if scheme != "scrypt":
            raise ValueError(f"unknown scheme {scheme!r}")
        salt = base64.b64decode(salt_b64, validate=True)
        expected = base64.b64decode(key_b64, validate=True)
        key = hashlib.scrypt(
            password.encode("utf-8"), salt=salt, n=int(n), r=int(r), p=int(p),
            maxmem=SCRYPT_MAXMEM, dklen=len(expected),
        )
    except (ValueError, TypeError) as exc:
        logger.warning("directory: unusable password hash: %s", exc)
        return False
    return hmac.compare_digest(key, expected)


@functools.cache
def _dummy_hash() -> str:
    # Verified against when the user does not exist, so that "no such user" takes as long
    # as "wrong password" and login timing does not reveal which names exist.
    return hash_password(secrets.token_urlsafe(16))


# -- the database -----------------------------------------------------------------------

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
-- AUTOINCREMENT: ids are never reused, so a token issued to a removed user (its `sub`
-- is the user id) can never name a user created later.
CREATE TABLE IF NOT EXISTS users (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    name          TEXT NOT NULL UNIQUE COLLATE NOCASE,
    role          TEXT NOT NULL,
    password_hash TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS channels (
    id    INTEGER PRIMARY KEY AUTOINCREMENT,
    name  TEXT NOT NULL UNIQUE COLLATE NOCASE,
    team  TEXT,
    event TEXT
);
CREATE TABLE IF NOT EXISTS members (
    user_id    INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    channel_id INTEGER NOT NULL REFERENCES channels(id) ON DELETE CASCADE,
    PRIMARY KEY (user_id, channel_id)
);
CREATE INDEX IF NOT EXISTS members_by_channel ON members(channel_id, user_id);
INSERT OR IGNORE INTO meta(key, value) VALUES ('revision', 0);
"""


class Directory:
    """Users, roles, channels and memberships in one SQLite file.

    Every method is synchronous and fast (one small statement or transaction) and is
    meant to be called from one thread: the server's asyncio loop thread, or the CLI's
    main thread. The exceptions are `add_user`, `set_password` and `authenticate`, which
    run scrypt (~50 ms); a server that cannot afford that on its loop may read the hash
    elsewhere and call `verify_password` in an executor.

    Names of users and channels are unique ignoring ASCII case ("Bob" is "bob") and are
    stored as first written.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: no implicit transactions; writes open their own with
        # BEGIN IMMEDIATE (see _write). check_same_thread=False so the object may be made
        # on one thread and used on another (e.g. before the loop starts); use stays
        # single-threaded.
        self._conn = sqlite3.connect(
            self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
            check_same_thread=False,
        )
        try:
            self._conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            self._conn.execute("PRAGMA foreign_keys = ON")
            mode = self._conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode.lower() != "wal":
                logger.warning("directory %s: journal mode is %s, not wal", self.path, mode)
            self._create_schema()
        except BaseException:
            self._conn.close()
            raise
        logger.debug("directory %s: open at revision %d", self.path, self.revision())

    @classmethod
    def open(cls, data_dir: Path) -> "Directory":
        """The directory in a data folder (`data_dir/directory.sqlite3`)."""
        return cls(Path(data_dir) / DIRECTORY_FILENAME)

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> "Directory":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _create_schema(self) -> None:
        # Under the write lock, so two processes opening a new file at once do not race.
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            version = self._conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise DirectoryError(
                    f"directory {self.path} has schema version {version}, newer than "
                    f"this program's {SCHEMA_VERSION}"
                )
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    self._conn.execute(statement)
            self._conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            self._conn.execute("COMMIT")
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction that also bumps the revision.

        BEGIN IMMEDIATE takes the write lock up front, where busy_timeout applies; a
        deferred transaction that upgrades later can fail with SQLITE_BUSY at once.
        """
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield self._conn
            self._conn.execute("UPDATE meta SET value = value + 1 WHERE key = 'revision'")
            self._conn.execute("COMMIT")
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise

    def revision(self) -> int:
        """A counter that every committed write, from any process, increases."""
        return self._conn.execute("SELECT value FROM meta WHERE key = 'revision'").fetchone()[0]

    # -- users ----------------------------------------------------------------------

    def add_user(self, name: str, role: Role | str, password: str) -> User:
        name = normalize_name(name, "user name")
        role = _role(role)
        password_hash = hash_password(password)
        try:
            with self._write() as db:
                cursor = db.execute(
                    "INSERT INTO users(name, role, password_hash) VALUES (?, ?, ?)",
                    (name, role.value, password_hash),
                )
        except sqlite3.IntegrityError:
            raise AlreadyExists(f"user {name!r} exists already") from None
        logger.info("directory: added user %r (%s)", name, role.value)
        return User(cursor.lastrowid, name, role)

    def set_password(self, name: str, password: str) -> None:
        password_hash = hash_password(password)
        with self._write() as db:
            cursor = db.execute(
                "UPDATE users SET password_hash = ? WHERE name = ?", (password_hash, name.strip())
            )
            if cursor.rowcount == 0:
                raise NotFound(f"no user {name!r}")
        logger.info("directory: changed password of user %r", name)

    def set_role(self, name: str, role: Role | str) -> None:
        role = _role(role)
        with self._write() as db:
            cursor = db.execute("UPDATE users SET role = ? WHERE name = ?", (role.value, name.strip()))
            if cursor.rowcount == 0:
                raise NotFound(f"no user {name!r}")
        logger.info("directory: user %r is now %s", name, role.value)

    def remove_user(self, name: str) -> None:
        """Remove a user and, with it, all of its memberships."""
        with self._write() as db:
            cursor = db.execute("DELETE FROM users WHERE name = ?", (name.strip(),))
            if cursor.rowcount == 0:
                raise NotFound(f"no user {name!r}")
        logger.info("directory: removed user %r", name)

    def authenticate(self, name: str, password: str) -> User | None:
        """The user when name and password match, else None; runs scrypt either way.

        Blocks for the hash (~50 ms): the server uses `login_check` instead, so that the
        hash runs off its event loop.
        """
        user, stored = self.login_check(name)
        return user if verify_password(stored, password) and user is not None else None

    def login_check(self, name: object) -> tuple[User | None, str]:
        """The user named `name` (or None) and the hash to verify a password against.

        For an unknown name the hash is a dummy, so verifying takes as long either way. The
        lookup is quick; the caller runs `verify_password` where blocking is harmless.
        """
        if not isinstance(name, str):
            return None, _dummy_hash()
        row = self._conn.execute(
            "SELECT id, name, role, password_hash FROM users WHERE name = ?", (name.strip(),)
        ).fetchone()
        if row is None:
            return None, _dummy_hash()
        return User(row[0], row[1], Role(row[2])), row[3]

    def get_user(self, user_id: int) -> User | None:
        row = self._conn.execute(
            "SELECT id, name, role FROM users WHERE id = ?", (user_id,)
        ).fetchone()
        return _user(row)

    def user_by_name(self, name: str) -> User | None:
        row = self._conn.execute(
            "SELECT id, name, role FROM users WHERE name = ?", (name.strip(),)
        ).fetchone()
        return _user(row)

    def list_users(self) -> list[User]:
        rows = self._conn.execute("SELECT id, name, role FROM users ORDER BY name, id")
        return [_user(row) for row in rows]

    # -- channels -------------------------------------------------------------------

    def add_channel(self, name: str, team: str | None = None, event: str | None = None) -> Channel:
        name = normalize_name(name, "channel name")
        team = _optional_name(team, "team name")
        event = _optional_name(event, "event name")
        try:
            with self._write() as db:
                cursor = db.execute(
                    "INSERT INTO channels(name, team, event) VALUES (?, ?, ?)", (name, team, event)
                )
        except sqlite3.IntegrityError:
            raise AlreadyExists(f"channel {name!r} exists already") from None
        logger.info("directory: added channel %r (team %r, event %r)", name, team, event)
        return Channel(cursor.lastrowid, name, team, event)

    def remove_channel(self, name: str) -> None:
        """Remove a channel and all of its memberships."""
        with self._write() as db:
            cursor = db.execute("DELETE FROM channels WHERE name = ?", (name.strip(),))
            if cursor.rowcount == 0:
                raise NotFound(f"no channel {name!r}")
        logger.info("directory: removed channel %r", name)

    def get_channel(self, channel_id: int) -> Channel | None:
        row = self._conn.execute(
            "SELECT id, name, team, event FROM channels WHERE id = ?", (channel_id,)
        ).fetchone()
        return _channel(row)

    def channel_by_name(self, name: str) -> Channel | None:
        row = self._conn.execute(
            "SELECT id, name, team, event FROM channels WHERE name = ?", (name.strip(),)
        ).fetchone()
        return _channel(row)

    def list_channels(self) -> list[Channel]:
        rows = self._conn.execute(
            "SELECT id, name, team, event FROM channels ORDER BY name, id"
        )
        return [_channel(row) for row in rows]

    # -- memberships ----------------------------------------------------------------

    def add_member(self, user_name: str, channel_name: str) -> None:
        """Make a user a member of a channel; adding an existing member is a no-op."""
        with self._write() as db:
            user_id, channel_id = self._ids(db, user_name, channel_name)
            db.execute(
                "INSERT OR IGNORE INTO members(user_id, channel_id) VALUES (?, ?)",
                (user_id, channel_id),
            )
        logger.info("directory: user %r is a member of channel %r", user_name, channel_name)

    def remove_member(self, user_name: str, channel_name: str) -> None:
        with self._write() as db:
            user_id, channel_id = self._ids(db, user_name, channel_name)
            cursor = db.execute(
                "DELETE FROM members WHERE user_id = ? AND channel_id = ?", (user_id, channel_id)
            )
            if cursor.rowcount == 0:
                raise NotFound(f"user {user_name!r} is not a member of channel {channel_name!r}")
        logger.info("directory: user %r left channel %r", user_name, channel_name)

    def channels_of(self, user_id: int) -> list[Channel]:
        """The channels a user is a member of, ordered by name."""
        rows = self._conn.execute(
            "SELECT c.id, c.name, c.team, c.event FROM channels c"
            " JOIN members m ON m.channel_id = c.id WHERE m.user_id = ? ORDER BY c.name, c.id",
            (user_id,),
        )
        return [_channel(row) for row in rows]

    def is_member(self, user_id: int, channel_id: int) -> bool:
        row = self._conn.execute(
            "SELECT 1 FROM members WHERE user_id = ? AND channel_id = ?", (user_id, channel_id)
        ).fetchone()
        return row is not None

    def members_of(self, channel_id: int) -> list[User]:
        """The members of a channel, ordered by name."""
        rows = self._conn.execute(
            "SELECT u.id, u.name, u.role FROM users u"
            " JOIN members m ON m.user_id = u.id WHERE m.channel_id = ? ORDER BY u.name, u.id",
            (channel_id,),
        )
        return [_user(row) for row in rows]

    @staticmethod
    def _ids(db: sqlite3.Connection, user_name: str, channel_name: str) -> tuple[int, int]:
        user = db.execute("SELECT id FROM users WHERE name = ?", (user_name.strip(),)).fetchone()
        if user is None:
            raise NotFound(f"no user {user_name!r}")
        channel = db.execute(
            "SELECT id FROM channels WHERE name = ?", (channel_name.strip(),)
        ).fetchone()
        if channel is None:
            raise NotFound(f"no channel {channel_name!r}")
        return user[0], channel[0]


def _user(row: tuple | None) -> User | None:
    return None if row is None else User(row[0], row[1], Role(row[2]))


def _channel(row: tuple | None) -> Channel | None:
    return None if row is None else Channel(row[0], row[1], row[2], row[3])
