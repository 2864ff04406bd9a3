"""ConsoleSession on a site of two nodes: when its node dies it moves to the other one
within 5 s and keeps its channels, mutes and target; a dead first node at start, both
dead and one coming back, and a node list learned from `hello`.

Real parts only: two server nodes on loopback sharing one real redis-server, real aiortc
peers, the console's own session code. Only the sound card is a stand-in
(tests/vpdesk/session_helpers.py).
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

import pytest

from server.auth import SECRET_FILENAME
from tests.audio_tools import speech_wav
from tests.redis_server import RedisServer, free_port
from tests.server.harness import PASSWORD, Site, start_site
from tests.vpdesk.session_helpers import RecordingListener, RecordingSpeaker, WavMicrophone, until
from vpdesk.core.connection import ConnectionState
from vpdesk.core.ptt import TxState
from vpdesk.session.console import ConsoleSession, Credentials
from vpdesk.session.signaling import SignalingClient

FAILOVER_LIMIT_S = 5.0  # the requirement: resumed on another node within 5 s


@pytest.fixture(scope="module")
def redis_process(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_server(redis_process):
    redis_process.start()
    redis_process.flushall()
    return redis_process


@pytest.fixture(scope="module")
def wav(tmp_path_factory):
    return speech_wav(tmp_path_factory.mktemp("wav"), "Unit two is on scene", 1.5)


async def start_node(
    data_dir: Path, redis_url: str, *, secret_from: Site | None = None, port: int = 0
) -> Site:
    """A node of the site: provisioned alike (same users and channel ids), one Redis, and
    the first node's token-signing secret, so that a token of one is good on the other."""
    if secret_from is not None:
        data_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(secret_from.data_dir / SECRET_FILENAME, data_dir / SECRET_FILENAME)
    return await start_site(data_dir, users=3, redis_url=redis_url, listen_port=port)


def nowhere() -> str:
    """The URL of a node that is down: nothing listens on its port."""
    return f"http://127.0.0.1:{free_port()}"


def console(urls: tuple[str, ...], wav: Path | None = None, **kwargs) -> ConsoleSession:
    return ConsoleSession(
        Credentials(urls[0], "u1", PASSWORD, urls=urls),
        listener=RecordingListener(),
        speaker=RecordingSpeaker(),
        microphone=WavMicrophone(wav) if wav is not None else None,
        **kwargs,
    )


@pytest.fixture
async def two_nodes(tmp_path, redis_server):
    a = await start_node(tmp_path / "a", redis_server.url)
    b = await start_node(tmp_path / "b", redis_server.url, secret_from=a)
    assert a.channels == b.channels
    yield a, b
    for site in (a, b):
        await site.server.stop()


@pytest.fixture
def resumes(monkeypatch):
    """The `resume` of every hello the console sends (a spy on the real client)."""
    sent: list[str | None] = []
    real_hello = SignalingClient.hello

    async def hello(self, token, *args, resume=None, **kwargs):
        sent.append(resume)
        return await real_hello(self, token, *args, resume=resume, **kwargs)

    monkeypatch.setattr(SignalingClient, "hello", hello)
    return sent


async def test_fails_over_to_the_next_node_within_5_s_with_its_channels_mutes_and_target(
    two_nodes, wav, resumes, caplog
):
    caplog.set_level(logging.INFO, logger="vpdesk.session.console")
    a, b = two_nodes
    alpha, bravo = a.channels["alpha"], a.channels["bravo"]
    s = console((a.url, b.url), wav, target=bravo)
    s.start()
    try:
        await s.wait_connected()
        assert s.credentials.url == a.url
        await until(lambda: set(s.board.joined_ids()) == {alpha, bravo})
        s.set_muted(alpha, True)
        await until(lambda: a.hub.sessions[s.session_id].muted == {alpha})
        first_session = s.session_id
        assert "node 1 of 2" in s.detail

        started = time.monotonic()
        await a.server.stop()
        await until(
            lambda: s.state is ConnectionState.CONNECTED and s.credentials.url == b.url,
            timeout=FAILOVER_LIMIT_S + 5,
        )
        took = time.monotonic() - started
        assert took < FAILOVER_LIMIT_S, f"failover took {took:.2f} s"

        # hello on B asked to resume A's session: the session id is site-wide.
        assert resumes[-1] == first_session
        # Whether B resumed it or started afresh, the dispatcher's setup is back.
        on_b = b.hub.sessions[s.session_id]
        assert on_b.joined == {alpha, bravo}
        assert on_b.muted == {alpha}
        assert set(s.board.joined_ids()) == {alpha, bravo}
        assert s.board.get(alpha).muted and not s.board.get(bravo).muted
        assert s.target == bravo
        assert "node 2 of 2" in s.detail and b.url.split("//")[1] in s.detail
        assert any("failing over to " + b.url in r.getMessage() for r in caplog.records)

        # And it can talk there: the floor is granted by B.
        s.press("mouse")
        await until(lambda: s.ptt.state is TxState.TRANSMITTING, timeout=5)
        assert s.listener.tones[-1] == "talk_permit"
        holder = await b.server.store.floor_get(bravo)
        assert holder is not None and holder.name == "u1"
        s.release("mouse")
        await until(lambda: s.ptt.state is TxState.IDLE)
    finally:
        await s.stop()


async def test_a_dead_first_node_at_start_connects_to_the_next(tmp_path, redis_server):
    b = await start_node(tmp_path / "b", redis_server.url)
    dead_a = nowhere()
    s = console((dead_a, b.url))
    s.reconnector.base = 5.0  # a back-off would show: the second node is tried at once
    s.start()
    try:
        started = time.monotonic()
        await s.wait_connected(timeout=10)
        assert time.monotonic() - started < 2.0
        assert s.credentials.url == b.url
        assert s.reconnector.attempts == 0  # no back-off was counted
        assert s.nodes.urls == (dead_a, b.url)
        await until(lambda: len(s.board.joined_ids()) == 2)
    finally:
        await s.stop()
        await b.server.stop()


async def test_both_nodes_down_backs_off_then_connects_when_one_comes_back(tmp_path, redis_server):
    port = free_port()
    a_url, dead_b = f"http://127.0.0.1:{port}", nowhere()
    s = console((a_url, dead_b))
    s.reconnector.base = 0.3
    s.reconnector.max_delay = 1.0
    a: Site | None = None
    s.start()
    try:
        # Each round tries both nodes, then waits the back-off, which grows.
        await until(lambda: s.reconnector.attempts >= 2, timeout=10)
        assert s.state in (ConnectionState.RECONNECTING, ConnectionState.CONNECTING)
        assert s.nodes.failures >= 4
        await until(lambda: "retrying in" in s.detail, timeout=5)
        a = await start_node(tmp_path / "a", redis_server.url, port=port)  # A comes up
        await until(lambda: s.state is ConnectionState.CONNECTED, timeout=15)
        assert s.credentials.url == a_url == a.url
        await until(lambda: len(s.board.joined_ids()) == 2)
        assert s.nodes.failures == 0
    finally:
        await s.stop()
        if a is not None:
            await a.server.stop()


async def test_a_node_named_by_hello_is_where_the_console_fails_over_to(two_nodes):
    a, b = two_nodes
    s = console((a.url,))  # the user gave one address; hello names the site's nodes
    s.start()
    try:
        await s.wait_connected()
        if "nodes" not in s.hello:
            pytest.skip("this server's hello does not list the site's nodes")
        assert s.nodes.urls[0] == a.url and b.url in s.nodes.urls
        assert s.credentials.urls == s.nodes.urls
        started = time.monotonic()
        await a.server.stop()
        await until(
            lambda: s.state is ConnectionState.CONNECTED and s.credentials.url == b.url,
            timeout=FAILOVER_LIMIT_S + 5,
        )
        assert time.monotonic() - started < FAILOVER_LIMIT_S
        await until(lambda: len(s.board.joined_ids()) == 2)
    finally:
        await s.stop()


async def test_token_refresh_and_sign_in_go_to_the_node_in_use(two_nodes):
    a, b = two_nodes
    s = console((a.url, b.url))
    s.start()
    try:
        await s.wait_connected()
        assert s._tokens.base_url == a.url
        await a.server.stop()
        await until(lambda: s.state is ConnectionState.CONNECTED and s.credentials.url == b.url, timeout=10)
        # The management panel's calls ask the session for a token: it comes from B now.
        s._tokens.forget_access_token()
        assert await s.access_token()
        assert s._tokens.base_url == b.url
    finally:
        await s.stop()
