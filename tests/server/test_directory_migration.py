"""Opening a schema v1 directory file migrates it to v2 and loses nothing."""

from __future__ import annotations

import sqlite3

import pytest

from server.directory import SCHEMA_VERSION, Channel, Directory, DirectoryError, Role
from server.directory_passwords import hash_password

# Schema v1 as the first release wrote it (copied, so that later changes to the live
# schema cannot change what this test migrates from).
V1_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE users (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    name          TEXT NOT NULL UNIQUE COLLATE NOCASE,
    role          TEXT NOT NULL,
    password_hash TEXT NOT NULL
);
CREATE TABLE channels (
    id    INTEGER PRIMARY KEY AUTOINCREMENT,
    name  TEXT NOT NULL UNIQUE COLLATE NOCASE,
    team  TEXT,
    event TEXT
);
CREATE TABLE members (
    user_id    INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    channel_id INTEGER NOT NULL REFERENCES channels(id) ON DELETE CASCADE,
    PRIMARY KEY (user_id, channel_id)
);
CREATE INDEX members_by_channel ON members(channel_id, user_id);
INSERT INTO meta(key, value) VALUES ('revision', 0);
PRAGMA user_version = 1;
"""

# (name, team, event). Ids are given explicitly with gaps, as removals leave them.
V1_CHANNELS = [
    (3, "Fire Ops", "Fire", "County Fair"),
    (5, "EMS", "Medical", "County Fair"),
    (6, "Gate", "Security", "county fair"),  # same event, other case
    (8, "Finish", "fire", "Marathon"),  # a team name reused in another event
    (9, "Water", None, "Marathon"),  # an event, no team
    (11, "Ops", "Command", None),  # a team, no event: site-wide
    (12, "Alpha", None, None),  # neither
]
V1_MEMBERS = [("alice", "Fire Ops"), ("alice", "Alpha"), ("bob", "EMS"), ("bob", "Ops"),
              ("carl", "Water"), ("carl", "Fire Ops")]


@pytest.fixture
def v1_file(tmp_path):
    path = tmp_path / "directory.sqlite3"
    conn = sqlite3.connect(path)
    conn.executescript(V1_SCHEMA)
    with conn:
        for user_id, name, role in [(1, "alice", "admin"), (4, "bob", "dispatch"),
                                    (5, "carl", "general")]:
            conn.execute("INSERT INTO users VALUES (?, ?, ?, ?)",
                         (user_id, name, role, hash_password(f"{name}-pw")))
        conn.executemany("INSERT INTO channels VALUES (?, ?, ?, ?)", V1_CHANNELS)
        # A removed channel: AUTOINCREMENT's high-water mark is above every live id.
        conn.execute("INSERT INTO channels VALUES (20, 'Removed', NULL, NULL)")
        conn.execute("DELETE FROM channels WHERE id = 20")
        for user, channel in V1_MEMBERS:
            conn.execute(
                "INSERT INTO members SELECT u.id, c.id FROM users u, channels c"
                " WHERE u.name = ? AND c.name = ?", (user, channel),
            )
        conn.execute("UPDATE meta SET value = 42")
    conn.close()
    return tmp_path


def test_v1_file_migrates_keeping_everything(v1_file):
    with Directory.open(v1_file) as d:
        assert [(u.id, u.name, u.role) for u in d.list_users()] == [
            (1, "alice", Role.ADMIN), (4, "bob", Role.DISPATCH), (5, "carl", Role.GENERAL)]
        assert d.authenticate("bob", "bob-pw") is not None

        fair, marathon = d.event_by_name("County Fair"), d.event_by_name("Marathon")
        assert [e.name for e in d.list_events()] == ["County Fair", "Marathon"]
        assert [t.name for t in d.list_teams(fair.id)] == ["Fire", "Medical", "Security"]
        assert [t.name for t in d.list_teams(marathon.id)] == ["fire"]
        assert [t.name for t in d.list_teams(None)] == ["Command"]

        # Every channel keeps its id; names come back by join, spelled as the rows are.
        by_id = {c.id: c for c in d.list_channels()}
        assert sorted(by_id) == [3, 5, 6, 8, 9, 11, 12]
        for channel_id, name, team, event in V1_CHANNELS:
            channel = by_id[channel_id]
            assert channel.name == name
            assert (channel.team or "").lower() == (team or "").lower()
            assert (channel.event or "").lower() == (event or "").lower()
        assert by_id[6] == Channel(6, "Gate", "Security", "County Fair",
                                   d.team_by_name(fair.id, "Security").id, fair.id)
        assert by_id[8].team_id == d.team_by_name(marathon.id, "fire").id
        assert by_id[11].event_id is None and by_id[11].team_id == d.list_teams(None)[0].id
        assert (by_id[12].team_id, by_id[12].event_id) == (None, None)
        assert [c.id for c in d.channels_in_event(fair.id)] == [5, 3, 6]  # by name

        for user, channel in V1_MEMBERS:
            assert d.is_member(d.user_by_name(user).id, d.channel_by_name(channel).id)
        assert [c.name for c in d.channels_of(1)] == ["Alpha", "Fire Ops"]
        assert sum(len(d.members_of(c)) for c in by_id) == len(V1_MEMBERS)
        assert d.revision() == 42

        # Foreign keys are on again and point at the rebuilt table.
        d.delete_channel(3)
        assert d.members_of(3) == [] and [c.name for c in d.channels_of(1)] == ["Alpha"]
        d.delete_event(marathon.id)
        assert d.get_channel(8) is None and d.get_channel(9) is None
        assert d.channels_of(5) == []
        # Ids of channels removed under v1 stay unused.
        assert d.add_channel("New").id > 20


def test_migration_runs_once(v1_file):
    with Directory.open(v1_file) as d:
        first = (d.revision(), d.list_events(), d.list_channels(), d.list_teams(None))
    with Directory.open(v1_file) as d:
        assert (d.revision(), d.list_events(), d.list_channels(), d.list_teams(None)) == first
    conn = sqlite3.connect(v1_file / "directory.sqlite3")
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2
        columns = [row[1] for row in conn.execute("PRAGMA table_info(channels)")]
        assert columns == ["id", "name", "event_id", "team_id"]
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    finally:
        conn.close()


def test_empty_v1_file_migrates(tmp_path):
    conn = sqlite3.connect(tmp_path / "directory.sqlite3")
    conn.executescript(V1_SCHEMA)
    conn.close()
    with Directory.open(tmp_path) as d:
        assert d.list_channels() == [] and d.list_events() == []
        north = d.add_channel("North", team="T", event="E")
        assert (north.team, north.event) == ("T", "E")


def test_newer_schema_is_refused(tmp_path):
    conn = sqlite3.connect(tmp_path / "directory.sqlite3")
    conn.execute("PRAGMA user_version = 3")
    conn.close()
    with pytest.raises(DirectoryError, match="schema version 3"):
        Directory.open(tmp_path)
