"""AuditLog: queued writes from many callers, flush, paging, kinds, a full queue, reopen.

The tests about behaviour run on both stores: the SQLite file and the site's Redis stream
(RedisAuditLog, on a real redis-server); the ones about the file on SQLite only."""

from __future__ import annotations

import asyncio
import logging
import math
import sqlite3
import threading

import pytest

from server.audit import AUDIT_FILENAME, AuditLog
from server.audit_redis import RedisAuditLog
from server.directory import Directory, Role, User

ALICE = User(7, "alice", Role.ADMIN)


@pytest.fixture(params=["sqlite", "redis"])
def open_log(request, tmp_path):
    """Opens an audit log on this test's store: each call a new instance on the same
    file or the same Redis (like a restart, or a second node). Closed at the end."""
    opened = []
    redis_url = request.getfixturevalue("redis_server").url if request.param == "redis" else None

    def open_(**kwargs) -> AuditLog:
        if redis_url is None:
            log = AuditLog.open(tmp_path, **kwargs)
        else:
            log = RedisAuditLog(redis_url, **kwargs)
        opened.append(log)
        return log

    open_.backend = request.param
    yield open_
    for log in opened:
        log.close()


@pytest.fixture
def audit(open_log):
    return open_log()


def test_an_entry_comes_back_with_every_field(open_log, tmp_path):
    log = open_log(clock=lambda: 1_700_000_000.5)
    try:
        log.record("user.create", actor=ALICE, address="10.0.0.9", user_id=12, name="bob", role=Role.GENERAL)
        log.record("login_failed", address="10.0.0.8", username="mallory")
        assert log.flush() is True
        newest, oldest = log.query()
    finally:
        log.close()
    assert oldest == {
        "id": oldest["id"], "at": 1_700_000_000.5, "kind": "user.create", "actor": "alice",
        "actor_id": 7, "address": "10.0.0.9", "detail": {"user_id": 12, "name": "bob", "role": "general"},
    }
    assert newest["kind"] == "login_failed" and newest["actor"] is None and newest["actor_id"] is None
    assert newest["detail"] == {"username": "mallory"}
    assert newest["id"] > oldest["id"]
    assert (tmp_path / AUDIT_FILENAME).exists() == (open_log.backend == "sqlite")


def test_details_json_cannot_hold_are_stored_as_text(audit):
    class Thing:
        def __str__(self) -> str:
            return "a thing"

    audit.record(
        "odd", thing=Thing(), nan=math.nan, inf=-math.inf, raw=b"\x00\xff", lone="\ud800!",
        nested={1: [(2, 3), {"deep": {"deeper": [[[[[[[["x"]]]]]]]]}}]}, user=ALICE,
    )
    assert audit.flush()
    (entry,) = audit.query()
    detail = entry["detail"]
    assert detail["thing"] == "a thing"
    assert detail["nan"] == "nan" and detail["inf"] == "-inf"
    assert detail["raw"] == repr(b"\x00\xff")
    assert detail["lone"] == "\ud800!"
    assert detail["nested"]["1"][0] == [2, 3]
    assert detail["user"] == {"id": 7, "name": "alice", "role": "admin"}
    # Past the depth limit the rest is one string, not an error.
    assert isinstance(detail["nested"]["1"][1]["deep"]["deeper"][0][0][0][0], str)


async def test_records_from_many_tasks_and_threads_all_arrive(audit):
    tasks, per_task, threads = 20, 50, 4

    async def task(t: int) -> None:
        for n in range(per_task):
            audit.record("task", t=t, n=n)
            if n % 10 == 0:
                await asyncio.sleep(0)

    def thread(t: int) -> None:
        for n in range(per_task):
            audit.record("thread", t=t, n=n)

    workers = [threading.Thread(target=thread, args=(t,)) for t in range(threads)]
    for worker in workers:
        worker.start()
    await asyncio.gather(*(task(t) for t in range(tasks)))
    for worker in workers:
        worker.join(timeout=10)
    assert await audit.flush_async() is True
    entries = audit.query(limit=1000) + audit.query(limit=1000, before=audit.query(limit=1000)[-1]["id"])
    seen = {(e["kind"], e["detail"]["t"], e["detail"]["n"]) for e in entries}
    assert len(entries) == len(seen) == (tasks + threads) * per_task
    assert seen == {("task", t, n) for t in range(tasks) for n in range(per_task)} | {
        ("thread", t, n) for t in range(threads) for n in range(per_task)
    }
    assert audit.dropped == 0
    # Within one caller, entries keep their order.
    task0 = [e["detail"]["n"] for e in reversed(entries) if e["kind"] == "task" and e["detail"]["t"] == 0]
    assert task0 == list(range(per_task))


def test_paging_with_before_walks_every_entry_once_newest_first(audit):
    for n in range(250):
        audit.record("step", n=n)
    assert audit.flush()
    pages, before = [], None
    for _ in range(10):  # bounded: 3 pages expected
        page = audit.query(limit=100, before=before)
        if not page:
            break
        pages.append(page)
        before = page[-1]["id"]
    assert [len(p) for p in pages] == [100, 100, 50]
    numbers = [e["detail"]["n"] for page in pages for e in page]
    assert numbers == list(range(249, -1, -1))
    ids = [e["id"] for page in pages for e in page]
    assert ids == sorted(ids, reverse=True)
    assert len(audit.query(limit=10**9)) == 250  # clamped, not an error
    assert len(audit.query(limit=0)) == 1


def test_kind_filter_exact_and_prefix(audit):
    for kind in ("user.create", "user.delete", "user_x", "usera", "login", "user.create"):
        audit.record(kind)
    assert audit.flush()
    assert [e["kind"] for e in audit.query(kind="user.create")] == ["user.create", "user.create"]
    assert sorted(e["kind"] for e in audit.query(kind="user.*")) == ["user.create", "user.create", "user.delete"]
    assert audit.query(kind="user") == []
    assert [e["kind"] for e in audit.query(kind="login")] == ["login"]
    newest_create = audit.query(kind="user.create")[0]["id"]
    assert len(audit.query(kind="user.create", before=newest_create)) == 1


def test_a_full_queue_drops_entries_without_blocking_and_warns_once(tmp_path, caplog):
    log = AuditLog.open(tmp_path, queue_size=5)
    blocker = sqlite3.connect(tmp_path / AUDIT_FILENAME, isolation_level=None)
    try:
        # Hold the write lock: the writer's next commit waits for it (busy timeout).
        blocker.execute("BEGIN IMMEDIATE")
        log.record("first")
        assert log.flush(timeout=0.1) is False  # hurries the writer into its blocked commit
        for _ in range(200):  # bounded wait until the writer has taken "first" off the queue
            if log._queue.qsize() == 0:
                break
            threading.Event().wait(0.01)
        assert log._queue.qsize() == 0
        with caplog.at_level(logging.WARNING, logger="server.audit"):
            for n in range(15):
                log.record("burst", n=n)  # returns at once even though nothing can be written
        assert log.dropped == 10
        warnings = [r for r in caplog.records if "dropping" in r.getMessage()]
        assert len(warnings) == 1
    finally:
        blocker.execute("COMMIT")
        blocker.close()
    try:
        assert log.flush() is True
        entries = log.query()
        assert [e["kind"] for e in entries].count("burst") == 5
        assert [e["detail"]["n"] for e in entries if e["kind"] == "burst"] == [4, 3, 2, 1, 0]
        assert entries[-1]["kind"] == "first"
    finally:
        log.close()


def test_close_then_reopen_keeps_every_entry(open_log):
    log = open_log()
    for n in range(30):
        log.record("before", n=n)
    log.transmission(3, "alpha", 7, "alice", 1_700_000_000.0, 4321, "max_duration")
    log.close()  # no flush: close writes what is queued
    log.close()  # idempotent
    log.record("after close")  # dropped, never raised
    assert log.dropped == 1
    reopened = open_log()
    try:
        entries = reopened.query()
        assert len(entries) == 31
        assert entries[0]["kind"] == "transmission"
        assert entries[0]["actor"] == "alice" and entries[0]["actor_id"] == 7
        assert entries[0]["detail"] == {
            "channel_id": 3, "channel": "alpha", "user_id": 7, "user": "alice",
            "started_at": 1_700_000_000.0, "duration_ms": 4321, "outcome": "max_duration",
        }
        reopened.record("again")
        assert reopened.flush()
        assert reopened.query(limit=1)[0]["id"] > entries[0]["id"]
    finally:
        reopened.close()


def test_audit_writes_leave_the_directory_revision_alone(tmp_path):
    directory = Directory.open(tmp_path)
    log = AuditLog.open(tmp_path)
    try:
        revision = directory.revision()
        for n in range(20):
            log.record("member.add", n=n)
        assert log.flush()
        assert directory.revision() == revision
    finally:
        log.close()
        directory.close()


def test_prune_removes_only_older_entries(open_log):
    now = [1000.0]
    log = open_log(clock=lambda: now[0])
    try:
        log.record("old")
        assert log.flush()
        now[0] = 2000.0
        log.record("new")
        assert log.flush()
        assert log.prune(1500.0) == 1
        assert [e["kind"] for e in log.query()] == ["new"]
    finally:
        log.close()
