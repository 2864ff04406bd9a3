"""Checks on a client's offer and edits to the server's answer, as SDP text.

The offer's shape is the protocol's: the first m-line is the client's sendonly microphone,
every other one a recvonly audio slot. The answer is aiortc's, edited on the way out:
Opus parameters for push-to-talk and, behind NAT, the announced address.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_SDP_BYTES = 60_000  # under the 64 KiB frame limit with room for the envelope

# What the server asks of senders: mono voice, in-band FEC, no DTX, ~28-32 kb/s.
PTT_OPUS_FMTP = "minptime=10;useinbandfec=1;usedtx=0;stereo=0;sprop-stereo=0;maxaveragebitrate=32000"


_OPUS_RTPMAP = re.compile(r"^a=rtpmap:(\d+) opus/48000(?:/2)?\s*$", re.IGNORECASE)


class BadOffer(ValueError):
    """The offer is not SDP, or not the protocol's shape; the message says which part."""


@dataclass(frozen=True)
class OfferShape:
    mids: list[str]  # in m-line order
    directions: list[str]

    @property
    def microphone_mid(self) -> str:
        return self.mids[0]

    @property
    def receive_mids(self) -> list[str]:
        return self.mids[1:]


def check_offer(sdp: object, max_receive_slots: int) -> OfferShape:
    """Validate a client offer's text and shape before aiortc sees it."""
    if not isinstance(sdp, str) or not sdp.strip():
        raise BadOffer("sdp must be a non-empty string")
    if len(sdp.encode("utf-8", "replace")) > MAX_SDP_BYTES:
        raise BadOffer("sdp is too large")
    lines = sdp.replace("\r\n", "\n").split("\n")
    if not lines[0].startswith("v=0"):
        raise BadOffer("sdp must start with v=0")
    mids: list[str] = []
    directions: list[str] = []
    kinds: list[str] = []
    has_opus: list[bool] = []
    current_mid: str | None = None
    current_dir = "sendrecv"
    current_formats: set[str] = set()
    current_opus: set[str] = set()
    in_media = False

    def close_section() -> None:
        if in_media:
            mids.append(current_mid if current_mid is not None else "")
            directions.append(current_dir)
            # Opus must be a format the m-line lists, not just text somewhere in the SDP:
            # an m-line that negotiates no Opus cannot carry forwarded audio.
            has_opus.append(bool(current_formats & current_opus))

    for line in lines:
        if line.startswith("m="):
            close_section()
            in_media = True
            fields = line[2:].split()
            kinds.append(fields[0] if fields else "")
            current_formats = set(fields[3:])
            current_opus = set()
            current_mid, current_dir = None, "sendrecv"
        elif in_media and line.startswith("a=mid:"):
            current_mid = line[6:].strip()
        elif in_media and line[2:] in ("sendonly", "recvonly", "sendrecv", "inactive") and line.startswith("a="):
            current_dir = line[2:]
        elif in_media and (match := _OPUS_RTPMAP.match(line.rstrip())):
            current_opus.add(match.group(1))
    close_section()

    if not mids:
        raise BadOffer("offer has no m-lines")
    if any(kind != "audio" for kind in kinds):
        raise BadOffer("only audio m-lines are accepted")
    if any(not mid for mid in mids):
        raise BadOffer("every m-line needs an a=mid")
    if len(set(mids)) != len(mids):
        raise BadOffer("duplicate mid")
    if directions[0] not in ("sendonly", "sendrecv"):
        raise BadOffer("the first m-line must be the sendonly microphone")
    if any(d not in ("recvonly", "inactive") for d in directions[1:]):
        raise BadOffer("m-lines after the first must be recvonly")
    if len(mids) - 1 > max_receive_slots:
        raise BadOffer(f"at most {max_receive_slots} receive m-lines")
    if not any(has_opus):
        raise BadOffer("offer does not include Opus")
    if not all(has_opus):
        index = has_opus.index(False)
        raise BadOffer(f"m-line {index} (mid {mids[index]}) does not offer Opus")
    return OfferShape(mids=mids, directions=directions)


def shape_answer(sdp: str, announced_address: str | None = None) -> str:
    """Put PTT Opus parameters on every Opus payload type; announce the NAT address."""
    out: list[str] = []
    opus_types: set[str] = set()
    for line in sdp.split("\r\n"):
        match = _OPUS_RTPMAP.match(line)
        if match:
            opus_types.add(match.group(1))
    for line in sdp.split("\r\n"):
        if line.startswith("a=fmtp:"):
            pt = line[7:].split(" ", 1)[0]
            if pt in opus_types:
                continue  # replaced below, after its rtpmap
        out.append(line)
        match = _OPUS_RTPMAP.match(line)
        if match:
            out.append(f"a=fmtp:{match.group(1)} {PTT_OPUS_FMTP}")
    text = "\r\n".join(out)
    if announced_address:
        text = announce_address(text, announced_address)
    return text


def announce_address(sdp: str, address: str) -> str:
    """Replace host-candidate and connection addresses with `address` (server behind NAT)."""
    family = "IP6" if ":" in address else "IP4"
    out = []
    for line in sdp.split("\r\n"):
        if line.startswith("c=IN "):
            line = f"c=IN {family} {address}"
        elif line.startswith("a=candidate:") and " typ host" in line:
            parts = line.split(" ")
            if len(parts) > 5:
                parts[4] = address
                line = " ".join(parts)
        out.append(line)
    return "\r\n".join(out)
