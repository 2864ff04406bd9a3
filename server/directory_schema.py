"""The directory's tables (schema v2) and the migration from schema v1.

Schema v1 kept a channel's team and event as free text on the channel row. Schema v2
makes events and teams rows of their own, so that they can be renamed, listed and
assigned to dispatchers. The migration turns every distinct v1 name into a row and keeps
every user, channel (with its id) and membership.

Called only by `Directory._create_schema`, inside its write transaction, with foreign
keys switched off (see `migrate_v1`).
"""

from __future__ import annotations

import logging
import sqlite3

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 2

# AUTOINCREMENT everywhere: ids are never reused, so a token issued to a removed user
# (its `sub` is the user id), or a client's cached channel id, can never name a thing
# created later.
_CHANNELS_TABLE = """
CREATE TABLE IF NOT EXISTS {name} (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    name     TEXT NOT NULL UNIQUE COLLATE NOCASE,
    event_id INTEGER REFERENCES events(id) ON DELETE CASCADE,
    -- A team's channels outlive it: they stay in the event with no team.
    team_id  INTEGER REFERENCES teams(id) ON DELETE SET NULL
)"""

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS users (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    name          TEXT NOT NULL UNIQUE COLLATE NOCASE,
    role          TEXT NOT NULL,
    password_hash TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    id   INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE COLLATE NOCASE
);
-- event_id NULL: a site-wide team.
CREATE TABLE IF NOT EXISTS teams (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id INTEGER REFERENCES events(id) ON DELETE CASCADE,
    name     TEXT NOT NULL COLLATE NOCASE
);
-- A team's name is unique within its event: ifnull folds the site-wide teams (NULL,
-- which UNIQUE would treat as all different) into one group. Event ids start at 1.
CREATE UNIQUE INDEX IF NOT EXISTS teams_by_event_name ON teams(ifnull(event_id, 0), name);
{_CHANNELS_TABLE.format(name="channels")};
CREATE TABLE IF NOT EXISTS members (
    user_id    INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    channel_id INTEGER NOT NULL REFERENCES channels(id) ON DELETE CASCADE,
    PRIMARY KEY (user_id, channel_id)
);
CREATE INDEX IF NOT EXISTS members_by_channel ON members(channel_id, user_id);
CREATE TABLE IF NOT EXISTS event_dispatchers (
    event_id INTEGER NOT NULL REFERENCES events(id) ON DELETE CASCADE,
    user_id  INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    PRIMARY KEY (event_id, user_id)
);
CREATE INDEX IF NOT EXISTS event_dispatchers_by_user ON event_dispatchers(user_id, event_id);
-- value: JSON text.
CREATE TABLE IF NOT EXISTS settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
INSERT OR IGNORE INTO meta(key, value) VALUES ('revision', 0)
"""

# Made after the v1 migration has rebuilt `channels` (a v1 table lacks the columns).
_CHANNEL_INDEXES = """
CREATE INDEX IF NOT EXISTS channels_by_event ON channels(event_id);
CREATE INDEX IF NOT EXISTS channels_by_team ON channels(team_id)
"""


def _run(conn: sqlite3.Connection, script: str) -> None:
    # Not executescript(): it would COMMIT the caller's open transaction first. Split on
    # semicolons, so the SQL comments above must hold none.
    for statement in script.split(";"):
        if statement.strip():
            conn.execute(statement)


def create_schema(conn: sqlite3.Connection) -> None:
    """Create the v2 tables that are missing and migrate a v1 `channels` table.

    The caller holds the write transaction and has switched foreign keys off; it sets
    `user_version` afterwards. Running this on a v2 file changes nothing.
    """
    _run(conn, _SCHEMA)
    columns = {row[1] for row in conn.execute("PRAGMA table_info(channels)")}
    if "team" in columns:
        migrate_v1(conn)
    _run(conn, _CHANNEL_INDEXES)


def migrate_v1(conn: sqlite3.Connection) -> None:
    """Turn v1's text `team`/`event` columns on `channels` into event and team rows.

    Rebuilds `channels` (SQLite cannot change a column into a foreign key in place): a
    new table, a copy with the same ids, DROP, RENAME. Foreign keys must be off: with them
    on, the DROP would delete every membership by cascade. Names that differ only in
    case become one row, spelled as on the oldest channel. A team named without an event
    becomes a site-wide team.
    """
    conn.execute(
        "INSERT OR IGNORE INTO events(name)"
        " SELECT event FROM channels WHERE event IS NOT NULL ORDER BY id"
    )
    conn.execute(
        "INSERT OR IGNORE INTO teams(event_id, name)"
        " SELECT e.id, c.team FROM channels c LEFT JOIN events e ON e.name = c.event"
        " WHERE c.team IS NOT NULL ORDER BY c.id"
    )
    conn.execute(_CHANNELS_TABLE.format(name="channels_v2"))
    conn.execute(
        "INSERT INTO channels_v2(id, name, event_id, team_id)"
        " SELECT c.id, c.name, e.id, t.id FROM channels c"
        " LEFT JOIN events e ON e.name = c.event"
        " LEFT JOIN teams t ON t.name = c.team AND t.event_id IS e.id"
    )
    # Keep AUTOINCREMENT's high-water mark: ids of channels removed under v1 stay unused.
    row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'channels'").fetchone()
    high_water = row[0] if row is not None else 0
    conn.execute("DROP TABLE channels")
    conn.execute("ALTER TABLE channels_v2 RENAME TO channels")
    conn.execute(
        "UPDATE sqlite_sequence SET seq = max(seq, ?) WHERE name = 'channels'", (high_water,)
    )
    if conn.execute("SELECT changes()").fetchone()[0] == 0 and high_water:
        conn.execute("INSERT INTO sqlite_sequence(name, seq) VALUES ('channels', ?)",
                     (high_water,))
    broken = conn.execute("PRAGMA foreign_key_check").fetchall()
    if broken:
        raise sqlite3.IntegrityError(f"v1 migration left dangling references: {broken[:5]}")
    counts = [conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
              for t in ("events", "teams", "channels")]
    logger.info("directory: migrated schema v1 to v2 (%d events, %d teams, %d channels)",
                *counts)
