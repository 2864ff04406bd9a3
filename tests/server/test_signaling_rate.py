"""Signaling rate limits: a token bucket per connection, close 4008 on sustained abuse.

The site's bucket refills at one request per 1000 s, so what the bucket allows is exactly
its burst however long a test takes. Signaling only, no media.
"""

from __future__ import annotations

import json

import aiohttp
import pytest

from tests.server import harness
from vpdesk.session.signaling import ConnectionClosed, RequestError, SignalingClient

WAIT = 5.0
BURST = 20
ABUSE_LIMIT = 30


@pytest.fixture
async def site(tmp_path):
    site = await harness.start_site(
        tmp_path, users=4, signaling_rate_per_s=0.001, signaling_burst=BURST,
        signaling_abuse_limit=ABUSE_LIMIT, signaling_abuse_window_s=600.0,
    )
    try:
        yield site
    finally:
        await site.server.stop()


@pytest.fixture
async def sessions(site):
    opened: list[SignalingClient] = []
    async with aiohttp.ClientSession() as http:
        tokens = {}

        async def open_session(name: str) -> SignalingClient:
            if name not in tokens:
                body = {"username": name, "password": harness.PASSWORD}
                async with http.post(site.url + "/api/login", json=body) as resp:
                    tokens[name] = (await resp.json())["token"]
            sig = await SignalingClient.connect(site.url)
            opened.append(sig)
            await sig.hello(tokens[name], timeout=WAIT)
            return sig

        yield open_session
    for sig in opened:
        await sig.close()


def release(request_id: int, channel: int) -> str:
    return json.dumps({"id": request_id, "type": "floor_release", "channel": channel})


async def flood(sig: SignalingClient, channel: int, count: int, first_id: int = 1000) -> list[dict]:
    for i in range(count):
        await sig.send_raw(release(first_id + i, channel))
    return [await sig.next_unmatched(timeout=WAIT) for _ in range(count)]


async def test_requests_over_the_bucket_get_rate_limited_and_others_are_unaffected(site, sessions):
    alpha = site.channels["alpha"]
    abuser = await sessions("u1")  # hello took one token
    witness = await sessions("u2")
    replies = await flood(abuser, alpha, 30)
    assert [r["id"] for r in replies] == list(range(1000, 1030))  # in order, ids kept
    assert all(r["ok"] is True for r in replies[: BURST - 1])
    refused = replies[BURST - 1:]
    for reply in refused:
        assert reply["ok"] is False
        assert reply["error"]["code"] == "rate_limited"
        assert set(reply) == {"id", "ok", "error"} and set(reply["error"]) == {"code", "message"}
        assert "retry in" in reply["error"]["message"]
    # A refused request is not processed: the floor it asks for stays free.
    with pytest.raises(RequestError) as info:
        await abuser.request("floor_request", timeout=WAIT, channel=alpha)
    assert info.value.code == "rate_limited"
    grant = await witness.request("floor_request", timeout=WAIT, channel=alpha)
    assert grant["granted"] is True
    await witness.request("floor_release", timeout=WAIT, channel=alpha)
    # Below the abuse limit the connection stays open.
    assert not abuser.closed
    # Other connections, of the same user too, have buckets of their own.
    again = await sessions("u1")
    assert (await again.request("floor_release", timeout=WAIT, channel=alpha))["ok"] is True


async def test_unreadable_frames_over_the_bucket_are_refused_without_an_id(site, sessions):
    sig = await sessions("u1")
    await flood(sig, site.channels["alpha"], BURST - 1)
    await sig.send_raw("not json")
    reply = await sig.next_unmatched(timeout=WAIT)
    assert reply["id"] is None and reply["error"]["code"] == "rate_limited"


async def test_sustained_abuse_closes_the_connection_4008(site, sessions):
    alpha = site.channels["alpha"]
    abuser = await sessions("u1")
    witness = await sessions("u2")
    allowed = BURST - 1
    # The limit's worth of refusals leaves the connection open ...
    replies = await flood(abuser, alpha, allowed + ABUSE_LIMIT)
    assert sum(r["ok"] is False for r in replies) == ABUSE_LIMIT
    assert not abuser.closed
    # ... one more closes it.
    await abuser.send_raw(release(1, alpha))
    assert await abuser.wait_closed(timeout=WAIT) == 4008
    # The refusal that crossed the line reached the client before the close did.
    last = await abuser.next_unmatched(timeout=WAIT)
    assert last["id"] == 1 and last["error"]["code"] == "rate_limited"
    grant = await witness.request("floor_request", timeout=WAIT, channel=alpha)
    assert grant["granted"] is True


async def test_a_flood_before_hello_is_limited_too(site):
    sig = await SignalingClient.connect(site.url)
    try:
        for i in range(BURST + ABUSE_LIMIT + 1):
            await sig.send_raw(release(i, 1))
        assert await sig.wait_closed(timeout=WAIT) == 4008
        codes = []
        with pytest.raises(ConnectionClosed):
            for _ in range(BURST + ABUSE_LIMIT + 2):  # what arrived, then "closed"
                codes.append((await sig.next_unmatched(timeout=WAIT))["error"]["code"])
        assert codes[:BURST] == ["unauthorized"] * BURST
        assert set(codes[BURST:]) == {"rate_limited"}
    finally:
        await sig.close()
