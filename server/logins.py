"""Logins: one row per signed-in client, with its rotating refresh token.

An access token (server.auth) names its login (`sid`); the login lives in
`logins.sqlite3` in the data folder, a file of its own so that a token refresh does not
bump the directory's revision (which would make every node re-read its sessions). A login
ends when its refresh token expires unused, on logout, or when its user changes the
password (`revoke_user`, also from the `vpserver` CLI in another process).

Refresh tokens are opaque random strings, stored only as SHA-256 hashes (they carry 256
bits of entropy, so a fast hash suffices). Every refresh rotates the token; the rotated-out
hash is kept until it would have expired, and presenting it again is taken as theft: the
whole login is revoked, so neither the thief nor the victim can go on with it
(OAuth 2.0 Security BCP, refresh token rotation).

Every method is synchronous and fast (one small statement or transaction); call them from
one thread at a time, in the server from its event loop.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from .directory import User

if TYPE_CHECKING:
    from aiohttp import web

logger = logging.getLogger(__name__)

LOGINS_FILENAME = "logins.sqlite3"
BUSY_TIMEOUT_MS = 5000
SCHEMA_VERSION = 1
REFRESH_TOKEN_BYTES = 32
# Expired logins and spent refresh hashes are deleted at most this often.
PURGE_INTERVAL_S = 600.0
MAX_CLIENT_LENGTH = 128
# The embedded console's own login never refreshes; it lasts until revoked.
LOCAL_LOGIN_TTL_S = 10 * 365 * 24 * 3600
# SQLite's default limit on `?` parameters in one statement is 32766 (999 before 3.32).
SELECT_CHUNK = 500

_SCHEMA = """
CREATE TABLE IF NOT EXISTS logins (
    login_id           TEXT PRIMARY KEY,
    user_id            INTEGER NOT NULL,
    created_at         REAL NOT NULL,
    last_used_at       REAL NOT NULL,
    refresh_hash       TEXT NOT NULL UNIQUE,
    refresh_expires_at REAL NOT NULL,
    address            TEXT,
    client             TEXT
);
CREATE INDEX IF NOT EXISTS logins_by_user ON logins(user_id);
CREATE TABLE IF NOT EXISTS spent_refresh (
    refresh_hash TEXT PRIMARY KEY,
    login_id     TEXT NOT NULL REFERENCES logins(login_id) ON DELETE CASCADE,
    expires_at   REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS spent_by_login ON spent_refresh(login_id)
"""


class LoginStoreUnavailable(Exception):
    """The logins' shared store (Redis, server.logins_redis) cannot be reached: the
    request can neither be granted nor refused now; the caller answers "unavailable"."""


class RefreshRefused(Exception):
    """A refresh token was refused; `reason` is "unknown", "expired" or "reused"."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"refresh token {reason}")
        self.reason = reason


def _hash(refresh_token: str) -> str:
    return hashlib.sha256(refresh_token.encode("utf-8", "surrogatepass")).hexdigest()


def _new_refresh_token() -> str:
    return secrets.token_urlsafe(REFRESH_TOKEN_BYTES)


class LoginStore:
    """The logins of one site (see the module docstring)."""

    def __init__(self, path: Path, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._clock = clock
        self._next_purge = 0.0
        # Like server.directory: autocommit, explicit BEGIN IMMEDIATE for writes, WAL so
        # the CLI can revoke logins while the server runs.
        self._conn = sqlite3.connect(
            self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
            check_same_thread=False,
        )
        try:
            self._conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            self._conn.execute("PRAGMA foreign_keys = ON")
            mode = self._conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode.lower() != "wal":
                logger.warning("logins %s: journal mode is %s, not wal", self.path, mode)
            with self._transaction() as db:
                version = db.execute("PRAGMA user_version").fetchone()[0]
                if version > SCHEMA_VERSION:
                    raise RuntimeError(
                        f"logins {self.path} has schema version {version}, newer than "
                        f"this program's {SCHEMA_VERSION}"
                    )
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        db.execute(statement)
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except BaseException:
            self._conn.close()
            raise
        self._data_version = self._read_data_version()

    @classmethod
    def open(cls, data_dir: Path, clock: Callable[[], float] = time.time) -> "LoginStore":
        """The logins of a data folder (`data_dir/logins.sqlite3`)."""
        return cls(Path(data_dir) / LOGINS_FILENAME, clock)

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> "LoginStore":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on an exception (see server.directory)."""
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield self._conn
            self._conn.execute("COMMIT")
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise

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
        with self._transaction() as db:
            db.execute(
                "INSERT INTO logins(login_id, user_id, created_at, last_used_at, refresh_hash,"
                " refresh_expires_at, address, client) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (login_id, user.id, now, now, _hash(refresh_token), expires_at,
                 address, client[:MAX_CLIENT_LENGTH] if client else None),
            )
        logger.info("logins: %s for user %s (%s) from %s", login_id, user.id, client, address)
        return login_id, refresh_token, expires_at

    def rotate(self, refresh_token: str, refresh_ttl_s: int) -> tuple[str, int, str, float]:
        """Trade a refresh token for a new one: (login_id, user_id, new_token, expires_at).

        RefreshRefused("unknown" | "expired" | "reused"); "reused" has revoked the login.
        """
        if not isinstance(refresh_token, str) or not refresh_token:
            raise RefreshRefused("unknown")
        old_hash = _hash(refresh_token)
        now = self._clock()
        with self._transaction() as db:
            row = db.execute(
                "SELECT login_id, user_id, refresh_expires_at FROM logins WHERE refresh_hash = ?",
                (old_hash,),
            ).fetchone()
            if row is None:
                spent = db.execute(
                    "SELECT login_id FROM spent_refresh WHERE refresh_hash = ?", (old_hash,)
                ).fetchone()
                if spent is None:
                    raise RefreshRefused("unknown")
                db.execute("DELETE FROM logins WHERE login_id = ?", (spent[0],))
                logger.warning("logins: %s revoked: a rotated-out refresh token came back", spent[0])
                reused = True
            else:
                login_id, user_id, expires_at = row
                if now >= expires_at:
                    db.execute("DELETE FROM logins WHERE login_id = ?", (login_id,))
                    expired = True
                else:
                    expired = False
                    new_token = _new_refresh_token()
                    new_expires_at = now + refresh_ttl_s
                    db.execute(
                        "INSERT OR REPLACE INTO spent_refresh(refresh_hash, login_id, expires_at)"
                        " VALUES (?, ?, ?)",
                        (old_hash, login_id, expires_at),
                    )
                    db.execute(
                        "UPDATE logins SET refresh_hash = ?, refresh_expires_at = ?, last_used_at = ?"
                        " WHERE login_id = ?",
                        (_hash(new_token), new_expires_at, now, login_id),
                    )
                reused = False
        # Raised after the transaction so that the revocation above commits.
        if reused:
            raise RefreshRefused("reused")
        if expired:
            raise RefreshRefused("expired")
        # After the lookup, so that a token that just expired is told "expired".
        self._purge_now_and_then()
        return login_id, user_id, new_token, new_expires_at

    def is_active(self, login_id: str) -> bool:
        """True while the login exists and its refresh token has not expired."""
        row = self._conn.execute(
            "SELECT 1 FROM logins WHERE login_id = ? AND refresh_expires_at > ?",
            (login_id, self._clock()),
        ).fetchone()
        return row is not None

    def active_among(self, login_ids: Iterable[str]) -> set[str]:
        """Those of `login_ids` that are still active (one SELECT per 500 ids)."""
        ids = list(dict.fromkeys(login_ids))
        now = self._clock()
        active: set[str] = set()
        for start in range(0, len(ids), SELECT_CHUNK):
            chunk = ids[start:start + SELECT_CHUNK]
            marks = ",".join("?" * len(chunk))
            rows = self._conn.execute(
                f"SELECT login_id FROM logins WHERE refresh_expires_at > ? AND login_id IN ({marks})",
                (now, *chunk),
            )
            active.update(row[0] for row in rows)
        return active

    def changed_by_others(self) -> bool:
        """True when another connection (the CLI, another node) has written since the last
        call: then sessions' logins are worth a look. Cheap (no query of the tables)."""
        version = self._read_data_version()
        changed, self._data_version = version != self._data_version, version
        return changed

    def _read_data_version(self) -> int:
        # SQLite's data_version changes when another connection commits to the file,
        # never for this connection's own writes.
        return self._conn.execute("PRAGMA data_version").fetchone()[0]

    def user_of(self, login_id: str) -> int | None:
        """The user id of an active login, or None."""
        row = self._conn.execute(
            "SELECT user_id FROM logins WHERE login_id = ? AND refresh_expires_at > ?",
            (login_id, self._clock()),
        ).fetchone()
        return row[0] if row else None

    def revoke(self, login_id: str) -> bool:
        """End one login (logout). False when there was no such login."""
        with self._transaction() as db:
            cursor = db.execute("DELETE FROM logins WHERE login_id = ?", (login_id,))
        if cursor.rowcount:
            logger.info("logins: %s revoked", login_id)
        return cursor.rowcount > 0

    def revoke_user(self, user_id: int) -> int:
        """End every login of a user (password changed, user deleted); how many there were."""
        with self._transaction() as db:
            cursor = db.execute("DELETE FROM logins WHERE user_id = ?", (user_id,))
        if cursor.rowcount:
            logger.info("logins: %d of user %s revoked", cursor.rowcount, user_id)
        return cursor.rowcount

    def purge(self) -> int:
        """Delete expired logins and spent refresh hashes; how many logins went."""
        now = self._clock()
        with self._transaction() as db:
            cursor = db.execute("DELETE FROM logins WHERE refresh_expires_at <= ?", (now,))
            db.execute("DELETE FROM spent_refresh WHERE expires_at <= ?", (now,))
        return cursor.rowcount

    def _purge_now_and_then(self) -> None:
        now = self._clock()
        if now >= self._next_purge:
            self._next_purge = now + PURGE_INTERVAL_S
            purged = self.purge()
            if purged:
                logger.info("logins: purged %d expired", purged)



def local_token_source(app: "web.Application", user: User, client: str = "console") -> Callable[[], str]:
    """Access tokens for a program that runs the server in its own process (the embedded
    console): one login, opened now, and a fresh token for it on every call.

    Whoever runs that program can read the data folder anyway, so no password is asked;
    the login still ends like any other (a password change), and its tokens with it.
    Call on the server's loop.
    """
    from .app_keys import LOGINS, TOKENS  # app_keys imports this module's users

    login_id, _, _ = app[LOGINS].create(
        user, address=None, client=client, refresh_ttl_s=LOCAL_LOGIN_TTL_S
    )
    tokens = app[TOKENS]
    return lambda: tokens.issue(user, login_id)[0]
