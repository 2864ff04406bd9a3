"""Forwarded audio through a real embedded server and real aiortc peers on loopback."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from server.media import aiortc_hooks
from tests.audio_tools import (
    TrackRecorder,
    WavTrack,
    aligned_correlation,
    longest_gap_ms,
    read_wav,
    speech_wav,
    voiced_extent,
)
from tests.server.harness import PttClient, close_all, start_site

SPEECH = "Dispatch to unit seven. Proceed to the north gate and report when on scene."


@pytest.fixture(scope="session")
def speech(tmp_path_factory) -> np.ndarray:
    path = speech_wav(tmp_path_factory.mktemp("speech"), SPEECH, seconds_min=3.0)
    return read_wav(path)


@pytest.fixture
async def site(tmp_path):
    site = await start_site(tmp_path, users=22)
    yield site
    await site.server.stop()


async def transmit(talker: PttClient, mic: WavTrack, channel: int) -> None:
    reply = await talker.talk(channel)
    assert reply["granted"] is True
    mic.start()
    await asyncio.wait_for(mic.on_done.wait(), timeout=30)
    await asyncio.sleep(0.4)  # the last packets' flight and the receivers' buffers
    await talker.release(channel)


@pytest.mark.parametrize("listeners", [1, 20])
async def test_speech_reaches_every_listener(site, speech, listeners):
    alpha = site.channels["alpha"]
    mic = WavTrack(speech, autostart=False)
    talker = await PttClient.connect(site.url, "u0", slots=1, microphone=mic)
    clients = [await PttClient.connect(site.url, f"u{i + 1}", slots=1) for i in range(listeners)]
    try:
        for client in clients:
            await client.join(alpha)
        recorders = [TrackRecorder(client.track(alpha)).start() for client in clients]
        await asyncio.sleep(0.3)
        for recorder in recorders:
            recorder.clear()
        await transmit(talker, mic, alpha)
        reference_gap = longest_gap_ms(speech)
        for client, recorder in zip(clients, recorders):
            heard = await recorder.stop()
            score, lag = aligned_correlation(speech, heard)
            assert score >= 0.9, f"{client.name}: correlation {score:.3f}"
            start, end = voiced_extent(speech)
            gap = longest_gap_ms(heard, region=(start + lag, end + lag))
            assert gap <= reference_gap + 20, f"{client.name}: gap of {gap:.0f} ms"
    finally:
        await close_all(talker, *clients)


async def test_mute_sends_nothing_and_unmute_resumes(site, speech):
    alpha = site.channels["alpha"]
    mic = WavTrack(speech, autostart=True, loop=True)
    talker = await PttClient.connect(site.url, "u0", slots=1, microphone=mic)
    muted, other = [await PttClient.connect(site.url, n, slots=1) for n in ("u1", "u2")]
    try:
        for client in (muted, other):
            await client.join(alpha)
        assert (await talker.talk(alpha))["granted"]
        await asyncio.sleep(0.5)
        assert await muted.inbound_packets(alpha) > 0

        await muted.mute(alpha, True)
        await asyncio.sleep(0.2)  # packets already in flight
        before_muted = await muted.inbound_packets(alpha)
        before_other = await other.inbound_packets(alpha)
        await asyncio.sleep(1.0)
        assert await muted.inbound_packets(alpha) == before_muted
        assert await other.inbound_packets(alpha) >= before_other + 40

        await muted.mute(alpha, False)
        await asyncio.sleep(1.0)
        assert await muted.inbound_packets(alpha) >= before_muted + 40
    finally:
        await close_all(talker, muted, other)


async def test_talker_change_keeps_one_stream(site, speech):
    alpha = site.channels["alpha"]
    mic_a = WavTrack(speech, autostart=True, loop=True)
    mic_b = WavTrack(speech, autostart=True, loop=True)
    talker_a = await PttClient.connect(site.url, "u0", slots=1, microphone=mic_a)
    talker_b = await PttClient.connect(site.url, "u1", slots=1, microphone=mic_b)
    listener = await PttClient.connect(site.url, "u2", slots=1)
    seen: list[tuple[int, int, int]] = []

    def observe(data: bytes) -> None:
        seen.append((int.from_bytes(data[8:12], "big"), int.from_bytes(data[2:4], "big"), int.from_bytes(data[4:8], "big")))

    try:
        await listener.join(alpha)
        aiortc_hooks.observe_incoming_rtp(aiortc_hooks.dtls_transport_of(listener.peer.pc), observe)
        for talker in (talker_a, talker_b, talker_a):
            assert (await talker.talk(alpha))["granted"]
            await asyncio.sleep(0.8)
            await talker.release(alpha)
            await asyncio.sleep(0.3)
        assert len(seen) >= 90
        assert len({ssrc for ssrc, _, _ in seen}) == 1
        steps = {(b - a) & 0xFFFF for (_, a, _), (_, b, _) in zip(seen, seen[1:])}
        assert steps == {1}, f"sequence steps {sorted(steps)[:10]}"
        ts_steps = [(b - a) & 0xFFFFFFFF for (_, _, a), (_, _, b) in zip(seen, seen[1:])]
        assert all(0 < step < 48_000 * 5 for step in ts_steps)  # forward, never back
        # Across each pause the timestamp advanced by about the silence (>= 0.2 s).
        assert sum(1 for step in ts_steps if step >= 0.2 * 48_000) >= 2
    finally:
        await close_all(talker_a, talker_b, listener)


async def test_audio_without_the_floor_reaches_nobody(site, speech):
    alpha = site.channels["alpha"]
    mic = WavTrack(speech, autostart=True, loop=True)
    talker = await PttClient.connect(site.url, "u0", slots=1, microphone=mic)
    listener = await PttClient.connect(site.url, "u1", slots=1)
    try:
        await listener.join(alpha)
        await talker.join(alpha)
        hub = site.hub
        dropped_before = hub.packets_dropped_no_floor
        await asyncio.sleep(1.5)
        assert await listener.inbound_packets(alpha) == 0
        assert hub.packets_dropped_no_floor >= dropped_before + 40
        # The same talker with the floor is heard: the path itself works.
        assert (await talker.talk(alpha))["granted"]
        await asyncio.sleep(0.8)
        assert await listener.inbound_packets(alpha) > 20
        # and the talker never hears itself.
        assert await talker.inbound_packets(alpha) == 0
    finally:
        await close_all(talker, listener)


def browser_shaped(offer: str) -> str:
    """The offer as a browser would number it: Opus on payload type 111, the mid header
    extension on id 9. aiortc (96, id 1) and Chromium differ exactly like this."""
    out = []
    for line in offer.split("\r\n"):
        if line.startswith("m=audio "):
            line = line.replace(" 96", " 111")
        elif line.startswith(("a=rtpmap:96 ", "a=fmtp:96 ", "a=rtcp-fb:96 ")):
            line = line.replace(":96 ", ":111 ", 1)
        elif line.startswith("a=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid"):
            line = line.replace("a=extmap:1 ", "a=extmap:9 ", 1)
        out.append(line)
    return "\r\n".join(out)


async def test_listener_with_other_payload_type_and_extension_ids(site, speech):
    from vpdesk.media.peer import ClientPeer

    alpha = site.channels["alpha"]
    mic = WavTrack(speech, autostart=False)
    talker = await PttClient.connect(site.url, "u0", slots=1, microphone=mic)
    listener = await PttClient.connect(site.url, "u1", media=False)
    peer = ClientPeer(1)
    listener.peer = peer
    seen: list[bytes] = []
    try:
        offer = browser_shaped(await peer.create_offer())
        assert "a=rtpmap:111 opus/48000/2" in offer and "a=extmap:9 " in offer
        answer = await listener.signaling.request("offer", sdp=offer)
        assert "a=rtpmap:111 opus/48000/2" in answer["sdp"]
        assert "a=extmap:9 urn:ietf:params:rtp-hdrext:sdes:mid" in answer["sdp"]
        await peer.apply_answer(answer["sdp"])
        await peer.wait_connected()
        await listener.join(alpha)
        aiortc_hooks.observe_incoming_rtp(aiortc_hooks.dtls_transport_of(peer.pc), seen.append)
        recorder = TrackRecorder(listener.track(alpha)).start()
        await transmit(talker, mic, alpha)
        heard = await recorder.stop()
        assert seen and all(p[1] & 0x7F == 111 for p in seen)
        # The one-byte extension block carries the mid under id 9.
        assert all(p[0] & 0x10 and p[12:14] == b"\xbe\xde" and p[16] >> 4 == 9 for p in seen)
        score, _ = aligned_correlation(speech, heard)
        assert score >= 0.9, f"correlation {score:.3f}"
    finally:
        await close_all(talker, listener)
