"""The Redis directory against a real redis-server: several nodes (instances) on one Redis,
seeding, outages and restarts without persistence, the REST API and the CLI on it.

tests/server/test_directory.py runs the whole directory suite on this backend too; here
is what only a shared directory has.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
import time

import pytest
import redis

from server.cli import main
from server.directory import (
    DIRECTORY_FILENAME,
    AlreadyExists,
    Directory,
    DirectoryError,
    DirectoryUnavailable,
    Role,
)
from server import directory_redis
from server.directory_redis import RedisDirectory, image_of, open_directory
from tests.server.api_client import ApiClient
from tests.server.harness import PASSWORD, start_site

WAIT_S = 5.0
KEY = "vpdesk:directory"


@pytest.fixture
def client(redis_server):
    """A plain client to look at (and tamper with) what the directory stored."""
    c = redis.Redis.from_url(redis_server.url)
    yield c
    c.close()


@pytest.fixture
def open_node(redis_server, tmp_path):
    """open_node(name): a RedisDirectory with a data folder of its own (one per 'node');
    all closed at the end."""
    opened: list[RedisDirectory] = []

    def open_node(name: str, prefix: str = "vpdesk:") -> RedisDirectory:
        directory = RedisDirectory.open(tmp_path / name, redis_server.url, prefix)
        opened.append(directory)
        return directory

    yield open_node
    for directory in opened:
        directory.close()


def stored_revision(client) -> int | None:
    value = client.hget(KEY, "revision")
    return None if value is None else int(value)


def wait_until(condition, timeout: float = WAIT_S) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def provision_file(data_dir) -> int:
    """A SQLite directory with users, channels and memberships; its revision."""
    with Directory.open(data_dir) as d:
        d.add_user("root", Role.ADMIN, "pw")
        d.add_user("bob", Role.GENERAL, "bob-pw")
        d.add_channel("North", team="Fire", event="Parade")
        d.add_channel("South")
        d.add_member("bob", "North")
        d.update_settings(site_name="Fair")
        return d.revision()


def assert_provisioned(d) -> None:
    assert [u.name for u in d.list_users()] == ["bob", "root"]
    assert [c.name for c in d.channels_of(d.user_by_name("bob").id)] == ["North"]
    assert d.channel_by_name("North").event == "Parade"
    assert d.get_settings()["site_name"] == "Fair"
    assert d.authenticate("bob", "bob-pw") is not None


# --- several nodes ---------------------------------------------------------------------


def test_a_write_on_one_node_reaches_the_other(open_node, client):
    one, two = open_node("one"), open_node("two")
    assert one.revision() == two.revision() == 0
    bob = one.add_user("bob", Role.DISPATCH, "pw")
    assert one.revision() == 1 and stored_revision(client) == 1
    assert two.wait_for_revision(1, WAIT_S)
    assert two.get_user(bob.id) == bob and two.authenticate("bob", "pw") == bob

    # Back the other way. A write on a node that has not caught up yet loads Redis's copy
    # first: nothing is written on top of a stale copy. (Reads outside a write, such as
    # the name lookups of add_member, may lag by the watcher's latency.)
    c = two.add_channel("c")
    one.add_membership(bob.id, c.id)  # needs the channel `two` just made
    assert two.wait_for_revision(3, WAIT_S)
    assert [c.name for c in two.channels_of(bob.id)] == ["c"]
    assert one.revision() == two.revision() == stored_revision(client) == 3


def test_concurrent_writes_from_two_nodes_all_land(open_node, client):
    nodes = [open_node("one"), open_node("two")]
    errors: list[BaseException] = []

    def write(index: int) -> None:
        try:
            for i in range(50):
                nodes[index].add_channel(f"n{index}-{i}")
        except BaseException as exc:  # reported below, not lost in the thread
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert stored_revision(client) == 100
    for node in nodes:
        assert node.wait_for_revision(100, WAIT_S)
        assert len(node.list_channels()) == 100
        assert node.revision() == 100


def test_a_refused_write_pushes_nothing(open_node, client):
    one = open_node("one")
    one.add_user("bob", Role.GENERAL, "pw")
    image = client.hget(KEY, "image")
    with pytest.raises(AlreadyExists):
        one.add_user("BOB", Role.ADMIN, "pw")
    assert stored_revision(client) == 1 and one.revision() == 1
    assert client.hget(KEY, "image") == image


def test_a_write_waits_for_another_writers_lock(open_node, client):
    one = open_node("one")
    client.set("vpdesk:directory:lock", "someone else", px=300)
    started = time.monotonic()
    one.add_channel("c")
    assert time.monotonic() - started >= 0.2
    assert stored_revision(client) == 1


def test_a_worker_copy_updates_its_parent_before_returning(open_node):
    parent = open_node("one")
    result: list = []
    worker = threading.Thread(target=lambda: result.append(_add_in_copy(parent)))
    worker.start()
    worker.join(WAIT_S)
    assert result and parent.revision() == 1  # at once, no wait
    assert parent.user_by_name("zed") == result[0]


def _add_in_copy(parent: RedisDirectory):
    with parent.open_worker_copy() as copy:
        return copy.add_user("zed", Role.GENERAL, "pw")


def test_prefixes_keep_sites_apart(open_node, client):
    a, b = open_node("a", "site-a:"), open_node("b", "site-b:")
    a.add_channel("only-in-a")
    assert b.channel_by_name("only-in-a") is None
    assert int(client.hget("site-a:directory", "revision")) == 1
    assert int(client.hget("site-b:directory", "revision")) == 0


# --- seeding and the local backup -------------------------------------------------------


def test_an_empty_redis_is_seeded_from_the_data_folder(tmp_path, open_node, client):
    revision = provision_file(tmp_path / "one")
    one = open_node("one")
    assert stored_revision(client) == revision == one.revision()
    assert_provisioned(one)
    two = open_node("two")  # another node, no file of its own
    assert_provisioned(two)
    # Writing on goes on from the seeded revision.
    two.add_channel("West")
    assert one.wait_for_revision(revision + 1, WAIT_S)


def test_nodes_opening_at_once_agree_on_one_seed(tmp_path, redis_server):
    provision_file(tmp_path / "with-data")
    opened: dict[str, RedisDirectory] = {}

    def open_(name: str) -> None:
        opened[name] = RedisDirectory.open(tmp_path / name, redis_server.url)

    threads = [threading.Thread(target=open_, args=(n,)) for n in ("with-data", "empty")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT_S)
    try:
        users = {name: [u.name for u in d.list_users()] for name, d in opened.items()}
        assert len(users) == 2 and users["with-data"] == users["empty"]  # one seed won
    finally:
        for d in opened.values():
            d.close()


def test_the_backup_file_follows_and_seeds_a_fresh_redis(tmp_path, open_node, redis_server):
    one = open_node("one")
    one.add_user("bob", Role.GENERAL, "pw")
    backup = tmp_path / "one" / DIRECTORY_FILENAME

    def backed_up() -> bool:
        if not backup.exists():
            return False
        with Directory(backup) as d:
            return d.user_by_name("bob") is not None

    assert wait_until(backed_up)
    one.close()
    redis_server.flushall()  # Redis lost everything while no node ran
    again = open_node("one")
    assert again.user_by_name("bob") is not None and again.revision() == 1


def test_a_v1_file_is_migrated_when_seeding(tmp_path, open_node):
    (tmp_path / "one").mkdir()
    conn = sqlite3.connect(tmp_path / "one" / DIRECTORY_FILENAME)
    conn.executescript("""
        CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
        INSERT INTO meta VALUES ('revision', 7);
        CREATE TABLE users (id INTEGER PRIMARY KEY AUTOINCREMENT,
            name TEXT NOT NULL UNIQUE COLLATE NOCASE, role TEXT NOT NULL,
            password_hash TEXT NOT NULL);
        CREATE TABLE channels (id INTEGER PRIMARY KEY AUTOINCREMENT,
            name TEXT NOT NULL UNIQUE COLLATE NOCASE, team TEXT, event TEXT);
        CREATE TABLE members (user_id INTEGER NOT NULL, channel_id INTEGER NOT NULL,
            PRIMARY KEY (user_id, channel_id));
        INSERT INTO channels(name, team, event) VALUES ('North', 'Fire', 'Parade');
        PRAGMA user_version = 1;
    """)
    conn.close()
    one = open_node("one")
    north = one.channel_by_name("North")
    assert (north.team, north.event) == ("Fire", "Parade") and one.revision() == 7


def test_an_image_from_a_newer_program_is_refused(tmp_path, redis_server, client):
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)")
    conn.execute("PRAGMA user_version = 99")
    client.hset(KEY, mapping={"image": image_of(conn), "revision": 0})
    conn.close()
    with pytest.raises(DirectoryError, match="schema version 99"):
        RedisDirectory.open(tmp_path, redis_server.url)


def test_an_unparsable_url_is_a_directory_error(tmp_path):
    with pytest.raises(DirectoryError, match="invalid redis url"):
        RedisDirectory.open(tmp_path, "http://nowhere/")


def test_open_directory_picks_the_backend(tmp_path, redis_server):
    with open_directory(tmp_path / "a") as local:
        assert type(local) is Directory
    with open_directory(tmp_path / "b", redis_server.url) as shared:
        assert isinstance(shared, RedisDirectory)


# --- outages ----------------------------------------------------------------------------


def test_redis_restarted_without_its_data(open_node, redis_server, client, caplog):
    caplog.set_level(logging.WARNING, logger="server.directory_redis")
    one, two = open_node("one"), open_node("two")
    bob = one.add_user("bob", Role.GENERAL, "pw")
    one.add_channel("c")
    one.add_member("bob", "c")
    assert two.wait_for_revision(3, WAIT_S)

    redis_server.stop()
    try:
        # Reads go on from the local copies.
        assert [c.name for c in two.channels_of(bob.id)] == ["c"]
        # A write fails fast and changes nothing, here or anywhere.
        started = time.monotonic()
        with pytest.raises(DirectoryUnavailable):
            two.add_channel("lost")
        assert time.monotonic() - started < 3
        assert two.channel_by_name("lost") is None and two.revision() == 3
        time.sleep(1.5)  # several polls of the watchers fail meanwhile
    finally:
        redis_server.start()  # empty: nothing was saved
    outage_warnings = [r for r in caplog.records if "is unreachable" in r.getMessage()]
    assert 1 <= len(outage_warnings) <= 2  # one per node, not one per poll

    # A surviving node puts its copy back; nothing saved is lost.
    assert wait_until(lambda: stored_revision(client) == 3)
    one.add_channel("after")
    assert two.wait_for_revision(4, WAIT_S)
    for node in (one, two):
        assert [c.name for c in node.list_channels()] == ["after", "c"]
        assert node.authenticate("bob", "pw") == bob


def test_a_flushed_redis_is_refilled_by_a_running_node(open_node, redis_server, client):
    one = open_node("one")
    one.add_user("bob", Role.GENERAL, "pw")
    redis_server.flushall()
    assert wait_until(lambda: stored_revision(client) == 1)
    two = open_node("two")
    assert two.user_by_name("bob") is not None


def test_opening_while_redis_is_down_serves_the_backup(tmp_path, redis_server, client):
    provision_file(tmp_path)
    redis_server.stop()
    directory = RedisDirectory.open(tmp_path, redis_server.url)
    try:
        assert_provisioned(directory)
        with pytest.raises(DirectoryUnavailable):
            directory.add_channel("West")
        redis_server.start()
        # The watcher finds Redis empty and seeds it from the copy it serves.
        assert wait_until(lambda: stored_revision(client) == directory.revision())
        directory.add_channel("West")
        assert stored_revision(client) == directory.revision()
    finally:
        directory.close()


# --- through the REST API and the CLI ----------------------------------------------------


async def test_rest_writes_with_passwords_reach_every_node(tmp_path, redis_server):
    one = await start_site(tmp_path / "n1", users=2, redis_url=redis_server.url)
    two = await start_site(tmp_path / "n2", users=2, redis_url=redis_server.url)
    try:
        async with await ApiClient.login(one.url, "admin") as admin:
            created = (await admin.post(
                "/api/users", {"name": "Zoe", "role": "general", "password": "zoe-pw"})).ok(201)
            # The password was hashed on a worker copy; the node's own copy has it already.
            assert one.directory.user_by_name("Zoe").id == created["user"]["id"]
            (await admin.patch(f"/api/users/{created['user']['id']}",
                               {"password": "zoe-pw-2"})).ok()
        revision = one.directory.revision()
        assert await asyncio.to_thread(two.directory.wait_for_revision, revision, WAIT_S)
        for site in (one, two):
            async with await ApiClient.login(site.url, "Zoe", "zoe-pw-2") as zoe:
                assert zoe.user["name"] == "Zoe"
        # The caller's own password change goes through a worker copy too.
        async with await ApiClient.login(two.url, "u1") as u1:
            (await u1.post("/api/me/password",
                           {"old_password": PASSWORD, "new_password": "u1-new"})).ok()
        assert await asyncio.to_thread(one.directory.wait_for_revision,
                                       two.directory.revision(), WAIT_S)
        async with await ApiClient.login(one.url, "u1", "u1-new") as u1:
            assert u1.user["name"] == "u1"
    finally:
        await one.server.stop()
        await two.server.stop()


async def test_rest_write_the_directory_cannot_take_is_503(tmp_path, redis_server, client,
                                                         monkeypatch):
    # A lock that stays taken (a writer stuck elsewhere) is what an unreachable Redis
    # looks like to a write, without also taking the logins and floors down with it.
    monkeypatch.setattr(directory_redis, "LOCK_WAIT_S", 0.3)
    site = await start_site(tmp_path, users=1, redis_url=redis_server.url)
    try:
        async with await ApiClient.login(site.url, "admin") as admin:
            client.set("vpdesk:directory:lock", "stuck", px=30_000)
            reply = await admin.post("/api/events", {"name": "Lost"})
            assert (reply.status, reply.code) == (503, "unavailable"), reply.body
            assert "write lock" in reply.body["error"]["message"]
            client.delete("vpdesk:directory:lock")
            (await admin.post("/api/events", {"name": "Found"})).ok(201)
        assert site.directory.event_by_name("Lost") is None
        assert site.directory.event_by_name("Found") is not None
    finally:
        await site.server.stop()


def test_cli_writes_to_the_sites_redis(tmp_path, open_node, redis_server, client, capsys):
    running = open_node("node")
    argv = ["--redis", redis_server.url, "--data", str(tmp_path / "cli")]
    assert main([*argv, "user", "add", "zed", "--role", "dispatch", "--password", "pw"]) == 0
    assert stored_revision(client) == 1
    assert running.wait_for_revision(1, WAIT_S)
    assert running.authenticate("zed", "pw").role is Role.DISPATCH

    # The config file's redis_url is enough too.
    config = tmp_path / "site.toml"
    config.write_text(f'redis_url = "{redis_server.url}"\ndata_dir = "{tmp_path / "cli"}"\n')
    assert main(["--config", str(config), "channel", "add", "North"]) == 0
    assert running.wait_for_revision(2, WAIT_S)
    assert running.channel_by_name("North") is not None
    capsys.readouterr()
    assert main(["--config", str(config), "user", "list"]) == 0
    assert "zed" in capsys.readouterr().out
    # Nothing went to a SQLite directory of the CLI's own but the backup of Redis's copy.
    with Directory(tmp_path / "cli" / DIRECTORY_FILENAME) as backup:
        assert backup.revision() == 2
