"""The directory on both backends (SQLite file, Redis): round trips, errors, passwords,
the revision counter; and the SQLite file itself."""

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
    InvalidSetting,
    LastAdmin,
    NotFound,
    Role,
    User,
    verify_password,
)
from server.directory_redis import RedisDirectory


@pytest.fixture(params=["sqlite", "redis"])
def directory(request, tmp_path):
    """The same suite on both backends; tests about the file itself open it themselves."""
    if request.param == "sqlite":
        d = Directory.open(tmp_path)
    else:
        d = RedisDirectory.open(tmp_path, request.getfixturevalue("redis_server").url)
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


def test_users_by_id(directory):
    root = directory.create_user("root", Role.ADMIN, "pw")
    bob = directory.create_user("bob", "general", "pw")
    assert directory.rename_user(bob.id, " Robert ") == User(bob.id, "Robert", Role.GENERAL)
    assert directory.user_by_name("robert").id == bob.id and directory.user_by_name("bob") is None
    assert directory.rename_user(bob.id, "ROBERT").name == "ROBERT"  # a change of case only
    with pytest.raises(AlreadyExists, match="user 'Root' exists already"):
        directory.rename_user(bob.id, "Root")
    with pytest.raises(InvalidName, match="user name"):
        directory.rename_user(bob.id, "a\tb")

    assert directory.set_user_role(bob.id, "dispatch") == User(bob.id, "ROBERT", Role.DISPATCH)
    with pytest.raises(InvalidRole, match="'boss'"):
        directory.set_user_role(bob.id, "boss")
    directory.set_user_password(bob.id, "new pw")
    assert directory.authenticate("robert", "new pw") is not None
    with pytest.raises(InvalidPassword):
        directory.set_user_password(bob.id, "")

    for call in (
        lambda: directory.rename_user(99, "x"),
        lambda: directory.set_user_role(99, Role.ADMIN),
        lambda: directory.set_user_password(99, "pw"),
        lambda: directory.delete_user(99),
    ):
        with pytest.raises(NotFound, match="no user 99"):
            call()
    directory.delete_user(bob.id)
    assert directory.list_users() == [root]


def test_last_admin_is_kept(directory):
    root = directory.add_user("root", Role.ADMIN, "pw")
    gus = directory.add_user("gus", Role.GENERAL, "pw")
    assert directory.count_admins() == 1
    before = directory.revision()
    for call in (
        lambda: directory.delete_user(root.id),
        lambda: directory.remove_user("root"),
        lambda: directory.set_user_role(root.id, Role.DISPATCH),
        lambda: directory.set_role("root", Role.GENERAL),
    ):
        with pytest.raises(LastAdmin, match="'root' is the last admin"):
            call()
    assert directory.get_user(root.id) == root and directory.revision() == before
    assert directory.set_user_role(root.id, Role.ADMIN) == root  # admin to admin is no demotion
    directory.delete_user(gus.id)  # other users go freely

    second = directory.add_user("second", Role.ADMIN, "pw")
    assert directory.count_admins() == 2
    directory.set_user_role(root.id, Role.GENERAL)  # one admin is left
    with pytest.raises(LastAdmin):
        directory.delete_user(second.id)
    # Undoing a half-made first-run setup may remove the only admin on purpose.
    directory.remove_user("second", allow_last_admin=True)
    assert directory.count_admins() == 0
    assert issubclass(LastAdmin, DirectoryError)


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
    parade = directory.event_by_name("Parade")
    fire = directory.team_by_name(parade.id, "Fire")
    assert north == Channel(north.id, "North", "Fire", "Parade", fire.id, parade.id)
    assert north.to_wire() == {
        "id": north.id, "name": "North", "team": "Fire", "event": "Parade",
        "team_id": fire.id, "event_id": parade.id,
    }
    bare = directory.add_channel("Alpha")
    assert bare == Channel(bare.id, "Alpha", None, None, None, None)
    assert directory.get_channel(north.id) == north
    assert directory.channel_by_name("north") == north
    assert directory.list_channels() == [bare, north]
    with pytest.raises(AlreadyExists, match="channel 'North'"):
        directory.add_channel("North")
    directory.remove_channel("North")
    assert directory.get_channel(north.id) is None
    with pytest.raises(NotFound, match="no channel 'North'"):
        directory.remove_channel("North")


def test_add_channel_reuses_event_and_team_rows_by_name(directory):
    a = directory.add_channel("A", team="Fire", event="Parade")
    b = directory.add_channel("B", team="fire", event="PARADE")  # same rows, any case
    c = directory.add_channel("C", team="Fire")  # a site-wide team of the same name
    d = directory.add_channel("D", event="Parade")
    assert (b.team, b.event) == ("Fire", "Parade")  # the rows' spelling
    assert (b.team_id, b.event_id) == (a.team_id, a.event_id)
    assert c.event_id is None and c.team_id not in (None, a.team_id)
    assert d.event_id == a.event_id and d.team_id is None
    assert [e.name for e in directory.list_events()] == ["Parade"]
    assert [t.id for t in directory.list_teams(a.event_id)] == [a.team_id]
    assert [t.id for t in directory.list_teams(None)] == [c.team_id]
    # A duplicate channel name takes back the rows its attempt created.
    with pytest.raises(AlreadyExists):
        directory.add_channel("a", team="Police", event="Marathon")
    assert directory.event_by_name("Marathon") is None


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


def test_memberships_by_id(directory):
    bob = directory.add_user("bob", Role.GENERAL, "pw")
    north = directory.add_channel("North")
    directory.add_membership(bob.id, north.id)
    directory.add_membership(bob.id, north.id)  # idempotent
    assert directory.members_of(north.id) == [bob]
    with pytest.raises(NotFound, match="no user 99"):
        directory.add_membership(99, north.id)
    with pytest.raises(NotFound, match="no channel 99"):
        directory.add_membership(bob.id, 99)
    directory.remove_membership(bob.id, north.id)
    assert not directory.is_member(bob.id, north.id)
    with pytest.raises(NotFound, match="'bob' is not a member of channel 'North'"):
        directory.remove_membership(bob.id, north.id)
    with pytest.raises(NotFound, match="no channel 99"):
        directory.remove_membership(bob.id, 99)


def test_settings(directory):
    assert directory.get_settings() == {"site_name": "vpdesk", "max_talk_ms": None}
    before = directory.revision()
    assert directory.update_settings(site_name=" Fair HQ ", max_talk_ms=30_000) == {
        "site_name": "Fair HQ", "max_talk_ms": 30_000}
    assert directory.revision() > before
    assert directory.update_settings(max_talk_ms=5_000)["max_talk_ms"] == 5_000
    assert directory.update_settings(max_talk_ms=600_000)["max_talk_ms"] == 600_000
    assert directory.update_settings() == directory.get_settings()
    assert directory.update_settings(max_talk_ms=None) == {
        "site_name": "Fair HQ", "max_talk_ms": None}


@pytest.mark.parametrize("values, message", [
    ({"colour": "red"}, "unknown setting 'colour'"),
    ({"site_name": ""}, "empty"),
    ({"site_name": "x" * 65}, "longer"),
    ({"site_name": None}, "must be a string"),
    ({"site_name": 7}, "must be a string"),
    ({"max_talk_ms": 4_999}, "outside 5000..600000"),
    ({"max_talk_ms": 600_001}, "outside"),
    ({"max_talk_ms": True}, "integer"),
    ({"max_talk_ms": 30_000.0}, "integer"),
    ({"max_talk_ms": "30000"}, "integer"),
    ({"max_talk_ms": 10_000, "site_name": "a\nb"}, "control characters"),  # all or nothing
])
def test_bad_settings_change_nothing(directory, values, message):
    directory.update_settings(site_name="Site")
    before = directory.revision()
    with pytest.raises(InvalidSetting, match=message):
        directory.update_settings(**values)
    assert directory.get_settings() == {"site_name": "Site", "max_talk_ms": None}
    assert directory.revision() == before


def test_settings_survive_reopening_and_ignore_bad_rows(tmp_path):
    with Directory.open(tmp_path) as d:
        d.update_settings(site_name="Fair", max_talk_ms=20_000)
    with Directory.open(tmp_path) as d:
        assert d.get_settings() == {"site_name": "Fair", "max_talk_ms": 20_000}
        # A row edited by hand into nonsense reads as the default instead of failing.
        d._conn.execute("UPDATE settings SET value = '\"soon\"' WHERE key = 'max_talk_ms'")
        d._conn.execute("INSERT INTO settings VALUES ('obsolete', '1')")
        assert d.get_settings() == {"site_name": "Fair", "max_talk_ms": None}


def test_revision_increases_on_every_write(directory):
    seen = [directory.revision()]

    def wrote():
        seen.append(directory.revision())
        assert seen[-1] > seen[-2]

    directory.add_user("root", Role.ADMIN, "pw"); wrote()
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
