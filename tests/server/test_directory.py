"""The SQLite directory: round trips, errors, passwords, the revision counter."""

from __future__ import annotations

import sqlite3

import pytest

from server.directory import (
    AlreadyExists,
    Channel,
    Directory,
    DirectoryError,
    InvalidName,
    InvalidPassword,
    InvalidRole,
    NotFound,
    Role,
    User,
    verify_password,
)


@pytest.fixture
def directory(tmp_path):
    d = Directory.open(tmp_path)
    yield d
    d.close()


def test_open_creates_file_in_nested_data_dir_with_wal(tmp_path):
    data = tmp_path / "a" / "b"
    with Directory.open(data) as d:
        assert d.path == data / "directory.sqlite3"
        assert d.path.exists()
    conn = sqlite3.connect(data / "directory.sqlite3")
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()


def test_user_round_trip(directory):
    bob = directory.add_user("  bob ", Role.DISPATCH, "pw")
    assert bob == User(bob.id, "bob", Role.DISPATCH)
    assert directory.get_user(bob.id) == bob
    assert directory.user_by_name("bob") == bob
    assert directory.user_by_name("BOB") == bob  # names ignore ASCII case
    assert bob.to_wire() == {"id": bob.id, "name": "bob", "role": "dispatch"}
    alice = directory.add_user("alice", "admin", "pw")  # role may be given as its string
    assert alice.role is Role.ADMIN
    assert directory.list_users() == [alice, bob]  # ordered by name

    directory.set_role("bob", Role.GENERAL)
    assert directory.get_user(bob.id).role is Role.GENERAL

    directory.remove_user("bob")
    assert directory.get_user(bob.id) is None
    assert directory.user_by_name("bob") is None
    assert directory.list_users() == [alice]


def test_user_ids_are_not_reused(directory):
    first = directory.add_user("bob", Role.GENERAL, "pw")
    directory.remove_user("bob")
    second = directory.add_user("bob", Role.GENERAL, "pw")
    assert second.id != first.id


def test_user_errors(directory):
    directory.add_user("bob", Role.GENERAL, "pw")
    with pytest.raises(AlreadyExists, match="user 'bob'"):
        directory.add_user("bob", Role.ADMIN, "pw")
    with pytest.raises(AlreadyExists):
        directory.add_user("Bob", Role.ADMIN, "pw")
    for call in (
        lambda: directory.set_password("carol", "pw"),
        lambda: directory.set_role("carol", Role.ADMIN),
        lambda: directory.remove_user("carol"),
    ):
        with pytest.raises(NotFound, match="no user 'carol'"):
            call()
    with pytest.raises(InvalidRole, match="'boss'"):
        directory.add_user("dave", "boss", "pw")
    with pytest.raises(InvalidPassword):
        directory.add_user("dave", Role.GENERAL, "")
    with pytest.raises(InvalidPassword):
        directory.set_password("bob", "")
    assert issubclass(InvalidRole, DirectoryError) and issubclass(InvalidPassword, DirectoryError)
    assert [u.name for u in directory.list_users()] == ["bob"]


@pytest.mark.parametrize(
    "name", ["", "   ", "x" * 65, "bo\nb", "a\tb", "nul\x00", "del\x7f", "l\u2028s"]
)
def test_bad_names_rejected(directory, name):
    with pytest.raises(InvalidName):
        directory.add_user(name, Role.GENERAL, "pw")
    with pytest.raises(InvalidName):
        directory.add_channel(name)
    with pytest.raises(InvalidName):
        directory.add_channel("ok", team=name)
    assert directory.list_users() == []
    assert directory.list_channels() == []


def test_longest_name_and_unicode_accepted(directory):
    assert directory.add_user("x" * 64, Role.GENERAL, "pw").name == "x" * 64
    assert directory.add_channel("Équipe Nord 🚒").name == "Équipe Nord 🚒"


def test_authenticate(directory):
    bob = directory.add_user("bob", Role.DISPATCH, "correct horse")
    assert directory.authenticate("bob", "correct horse") == bob
    assert directory.authenticate("bob", "wrong") is None
    assert directory.authenticate("bob", "") is None
    assert directory.authenticate("nobody", "correct horse") is None
    assert directory.authenticate(None, "x") is None

    directory.set_password("bob", "new one")
    assert directory.authenticate("bob", "correct horse") is None
    assert directory.authenticate("bob", "new one") == bob


def test_password_hash_format(directory):
    directory.add_user("a", Role.GENERAL, "same")
    directory.add_user("b", Role.GENERAL, "same")
    rows = dict(directory._conn.execute("SELECT name, password_hash FROM users"))
    for stored in rows.values():
        scheme, n, r, p, salt, key = stored.split("$")
        assert (scheme, n, r, p) == ("scrypt", str(2**14), "8", "1")
        assert "same" not in stored
        assert verify_password(stored, "same")
    assert rows["a"] != rows["b"]  # random salt
    assert not verify_password("md5$abc", "same")
    assert not verify_password("scrypt$16384$8$1$!!$!!", "same")


def test_channel_round_trip(directory):
    north = directory.add_channel("North", team="Fire", event="Parade")
    assert north == Channel(north.id, "North", "Fire", "Parade")
    assert north.to_wire() == {"id": north.id, "name": "North", "team": "Fire", "event": "Parade"}
    bare = directory.add_channel("Alpha")
    assert bare.team is None and bare.event is None
    assert directory.get_channel(north.id) == north
    assert directory.channel_by_name("north") == north
    assert directory.list_channels() == [bare, north]
    with pytest.raises(AlreadyExists, match="channel 'North'"):
        directory.add_channel("North")
    directory.remove_channel("North")
    assert directory.get_channel(north.id) is None
    with pytest.raises(NotFound, match="no channel 'North'"):
        directory.remove_channel("North")


def test_memberships(directory):
    bob = directory.add_user("bob", Role.GENERAL, "pw")
    amy = directory.add_user("amy", Role.DISPATCH, "pw")
    zulu = directory.add_channel("zulu")
    alpha = directory.add_channel("alpha")

    directory.add_member("bob", "zulu")
    directory.add_member("bob", "alpha")
    directory.add_member("bob", "alpha")  # idempotent
    directory.add_member("amy", "zulu")

    assert directory.channels_of(bob.id) == [alpha, zulu]
    assert directory.channels_of(amy.id) == [zulu]
    assert directory.is_member(bob.id, alpha.id)
    assert not directory.is_member(amy.id, alpha.id)
    assert directory.members_of(zulu.id) == [amy, bob]

    directory.remove_member("bob", "zulu")
    assert directory.channels_of(bob.id) == [alpha]
    with pytest.raises(NotFound, match="'bob' is not a member of channel 'zulu'"):
        directory.remove_member("bob", "zulu")
    with pytest.raises(NotFound, match="no user 'carl'"):
        directory.add_member("carl", "zulu")
    with pytest.raises(NotFound, match="no channel 'yankee'"):
        directory.add_member("bob", "yankee")

    # Removing a user or channel removes its memberships with it.
    directory.remove_channel("alpha")
    assert directory.channels_of(bob.id) == []
    directory.remove_user("amy")
    assert directory.members_of(zulu.id) == []


def test_revision_increases_on_every_write(directory):
    seen = [directory.revision()]

    def wrote():
        seen.append(directory.revision())
        assert seen[-1] > seen[-2]

    directory.add_user("bob", Role.GENERAL, "pw"); wrote()
    directory.set_password("bob", "pw2"); wrote()
    directory.set_role("bob", Role.ADMIN); wrote()
    directory.add_channel("c"); wrote()
    directory.add_member("bob", "c"); wrote()
    directory.remove_member("bob", "c"); wrote()
    directory.remove_channel("c"); wrote()
    directory.remove_user("bob"); wrote()


def test_failed_write_does_not_change_revision(directory):
    directory.add_user("bob", Role.GENERAL, "pw")
    before = directory.revision()
    with pytest.raises(AlreadyExists):
        directory.add_user("bob", Role.GENERAL, "pw")
    with pytest.raises(NotFound):
        directory.remove_member("bob", "nowhere")
    assert directory.revision() == before


def test_second_connection_sees_writes_and_bumps_revision(tmp_path):
    # The server holds one Directory open while the CLI writes through another.
    with Directory.open(tmp_path) as server, Directory.open(tmp_path) as cli:
        start = server.revision()
        bob = cli.add_user("bob", Role.GENERAL, "pw")
        assert server.revision() > start
        assert server.get_user(bob.id) == bob
        after_cli = server.revision()
        server.add_channel("c")
        assert cli.revision() > after_cli
        cli.add_member("bob", "c")
        assert [c.name for c in server.channels_of(bob.id)] == ["c"]
        assert server.revision() == cli.revision()


def test_data_survives_reopening(tmp_path):
    with Directory.open(tmp_path) as d:
        bob = d.add_user("bob", Role.DISPATCH, "pw")
        c = d.add_channel("c", team="t")
        d.add_member("bob", "c")
        revision = d.revision()
    with Directory.open(tmp_path) as d:
        assert d.revision() == revision
        assert d.get_user(bob.id) == bob
        assert d.channels_of(bob.id) == [c]
        assert d.authenticate("bob", "pw") == bob


def test_writer_waits_for_another_process_lock(tmp_path):
    # busy_timeout: a write that meets another connection's write lock waits for it
    # instead of failing with "database is locked".
    import threading

    with Directory.open(tmp_path) as d:
        other = sqlite3.connect(d.path, isolation_level=None, check_same_thread=False)
        other.execute("BEGIN IMMEDIATE")
        other.execute("UPDATE meta SET value = value + 100 WHERE key = 'revision'")
        timer = threading.Timer(0.3, lambda: other.execute("COMMIT"))
        timer.start()
        try:
            d.add_channel("c")  # blocks until the timer commits
        finally:
            timer.join()
            other.close()
        assert d.revision() == 101
        assert d.channel_by_name("c") is not None
