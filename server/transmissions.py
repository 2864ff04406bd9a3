"""Transmissions for the audit log: who talked on which channel, when, for how long, and
how it ended — assembled from the floor events the hub already routes.

The FloorController's event orders (server/floor.py) that matter here, per channel:
- granted on an idle floor: FloorTaken;
- released: FloorIdle;
- revoked (max_duration, removed, disconnected): FloorRevoked, then FloorIdle — or a
  FloorTaken of whoever holds the store's lease by then (another node's talker);
- pre-empted by an emergency talker: FloorRevoked(preempted), then the new FloorTaken with
  no FloorIdle between them;
- a lease lost without a revoke reaching us: the next FloorTaken or FloorIdle just comes.
So a transmission ends at FloorIdle or at a FloorTaken of another grant, and its outcome is
the reason of the FloorRevoked seen since it began, else `released` (at an idle) or
`disconnected` (at a takeover: the lease was lost).

Only talkers on this node are recorded, so nodes sharing one audit log do not write every
transmission twice (a FloorTaken also reports other nodes' talkers).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .audit import AuditLog
from .directory import Directory, User
from .floor_events import FloorEvent, FloorIdle, FloorRevoked, FloorTaken, Holder, RevokeReason

if TYPE_CHECKING:
    from .hub import Hub

logger = logging.getLogger(__name__)

RELEASED = "released"


@dataclass
class _Open:
    """A transmission in progress."""

    holder: Holder
    since: float  # FloorTaken.since: unix seconds, as clients were told
    started: float  # our clock at FloorTaken, for the duration
    channel: str | None  # the channel's name then (it may be renamed or deleted later)
    revoked: str | None = None  # the FloorRevoked reason, once one arrives


class TransmissionLog:
    """Turns floor events into `transmission` audit entries. Runs on the event loop:
    `on_floor_event` is a Hub floor observer and `denied` is called by the signaling
    handler; both only queue audit entries, so they never block."""

    def __init__(
        self,
        audit: AuditLog,
        directory: Directory,
        clock: Callable[[], float] = time.time,
        is_local: Callable[[int], bool] | None = None,
    ) -> None:
        self.audit = audit
        self.directory = directory
        self._clock = clock
        # Whether the channel's current floor holder is a session of this node; None: all.
        self._is_local = is_local
        self._open: dict[int, _Open] = {}

    def on_floor_event(self, event: FloorEvent) -> None:
        ch = event.channel_id
        current = self._open.get(ch)
        if isinstance(event, FloorRevoked):
            if current is not None:
                current.revoked = str(event.reason)
        elif isinstance(event, FloorIdle):
            if current is not None:
                self._finish(ch, current, current.revoked or RELEASED)
        elif isinstance(event, FloorTaken):
            if current is not None:
                if current.holder == event.holder and current.since == event.since:
                    return  # the same grant announced again (a reconcile)
                self._finish(ch, current, current.revoked or RevokeReason.DISCONNECTED)
            if self._is_local is None or self._is_local(ch):
                self._open[ch] = _Open(event.holder, event.since, self._clock(), self._channel_name(ch))

    def denied(self, channel_id: int, user: User, holder: Holder | None, *, reason: str = "busy") -> None:
        """A floor_request was refused because `holder` talks (kind `floor_denied`)."""
        self.audit.record(
            "floor_denied",
            actor=user,
            channel_id=channel_id,
            channel=self._channel_name(channel_id),
            reason=reason,
            holder_id=holder.user_id if holder is not None else None,
            holder=holder.name if holder is not None else None,
        )

    def open_transmissions(self) -> dict[int, Holder]:
        """Channel -> holder of the transmissions not finished yet (for tests and stats)."""
        return {ch: t.holder for ch, t in self._open.items()}

    def _finish(self, channel_id: int, transmission: _Open, outcome: str) -> None:
        del self._open[channel_id]
        duration_ms = max(0, round((self._clock() - transmission.started) * 1000))
        self.audit.transmission(
            channel_id,
            transmission.channel,
            transmission.holder.user_id,
            transmission.holder.name,
            transmission.since,
            duration_ms,
            str(outcome),
        )

    def _channel_name(self, channel_id: int) -> str | None:
        try:
            channel = self.directory.get_channel(channel_id)
        except Exception:  # a directory hiccup must not lose the transmission itself
            logger.exception("transmissions: channel %s lookup failed", channel_id)
            return None
        return channel.name if channel is not None else None


def attach_transmission_log(hub: Hub, audit: AuditLog) -> TransmissionLog:
    """Record the hub's transmissions in `audit`; call once, on the loop, after creating
    the hub. Returns the log (signaling calls its `denied`)."""

    def is_local(channel_id: int) -> bool:
        lease = hub.floor.current(channel_id)
        return lease is not None and lease.session_id in hub.sessions

    log = TransmissionLog(audit, hub.directory, is_local=is_local)
    hub.floor_observers.append(log.on_floor_event)
    return log
