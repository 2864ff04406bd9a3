"""Bad input against a real embedded server: every refusal is the protocol's error reply,
the offending connection goes on working, and other sessions never notice.

One site per module. Two witness sessions run throughout: u1 holds the floor on 'alpha'
and talks (aiortc silence frames, real Opus packets); u2 listens on 'alpha'. After each
case `witness.check()` proves the other session still works: u2's alpha slot keeps
receiving packets, and u2's floor_request on 'bravo' is granted with floor_taken and
floor_idle events following.

Media runs on 127.0.0.1 only; run inside `unshare -n` (see the README).
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
from aiortc.mediastreams import AudioStreamTrack

from server.app_keys import LOGINS
from server.auth import TokenIssuer, load_or_create_secret
from server.directory import Role
from server.media import aiortc_hooks
from tests.server import harness
from vpdesk.media.peer import ClientPeer
from vpdesk.session.signaling import RequestError, SignalingClient

pytestmark = pytest.mark.asyncio(loop_scope="module")

WAIT = 5.0  # seconds: the most any single expectation here may take
MAX_SLOTS = 8  # the site's max_receive_slots: "too many m-lines" is 9


# --- the site and its witnesses --------------------------------------------------------------


class Witness:
    """u1 talks on alpha for the whole module; u2 listens to alpha."""

    def __init__(self, site: harness.Site, talker: harness.PttClient, listener: harness.PttClient) -> None:
        self.site = site
        self.talker = talker
        self.listener = listener
        self.alpha = site.channels["alpha"]
        self.bravo = site.channels["bravo"]

    async def packets(self) -> int:
        return await self.listener.inbound_packets(self.alpha)

    async def audio_flows(self, more: int = 5) -> None:
        before = await self.packets()
        async with asyncio.timeout(WAIT):
            while await self.packets() < before + more:
                await asyncio.sleep(0.02)

    async def check(self) -> None:
        """The other session still works: audio flows, and a floor request is granted."""
        await self.audio_flows()
        sig = self.listener.signaling
        start = len(sig.events_seen)
        reply = await self.listener.talk(self.bravo)
        assert reply["granted"] is True, reply
        await wait_event(sig, start, "floor_taken", self.bravo)
        await self.listener.release(self.bravo)
        await wait_event(sig, start, "floor_idle", self.bravo)
        # The talker still holds alpha: someone else asking is told it is busy.
        busy = await self.listener.talk(self.alpha)
        assert busy["granted"] is False and busy["reason"] == "busy", busy
        assert busy["holder"]["name"] == "u1"


async def wait_event(sig: SignalingClient, start: int, kind: str, channel: int) -> dict:
    """The first `kind` event for `channel` among those seen since index `start`."""
    async with asyncio.timeout(WAIT):
        while True:
            for event in sig.events_seen[start:]:
                if event.get("type") == kind and event.get("channel") == channel:
                    return event
            await asyncio.sleep(0.01)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def site(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("site")
    # A burst above the default: some cases here send a few hundred frames in a row, and
    # signaling rate limits are tested in test_signaling_rate.py.
    site = await harness.start_site(data_dir, users=6, max_receive_slots=MAX_SLOTS, max_talk_ms=600_000,
                                    signaling_burst=10_000)
    try:
        yield site
    finally:
        await site.server.stop()
        aiortc_hooks.use_host_addresses(None)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def witness(site):
    talker = await harness.PttClient.connect(site.url, "u1", slots=1, microphone=AudioStreamTrack())
    listener = await harness.PttClient.connect(site.url, "u2", slots=2)
    try:
        alpha = site.channels["alpha"]
        await talker.join(alpha)
        await listener.join(alpha)
        grant = await talker.talk(alpha)
        assert grant["granted"] is True, grant
        witness = Witness(site, talker, listener)
        await witness.audio_flows(more=10)
        yield witness
    finally:
        await harness.close_all(talker, listener)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def tokens(site):
    """One login per user for the module (password hashing is deliberately slow)."""
    async with aiohttp.ClientSession() as http:
        result = {}
        for name in ("u0", "u3", "u4", "outsider", "admin"):
            async with http.post(site.url + "/api/login", json={"username": name, "password": harness.PASSWORD}) as resp:
                assert resp.status == 200
                result[name] = (await resp.json())["token"]
        return result


class Connections:
    """WebSockets opened by one test, closed after it."""

    def __init__(self, site: harness.Site, tokens: dict[str, str]) -> None:
        self.site = site
        self.tokens = tokens
        self.opened: list[SignalingClient] = []
        self.peers: list[ClientPeer] = []

    async def raw(self) -> SignalingClient:
        sig = await SignalingClient.connect(self.site.url)
        self.opened.append(sig)
        return sig

    async def session(self, user: str = "u3") -> SignalingClient:
        sig = await self.raw()
        await sig.hello(self.tokens[user])
        return sig

    async def offer(self, slots: int = 1) -> str:
        peer = ClientPeer(slots)
        self.peers.append(peer)
        return await peer.create_offer()

    async def close(self) -> None:
        for peer in self.peers:
            await peer.close()
        for sig in self.opened:
            await sig.close()


@pytest_asyncio.fixture(loop_scope="module")
async def conns(site, tokens):
    connections = Connections(site, tokens)
    try:
        yield connections
    finally:
        await connections.close()


# --- helpers -------------------------------------------------------------------------------


async def send_expect_error(sig: SignalingClient, frame: str | dict, code: str, request_id: object) -> dict:
    """Send one frame with send_raw and return its error reply, checked against the
    protocol's shape: exactly {"id", "ok": false, "error": {"code", "message"}}."""
    await sig.send_raw(frame if isinstance(frame, str) else json.dumps(frame))
    reply = await sig.next_unmatched(timeout=WAIT)
    assert set(reply) == {"id", "ok", "error"}, reply
    assert reply["ok"] is False
    assert reply["id"] == request_id, reply
    assert set(reply["error"]) == {"code", "message"}, reply
    assert reply["error"]["code"] == code, reply
    assert isinstance(reply["error"]["message"], str) and reply["error"]["message"]
    return reply


async def expect_request_error(sig: SignalingClient, code: str, type: str, **fields) -> RequestError:  # noqa: A002
    with pytest.raises(RequestError) as info:
        await sig.request(type, timeout=WAIT, **fields)
    error = info.value
    assert error.code == code, error
    assert error.response is not None and error.response["ok"] is False
    assert isinstance(error.response["id"], int)
    return error


async def still_works(sig: SignalingClient, site: harness.Site) -> None:
    """A following valid request on the same (hello'd) connection succeeds."""
    bravo = site.channels["bravo"]
    grant = await sig.request("floor_request", timeout=WAIT, channel=bravo)
    assert grant["ok"] is True and grant["granted"] is True, grant
    released = await sig.request("floor_release", timeout=WAIT, channel=bravo)
    assert released["ok"] is True
    assert not sig.closed


# --- malformed frames ----------------------------------------------------------------------

MALFORMED = [
    pytest.param("this is not json", None, id="not-json"),
    pytest.param('{"id": 5, "type": "join"', None, id="truncated-json"),
    pytest.param("[]", None, id="array"),
    pytest.param('[{"id": 5, "type": "floor_release", "channel": 1}]', None, id="array-of-request"),
    pytest.param("42", None, id="number"),
    pytest.param('"hello"', None, id="string"),
    pytest.param("null", None, id="null"),
    pytest.param('{"type": "floor_release", "channel": 1}', None, id="missing-id"),
    pytest.param('{"id": "7", "type": "floor_release", "channel": 1}', None, id="str-id"),
    pytest.param('{"id": true, "type": "floor_release", "channel": 1}', None, id="bool-id"),
    pytest.param('{"id": 7.5, "type": "floor_release", "channel": 1}', None, id="float-id"),
    pytest.param('{"id": 701}', 701, id="missing-type"),
    pytest.param('{"id": 702, "type": 3}', 702, id="int-type"),
    pytest.param('{"id": 703, "type": null}', 703, id="null-type"),
    pytest.param('{"id": 704, "type": ""}', 704, id="empty-type"),
    pytest.param('{"id": 705, "type": "teleport"}', 705, id="unknown-type"),
    pytest.param('{"id": 706, "type": "__class__"}', 706, id="unknown-dunder-type"),
]


@pytest.mark.parametrize("frame, request_id", MALFORMED)
async def test_malformed_frame_after_hello(conns, witness, frame, request_id):
    sig = await conns.session()
    await send_expect_error(sig, frame, "bad_request", request_id)
    await still_works(sig, conns.site)
    await witness.check()


@pytest.mark.parametrize("frame, request_id", MALFORMED[:3] + MALFORMED[7:9] + MALFORMED[-2:])
async def test_malformed_frame_before_hello_keeps_the_connection(conns, witness, frame, request_id):
    sig = await conns.raw()
    await send_expect_error(sig, frame, "bad_request", request_id)
    await sig.hello(conns.tokens["u3"])
    await still_works(sig, conns.site)
    await witness.check()


WRONG_TYPES = [
    pytest.param("join", {"channel": "1"}, id="join-channel-str"),
    pytest.param("join", {"channel": True}, id="join-channel-true"),
    pytest.param("join", {"channel": 1.5}, id="join-channel-float"),
    pytest.param("join", {"channel": None}, id="join-channel-null"),
    pytest.param("join", {}, id="join-channel-missing"),
    pytest.param("join", {"channel": 2**64}, id="join-channel-beyond-64-bits"),
    pytest.param("floor_request", {"channel": 10**30}, id="floor-channel-huge"),
    pytest.param("leave", {"channel": [1]}, id="leave-channel-list"),
    pytest.param("mute", {"channel": "alpha", "muted": "yes"}, id="mute-muted-yes"),
    pytest.param("mute", {"channel": "alpha", "muted": 1}, id="mute-muted-1"),
    pytest.param("floor_request", {"channel": "alpha", "priority": "urgent"}, id="floor-priority-urgent"),
    pytest.param("floor_request", {"channel": "alpha", "priority": 1}, id="floor-priority-int"),
    pytest.param("floor_release", {"channel": "1"}, id="release-channel-str"),
]


@pytest.mark.parametrize("kind, fields", WRONG_TYPES)
async def test_wrong_field_types_are_bad_request(conns, witness, kind, fields):
    sig = await conns.session()
    fields = {k: conns.site.channels[v] if v == "alpha" else v for k, v in fields.items()}
    await send_expect_error(sig, {"id": 900, "type": kind, **fields}, "bad_request", 900)
    await still_works(sig, conns.site)
    await witness.check()


async def test_one_mib_text_frame_is_bad_request_and_the_connection_stays(conns, witness):
    sig = await conns.session()
    frame = json.dumps({"id": 4242, "type": "floor_release", "channel": 1, "pad": "x" * (1024 * 1024)})
    await sig.send_raw(frame)
    reply = await sig.next_unmatched(timeout=WAIT)
    assert reply["ok"] is False and reply["error"]["code"] == "bad_request", reply
    assert reply["id"] in (None, 4242)
    assert "larger" in reply["error"]["message"]
    # Just above the 64 KiB limit, too.
    await send_expect_error(sig, "x" * (64 * 1024 + 1), "bad_request", None)
    await still_works(sig, conns.site)
    await witness.check()


async def _ws_reply(ws: aiohttp.ClientWebSocketResponse, request_id: int) -> dict:
    """The reply to `request_id`, skipping events (messages without an id)."""
    while True:
        message = await ws.receive_json(timeout=WAIT)
        if "id" in message:
            assert message["id"] == request_id, message
            return message


@pytest.mark.parametrize("after_hello", [False, True], ids=["before-hello", "after-hello"])
async def test_binary_frame_is_bad_request(site, tokens, witness, after_hello):
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(site.url + "/ws") as ws:
            if after_hello:
                await ws.send_json({"id": 1, "type": "hello", "token": tokens["u3"]})
                assert (await _ws_reply(ws, 1))["ok"] is True
            await ws.send_bytes(json.dumps({"id": 2, "type": "floor_release", "channel": 1}).encode())
            reply = await _ws_reply(ws, None)
            assert reply["ok"] is False
            assert reply["error"]["code"] == "bad_request"
            if not after_hello:
                await ws.send_json({"id": 3, "type": "hello", "token": tokens["u3"]})
                assert (await _ws_reply(ws, 3))["ok"] is True
            await ws.send_json({"id": 4, "type": "floor_request", "channel": site.channels["bravo"]})
            grant = await _ws_reply(ws, 4)
            assert grant["ok"] is True and grant["granted"] is True
            await ws.send_json({"id": 5, "type": "floor_release", "channel": site.channels["bravo"]})
            assert (await _ws_reply(ws, 5))["ok"] is True
            assert not ws.closed
    await witness.check()


# --- bad offers ----------------------------------------------------------------------------


def _sections(sdp: str) -> tuple[str, list[str]]:
    head, *media = sdp.split("\r\nm=")
    return head, ["m=" + m for m in media]


def _join(head: str, media: list[str]) -> str:
    return "\r\n".join([head] + media)


def video_m_line(sdp: str) -> str:
    head, media = _sections(sdp)
    return _join(head, media + [media[-1].replace("m=audio", "m=video").replace("a=mid:1", "a=mid:7")])


def first_recvonly(sdp: str) -> str:
    head, media = _sections(sdp)
    media[0] = media[0].replace("a=sendonly", "a=recvonly")
    return _join(head, media)


def no_opus(sdp: str) -> str:
    return sdp.replace("opus/48000/2", "PCMU/8000")


def opus_only_on_the_microphone(sdp: str) -> str:
    head, media = _sections(sdp)
    return _join(head, media[:1] + [m.replace("opus/48000/2", "PCMU/8000") for m in media[1:]])


def no_ice_credentials(sdp: str) -> str:
    # Passes the shape checks; aiortc itself refuses it.
    return "\r\n".join(line for line in sdp.split("\r\n") if not line.startswith(("a=ice-ufrag", "a=ice-pwd")))


BAD_OFFERS = [
    pytest.param(None, 1, id="missing"),
    pytest.param(lambda sdp: 42, 1, id="not-a-string"),
    pytest.param(lambda sdp: ["v=0"], 1, id="list"),
    pytest.param(lambda sdp: "", 1, id="empty"),
    pytest.param(lambda sdp: "hello, I am an offer", 1, id="garbage"),
    pytest.param(video_m_line, 1, id="video-m-line"),
    pytest.param(first_recvonly, 1, id="first-m-line-recvonly"),
    pytest.param(lambda sdp: sdp, MAX_SLOTS + 1, id="too-many-m-lines"),
    pytest.param(no_opus, 1, id="no-opus"),
    pytest.param(opus_only_on_the_microphone, 1, id="opus-only-on-microphone"),
    pytest.param(no_ice_credentials, 1, id="aiortc-refuses"),
]


@pytest.mark.parametrize("edit, slots", BAD_OFFERS)
async def test_bad_offer_is_bad_request_and_a_good_offer_follows(conns, witness, edit, slots):
    sig = await conns.session()
    sdp = await conns.offer(slots)
    fields = {} if edit is None else {"sdp": edit(sdp)}
    await send_expect_error(sig, {"id": 31, "type": "offer", **fields}, "bad_request", 31)
    # The same connection negotiates normally afterwards and can join.
    answer = await sig.request("offer", timeout=WAIT, sdp=await conns.offer(1))
    assert answer["sdp"].startswith("v=0")
    joined = await sig.request("join", timeout=WAIT, channel=conns.site.channels["alpha"])
    assert joined["mid"] and joined["floor"]["state"] == "taken"
    await witness.check()


# --- hello ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kind, fields",
    [
        ("offer", {"sdp": "v=0\r\n"}),
        ("join", {"channel": "alpha"}),
        ("leave", {"channel": "alpha"}),
        ("mute", {"channel": "alpha", "muted": True}),
        ("floor_request", {"channel": "alpha"}),
        ("floor_release", {"channel": "alpha"}),
    ],
)
async def test_requests_before_hello_are_unauthorized_and_the_connection_stays(conns, witness, kind, fields):
    sig = await conns.raw()
    fields = {k: conns.site.channels[v] if v == "alpha" else v for k, v in fields.items()}
    await send_expect_error(sig, {"id": 55, "type": kind, **fields}, "unauthorized", 55)
    await asyncio.sleep(0)  # give a (wrong) close a chance to show
    assert not sig.closed
    hello = await sig.hello(conns.tokens["u3"])
    assert hello["user"]["name"] == "u3"
    await still_works(sig, conns.site)
    await witness.check()


def _issue(site: harness.Site, user: str, *, secret: bytes | None = None, clock=time.time) -> str:
    secret = secret if secret is not None else load_or_create_secret(site.data_dir)
    account = site.directory.user_by_name(user)
    login_id, _, _ = site.server.app[LOGINS].create(account, address=None, client="test", refresh_ttl_s=3600)
    return TokenIssuer(secret, 3600, clock=clock).issue(account, login_id)[0]


BAD_TOKENS = [
    pytest.param(lambda site: _issue(site, "u3", clock=lambda: time.time() - 7200), id="expired"),
    pytest.param(lambda site: _issue(site, "u3", secret=b"f" * 32), id="forged"),
    pytest.param(lambda site: "garbage.token.value", id="garbage"),
    pytest.param(lambda site: "", id="empty"),
    pytest.param(lambda site: 12345, id="number"),
    pytest.param(lambda site: None, id="null"),
    pytest.param(lambda site: ..., id="missing"),
]


@pytest.mark.parametrize("make_token", BAD_TOKENS)
async def test_hello_with_a_bad_token_is_unauthorized_then_closed_4001(conns, witness, make_token):
    sig = await conns.raw()
    token = make_token(conns.site)
    frame = {"id": 1, "type": "hello", "client": {"name": "t", "version": "0"}, "resume": None}
    if token is not ...:
        frame["token"] = token
    reply = await send_expect_error(sig, frame, "unauthorized", 1)
    assert reply["error"]["message"].startswith("token")
    assert await sig.wait_closed(timeout=WAIT) == 4001
    await witness.check()


async def test_hello_for_a_removed_user_is_unauthorized_then_closed_4001(conns, witness):
    directory = conns.site.directory
    directory.add_user("ghost", Role.GENERAL, harness.PASSWORD)
    token = _issue(conns.site, "ghost")
    directory.remove_user("ghost")
    sig = await conns.raw()
    reply = await send_expect_error(sig, {"id": 1, "type": "hello", "token": token}, "unauthorized", 1)
    assert "no longer exists" in reply["error"]["message"]
    assert await sig.wait_closed(timeout=WAIT) == 4001
    await witness.check()


async def test_expired_token_is_refused_but_a_fresh_one_works(conns, witness):
    # The control for the cases above: the same user and secret with a current clock.
    sig = await conns.raw()
    hello = await sig.hello(_issue(conns.site, "u3"))
    assert hello["user"]["name"] == "u3"
    await still_works(sig, conns.site)


@pytest.mark.parametrize("token", ["valid", "garbage"])
async def test_second_hello_is_conflict_and_the_session_goes_on(conns, witness, token):
    sig = await conns.session("u3")
    first_session = sig.session_id
    frame = {"id": 77, "type": "hello", "token": conns.tokens["u3"] if token == "valid" else "junk"}
    await send_expect_error(sig, frame, "conflict", 77)
    await asyncio.sleep(0.05)
    assert not sig.closed  # a conflict is not a failed hello: no 4001
    await still_works(sig, conns.site)
    assert sig.session_id == first_session
    await witness.check()


async def test_hello_with_bad_client_or_resume_fields_is_bad_request(conns, witness):
    sig = await conns.raw()
    await send_expect_error(sig, {"id": 3, "type": "hello", "token": conns.tokens["u3"], "client": "x"}, "bad_request", 3)
    await send_expect_error(sig, {"id": 4, "type": "hello", "token": conns.tokens["u3"], "resume": 5}, "bad_request", 4)
    assert not sig.closed
    await sig.hello(conns.tokens["u3"])
    await still_works(sig, conns.site)


# --- membership, channels, slots -----------------------------------------------------------


async def test_non_member_is_forbidden(conns, witness):
    sig = await conns.session("outsider")
    alpha = conns.site.channels["alpha"]
    # Before and after it has media: membership is checked first either way.
    await send_expect_error(sig, {"id": 10, "type": "join", "channel": alpha}, "forbidden", 10)
    await send_expect_error(sig, {"id": 11, "type": "floor_request", "channel": alpha}, "forbidden", 11)
    answer = await sig.request("offer", timeout=WAIT, sdp=await conns.offer(1))
    assert answer["ok"] is True
    await send_expect_error(sig, {"id": 12, "type": "join", "channel": alpha}, "forbidden", 12)
    await send_expect_error(
        sig, {"id": 13, "type": "floor_request", "channel": alpha, "priority": "emergency"}, "forbidden", 13
    )
    # The outsider's emergency request did not pre-empt the talker.
    await witness.check()
    assert not any(e.get("type") == "floor_revoked" for e in witness.talker.signaling.events_seen)


@pytest.mark.parametrize("kind", ["join", "floor_request"])
async def test_unknown_channel_is_not_found(conns, witness, kind):
    sig = await conns.session()
    await send_expect_error(sig, {"id": 20, "type": kind, "channel": 987654}, "not_found", 20)
    await send_expect_error(sig, {"id": 21, "type": kind, "channel": -1}, "not_found", 21)
    await still_works(sig, conns.site)
    await witness.check()


async def test_join_before_offer_is_conflict(conns, witness):
    sig = await conns.session()
    alpha = conns.site.channels["alpha"]
    await send_expect_error(sig, {"id": 30, "type": "join", "channel": alpha}, "conflict", 30)
    await sig.request("offer", timeout=WAIT, sdp=await conns.offer(1))
    joined = await sig.request("join", timeout=WAIT, channel=alpha)
    assert joined["mid"]
    await witness.check()


async def test_no_slot_when_every_receive_m_line_is_bound(conns, witness):
    sig = await conns.session()
    alpha, bravo = conns.site.channels["alpha"], conns.site.channels["bravo"]
    await sig.request("offer", timeout=WAIT, sdp=await conns.offer(1))
    first = await sig.request("join", timeout=WAIT, channel=alpha)
    error = await expect_request_error(sig, "no_slot", "join", channel=bravo)
    assert "re-offer" in error.message
    # Joining alpha again is idempotent (same slot); leaving frees the slot for bravo.
    again = await sig.request("join", timeout=WAIT, channel=alpha)
    assert again["mid"] == first["mid"]
    await sig.request("leave", timeout=WAIT, channel=alpha)
    moved = await sig.request("join", timeout=WAIT, channel=bravo)
    assert moved["mid"] == first["mid"]
    await witness.check()


async def test_leave_and_mute_of_a_channel_not_joined_are_not_found(conns, witness):
    sig = await conns.session()
    alpha = conns.site.channels["alpha"]
    await send_expect_error(sig, {"id": 40, "type": "leave", "channel": alpha}, "not_found", 40)
    await send_expect_error(sig, {"id": 41, "type": "mute", "channel": alpha, "muted": True}, "not_found", 41)
    await sig.request("offer", timeout=WAIT, sdp=await conns.offer(2))
    await send_expect_error(sig, {"id": 42, "type": "leave", "channel": alpha}, "not_found", 42)
    await send_expect_error(sig, {"id": 43, "type": "mute", "channel": 987654, "muted": False}, "not_found", 43)
    await sig.request("join", timeout=WAIT, channel=alpha)
    assert (await sig.request("mute", timeout=WAIT, channel=alpha, muted=True))["ok"] is True
    assert (await sig.request("leave", timeout=WAIT, channel=alpha))["ok"] is True
    await send_expect_error(sig, {"id": 44, "type": "leave", "channel": alpha}, "not_found", 44)
    await witness.check()


async def test_floor_release_by_a_non_holder_changes_nothing(conns, witness):
    sig = await conns.session("u3")
    alpha = conns.site.channels["alpha"]
    listener_events = len(witness.listener.signaling.events_seen)
    talker_events = len(witness.talker.signaling.events_seen)
    reply = await sig.request("floor_release", timeout=WAIT, channel=alpha)
    assert reply["ok"] is True
    # The holder still holds: others are still told busy, with u1 as the holder.
    busy = await sig.request("floor_request", timeout=WAIT, channel=alpha)
    assert busy["granted"] is False and busy["reason"] == "busy"
    assert busy["holder"]["name"] == "u1"
    await witness.check()
    # Nobody heard the floor go idle or saw it taken from u1.
    assert not any(
        e.get("type") == "floor_idle" and e.get("channel") == alpha
        for e in witness.listener.signaling.events_seen[listener_events:]
    )
    assert not any(e.get("type") == "floor_revoked" for e in witness.talker.signaling.events_seen[talker_events:])
    # The talker's own request confirms it still holds (a re-grant, not a denial).
    assert (await witness.talker.talk(alpha))["granted"] is True


async def test_floor_release_of_arbitrary_channels_leaves_no_state_behind(conns, witness):
    # Used to create a floor lock per distinct channel id a client named, forever
    # (FloorController._locks): unbounded memory from one abusive connection.
    from server.app import HUB

    floor = conns.site.server.app[HUB].floor
    locks_before = len(floor._locks)
    sig = await conns.session("u3")
    for channel in range(10_000_000, 10_000_200):
        await sig.send_raw(json.dumps({"id": channel, "type": "floor_release", "channel": channel}))
    for _ in range(200):
        assert (await sig.next_unmatched(timeout=WAIT))["ok"] is True
    assert len(floor._locks) == locks_before
    await still_works(sig, conns.site)
    await witness.check()


# --- HTTP ----------------------------------------------------------------------------------


async def _post_login(site: harness.Site, **kwargs) -> tuple[int, object]:
    async with aiohttp.ClientSession() as http:
        async with http.post(site.url + "/api/login", **kwargs) as resp:
            text = await resp.text()
            return resp.status, json.loads(text) if text else None


def _assert_error_body(body: object, code: str) -> None:
    assert isinstance(body, dict) and set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"data": b"{not json", "headers": {"Content-Type": "application/json"}}, id="bad-json"),
        pytest.param({"data": b"\xff\xfe\x00", "headers": {"Content-Type": "application/json"}}, id="not-utf8"),
        pytest.param({"data": b""}, id="empty-body"),
        pytest.param({"json": ["u3", harness.PASSWORD]}, id="array"),
        pytest.param({"json": {"username": "u3"}}, id="missing-password"),
        pytest.param({"json": {"password": harness.PASSWORD}}, id="missing-username"),
        pytest.param({"json": {}}, id="empty-object"),
        pytest.param({"json": {"username": 3, "password": harness.PASSWORD}}, id="username-int"),
        pytest.param({"json": {"username": "u3", "password": None}}, id="password-null"),
    ],
)
async def test_login_with_a_malformed_body_is_400(site, kwargs):
    status, body = await _post_login(site, **kwargs)
    assert status == 400
    _assert_error_body(body, "bad_request")


@pytest.mark.parametrize(
    "username, password",
    [("u3", "wrong-pw"), ("u3", ""), ("nobody", harness.PASSWORD), ("", ""), ("u3", "x" * 5000)],
)
async def test_login_with_wrong_credentials_is_401(site, username, password):
    status, body = await _post_login(site, json={"username": username, "password": password})
    assert status == 401
    _assert_error_body(body, "unauthorized")
    # The same message for an unknown user and a wrong password.
    assert body["error"]["message"] == "wrong username or password"


async def test_login_works_after_refusals(site):
    status, body = await _post_login(site, json={"username": "u3", "password": harness.PASSWORD})
    assert status == 200
    assert isinstance(body["token"], str) and body["expires_at"] > time.time()
    assert body["user"]["name"] == "u3" and body["user"]["role"] == "general"


async def _get(site: harness.Site, path: str, token: str | None = None, *, query: bool = False) -> tuple[int, object]:
    headers, params = {}, {}
    if token is not None:
        if query:
            params["token"] = token
        else:
            headers["Authorization"] = f"Bearer {token}"
    async with aiohttp.ClientSession() as http:
        async with http.get(site.url + path, headers=headers, params=params) as resp:
            return resp.status, await resp.json()


async def test_stats_needs_a_token(site):
    status, body = await _get(site, "/api/stats")
    assert status == 401
    _assert_error_body(body, "unauthorized")
    status, body = await _get(site, "/api/stats", "not-a-token")
    assert status == 401
    _assert_error_body(body, "unauthorized")
    status, body = await _get(site, "/api/stats", _issue(site, "u0", clock=lambda: time.time() - 7200))
    assert status == 401
    assert "expired" in body["error"]["message"]


async def test_stats_refuses_a_general_user(site, tokens):
    status, body = await _get(site, "/api/stats", tokens["u3"])
    assert status == 403
    _assert_error_body(body, "forbidden")


@pytest.mark.parametrize("user, query", [("u0", False), ("u0", True), ("admin", False)])
async def test_stats_for_dispatch_and_admin(site, tokens, witness, user, query):
    await witness.audio_flows()
    status, body = await _get(site, "/api/stats", tokens[user], query=query)
    assert status == 200, body
    assert body["sessions"] >= 2  # the witnesses at least
    assert body["talkers"] >= 1  # u1 on alpha
    assert body["packets_in"] > 0
    assert body["packets_forwarded"] > 0 and body["bytes_forwarded"] > 0


async def test_health(site):
    status, body = await _get(site, "/api/health")
    assert status == 200
    assert body["status"] == "ok"


# --- the hello timeout ---------------------------------------------------------------------


async def test_hello_timeout_closes_with_4001(tmp_path):
    site = await harness.start_site(tmp_path, users=1, hello_timeout_s=0.5)
    silent = noisy = None
    try:
        started = time.monotonic()
        silent = await SignalingClient.connect(site.url)
        noisy = await SignalingClient.connect(site.url)
        # Bad frames before hello get replies but do not extend the deadline.
        await send_expect_error(noisy, "nope", "bad_request", None)
        await send_expect_error(noisy, {"id": 2, "type": "floor_release", "channel": 1}, "unauthorized", 2)
        assert await silent.wait_closed(timeout=WAIT) == 4001
        assert await noisy.wait_closed(timeout=WAIT) == 4001
        assert time.monotonic() - started < 3.0
        # A client that says hello in time is not closed.
        prompt = await harness.PttClient.connect(site.url, "u0", media=False)
        try:
            await asyncio.sleep(0.8)
            assert not prompt.signaling.closed
            assert (await prompt.talk(site.channels["alpha"]))["granted"] is True
        finally:
            await prompt.close()
    finally:
        for sig in (silent, noisy):
            if sig is not None:
                await sig.close()
        await site.server.stop()
