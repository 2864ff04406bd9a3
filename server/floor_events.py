"""Floor-control messages: the events FloorController emits and the answers it gives.

The session layer turns events into PROTOCOL.md messages (``to_wire()``) and sends them:
FloorTaken / FloorIdle to every member of the channel, FloorRevoked to the talker's
session. Plain data; no I/O here.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Union

from server.state.base import FloorLease


class RevokeReason(enum.StrEnum):
    """Why a talker lost the floor without releasing it (PROTOCOL ``floor_revoked``)."""

    MAX_DURATION = "max_duration"  # talked longer than max_talk_ms
    PREEMPTED = "preempted"  # an emergency talker took the floor
    REMOVED = "removed"  # the user was removed from the channel, or an admin revoked it
    DISCONNECTED = "disconnected"  # the session closed, or its lease was lost


@dataclass(frozen=True)
class Holder:
    """Who is talking, as clients see it."""

    user_id: int
    name: str

    @classmethod
    def from_lease(cls, lease: FloorLease) -> Holder:
        return cls(user_id=lease.user_id, name=lease.name)

    def to_wire(self) -> dict:
        return {"user_id": self.user_id, "name": self.name}


@dataclass(frozen=True)
class FloorTaken:
    """A talker now holds the channel's floor: the "X is speaking" banner."""

    channel_id: int
    holder: Holder
    since: float  # wall-clock unix seconds

    def to_wire(self) -> dict:
        return {
            "type": "floor_taken",
            "channel": self.channel_id,
            "holder": self.holder.to_wire(),
            "since": self.since,
        }


@dataclass(frozen=True)
class FloorIdle:
    """Nobody holds the channel's floor any more."""

    channel_id: int

    def to_wire(self) -> dict:
        return {"type": "floor_idle", "channel": self.channel_id}


@dataclass(frozen=True)
class FloorRevoked:
    """The server took the floor away from ``session_id``; sent to that session only."""

    channel_id: int
    session_id: str
    reason: str  # a RevokeReason value

    def to_wire(self) -> dict:
        return {"type": "floor_revoked", "channel": self.channel_id, "reason": str(self.reason)}


FloorEvent = Union[FloorTaken, FloorIdle, FloorRevoked]


@dataclass(frozen=True)
class Grant:
    """``floor_request`` succeeded; the talker may talk for at most ``max_ms``."""

    max_ms: int

    def to_wire(self) -> dict:
        return {"granted": True, "max_ms": self.max_ms}


@dataclass(frozen=True)
class Denial:
    """``floor_request`` failed because someone else holds the floor (no queueing)."""

    holder: Holder
    reason: str = "busy"

    def to_wire(self) -> dict:
        return {"granted": False, "reason": self.reason, "holder": self.holder.to_wire()}
