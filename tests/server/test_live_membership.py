"""Membership changes made over the REST API act on live sessions at once.

Real aiortc peers on loopback: a talker holding the floor on channel alpha streams a
tone; a dispatcher of alpha's event changes alpha's members through the API. The bound
the issue sets: a removed member's audio stops within 500 ms of the REST reply.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from tests.audio_tools import WavTrack
from tests.server.api_client import ApiClient
from tests.server.harness import PttClient, close_all, start_site

STOP_WITHIN_S = 0.5
# A 20 ms frame stream: 25 packets in half a second; a flowing stream shows well over 5.
FLOWING = 5


@pytest.fixture
async def site(tmp_path):
    site = await start_site(tmp_path, users=3)
    # u0 (dispatch) manages the event alpha and bravo belong to.
    event = site.directory.event_by_name("Exercise")
    site.directory.assign_dispatcher(event.id, site.directory.user_by_name("u0").id)
    yield site
    await site.server.stop()


@pytest.fixture
async def dispatcher(site):
    client = await ApiClient.login(site.url, "u0")
    yield client
    await client.close()


def tone() -> WavTrack:
    t = np.arange(48_000) / 48_000
    return WavTrack((np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16), autostart=True, loop=True)


async def growth(client: PttClient, channel: int, seconds: float) -> int:
    """Packets the client's slot for `channel` received over the next `seconds`."""
    before = await client.inbound_packets(channel)
    await asyncio.sleep(seconds)
    return await client.inbound_packets(channel) - before


async def assert_stopped_within(client: PttClient, channel: int, replied_at: float) -> None:
    """No packet arrives after `replied_at + STOP_WITHIN_S` (watched for a further 0.6 s)."""
    loop = asyncio.get_running_loop()
    await asyncio.sleep(max(0.0, replied_at + STOP_WITHIN_S - loop.time()))
    assert await growth(client, channel, 0.6) == 0


async def test_removing_the_talker_revokes_its_floor_and_silences_listeners(site, dispatcher):
    alpha = site.channels["alpha"]
    talker = await PttClient.connect(site.url, "u1", slots=1, microphone=tone())
    listener = await PttClient.connect(site.url, "u2", slots=1)
    try:
        await listener.join(alpha)
        assert (await talker.talk(alpha))["granted"]
        assert await growth(listener, alpha, 0.5) >= FLOWING

        talker_id = site.directory.user_by_name("u1").id
        (await dispatcher.delete(f"/api/channels/{alpha}/members/{talker_id}")).ok()
        replied_at = asyncio.get_running_loop().time()

        revoked = await talker.signaling.next_event("floor_revoked", timeout=3)
        assert revoked == {"type": "floor_revoked", "channel": alpha, "reason": "removed"}
        changed = await talker.signaling.next_event("channels_changed", timeout=3)
        assert alpha not in [c["id"] for c in changed["channels"]]
        assert await listener.signaling.next_event("floor_idle", timeout=3) == {"type": "floor_idle", "channel": alpha}
        await assert_stopped_within(listener, alpha, replied_at)
    finally:
        await close_all(talker, listener)


async def test_a_removed_listener_stops_hearing_and_is_told(site, dispatcher):
    alpha = site.channels["alpha"]
    talker = await PttClient.connect(site.url, "u1", slots=1, microphone=tone())
    listener = await PttClient.connect(site.url, "u2", slots=1)
    try:
        await listener.join(alpha)
        assert (await talker.talk(alpha))["granted"]
        assert await growth(listener, alpha, 0.5) >= FLOWING

        listener_id = site.directory.user_by_name("u2").id
        (await dispatcher.delete(f"/api/channels/{alpha}/members/{listener_id}")).ok()
        replied_at = asyncio.get_running_loop().time()

        changed = await listener.signaling.next_event("channels_changed", timeout=3)
        assert alpha not in [c["id"] for c in changed["channels"]]
        await assert_stopped_within(listener, alpha, replied_at)
        # The talker was not touched: it still holds the floor.
        assert site.hub.floor.current(alpha) is not None
    finally:
        await close_all(talker, listener)


async def test_an_added_member_joins_without_reconnecting_and_hears(site, dispatcher):
    alpha = site.channels["alpha"]
    talker = await PttClient.connect(site.url, "u1", slots=1, microphone=tone())
    newcomer = await PttClient.connect(site.url, "outsider", slots=1)
    try:
        assert alpha not in [c["id"] for c in newcomer.hello["channels"]]
        assert (await talker.talk(alpha))["granted"]

        newcomer_id = site.directory.user_by_name("outsider").id
        (await dispatcher.put(f"/api/channels/{alpha}/members/{newcomer_id}")).ok()
        changed = await newcomer.signaling.next_event("channels_changed", timeout=3)
        assert alpha in [c["id"] for c in changed["channels"]]

        reply = await newcomer.join(alpha)
        assert reply["floor"]["state"] == "taken"
        assert await growth(newcomer, alpha, 0.8) >= FLOWING
    finally:
        await close_all(talker, newcomer)
