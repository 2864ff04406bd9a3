"""Whole server nodes on the Redis live store: floors over real signaling, two nodes
sharing one Redis, and a Redis that stops and comes back while clients talk."""

from __future__ import annotations

import asyncio
import sys
import types

import aiohttp
import pytest

from server.cli import main
from server.config import ServerConfig
from server.floor_events import FloorEvent, FloorIdle, FloorRevoked, FloorTaken
from server.hub import Hub
from server.session import SessionState
from server.state.redis_store import RedisLiveStore
from tests.server.harness import PttClient, close_all, start_site
from vpdesk.session.signaling import RequestError


class HolderLog:
    """Watches a node's floor events and records any grant made while someone else
    still held the channel: the one thing floor control must never do."""

    def __init__(self, hub: Hub) -> None:
        self.holders: dict[int, str] = {}
        self.double_grants: list[tuple[int, str, str]] = []
        hub.floor_observers.append(self.on_event)

    def on_event(self, event: FloorEvent) -> None:
        if isinstance(event, FloorTaken):
            current = self.holders.get(event.channel_id)
            if current is not None and current != event.holder.name:
                self.double_grants.append((event.channel_id, current, event.holder.name))
            self.holders[event.channel_id] = event.holder.name
        elif isinstance(event, (FloorRevoked, FloorIdle)):
            self.holders.pop(event.channel_id, None)


async def health(http: aiohttp.ClientSession, url: str) -> tuple[int, dict]:
    async with http.get(f"{url}/api/health") as response:
        return response.status, await response.json()


@pytest.fixture
async def site(tmp_path, redis_server):
    site = await start_site(tmp_path, users=4, redis_url=redis_server.url, floor_lease_ms=1500)
    yield site
    await site.server.stop()


async def test_grant_deny_release_on_redis(site, redis_server):
    alpha = site.channels["alpha"]
    assert isinstance(site.server.store, RedisLiveStore)
    a, b = [await PttClient.connect(site.url, n, media=False) for n in ("u0", "u1")]
    try:
        assert (await a.talk(alpha))["granted"] is True
        denied = await b.talk(alpha)
        assert denied["granted"] is False and denied["holder"]["name"] == "u0"
        # The lease lives in Redis, under the default prefix.
        assert (await site.server.store.floor_get(alpha)).name == "u0"
        assert site.server.store.key(alpha) == f"vpdesk:floor:{alpha}"
        await a.release(alpha)
        assert (await b.signaling.next_event("floor_idle"))["channel"] == alpha
        assert await site.server.store.floor_get(alpha) is None
        assert (await b.talk(alpha))["granted"] is True
    finally:
        await close_all(a, b)


async def test_two_nodes_share_one_floor(tmp_path, redis_server):
    node1 = await start_site(tmp_path / "n1", users=2, redis_url=redis_server.url)
    node2 = await start_site(tmp_path / "n2", users=2, redis_url=redis_server.url)
    clients = []
    try:
        # Provisioned alike, so channel ids match: both nodes contend for the same keys.
        assert node1.channels == node2.channels
        alpha = node1.channels["alpha"]
        a = await PttClient.connect(node1.url, "u0", media=False)
        clients.append(a)
        b = await PttClient.connect(node2.url, "u1", media=False)
        clients.append(b)
        assert (await a.talk(alpha))["granted"] is True
        denied = await b.talk(alpha)
        assert denied["granted"] is False and denied["holder"]["name"] == "u0"
        await a.release(alpha)
        assert (await b.talk(alpha))["granted"] is True
        denied = await a.talk(alpha)
        assert denied["granted"] is False and denied["holder"]["name"] == "u1"
    finally:
        await close_all(*clients)
        await node1.server.stop()
        await node2.server.stop()


async def test_redis_outage_and_return_without_restarting_the_node(site, redis_server):
    alpha, bravo = site.channels["alpha"], site.channels["bravo"]
    holders = HolderLog(site.hub)
    a, b, c = [await PttClient.connect(site.url, n, media=False) for n in ("u0", "u1", "u2")]
    http = aiohttp.ClientSession()
    try:
        assert (await health(http, site.url))[0] == 200
        assert (await a.talk(alpha))["granted"] is True  # holds alpha through the outage
        assert (await c.talk(bravo))["granted"] is True  # disconnects during it
        c_session = c.session_id

        await asyncio.to_thread(redis_server.stop)
        try:
            status, body = await health(http, site.url)
            assert (status, body["status"]) == (503, "unavailable")
            # A request needing the store gets an error reply; the connection lives on.
            with pytest.raises(RequestError) as raised:
                await b.talk(alpha)
            assert raised.value.code == "unavailable"
            # A talker's session ending still works: it stops talking at once, and its
            # lease, no longer renewed, is left to expire in Redis.
            await c.close()
            assert (await b.signaling.next_event("floor_idle"))["channel"] == bravo
            assert site.hub.sessions[c_session].state is SessionState.DETACHED
            assert not site.hub.floor.held_by(c_session)
            assert (await health(http, site.url))[0] == 503
        finally:
            await asyncio.to_thread(redis_server.start)

        # Back without a node restart. Redis lost every lease (nothing is saved): grants
        # wait one lease, in which the node takes alpha from a, so that nobody else is
        # granted while a still believes it talks.
        status, body = await health(http, site.url)
        assert (status, body["status"]) == (200, "ok")
        with pytest.raises(RequestError) as raised:
            await b.talk(alpha)
        assert raised.value.code == "unavailable" and "grants resume in" in str(raised.value)
        revoked = await a.signaling.next_event("floor_revoked", timeout=3.0)
        assert revoked["channel"] == alpha
        assert (await talk_once_grants_resume(b, alpha))["granted"] is True
        assert not site.hub.floor.held_by(a.session_id)
        assert site.hub.floor.held_by(b.session_id) == {alpha}
        denied = await a.talk(alpha)
        assert denied["granted"] is False and denied["holder"]["name"] == "u1"
        assert (await a.talk(bravo))["granted"] is True
        assert holders.double_grants == []
    finally:
        await http.close()
        await close_all(a, b, c)


async def test_release_while_redis_is_down(site, redis_server):
    alpha = site.channels["alpha"]
    a, b = [await PttClient.connect(site.url, n, media=False) for n in ("u0", "u1")]
    try:
        assert (await a.talk(alpha))["granted"] is True
        await asyncio.to_thread(redis_server.stop)
        try:
            assert await a.release(alpha) is not None  # an ok reply, not an error
            assert (await b.signaling.next_event("floor_idle"))["channel"] == alpha
            assert not site.hub.floor.held_by(a.session_id)
        finally:
            await asyncio.to_thread(redis_server.start)
        assert (await talk_once_grants_resume(b, alpha))["granted"] is True
    finally:
        await close_all(a, b)


async def talk_once_grants_resume(client: PttClient, channel: int, within_s: float = 5.0) -> dict:
    """Press until the store's quiet period after losing its data is over."""
    deadline = asyncio.get_running_loop().time() + within_s
    while True:
        try:
            return await client.talk(channel)
        except RequestError as exc:
            if exc.code != "unavailable" or asyncio.get_running_loop().time() > deadline:
                raise
        await asyncio.sleep(0.1)


def test_unparsable_redis_url_is_a_config_error(tmp_path, capsys):
    # Synchronous: main() runs the node on a loop of its own, as `vpserver` does.
    code = main(["--data", str(tmp_path), "--listen", "127.0.0.1:0", "--redis", "http://nowhere/"])
    assert code == 2
    assert "redis_url" in capsys.readouterr().err


def test_redis_option_reaches_the_config(tmp_path, monkeypatch):
    seen: list[ServerConfig] = []
    stub = types.ModuleType("server.node")
    stub.run_node = seen.append
    monkeypatch.setitem(sys.modules, "server.node", stub)
    assert main(["--data", str(tmp_path), "--redis", "redis://127.0.0.1:6390/3"]) == 0
    (config,) = seen
    assert config.redis_url == "redis://127.0.0.1:6390/3"
    assert config.redis_prefix == "vpdesk:"
