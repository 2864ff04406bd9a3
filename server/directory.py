"""The durable directory: users, roles, events, teams, channels, memberships and site
settings in one SQLite file.

The server and the `vpserver` provisioning commands open the same file at the same time:
WAL journal mode lets readers run beside a writer, `busy_timeout` makes a second writer
wait instead of failing, and every write bumps a revision counter in the same
transaction so that a running server can poll one integer to notice changes made by the
CLI.

This module holds the connection, users and memberships; events, teams and channels are
in `server.directory_events`, settings in `server.directory_settings`, the tables and the
v1 migration in `server.directory_schema`. Callers import everything from here. A site
of several nodes keeps the same directory in Redis (`server.directory_redis`).
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from server.directory_events import CHANNEL_SELECT, EventsMixin
from server.directory_model import (
    MAX_NAME_LENGTH,
    AlreadyExists,
    Channel,
    DirectoryError,
    DirectoryUnavailable,
    Event,
    InvalidName,
    InvalidPassword,
    InvalidPlacement,
    InvalidRole,
    InvalidSetting,
    LastAdmin,
    NotFound,
    Role,
    Team,
    User,
    channel_from_row,
    normalize_name,
    parse_role,
    user_from_row,
)
from server.directory_passwords import dummy_hash, hash_password, verify_password
from server.directory_schema import SCHEMA_VERSION, create_schema
from server.directory_settings import DEFAULT_SETTINGS, SettingsMixin

__all__ = [
    "DIRECTORY_FILENAME", "MAX_NAME_LENGTH", "SCHEMA_VERSION", "DEFAULT_SETTINGS",
    "AlreadyExists", "Channel", "Directory", "DirectoryError", "DirectoryUnavailable",
    "Event", "InvalidName", "InvalidPassword", "InvalidPlacement", "InvalidRole",
    "InvalidSetting", "LastAdmin", "NotFound", "Role", "Team", "User", "hash_password",
    "normalize_name", "verify_password",
]

logger = logging.getLogger(__name__)

DIRECTORY_FILENAME = "directory.sqlite3"
# How long a write waits for another process's write lock. Writes are single small
# transactions, so contention lasts microseconds; this only bounds a pathological wait.
BUSY_TIMEOUT_MS = 5000


class Directory(EventsMixin, SettingsMixin):
    """Users, roles, events, teams, channels, memberships and settings in one SQLite file.

    Every method is synchronous and fast (one small statement or transaction) and is
    meant to be called from one thread: the server's asyncio loop thread, or the CLI's
    main thread. The exceptions are the methods that take a password (`add_user`,
    `create_user`, `set_password`, `set_user_password`, `authenticate`), which run
    scrypt (~50 ms); a server that cannot afford that on its loop may hash or verify in
    an executor (`hash_password`, `verify_password`, `login_check`).

    Names of users, events, teams and channels are unique ignoring ASCII case ("Bob" is
    "bob"; a team's name within its event) and are stored as first written. Methods
    taking ids raise NotFound naming the id; name-based ones name the name.
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
            mode = self._conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode.lower() != "wal":
                logger.warning("directory %s: journal mode is %s, not wal", self.path, mode)
            self._conn.execute("PRAGMA foreign_keys = OFF")
            self._create_schema()
            self._conn.execute("PRAGMA foreign_keys = ON")
        except BaseException:
            self._conn.close()
            raise
        logger.debug("directory %s: open at revision %d", self.path, self.revision())

    @classmethod
    def open(cls, data_dir: Path) -> "Directory":
        """The directory in a data folder (`data_dir/directory.sqlite3`)."""
        return cls(Path(data_dir) / DIRECTORY_FILENAME)

    def open_worker_copy(self) -> "Directory":
        """Another instance on the same directory, for a worker thread (this one's
        connection is not shared across threads): e.g. to hash a password off the loop.
        Its writes are seen by this instance's `revision()` when they return. Close it
        after use. Safe to call from any thread."""
        return Directory(self.path)

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> "Directory":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _create_schema(self) -> None:
        # Under the write lock, so two processes opening (or migrating) a file at once do
        # not race. Foreign keys are still off here (the v1 migration needs them off, and
        # the pragma cannot change inside a transaction); __init__ turns them on after.
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            version = self._conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise DirectoryError(
                    f"directory {self.path} has schema version {version}, newer than "
                    f"this program's {SCHEMA_VERSION}"
                )
            create_schema(self._conn)
            if version != SCHEMA_VERSION:
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
        role = parse_role(role)
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

    create_user = add_user

    def rename_user(self, user_id: int, name: str) -> User:
        name = normalize_name(name, "user name")
        try:
            with self._write() as db:
                old = self._user(user_id)
                db.execute("UPDATE users SET name = ? WHERE id = ?", (name, user_id))
        except sqlite3.IntegrityError:
            raise AlreadyExists(f"user {name!r} exists already") from None
        logger.info("directory: renamed user %r to %r", old.name, name)
        return User(user_id, name, old.role)

    def set_user_role(self, user_id: int, role: Role | str) -> User:
        """Change a user's role. LastAdmin when it would demote the only admin. A user
        who stops being dispatch loses their event assignments."""
        role = parse_role(role)
        with self._write() as db:
            user = self._user(user_id)
            if role is not Role.ADMIN:
                self._refuse_last_admin(user, "demoting")
            db.execute("UPDATE users SET role = ? WHERE id = ?", (role.value, user_id))
            if role is not Role.DISPATCH:
                db.execute("DELETE FROM event_dispatchers WHERE user_id = ?", (user_id,))
        logger.info("directory: user %r is now %s", user.name, role.value)
        return User(user_id, user.name, role)

    def set_user_password(self, user_id: int, password: str) -> None:
        password_hash = hash_password(password)
        with self._write() as db:
            user = self._user(user_id)
            db.execute("UPDATE users SET password_hash = ? WHERE id = ?", (password_hash, user_id))
        logger.info("directory: changed password of user %r", user.name)

    def delete_user(self, user_id: int, *, allow_last_admin: bool = False) -> None:
        """Delete a user with its memberships and event assignments. LastAdmin for the
        only admin, unless `allow_last_admin` (undoing a half-made first-run setup)."""
        with self._write() as db:
            user = self._user(user_id)
            if not allow_last_admin:
                self._refuse_last_admin(user, "removing")
            db.execute("DELETE FROM users WHERE id = ?", (user_id,))
        logger.info("directory: removed user %r", user.name)

    def count_admins(self) -> int:
        return self._conn.execute(
            "SELECT count(*) FROM users WHERE role = ?", (Role.ADMIN.value,)
        ).fetchone()[0]

    def _refuse_last_admin(self, user: User, doing: str) -> None:
        # Called inside the write transaction, so the count cannot change under it.
        if user.role is Role.ADMIN and self.count_admins() <= 1:
            raise LastAdmin(
                f"user {user.name!r} is the last admin: {doing} them would leave the site "
                f"without one"
            )

    def _named_user(self, name: str) -> User:
        user = self.user_by_name(name)
        if user is None:
            raise NotFound(f"no user {name!r}")
        return user

    # Name-based forms (the CLI and tests use them). Each looks the name up and calls the
    # id-based method; the lookup sits outside that method's transaction, so a user
    # removed in between surfaces as NotFound by id.

    def set_password(self, name: str, password: str) -> None:
        self.set_user_password(self._named_user(name).id, password)

    def set_role(self, name: str, role: Role | str) -> None:
        self.set_user_role(self._named_user(name).id, role)

    def remove_user(self, name: str, *, allow_last_admin: bool = False) -> None:
        """Remove a user and, with it, all of its memberships (see `delete_user`)."""
        self.delete_user(self._named_user(name).id, allow_last_admin=allow_last_admin)

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
            return None, dummy_hash()
        row = self._conn.execute(
            "SELECT id, name, role, password_hash FROM users WHERE name = ?", (name.strip(),)
        ).fetchone()
        if row is None:
            return None, dummy_hash()
        return User(row[0], row[1], Role(row[2])), row[3]

    def get_user(self, user_id: int) -> User | None:
        row = self._conn.execute(
            "SELECT id, name, role FROM users WHERE id = ?", (user_id,)
        ).fetchone()
        return user_from_row(row)

    def user_by_name(self, name: str) -> User | None:
        row = self._conn.execute(
            "SELECT id, name, role FROM users WHERE name = ?", (name.strip(),)
        ).fetchone()
        return user_from_row(row)

    def list_users(self) -> list[User]:
        rows = self._conn.execute("SELECT id, name, role FROM users ORDER BY name, id")
        return [user_from_row(row) for row in rows]

    # -- memberships ----------------------------------------------------------------

    def add_membership(self, user_id: int, channel_id: int) -> None:
        """Make a user a member of a channel; adding an existing member is a no-op."""
        with self._write() as db:
            user, channel = self._user(user_id), self._channel(channel_id)
            db.execute(
                "INSERT OR IGNORE INTO members(user_id, channel_id) VALUES (?, ?)",
                (user_id, channel_id),
            )
        logger.info("directory: user %r is a member of channel %r", user.name, channel.name)

    def remove_membership(self, user_id: int, channel_id: int) -> None:
        with self._write() as db:
            user, channel = self._user(user_id), self._channel(channel_id)
            cursor = db.execute(
                "DELETE FROM members WHERE user_id = ? AND channel_id = ?", (user_id, channel_id)
            )
            if cursor.rowcount == 0:
                raise NotFound(f"user {user.name!r} is not a member of channel {channel.name!r}")
        logger.info("directory: user %r left channel %r", user.name, channel.name)

    def add_member(self, user_name: str, channel_name: str) -> None:
        """Name-based `add_membership`."""
        self.add_membership(*self._ids(user_name, channel_name))

    def remove_member(self, user_name: str, channel_name: str) -> None:
        """Name-based `remove_membership`."""
        self.remove_membership(*self._ids(user_name, channel_name))

    def channels_of(self, user_id: int) -> list[Channel]:
        """The channels a user is a member of, ordered by name."""
        rows = self._conn.execute(
            CHANNEL_SELECT + " JOIN members m ON m.channel_id = c.id WHERE m.user_id = ?"
            " ORDER BY c.name, c.id",
            (user_id,),
        )
        return [channel_from_row(row) for row in rows]

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
        return [user_from_row(row) for row in rows]

    def _ids(self, user_name: str, channel_name: str) -> tuple[int, int]:
        user = self._named_user(user_name)
        channel = self.channel_by_name(channel_name)
        if channel is None:
            raise NotFound(f"no channel {channel_name!r}")
        return user.id, channel.id
