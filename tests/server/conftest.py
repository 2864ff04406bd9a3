"""Fixtures shared by the server tests."""

from __future__ import annotations

import pytest

from tests.redis_server import RedisServer


@pytest.fixture(scope="session")
def redis_process(tmp_path_factory):
    """One redis-server for the whole session (tests that stop it get it back from
    ``redis_server``)."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_server(redis_process):
    """The session's redis-server, running and empty at the start of the test."""
    redis_process.start()  # a previous test may have stopped it
    redis_process.flushall()
    return redis_process
