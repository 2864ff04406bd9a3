"""Session lifecycle: resume, live membership changes, session ids in logs, shutdown."""

from __future__ import annotations

import asyncio
import logging

import pytest

from server.config import ServerConfig
from server.directory import Directory
from server.node import EmbeddedServer
from tests.server.harness import PASSWORD, PttClient, close_all, provision, start_site
from vpdesk.media.peer import ClientPeer
from vpdesk.session.signaling import RequestError, SignalingClient, login


@pytest.fixture
async def site(tmp_path):
    site = await start_site(tmp_path, users=3)
    yield site
    await site.server.stop()


async def test_resume_restores_joins_and_mutes(site):
    alpha, bravo = site.channels["alpha"], site.channels["bravo"]
    first = await PttClient.connect(site.url, "u1", slots=2)
    await first.join(alpha)
    await first.join(bravo)
    await first.mute(bravo, True)
    session_id = first.session_id
    await first.close()  # the link drops

    # A fresh connection resumes with the old id.
    auth = await login(site.url, "u1", PASSWORD)
    signaling = await SignalingClient.connect(site.url)
    try:
        hello = await signaling.hello(auth["token"], resume=session_id)
        assert hello["session"] == session_id and hello["resumed"] is True
        assert hello["joined"] == [{"channel": alpha, "muted": False}, {"channel": bravo, "muted": True}]
        peer = ClientPeer(2)
        try:
            answer = await signaling.request("offer", sdp=await peer.create_offer())
            bound = {b["channel"]: b for b in answer["bindings"]}
            assert set(bound) == {alpha, bravo}
            assert bound[bravo]["muted"] is True and bound[alpha]["muted"] is False
            assert {b["mid"] for b in bound.values()} == set(peer.mids)
        finally:
            await peer.close()
    finally:
        await signaling.close()


async def test_resume_of_someone_elses_session_gives_a_fresh_one(site):
    victim = await PttClient.connect(site.url, "u1", media=False)
    stolen_id = victim.session_id
    await victim.close()
    auth = await login(site.url, "u2", PASSWORD)
    signaling = await SignalingClient.connect(site.url)
    try:
        hello = await signaling.hello(auth["token"], resume=stolen_id)
        assert hello["resumed"] is False and hello["session"] != stolen_id
        assert hello["joined"] == []
    finally:
        await signaling.close()


async def test_removed_member_loses_floor_audio_and_channel_at_once(site):
    alpha = site.channels["alpha"]
    talker = await PttClient.connect(site.url, "u1", slots=1)
    listener = await PttClient.connect(site.url, "u2", slots=1)
    try:
        await listener.join(alpha)
        assert (await talker.talk(alpha))["granted"]
        # The CLI (another process) removes the talker from the channel while it talks.
        with Directory.open(site.data_dir) as cli:
            cli.remove_member("u1", "alpha")
        revoked = await talker.signaling.next_event("floor_revoked", timeout=3)
        assert revoked == {"type": "floor_revoked", "channel": alpha, "reason": "removed"}
        changed = await talker.signaling.next_event("channels_changed", timeout=3)
        assert alpha not in [c["id"] for c in changed["channels"]]
        await listener.signaling.next_event("floor_idle", timeout=3)
        with pytest.raises(RequestError) as err:
            await talker.talk(alpha)
        assert err.value.code == "forbidden"
        # An added member hears about it without reconnecting, and can join.
        with Directory.open(site.data_dir) as cli:
            cli.add_member("u1", "alpha")
        changed = await talker.signaling.next_event("channels_changed", timeout=3)
        assert alpha in [c["id"] for c in changed["channels"]]
        assert (await talker.talk(alpha))["granted"]
    finally:
        await close_all(talker, listener)


async def test_log_lines_carry_the_session_id(site, caplog):
    caplog.set_level(logging.INFO, logger="server")
    client = await PttClient.connect(site.url, "u1", slots=1)
    try:
        await client.join(site.channels["alpha"])
    finally:
        await client.close()
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("server.session")]
    assert any("joined channel" in line for line in lines)
    assert all(line.startswith(f"session={client.session_id} ") for line in lines if client.session_id in line)
    assert sum(1 for line in lines if line.startswith(f"session={client.session_id} ")) >= 3


async def test_embedded_server_stops_cleanly_with_live_sessions(tmp_path):
    provision(tmp_path, users=2)
    before = {t for t in asyncio.all_tasks()}
    server = await EmbeddedServer(ServerConfig(data_dir=tmp_path, listen_port=0, ice_addresses=["127.0.0.1"])).start()
    client = await PttClient.connect(server.url, "u0", slots=1)
    assert (await client.talk(1))["granted"]
    await server.stop()
    await client.close()
    await asyncio.sleep(0.1)
    leftover = {t for t in asyncio.all_tasks() if not t.done()} - before - {asyncio.current_task()}
    assert not leftover, [t.get_name() for t in leftover]


async def test_refused_first_offer_leaves_no_half_made_media(site):
    client = await PttClient.connect(site.url, "u1", media=False)
    try:
        peer = ClientPeer(1)
        offer = await peer.create_offer()
        # Valid shape, but no ICE credentials: aiortc refuses it.
        broken = "\r\n".join(l for l in offer.split("\r\n") if not l.startswith(("a=ice-ufrag", "a=ice-pwd")))
        with pytest.raises(RequestError) as err:
            await client.signaling.request("offer", sdp=broken)
        assert err.value.code == "bad_request"
        with pytest.raises(RequestError) as err:
            await client.join(site.channels["alpha"])
        assert err.value.code == "conflict"  # as if no offer had been made
        answer = await client.signaling.request("offer", sdp=offer)
        await peer.apply_answer(answer["sdp"])
        client.peer = peer
        await peer.wait_connected()
        assert (await client.join(site.channels["alpha"]))["mid"] == peer.mids[0]
    finally:
        await client.close()
