"""Failures of a multi-node site: a node killed with SIGKILL, and Redis restarted
without persistence while a floor is held."""

from __future__ import annotations

import asyncio

import aiohttp

from tests.server.harness import PttClient, close_all
from vpdesk.media.peer import ClientPeer
from vpdesk.session.signaling import RequestError, SignalingClient

LEASE_S = 3.0  # the nodes' floor_lease_ms


async def press_until_granted(client: PttClient, channel: int, within_s: float) -> float:
    """Press every 50 ms until granted; the loop time of the grant. Busy denials and
    `unavailable` (Redis down or waiting out its data loss) are expected meanwhile."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while loop.time() < deadline:
        try:
            if (await client.talk(channel))["granted"]:
                return loop.time()
        except RequestError as exc:
            assert exc.code == "unavailable", exc
        await asyncio.sleep(0.05)
    raise AssertionError(f"{client.name} not granted within {within_s} s")


async def health_status(url: str) -> int:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{url}/api/health") as response:
            return response.status


async def test_killed_node_frees_its_floor_and_its_clients_resume_elsewhere(two_nodes):
    a, b, channels = two_nodes
    alpha, bravo = channels["alpha"], channels["bravo"]
    talker = await PttClient.connect(a.url, "u0", media=False)
    watcher = await PttClient.connect(b.url, "u1", media=False)
    mover = await PttClient.connect(a.url, "u2", slots=2)
    resumed_signaling: SignalingClient | None = None
    resumed_peer: ClientPeer | None = None
    try:
        await mover.join(alpha)
        await mover.join(bravo)
        await mover.mute(bravo)
        assert (await talker.talk(alpha))["granted"] is True
        taken = await watcher.signaling.next_event("floor_taken")
        assert taken["holder"]["name"] == "u0"  # a's grant, told to b's member
        await asyncio.sleep(1.5)  # a heartbeat has recorded the mover's joins and mute

        loop = asyncio.get_running_loop()
        killed_at = loop.time()
        a.kill()

        # The mover finds its link gone and resumes on the other node of its list.
        await mover.signaling.wait_closed(timeout=5.0)
        resumed_signaling = await SignalingClient.connect(b.url, session=mover.http)
        hello = await resumed_signaling.hello(mover.token, resume=mover.session_id)
        assert hello["resumed"] is True and hello["session"] == mover.session_id
        assert sorted((j["channel"], j["muted"]) for j in hello["joined"]) == [
            (alpha, False), (bravo, True)
        ]
        resumed_peer = ClientPeer(2, None)
        answer = await resumed_signaling.request("offer", sdp=await resumed_peer.create_offer())
        await resumed_peer.apply_answer(answer["sdp"])
        assert sorted((x["channel"], x["muted"]) for x in answer["bindings"]) == [
            (alpha, False), (bravo, True)
        ]
        await resumed_peer.wait_connected()
        resumed_after = loop.time() - killed_at
        assert resumed_after < 5.0, f"resumed {resumed_after:.2f} s after the kill"
        print(f"resumed on b {resumed_after:.2f} s after a was killed")

        # The dead node's talker no longer holds alpha once its lease has run out (it is
        # not renewed); the other node's members are told at its next look (a third of
        # a lease later at most).
        idle = await watcher.signaling.next_event("floor_idle", timeout=LEASE_S + 3.0)
        idle_after = loop.time() - killed_at
        assert idle["channel"] == alpha
        assert idle_after <= LEASE_S * 4 / 3 + 0.3, f"idle shown {idle_after:.2f} s after the kill"
        print(f"b's member saw floor_idle {idle_after:.2f} s after a was killed")
        assert (await watcher.talk(alpha))["granted"] is True
        await watcher.release(alpha)
        # The resumed session works on its new node: it talks, and b's member hears of it.
        reply = await resumed_signaling.request("floor_request", channel=alpha, priority="normal")
        assert reply["granted"] is True
        while True:
            taken = await watcher.signaling.next_event("floor_taken", timeout=2.0)
            if taken["holder"]["name"] == "u2":
                break
    finally:
        if resumed_peer is not None:
            await resumed_peer.close()
        if resumed_signaling is not None:
            await resumed_signaling.close()
        await close_all(talker, watcher, mover)


async def test_redis_restart_never_grants_a_floor_twice(two_nodes, redis_server):
    a, b, channels = two_nodes
    alpha = channels["alpha"]
    holder = await PttClient.connect(a.url, "u0", media=False)
    contender = await PttClient.connect(b.url, "u1", media=False)
    try:
        assert (await holder.talk(alpha))["granted"] is True
        denied = await contender.talk(alpha)
        assert denied["granted"] is False and denied["holder"]["name"] == "u0"

        loop = asyncio.get_running_loop()
        revoked_at: list[float] = []

        async def watch_revocation() -> None:
            event = await holder.signaling.next_event("floor_revoked", timeout=30.0)
            revoked_at.append(loop.time())
            assert event["channel"] == alpha

        watcher = asyncio.create_task(watch_revocation())
        await asyncio.to_thread(redis_server.stop)  # nothing saved: every lease is lost
        try:
            assert await health_status(a.url) == 503
            assert await health_status(b.url) == 503
        finally:
            await asyncio.to_thread(redis_server.start)
        # The contender presses from the moment Redis is back; it must not be granted
        # while the holder still believes it talks.
        granted_at = await press_until_granted(contender, alpha, within_s=15.0)
        await asyncio.wait_for(watcher, timeout=5.0)
        assert revoked_at[0] < granted_at, "granted before the old holder lost the floor"
        print(f"old holder revoked {granted_at - revoked_at[0]:.2f} s before the new grant")
        assert await health_status(a.url) == 200 and await health_status(b.url) == 200
        denied = await holder.talk(alpha)
        assert denied["granted"] is False and denied["holder"]["name"] == "u1"
    finally:
        await close_all(holder, contender)
