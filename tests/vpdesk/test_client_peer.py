"""The client side against loopback peers and a tiny WebSocket server, no project server.

ClientPeer: offer shape, Opus on the wire, audio both ways through real aiortc peers.
SignalingClient: the envelope against an aiohttp echo server written here.
Media runs on 127.0.0.1 only; run inside `unshare -n` (see the README).
"""

from __future__ import annotations

import asyncio
import json
import re
import struct
import time

import aiohttp
import pytest
from aiohttp import web
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from server.media import aiortc_hooks
from tests.audio_tools import (
    RATE,
    TrackRecorder,
    WavTrack,
    aligned_correlation,
    read_wav,
    speech_wav,
)
from vpdesk.media.peer import ClientPeer, PeerError
from vpdesk.session.signaling import ConnectionClosed, RequestError, SignalingClient, login

TALKER_TEXT = "Unit four, proceed to the north gate and report."
LISTENER_TEXT = "Dispatch copies, all clear on channel two."


@pytest.fixture(autouse=True)
def loopback_only():
    aiortc_hooks.use_host_addresses(["127.0.0.1"])
    yield
    aiortc_hooks.use_host_addresses(None)


@pytest.fixture(scope="module")
def speech_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("speech")


@pytest.fixture(scope="module")
def talker_wav(speech_dir):
    return speech_wav(speech_dir, TALKER_TEXT, seconds_min=2.5)


@pytest.fixture(scope="module")
def listener_wav(speech_dir):
    return speech_wav(speech_dir, LISTENER_TEXT, seconds_min=2.5)


# --- SDP helpers -------------------------------------------------------------------------


def media_sections(sdp: str) -> list[str]:
    return ["m=" + part for part in sdp.split("\nm=")[1:]]


def direction_of(section: str) -> str:
    for direction in ("sendonly", "recvonly", "sendrecv", "inactive"):
        if f"a={direction}" in section:
            return direction
    raise AssertionError(f"no direction in {section[:80]!r}")


def mid_of(section: str) -> str:
    return re.search(r"^a=mid:(\S+)", section, re.M).group(1)


class Answerer:
    """A plain aiortc peer standing in for the server: records the client's microphone
    and plays `speech` into chosen receive slots."""

    def __init__(self) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.tracks: list[WavTrack] = []

    async def answer(self, offer_sdp: str, play: dict[str, WavTrack]) -> str:
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
        for transceiver in self.pc.getTransceivers():
            if transceiver.mid in play:
                transceiver.sender.replaceTrack(play[transceiver.mid])
                transceiver.direction = "sendonly"
                self.tracks.append(play[transceiver.mid])
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        return self.pc.localDescription.sdp

    def track_for_mid(self, mid: str):
        for transceiver in self.pc.getTransceivers():
            if transceiver.mid == mid:
                return transceiver.receiver.track
        raise KeyError(mid)

    async def close(self) -> None:
        for track in self.tracks:
            track.stop()
        await self.pc.close()


# --- ClientPeer: offer shape -------------------------------------------------------------


async def test_offer_has_the_microphone_first_then_receive_slots():
    peer = ClientPeer(receive_slots=3, microphone=None)
    try:
        sdp = await peer.create_offer()
        sections = media_sections(sdp)
        assert [s.split()[0] for s in sections] == ["m=audio"] * 4
        assert [direction_of(s) for s in sections] == ["sendonly"] + ["recvonly"] * 3
        assert peer.mids == [mid_of(s) for s in sections[1:]]
        assert peer.microphone_mid == mid_of(sections[0])
        assert re.search(r"^a=group:BUNDLE " + " ".join(mid_of(s) for s in sections), sdp, re.M)
        # Opus only, on every m-line.
        for section in sections:
            codecs = re.findall(r"^a=rtpmap:\d+ (\S+)", section, re.M)
            assert codecs and all(c.lower().startswith("opus/") for c in codecs), codecs
        # Host candidates on loopback only: no LAN address, no STUN (srflx) candidate.
        candidates = re.findall(r"^a=candidate:\S+ \d+ \S+ \d+ (\S+) \d+ typ (\S+)", sdp, re.M)
        assert candidates
        assert {address for address, _ in candidates} == {"127.0.0.1"}
        assert {kind for _, kind in candidates} == {"host"}
    finally:
        await peer.close()


async def test_track_for_mid_errors_name_the_problem():
    peer = ClientPeer(receive_slots=1)
    try:
        with pytest.raises(PeerError, match="no receive slot"):
            peer.track_for_mid("0")
        await peer.create_offer()
        with pytest.raises(PeerError, match="apply the answer"):
            peer.track_for_mid(peer.mids[0])
        with pytest.raises(PeerError, match="no receive slot has mid=0"):
            peer.track_for_mid(peer.microphone_mid)  # the microphone is not a receive slot
    finally:
        await peer.close()


# --- ClientPeer: media over loopback -----------------------------------------------------


async def test_audio_flows_both_ways_over_loopback(talker_wav, listener_wav):
    microphone = WavTrack(talker_wav)
    peer = ClientPeer(receive_slots=2, microphone=microphone)
    server = Answerer()
    recorders: list[TrackRecorder] = []
    try:
        offer = await peer.create_offer()
        listener_track = WavTrack(listener_wav, autostart=False)
        answer = await server.answer(offer, {peer.mids[0]: listener_track})
        await peer.apply_answer(answer)
        from_server = TrackRecorder(peer.track_for_mid(peer.mids[0])).start()
        from_client = TrackRecorder(server.track_for_mid(peer.microphone_mid)).start()
        recorders += [from_server, from_client]
        await peer.wait_connected(timeout=10)
        loop = asyncio.get_running_loop()
        # Restart both once media flows, so neither WAV begins before DTLS is up.
        await from_client.wait_frames(1, timeout=10)
        microphone.restart()
        listener_track.start()
        sending_since = loop.time()
        bytes_before = await sent_bytes(peer)
        await asyncio.wait_for(
            asyncio.gather(microphone.on_done.wait(), listener_track.on_done.wait()), timeout=15
        )
        await asyncio.sleep(0.5)  # the tail through the jitter buffer
        kbps = (await sent_bytes(peer) - bytes_before) * 8 / (loop.time() - sending_since) / 1000

        score, lag = aligned_correlation(read_wav(listener_wav), from_server.samples())
        assert score >= 0.9, f"listener audio correlation {score:.3f}"
        assert 0 <= lag < 3 * RATE
        score, lag = aligned_correlation(read_wav(talker_wav), from_client.samples())
        assert score >= 0.9, f"microphone audio correlation {score:.3f}"
        # PTT Opus: ~28 kb/s payload, far below aiortc's 96 kb/s stereo default.
        assert 15 < kbps < 40, f"microphone sends {kbps:.1f} kb/s"
    finally:
        for recorder in recorders:
            await recorder.stop()
        microphone.stop()
        await peer.close()
        await server.close()


async def sent_bytes(peer: ClientPeer) -> int:
    stats = await peer.microphone_sender.getStats()
    return sum(s.bytesSent for s in stats.values() if s.type == "outbound-rtp")


def rtp_payload(packet: bytes) -> bytes:
    """Strip the RTP header (CSRCs and a header extension included)."""
    first = packet[0]
    offset = 12 + 4 * (first & 0x0F)
    if first & 0x10:
        (words,) = struct.unpack_from("!H", packet, offset + 2)
        offset += 4 + 4 * words
    end = len(packet) - (packet[-1] if first & 0x20 else 0)
    return packet[offset:end]


async def test_microphone_sends_mono_20ms_opus(talker_wav):
    microphone = WavTrack(talker_wav, loop=True)
    peer = ClientPeer(receive_slots=0, microphone=microphone)
    server = Answerer()
    payloads: list[bytes] = []
    try:
        answer = await server.answer(await peer.create_offer(), {})
        # Read the wire itself: the server's ingest tap sees the decrypted RTP.
        aiortc_hooks.tap_incoming_rtp(aiortc_hooks.dtls_transport_of(server.pc), payloads.append)
        await peer.apply_answer(answer)
        await peer.wait_connected(timeout=10)
        async with asyncio.timeout(10):
            while len(payloads) < 100:  # 2 s of audio
                await asyncio.sleep(0.05)
        opus = [rtp_payload(p) for p in payloads[:100]]
        tocs = [p[0] for p in opus]
        assert not any(toc & 0x04 for toc in tocs), "a stereo Opus frame was sent"
        assert {toc & 0x03 for toc in tocs} == {0}, "one frame per packet"
        # TOC config: 20 ms frames are configs 1/5/9 (SILK), 13/15 (hybrid), 19/23/27/31 (CELT).
        assert {toc >> 3 for toc in tocs} <= {1, 5, 9, 13, 15, 19, 23, 27, 31}
        kbps = sum(len(p) for p in opus) * 8 / (len(opus) * 0.020) / 1000
        assert kbps < 40, f"{kbps:.1f} kb/s of Opus payload"
    finally:
        microphone.stop()
        await peer.close()
        await server.close()


async def test_re_offer_adds_receive_slots_that_carry_audio(listener_wav):
    peer = ClientPeer(receive_slots=1)
    server = Answerer()
    recorder = None
    try:
        await peer.apply_answer(await server.answer(await peer.create_offer(), {}))
        await peer.wait_connected(timeout=10)
        first_mids = peer.mids
        offer = await peer.add_receive_slots(2)
        sections = media_sections(offer)
        assert [direction_of(s) for s in sections] == ["sendonly"] + ["recvonly"] * 3
        assert peer.mids[:1] == first_mids and len(set(peer.mids)) == 3
        new_mid = peer.mids[2]
        track = WavTrack(listener_wav)
        await peer.apply_answer(await server.answer(offer, {new_mid: track}))
        recorder = TrackRecorder(peer.track_for_mid(new_mid)).start()
        await recorder.wait_voiced(timeout=10)
        await asyncio.wait_for(track.on_done.wait(), timeout=10)
        await asyncio.sleep(0.3)
        score, _ = aligned_correlation(read_wav(listener_wav), recorder.samples())
        assert score >= 0.9, f"audio on the re-offered slot: correlation {score:.3f}"
    finally:
        if recorder is not None:
            await recorder.stop()
        await peer.close()
        await server.close()


# --- SignalingClient against a tiny envelope server ----------------------------------------


def error_response(request_id, code: str, message: str) -> dict:
    return {"id": request_id, "ok": False, "error": {"code": code, "message": message}}


async def envelope_ws(request: web.Request) -> web.WebSocketResponse:
    """Echoes the envelope: ping → event then ok; slow → ok after 0.3 s; bad → error;
    hello → a session; kick → close 4001; non-JSON → error without id."""
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    tasks = set()

    async def slow(message):
        await asyncio.sleep(0.3)
        await ws.send_json({"id": message["id"], "ok": True, "echo": message})

    async for msg in ws:
        try:
            message = json.loads(msg.data)
        except ValueError:
            await ws.send_json(error_response(None, "bad_request", "not JSON"))
            continue
        kind = message.get("type")
        if kind == "ping":
            await ws.send_json({"type": "tick", "for": message["id"]})
            await ws.send_json({"type": "other", "for": message["id"]})
            await ws.send_json({"id": message["id"], "ok": True, "echo": message})
        elif kind == "slow":
            task = asyncio.create_task(slow(message))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        elif kind == "bad":
            await ws.send_json(error_response(message["id"], "forbidden", "not a member"))
        elif kind == "hello":
            await ws.send_json({"id": message["id"], "ok": True, "session": "s-1", "echo": message})
        elif kind == "kick":
            await ws.close(code=4001, message=b"unauthorized")
        # "never" gets no answer at all
    for task in tasks:
        task.cancel()
    return ws


async def login_handler(request: web.Request) -> web.Response:
    body = await request.json()
    if body == {"username": "ann", "password": "pw"}:
        user = {"id": "u1", "name": "ann", "role": "dispatch"}
        return web.json_response({"token": "t-ann", "expires_at": 1, "user": user})
    error = {"error": {"code": "unauthorized", "message": "wrong credentials"}}
    return web.json_response(error, status=401)


@pytest.fixture
async def base_url():
    app = web.Application()
    app.router.add_get("/ws", envelope_ws)
    app.router.add_post("/api/login", login_handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


@pytest.fixture
async def client(base_url):
    """A SignalingClient connected to the envelope server, closed after the test."""
    client = await SignalingClient.connect(base_url)
    yield client
    await client.close()


async def test_responses_match_requests_among_events(client):
    # "slow" is answered after "ping": each caller still gets its own response.
    slow, ping = await asyncio.gather(client.request("slow", n=1), client.request("ping", n=2))
    assert slow["echo"]["type"] == "slow" and slow["echo"]["n"] == 1
    assert ping["echo"]["type"] == "ping" and ping["echo"]["n"] == 2
    assert slow["id"] != ping["id"] and {slow["id"], ping["id"]} == {1, 2}
    third = await client.request("ping")
    assert third["id"] == 3
    # Events wait in order; taking one type leaves the others queued.
    assert (await client.next_event("other"))["for"] == ping["id"]
    assert (await client.next_event("tick"))["for"] == ping["id"]
    assert (await client.next_event())["type"] == "tick"  # third's tick: oldest left
    assert (await client.next_event())["type"] == "other"
    with pytest.raises(TimeoutError):
        await client.next_event(timeout=0.1)
    assert [e["type"] for e in client.events_seen] == ["tick", "other", "tick", "other"]


async def test_error_response_raises_request_error(client):
    with pytest.raises(RequestError) as caught:
        await client.request("bad", channel="c1")
    assert caught.value.code == "forbidden"
    assert caught.value.message == "not a member"
    assert caught.value.response["ok"] is False
    # The connection stays usable after an error.
    assert (await client.request("ping"))["ok"] is True


async def test_send_raw_answer_arrives_unmatched(client):
    await client.send_raw("{not json")
    answer = await client.next_unmatched(timeout=2)
    assert answer["ok"] is False and answer["error"]["code"] == "bad_request"
    await client.send_raw(json.dumps({"id": 900, "type": "ping"}))
    assert (await client.next_unmatched(timeout=2))["id"] == 900
    assert (await client.request("ping"))["id"] == 1


async def test_request_timeout_and_late_callers(client):
    with pytest.raises(TimeoutError):
        await client.request("never", timeout=0.2)
    assert not client._pending, "a timed-out request must not stay pending"


async def test_hello_sends_the_client_block(client):
    response = await client.hello("tok", resume="s-0", version="9.9")
    assert response["echo"]["token"] == "tok"
    assert response["echo"]["resume"] == "s-0"
    assert response["echo"]["client"] == {"name": "vpdesk", "version": "9.9"}
    assert client.session_id == "s-1"


async def test_server_close_fails_pending_request_with_close_code(client):
    with pytest.raises(ConnectionClosed) as caught:
        await client.request("kick")
    assert await client.wait_closed(timeout=2) == 4001
    assert caught.value.close_code == 4001
    assert client.closed
    with pytest.raises(ConnectionClosed):
        await client.request("ping")
    with pytest.raises(ConnectionClosed):
        await client.next_event(timeout=1)


async def test_close_stops_the_reader_and_leaves_no_tasks(base_url):
    seen = []

    def on_event(event):
        seen.append(event["type"])
        raise ValueError("a broken callback must not stop the reader")

    async with aiohttp.ClientSession() as http:
        client = await SignalingClient.connect(base_url, session=http, on_event=on_event)
        await client.request("ping")
        assert (await client.request("ping"))["ok"] is True
        assert seen == ["tick", "other", "tick", "other"]
        waiter = asyncio.create_task(client.next_event("never_sent", timeout=5))
        await asyncio.sleep(0.05)
        await client.close()
        with pytest.raises(ConnectionClosed):
            await waiter
        assert client.close_code == 1000
        assert not [t for t in asyncio.all_tasks() if t.get_name() == "signaling-reader"]
        assert not http.closed, "a session passed in belongs to the caller"


async def test_login(base_url):
    body = await login(base_url, "ann", "pw")
    assert body["token"] == "t-ann" and body["user"]["role"] == "dispatch"
    with pytest.raises(RequestError) as caught:
        await login(base_url, "ann", "nope")
    assert caught.value.code == "unauthorized" and caught.value.status == 401


# --- ClientPeer: RTCP from the scheduler ---------------------------------------------------


async def test_rtcp_is_one_compound_report_per_connection_not_one_per_m_line(talker_wav):
    """aiortc's loops would send a report per m-line about every second (an SR for the
    microphone, an RR from the slot that receives audio); the parked client sends one
    compound report, with the microphone's SR, from one scheduler."""
    from aiortc.rtp import RtcpPacket, RtcpRrPacket, RtcpSrPacket

    microphone = WavTrack(talker_wav)
    peer = ClientPeer(receive_slots=3, microphone=microphone)
    server = Answerer()
    arrivals: list[tuple[float, bytes]] = []
    try:
        offer = await peer.create_offer()
        # Audio into one slot: aiortc's receiver there would send receiver reports.
        answer = await server.answer(offer, {peer.mids[0]: WavTrack(talker_wav)})
        aiortc_hooks.observe_incoming_rtcp(
            aiortc_hooks.dtls_transport_of(server.pc), lambda data: arrivals.append((time.monotonic(), data))
        )
        await peer.apply_answer(answer)
        await peer.wait_connected(timeout=10)
        assert peer.reporting is not None
        # Three reports, however slow a loaded machine is to start the microphone (SRs
        # go out only once it has sent); bounded.
        for _ in range(100):
            if len(arrivals) >= 3:
                break
            await asyncio.sleep(0.1)
        reports = [data for _, data in arrivals]
        gaps = [later - earlier for (earlier, _), (later, _) in zip(arrivals, arrivals[1:])]
        mic_ssrc = aiortc_hooks.local_ssrc(peer._mic)
        parsed = [RtcpPacket.parse(data) for data in reports]
        senders = [p.ssrc for packets in parsed for p in packets if isinstance(p, RtcpSrPacket)]
        receivers = [p.ssrc for packets in parsed for p in packets if isinstance(p, RtcpRrPacket)]
        assert len(reports) >= 3, len(reports)
        # One scheduler: one compound packet per connection every 0.5-1.5 s. aiortc's two
        # loops (SR and RR, each about every second) would interleave, often closer.
        assert min(gaps) >= 0.4, gaps
        assert all(len([p for p in packets if isinstance(p, RtcpSrPacket)]) <= 1 for packets in parsed)
        assert set(senders) == {mic_ssrc}
        assert set(receivers) <= {mic_ssrc}
        last_sr = [p for p in parsed[-1] if isinstance(p, RtcpSrPacket)][0]
        sent = (await peer.microphone_sender.getStats())
        packets_sent = [s for s in sent.values() if s.type == "outbound-rtp"][0].packetsSent
        assert 0 < last_sr.sender_info.packet_count <= packets_sent
    finally:
        microphone.stop()
        await peer.close()
        await server.close()
    assert peer.reporting is None
