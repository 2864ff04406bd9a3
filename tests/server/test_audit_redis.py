"""RedisAuditLog on a real redis-server: one log for several nodes, ids across nodes, the
kind indexes (the same answers as the SQLite log), the cap, outages, and `vpserver audit`.

The behaviour both stores share (fields, paging, kinds, reopen, prune) is in test_audit.py.
"""

from __future__ import annotations

import logging
import random
import threading
import time

import pytest
import redis

from server.audit import AuditLog
from server.audit_redis import AuditStoreError, RedisAuditLog, kind_indexes, open_audit_log
from server.cli import main
from server.directory import Role, User

ALICE = User(7, "alice", Role.ADMIN)


@pytest.fixture
def logs(redis_server):
    """Opens RedisAuditLogs on the test's Redis; closes them at the end."""
    opened: list[RedisAuditLog] = []

    def open_(**kwargs) -> RedisAuditLog:
        log = RedisAuditLog(redis_server.url, **kwargs)
        opened.append(log)
        return log

    yield open_
    for log in opened:
        log.close(timeout=1.0)


@pytest.fixture
def raw(redis_server):
    client = redis.Redis.from_url(redis_server.url, socket_timeout=2)
    yield client
    client.close()


def flush_within(log: AuditLog, seconds: float) -> bool:
    """flush() until it succeeds, for at most `seconds` (bounded)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if log.flush(timeout=0.5):
            return True
    return False


def every_entry(log: AuditLog, **filters) -> list[dict]:
    """All entries (of a kind), newest first, a page at a time (bounded)."""
    entries, before = [], None
    for _ in range(100):
        page = log.query(limit=1000, before=before, **filters)
        entries += page
        if len(page) < 1000:
            return entries
        before = page[-1]["id"]
    raise AssertionError("more pages than expected")


def test_two_nodes_write_one_log_with_unique_increasing_ids(logs):
    a, b = logs(node_id="a"), logs(node_id="b")
    per_thread = 300

    def write(log: RedisAuditLog, name: str) -> None:
        for n in range(per_thread):
            log.record("step", actor=ALICE, writer=name, n=n)

    threads = [threading.Thread(target=write, args=(log, name)) for log, name in ((a, "a"), (b, "b"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert a.flush() and b.flush()

    for reader in (a, b):  # either node reads everything
        entries = every_entry(reader)
        assert len(entries) == 2 * per_thread
        ids = [e["id"] for e in entries]
        assert ids == sorted(set(ids), reverse=True)  # unique, newest first
        for name in ("a", "b"):
            mine = [e["detail"]["n"] for e in reversed(entries) if e["detail"]["writer"] == name]
            assert mine == list(range(per_thread))  # each node's own order is kept
    nodes = {e["detail"]["writer"]: e["node"] for e in a.query(limit=1000, include_node=True)}
    assert nodes == {"a": "a", "b": "b"}
    assert "node" not in a.query(limit=1)[0]  # the API's AuditEntry has no node field

    a.record("later")
    assert a.flush()
    b.record("latest")
    assert b.flush()
    newest = b.query(limit=2, include_node=True)
    assert [(e["kind"], e["node"]) for e in newest] == [("latest", "b"), ("later", "a")]
    assert newest[1]["id"] > ids[0]


def test_a_record_outage_shorter_than_the_queue_loses_nothing(logs, redis_server):
    log = logs(node_id="a")
    log.record("before")
    assert log.flush()
    redis_server.stop()
    for n in range(50):
        log.record("during", n=n)
    started = time.monotonic()
    assert log.flush(timeout=2.0) is False
    assert time.monotonic() - started < 1.5  # a failed attempt answers, not the timeout
    with pytest.raises(AuditStoreError, match=r"redis at redis://127\.0\.0\.1"):
        log.query()

    redis_server.start()  # empty: nothing was saved
    assert flush_within(log, 10.0)
    entries = log.query(limit=1000)
    assert [e["detail"]["n"] for e in entries] == list(range(49, -1, -1))
    assert all(e["kind"] == "during" for e in entries)
    assert log.dropped == 0


def test_recording_never_waits_for_a_stopped_redis_and_counts_the_overflow(logs, redis_server, caplog):
    log = logs(queue_size=1000)
    redis_server.stop()
    log.record("first")
    # The writer takes "first" and keeps retrying it: from now on nothing leaves the queue
    # (else the batch it takes mid-flood would make room and start a second burst).
    assert log.flush(timeout=2.0) is False
    with caplog.at_level(logging.WARNING, logger="server.audit"):
        started = time.monotonic()
        for n in range(10_000):
            log.record("flood", n=n)
        elapsed = time.monotonic() - started
    # A correctness bound (the caller never waits on the network), not a benchmark.
    assert elapsed < 2.0
    assert log.dropped == 10_000 - 1000  # the queue holds 1000
    assert len([r for r in caplog.records if "dropping" in r.getMessage()]) == 1

    redis_server.start()
    assert flush_within(log, 10.0)
    entries = every_entry(log)
    assert [e["detail"]["n"] for e in entries[:-1]] == list(range(999, -1, -1))
    assert entries[-1]["kind"] == "first"


def test_close_gives_up_within_its_timeout_while_redis_is_down(logs, redis_server, caplog):
    log = logs()
    redis_server.stop()
    for n in range(20):
        log.record("stranded", n=n)
    with caplog.at_level(logging.ERROR, logger="server.audit_redis"):
        started = time.monotonic()
        log.close(timeout=1.0)
        assert time.monotonic() - started < 1.6
        log._thread.join(timeout=2.0)  # the writer ends on its own right after
    assert not log._thread.is_alive()
    assert any("20 entries lost" in r.getMessage() for r in caplog.records)
    log.record("after close")
    assert log.dropped == 1


def test_kind_queries_answer_like_the_sqlite_log(logs, tmp_path):
    redis_log = logs()
    sqlite_log = AuditLog.open(tmp_path)
    kinds = ["login", "logout", "user.create", "user.delete", "user_x", "usera", "user.*",
             "a.b.c", "a.b", "a.bc", ".hidden", "transmission", "user*"]
    chooser = random.Random(6)
    try:
        for n in range(600):
            kind = chooser.choice(kinds)
            redis_log.record(kind, n=n)
            sqlite_log.record(kind, n=n)
        assert redis_log.flush() and sqlite_log.flush()
        queries = [*kinds, "user.*", "a.*", "a.b.*", ".*", "user", "nothing", "a.b.c.*", None]
        for kind in queries:
            for limit in (1, 7, 1000):
                pages = {}
                for name, log in (("redis", redis_log), ("sqlite", sqlite_log)):
                    seen, before = [], None
                    for _ in range(700):  # bounded: at most 600 entries
                        page = log.query(limit=limit, before=before, kind=kind)
                        seen.append([(e["kind"], e["detail"]["n"]) for e in page])
                        if len(page) < limit:
                            break
                        before = page[-1]["id"]
                    pages[name] = seen
                assert pages["redis"] == pages["sqlite"], (kind, limit)
    finally:
        sqlite_log.close()


def test_a_rare_kind_is_found_behind_many_newer_entries(logs, raw):
    log = logs()
    log.record("login", n=1)
    for n in range(3000):
        log.record("transmission", n=n)
    assert log.flush()
    assert [e["detail"] for e in log.query(limit=1, kind="login")] == [{"n": 1}]
    # The kind's index holds only its own ids: the answer read one index entry, not 3000.
    assert raw.xlen("vpdesk:audit:kind:login") == 1
    assert raw.xlen("vpdesk:audit:kind:transmission") == 3000


def test_kind_indexes_name_the_kind_and_each_family():
    assert kind_indexes("login") == ["login"]
    assert kind_indexes("a.b.c") == ["a.b.c", "a.*", "a.b.*"]
    assert kind_indexes("user.*") == ["user.*"]
    assert len(kind_indexes("." * 100)) == 9  # the kind and at most 8 families


def test_the_streams_are_capped_and_queries_skip_trimmed_entries(logs, raw):
    log = logs(max_entries=100)
    for n in range(2000):
        log.record("even" if n % 2 == 0 else "odd", n=n)
        if n % 500 == 499:
            assert log.flush()
    assert log.flush()
    length = raw.xlen("vpdesk:audit")
    assert 100 <= length <= 400  # approximate: Redis trims whole blocks
    entries = every_entry(log)
    assert len(entries) == length
    assert [e["detail"]["n"] for e in entries] == list(range(1999, 1999 - length, -1))
    odd = every_entry(log, kind="odd")
    assert [e["detail"]["n"] for e in odd] == [n for n in range(1999, 1999 - length, -1) if n % 2]


def test_ids_keep_increasing_when_the_counter_is_lost(logs, raw):
    log = logs()
    for n in range(5):
        log.record("first", n=n)
    assert log.flush()
    newest = log.query(limit=1)[0]["id"]
    raw.delete("vpdesk:audit:seq")
    log.record("second")
    assert log.flush()
    entries = log.query()
    assert entries[0]["kind"] == "second" and entries[0]["id"] == newest + 1
    assert len(entries) == 6


def test_prune_takes_entries_out_of_the_kind_indexes_too(logs, raw):
    now = [1000.0]
    log = logs(clock=lambda: now[0])
    for n in range(30):
        log.record("user.create", n=n)
    assert log.flush()
    now[0] = 5000.0
    for n in range(30, 35):
        log.record("user.create", n=n)
    assert log.flush()
    assert log.prune(2000.0) == 30
    assert raw.xlen("vpdesk:audit:kind:user.create") == 5
    assert raw.xlen("vpdesk:audit:kind:user.*") == 5
    page = log.query(limit=5, kind="user.*")
    assert [e["detail"]["n"] for e in page] == [34, 33, 32, 31, 30]
    assert log.query(limit=5, kind="user.*", before=page[-1]["id"]) == []
    assert log.prune(2000.0) == 0


def test_open_audit_log_picks_the_store_and_keeps_sites_apart(tmp_path, redis_server, raw):
    local = open_audit_log(tmp_path)
    site_a = open_audit_log(tmp_path, redis_server.url, prefix="site-a:", node_id="n1")
    site_b = open_audit_log(tmp_path, redis_server.url, prefix="site-b:")
    try:
        assert type(local) is AuditLog and isinstance(site_a, RedisAuditLog)
        site_a.record("login")
        assert site_a.flush() and site_b.flush()
        assert site_b.query() == []
        assert [e["kind"] for e in site_a.query()] == ["login"]
        assert raw.exists("site-a:audit", "site-a:audit:seq", "site-a:audit:kind:login") == 3
    finally:
        for log in (local, site_a, site_b):
            log.close()
    with pytest.raises(AuditStoreError, match="invalid redis url"):
        open_audit_log(tmp_path, "http://:secret@nowhere")


def test_vpserver_audit_reads_the_sites_redis_log(tmp_path, logs, redis_server, capsys):
    node_a, node_b = logs(node_id="node-a"), logs(node_id="node-b")
    node_a.record("login", actor=ALICE, address="192.0.2.7", login="abc", client="web page")
    assert node_a.flush()
    node_b.transmission(3, "Fire Ops", 7, "alice", 1_700_000_000.0, 4321, "released")
    assert node_b.flush()

    assert main(["--redis", redis_server.url, "audit", "--data", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[1:5] for line in lines] == [
        ["transmission", "alice", "-", "node-b"], ["login", "alice", "192.0.2.7", "node-a"]]
    assert lines[1].endswith('login=abc client="web page"')
    assert lines[0].endswith("outcome=released")
    assert len({line.index(line.split()[5]) for line in lines}) == 1  # aligned

    assert main(["--redis", redis_server.url, "audit", "--kind", "login", "--data", str(tmp_path)]) == 0
    assert [line.split()[1] for line in capsys.readouterr().out.splitlines()] == ["login"]
    # The data folder's file is not what was read.
    assert main(["audit", "--data", str(tmp_path)]) == 0
    assert capsys.readouterr().out == "no audit entries\n"

    password_url = redis_server.url.replace("redis://", "redis://:hunter2@")
    redis_server.stop()
    assert main(["--redis", password_url, "audit", "--data", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("vpserver: cannot read the audit log in redis at redis://:***@127.0.0.1")
    assert "hunter2" not in err
