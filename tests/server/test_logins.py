"""LoginStore and RedisLoginStore: logins, refresh rotation, reuse detection, expiry and
revocation. Tests of the behaviour run on both backends (the Redis one against a real
redis-server); those about the SQLite file run on it alone."""

from __future__ import annotations

import hashlib
import sqlite3
import threading
import time

import pytest

from server.directory import Role, User
from server.logins import LOGINS_FILENAME, PURGE_INTERVAL_S, LoginStore, RefreshRefused
from server.logins_redis import RedisLoginStore

ALICE = User(1, "alice", Role.DISPATCH)
BOB = User(2, "bob", Role.GENERAL)
TTL = 3600


class Clock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture(params=["sqlite", "redis"])
def open_store(request, tmp_path):
    """Opens stores of one backend on the same data: the SQLite file in tmp_path, or the
    test's redis-server (two stores = two connections, two processes, two nodes)."""
    opened: list[LoginStore | RedisLoginStore] = []
    if request.param == "redis":
        url = request.getfixturevalue("redis_server").url

        def open_one(clock=time.time):
            return RedisLoginStore.from_url(url, clock=clock)
    else:
        def open_one(clock=time.time):
            return LoginStore.open(tmp_path, clock)

    def opener(clock=time.time):
        opened.append(open_one(clock))
        return opened[-1]

    yield opener
    for store in opened:
        store.close()


@pytest.fixture
def store(open_store, clock):
    return open_store(clock)


@pytest.fixture
def sqlite_store(tmp_path, clock):
    with LoginStore.open(tmp_path, clock) as store:
        yield store


def login(store: LoginStore, user: User = ALICE) -> tuple[str, str, float]:
    return store.create(user, address="127.0.0.1", client="test", refresh_ttl_s=TTL)


def refused(store: LoginStore, token: str) -> str:
    with pytest.raises(RefreshRefused) as info:
        store.rotate(token, TTL)
    return info.value.reason


def test_create_gives_an_active_login_with_a_refresh_token(store, clock):
    login_id, refresh, expires_at = login(store)
    assert store.is_active(login_id)
    assert store.user_of(login_id) == ALICE.id
    assert expires_at == clock.now + TTL
    assert len(refresh) >= 40 and refresh != login_id
    other_id, other_refresh, _ = login(store)
    assert other_id != login_id and other_refresh != refresh
    assert not store.is_active("no-such-login")


def test_refresh_tokens_are_stored_hashed(tmp_path, sqlite_store):
    _, refresh, _ = login(sqlite_store)
    raw = (tmp_path / LOGINS_FILENAME).read_bytes()
    wal = tmp_path / (LOGINS_FILENAME + "-wal")
    raw += wal.read_bytes() if wal.exists() else b""
    assert refresh.encode() not in raw
    with sqlite3.connect(tmp_path / LOGINS_FILENAME) as db:
        (stored,) = db.execute("SELECT refresh_hash FROM logins").fetchone()
    assert stored == hashlib.sha256(refresh.encode()).hexdigest()


def test_rotate_replaces_the_refresh_token(store, clock):
    login_id, first, _ = login(store)
    clock.now += 100
    rotated_id, user_id, second, expires_at = store.rotate(first, TTL)
    assert (rotated_id, user_id) == (login_id, ALICE.id)
    assert second != first
    assert expires_at == clock.now + TTL
    third = store.rotate(second, TTL)[2]
    assert store.is_active(login_id)
    assert store.rotate(third, TTL)[0] == login_id


def test_a_rotated_out_token_presented_again_revokes_the_login(store):
    login_id, first, _ = login(store)
    other_id, _, _ = login(store, BOB)
    second = store.rotate(first, TTL)[2]
    assert refused(store, first) == "reused"
    assert not store.is_active(login_id)
    # Neither the thief's nor the victim's token works any more; others' logins stay.
    assert refused(store, second) == "unknown"
    assert refused(store, first) == "unknown"
    assert store.is_active(other_id)


def test_unknown_tokens_are_refused(store):
    login(store)
    for token in ("", "nope", "x" * 43):
        assert refused(store, token) == "unknown"
    assert refused(store, None) == "unknown"


def test_an_expired_refresh_token_is_refused_and_ends_the_login(store, clock):
    login_id, refresh, expires_at = login(store)
    clock.now = expires_at - 1
    assert store.is_active(login_id)
    clock.now = expires_at
    assert not store.is_active(login_id)
    assert refused(store, refresh) == "expired"
    assert refused(store, refresh) == "unknown"


def test_revoke_ends_one_login(store):
    first, refresh, _ = login(store)
    second, _, _ = login(store)
    assert store.revoke(first) is True
    assert store.revoke(first) is False
    assert not store.is_active(first) and store.is_active(second)
    assert refused(store, refresh) == "unknown"


def test_revoke_user_ends_all_of_that_users_logins(store):
    alice = [login(store)[0] for _ in range(3)]
    bob = login(store, BOB)[0]
    assert store.revoke_user(ALICE.id) == 3
    assert not any(store.is_active(login_id) for login_id in alice)
    assert store.is_active(bob)
    assert store.revoke_user(ALICE.id) == 0


def test_active_among_answers_for_many_ids_at_once(store):
    ids = [login(store)[0] for _ in range(3)]
    store.revoke(ids[1])
    many = ids + [f"gone-{i}" for i in range(1200)]  # more than one SELECT's worth
    assert store.active_among(many) == {ids[0], ids[2]}
    assert store.active_among([]) == set()


def test_expired_rows_are_purged(tmp_path, sqlite_store, clock):
    login_id, first, _ = login(sqlite_store)
    sqlite_store.rotate(first, TTL)  # leaves a spent hash behind
    clock.now += TTL + PURGE_INTERVAL_S + 1
    login(sqlite_store, BOB)  # a write purges now and then
    with sqlite3.connect(tmp_path / LOGINS_FILENAME) as db:
        assert db.execute("SELECT count(*) FROM logins WHERE login_id = ?", (login_id,)).fetchone() == (0,)
        assert db.execute("SELECT count(*) FROM spent_refresh").fetchone() == (0,)
        assert db.execute("SELECT count(*) FROM logins").fetchone() == (1,)


def test_another_connection_sees_revocations(open_store, store, clock):
    # The CLI (or another node) revokes in its own process, through its own connection.
    login_id, _, _ = login(store)
    cli = open_store(clock)
    assert cli.revoke_user(ALICE.id) == 1
    assert not store.is_active(login_id)


def test_a_newer_schema_is_refused(tmp_path):
    with sqlite3.connect(tmp_path / LOGINS_FILENAME) as db:
        db.execute("PRAGMA user_version = 99")
    with pytest.raises(RuntimeError, match="schema version 99"):
        LoginStore.open(tmp_path)


def test_changed_by_others_sees_only_other_connections_writes(open_store, store):
    assert store.changed_by_others() is False
    login_id, refresh, _ = login(store)
    store.rotate(refresh, TTL)
    other_id = login(store)[0]
    store.revoke(other_id)
    assert store.changed_by_others() is False  # its own writes
    cli = open_store()
    cli.revoke(login_id)
    assert store.changed_by_others() is True
    assert store.changed_by_others() is False


def test_one_of_many_simultaneous_rotations_of_one_token_wins(open_store):
    # 20 connections (nodes, for Redis) present the same refresh token at once. One
    # rotates it; the first to come after finds it spent and revokes the login; the rest
    # find nothing. Never two successes.
    stores = [open_store() for _ in range(20)]
    login_id, refresh, _ = login(stores[0])
    start = threading.Barrier(len(stores))
    outcomes: list[str] = []

    def rotate(store) -> None:
        start.wait(timeout=10)
        try:
            store.rotate(refresh, TTL)
            outcomes.append("ok")
        except RefreshRefused as exc:
            outcomes.append(exc.reason)

    threads = [threading.Thread(target=rotate, args=(s,)) for s in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(outcomes) == sorted(["ok", "reused"] + ["unknown"] * 18), outcomes
    assert not any(store.is_active(login_id) for store in stores[:2])
