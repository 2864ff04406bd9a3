"""server/media/sdp.py: offer checks on real client offers and hand-edited bad ones,
answer shaping and address announcement.

The real offers come from the console's ClientPeer on 127.0.0.1; run inside `unshare -n`.
"""

from __future__ import annotations

import re

import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from server.media import aiortc_hooks
from server.media.sdp import MAX_SDP_BYTES, PTT_OPUS_FMTP, BadOffer, announce_address, check_offer, shape_answer
from vpdesk.media.peer import ClientPeer


@pytest.fixture(autouse=True)
def loopback_only():
    aiortc_hooks.use_host_addresses(["127.0.0.1"])
    yield
    aiortc_hooks.use_host_addresses(None)


async def client_offer(slots: int = 3) -> str:
    peer = ClientPeer(slots)
    try:
        return await peer.create_offer()
    finally:
        await peer.close()


@pytest.fixture
async def offer() -> str:
    return await client_offer(3)


def sections(sdp: str) -> tuple[str, list[str]]:
    """(session part, [m-sections]) with CRLF kept inside each part."""
    head, *media = sdp.split("\r\nm=")
    return head, ["m=" + m for m in media]


def join(head: str, media: list[str]) -> str:
    return "\r\n".join([head] + media)


def edit_section(sdp: str, index: int, old: str, new: str) -> str:
    head, media = sections(sdp)
    assert old in media[index], (old, media[index])
    media[index] = media[index].replace(old, new)
    return join(head, media)


def fmtp_for(sdp: str, pt: str) -> list[str]:
    return re.findall(rf"^a=fmtp:{pt} (.*)$", sdp.replace("\r\n", "\n"), re.M)


# --- check_offer: real offers -------------------------------------------------------------


async def test_real_offer_passes_with_its_mids(offer):
    shape = check_offer(offer, max_receive_slots=64)
    mids = re.findall(r"^a=mid:(\S+)", offer.replace("\r\n", "\n"), re.M)
    assert shape.mids == mids and len(mids) == 4
    assert shape.microphone_mid == mids[0]
    assert shape.receive_mids == mids[1:]
    assert shape.directions == ["sendonly", "recvonly", "recvonly", "recvonly"]


async def test_real_offer_with_no_receive_slots_passes():
    shape = check_offer(await client_offer(0), max_receive_slots=4)
    assert shape.receive_mids == []


async def test_receive_slot_limit_is_exact(offer):
    assert len(check_offer(offer, max_receive_slots=3).receive_mids) == 3
    with pytest.raises(BadOffer, match="at most 2 receive m-lines"):
        check_offer(offer, max_receive_slots=2)


async def test_lf_only_line_endings_are_read(offer):
    assert check_offer(offer.replace("\r\n", "\n"), 64).mids == check_offer(offer, 64).mids


async def test_sendrecv_microphone_and_inactive_slot_are_accepted(offer):
    edited = edit_section(offer, 0, "a=sendonly", "a=sendrecv")
    edited = edit_section(edited, 2, "a=recvonly", "a=inactive")
    assert check_offer(edited, 64).directions == ["sendrecv", "recvonly", "inactive", "recvonly"]


# --- check_offer: bad offers --------------------------------------------------------------


@pytest.mark.parametrize("sdp", [None, 5, b"v=0\r\n", ["v=0"], {"sdp": "v=0"}, "", "   ", "\r\n"])
def test_not_a_non_empty_string(sdp):
    with pytest.raises(BadOffer, match="non-empty string"):
        check_offer(sdp, 64)


@pytest.mark.parametrize("sdp", ["hello", "o=- 1 1 IN IP4 0.0.0.0\r\nv=0\r\n", " v=0\r\n", "{\"type\": \"offer\"}"])
def test_garbage_text(sdp):
    with pytest.raises(BadOffer, match="v=0"):
        check_offer(sdp, 64)


def test_no_m_lines():
    with pytest.raises(BadOffer, match="no m-lines"):
        check_offer("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n", 64)


async def test_too_large(offer):
    big = offer + "a=x-filler:" + "y" * MAX_SDP_BYTES + "\r\n"
    with pytest.raises(BadOffer, match="too large"):
        check_offer(big, 64)


async def test_video_m_line_is_refused(offer):
    head, media = sections(offer)
    video = media[-1].replace("m=audio", "m=video").replace("a=mid:3", "a=mid:9")
    with pytest.raises(BadOffer, match="only audio"):
        check_offer(join(head, media + [video]), 64)
    with pytest.raises(BadOffer, match="only audio"):
        check_offer(edit_section(offer, 2, "m=audio", "m=application"), 64)


async def test_first_m_line_recvonly_is_refused(offer):
    with pytest.raises(BadOffer, match="first m-line"):
        check_offer(edit_section(offer, 0, "a=sendonly", "a=recvonly"), 64)
    with pytest.raises(BadOffer, match="first m-line"):
        check_offer(edit_section(offer, 0, "a=sendonly", "a=inactive"), 64)


async def test_microphone_not_first_is_refused(offer):
    head, media = sections(offer)
    with pytest.raises(BadOffer, match="first m-line"):
        check_offer(join(head, media[1:] + media[:1]), 64)


@pytest.mark.parametrize("direction", ["a=sendonly", "a=sendrecv"])
async def test_a_sending_receive_slot_is_refused(offer, direction):
    with pytest.raises(BadOffer, match="after the first must be recvonly"):
        check_offer(edit_section(offer, 2, "a=recvonly", direction), 64)


async def test_missing_direction_means_sendrecv_and_is_refused_on_a_slot(offer):
    with pytest.raises(BadOffer, match="after the first must be recvonly"):
        check_offer(edit_section(offer, 1, "a=recvonly\r\n", ""), 64)


async def test_every_m_line_needs_a_mid(offer):
    with pytest.raises(BadOffer, match="a=mid"):
        check_offer(edit_section(offer, 1, "a=mid:1\r\n", ""), 64)


async def test_duplicate_mid(offer):
    with pytest.raises(BadOffer, match="duplicate mid"):
        check_offer(edit_section(offer, 2, "a=mid:2", "a=mid:1"), 64)


async def test_too_many_m_lines(offer):
    head, media = sections(offer)
    # Minimal BUNDLEd slots (transport lines only on the first m-line), so that the
    # offer stays under the size limit and it is the count that is refused.
    minimal = "m=audio 9 UDP/TLS/RTP/SAVPF 96\r\na=recvonly\r\na=mid:{}\r\na=rtpmap:96 opus/48000/2"
    extra = [minimal.format(n) for n in range(4, 66)]  # 3 + 62 = 65 receive m-lines
    assert check_offer(join(head, media + extra[:-1]), 64).receive_mids[-1] == "64"
    with pytest.raises(BadOffer, match="at most 64 receive m-lines"):
        check_offer(join(head, media + extra), 64)


async def test_no_opus_at_all(offer):
    no_opus = re.sub(r"opus/48000/2", "PCMU/8000", offer)
    with pytest.raises(BadOffer, match="does not include Opus"):
        check_offer(no_opus, 64)


async def test_opus_mentioned_outside_an_rtpmap_does_not_count(offer):
    # Used to pass (a substring test), then failed inside the server's answer as an
    # `internal` error because no m-line negotiated Opus.
    sneaky = re.sub(r"opus/48000/2", "PCMU/8000", offer).replace("a=mid:0\r\n", "a=mid:0\r\na=x-note:opus/48000\r\n")
    with pytest.raises(BadOffer, match="does not include Opus"):
        check_offer(sneaky, 64)


async def test_every_m_line_must_offer_opus(offer):
    edited = edit_section(offer, 2, "opus/48000/2", "PCMU/8000")
    with pytest.raises(BadOffer, match=r"m-line 2 \(mid 2\) does not offer Opus"):
        check_offer(edited, 64)


async def test_opus_rtpmap_for_a_payload_type_the_m_line_does_not_list(offer):
    # rtpmap says 96 is Opus, but the m-line only lists 97.
    head, media = sections(offer)
    media[1] = re.sub(r"^(m=audio \d+ \S+) 96", r"\1 97", media[1])
    with pytest.raises(BadOffer, match=r"m-line 1 .* does not offer Opus"):
        check_offer(join(head, media), 64)


# --- shape_answer -------------------------------------------------------------------------

HAND_ANSWER = "\r\n".join(
    [
        "v=0",
        "o=- 1 1 IN IP4 0.0.0.0",
        "s=-",
        "t=0 0",
        "m=audio 5000 UDP/TLS/RTP/SAVPF 111 0 101",
        "c=IN IP4 10.0.0.5",
        "a=mid:0",
        "a=rtpmap:111 opus/48000/2",
        "a=fmtp:111 minptime=10;useinbandfec=0;stereo=1",
        "a=rtpmap:0 PCMU/8000",
        "a=rtpmap:101 telephone-event/8000",
        "a=fmtp:101 0-16",
        "a=candidate:1 1 udp 2130706431 10.0.0.5 5000 typ host",
        "m=audio 5000 UDP/TLS/RTP/SAVPF 96",
        "c=IN IP4 10.0.0.5",
        "a=mid:1",
        "a=rtpmap:96 OPUS/48000",
        "a=candidate:2 1 udp 1694498815 203.0.113.9 6000 typ srflx raddr 10.0.0.5 rport 5000",
        "",
    ]
)


def test_shape_answer_sets_ptt_fmtp_on_every_opus_type_once():
    shaped = shape_answer(HAND_ANSWER)
    for pt in ("111", "96"):
        fmtps = fmtp_for(shaped, pt)
        assert fmtps == [PTT_OPUS_FMTP], (pt, fmtps)
    params = dict(item.split("=") for item in PTT_OPUS_FMTP.split(";"))
    assert params["useinbandfec"] == "1" and params["usedtx"] == "0" and params["stereo"] == "0"
    # The fmtp follows its rtpmap.
    lines = shaped.split("\r\n")
    assert lines[lines.index("a=rtpmap:111 opus/48000/2") + 1] == f"a=fmtp:111 {PTT_OPUS_FMTP}"
    assert lines[lines.index("a=rtpmap:96 OPUS/48000") + 1] == f"a=fmtp:96 {PTT_OPUS_FMTP}"


def test_shape_answer_leaves_other_payload_types_and_lines_alone():
    shaped = shape_answer(HAND_ANSWER)
    assert fmtp_for(shaped, "101") == ["0-16"]
    assert fmtp_for(shaped, "0") == []
    assert "useinbandfec=0" not in shaped
    kept = [line for line in HAND_ANSWER.split("\r\n") if not line.startswith("a=fmtp:111")]
    shaped_lines = shaped.split("\r\n")
    assert [line for line in shaped_lines if not line.startswith(("a=fmtp:111", "a=fmtp:96"))] == kept
    # No address change without an announced address.
    assert "c=IN IP4 10.0.0.5" in shaped and " 10.0.0.5 5000 typ host" in shaped


async def test_shaped_real_answer_is_accepted_by_the_client(offer):
    """An aiortc answer to a ClientPeer offer, shaped, applies on the client."""
    client = ClientPeer(2)
    server = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        offer_sdp = await client.create_offer()
        await server.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
        await server.setLocalDescription(await server.createAnswer())
        raw = server.localDescription.sdp
        shaped = shape_answer(raw)
        opus_pts = re.findall(r"^a=rtpmap:(\d+) opus/48000", shaped.replace("\r\n", "\n"), re.M | re.I)
        assert opus_pts
        # One PTT fmtp per Opus rtpmap, i.e. one per m-line, and nothing else.
        for pt in set(opus_pts):
            assert fmtp_for(shaped, pt) == [PTT_OPUS_FMTP] * opus_pts.count(pt)
        assert shaped.count("a=fmtp:") == len(opus_pts) == 3
        for section in sections(shaped)[1]:
            pt = re.search(r"a=rtpmap:(\d+) opus", section, re.I).group(1)
            assert f"a=fmtp:{pt} {PTT_OPUS_FMTP}" in section
        await client.apply_answer(shaped)
        assert client.pc.signalingState == "stable"
    finally:
        await client.close()
        await server.close()


# --- announce_address ---------------------------------------------------------------------


def test_announce_address_rewrites_host_candidates_and_connection_lines():
    announced = announce_address(HAND_ANSWER, "198.51.100.7")
    lines = announced.split("\r\n")
    assert [line for line in lines if line.startswith("c=")] == ["c=IN IP4 198.51.100.7"] * 2
    assert "a=candidate:1 1 udp 2130706431 198.51.100.7 5000 typ host" in lines
    # Server-reflexive candidates already carry the public address: untouched.
    assert "a=candidate:2 1 udp 1694498815 203.0.113.9 6000 typ srflx raddr 10.0.0.5 rport 5000" in lines
    assert "10.0.0.5 5000 typ host" not in announced


def test_announce_ipv6_address_sets_the_family():
    announced = announce_address(HAND_ANSWER, "2001:db8::7")
    assert "c=IN IP6 2001:db8::7" in announced
    assert "a=candidate:1 1 udp 2130706431 2001:db8::7 5000 typ host" in announced


def test_shape_answer_announces_when_asked():
    shaped = shape_answer(HAND_ANSWER, "198.51.100.7")
    assert "c=IN IP4 10.0.0.5" not in shaped
    assert " 198.51.100.7 5000 typ host" in shaped
    assert fmtp_for(shaped, "111") == [PTT_OPUS_FMTP]


async def test_announce_on_a_real_answer(offer):
    server = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        await server.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
        await server.setLocalDescription(await server.createAnswer())
        raw = server.localDescription.sdp
        assert " 127.0.0.1 " in raw
        announced = shape_answer(raw, "192.0.2.44")
        candidates = re.findall(r"^a=candidate:\S+ \d+ \S+ \d+ (\S+) \d+ typ host", announced.replace("\r\n", "\n"), re.M)
        assert candidates and set(candidates) == {"192.0.2.44"}
        connections = re.findall(r"^c=IN IP4 (\S+)", announced.replace("\r\n", "\n"), re.M)
        assert connections and set(connections) == {"192.0.2.44"}
        assert "127.0.0.1" not in announced.replace("a=rtcp:9 IN IP4 0.0.0.0", "")
    finally:
        await server.close()
