"""Reconnect state: when to try again, and what to restore when we get back.

`Reconnector` is the session layer's memory across connections. It tracks the link's
state, computes the wait before each attempt (exponential back-off, capped, with jitter so
a site's consoles do not all reconnect in the same instant after a server restart), and
remembers what the dispatcher had set up: the session id to `resume`, the joined channels,
the muted set and the transmit target. After the next `hello`, `ResumePlan.restore_actions`
says what the server did not restore (docs/protocol.md, `resumed` and `joined`), so the
session layer re-applies only that.

It does no I/O and never sleeps: the session layer asks for a delay and waits itself.
All methods: call on the console's event loop only.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any


class ConnectionState(enum.Enum):
    DISCONNECTED = "disconnected"  # not connected and not trying (start, or after stop())
    CONNECTING = "connecting"  # the first attempt, or an attempt after a wait
    CONNECTED = "connected"  # hello answered
    RECONNECTING = "reconnecting"  # lost; waiting `delay` before the next attempt
    FAILED = "failed"  # the server refused our credentials: retrying cannot help


@dataclass(frozen=True)
class RestoreActions:
    """What to send after a (re)connect's hello and offer, in this order."""

    join: tuple[int, ...] = ()  # `join` these (the server did not restore them)
    mute: tuple[tuple[int, bool], ...] = ()  # then `mute` (channel, muted) for these
    dropped: tuple[int, ...] = ()  # were joined, but are no longer our channels


@dataclass(frozen=True)
class ResumePlan:
    """What the dispatcher had set up when the link went down."""

    session_id: str | None = None
    joined: tuple[int, ...] = ()  # in the order they were joined
    muted: frozenset[int] = frozenset()
    target: int | None = None  # the PTT target channel (client-side only)

    def restore_actions(self, hello_response: Mapping[str, Any]) -> RestoreActions:
        """Compare the plan with a hello response; return what is still to be done.

        With `resumed: true` the server re-binds the joins it lists in `joined` (with
        their mutes); anything else the plan had is sent again. Channels no longer in the
        response's `channels` list are dropped rather than re-joined (they would only be
        refused with `forbidden`).
        """
        listed = {c.get("id") for c in hello_response.get("channels") or () if isinstance(c, Mapping)}
        restored: dict[int, bool] = {}
        if hello_response.get("resumed"):
            for item in hello_response.get("joined") or ():
                if isinstance(item, Mapping) and isinstance(item.get("channel"), int):
                    restored[item["channel"]] = bool(item.get("muted", False))
        join: list[int] = []
        mute: list[tuple[int, bool]] = []
        dropped: list[int] = []
        for cid in self.joined:
            if cid not in listed:
                dropped.append(cid)
                continue
            want_muted = cid in self.muted
            if cid in restored:
                if restored[cid] != want_muted:
                    mute.append((cid, want_muted))
            else:
                join.append(cid)
                if want_muted:  # a fresh join starts unmuted
                    mute.append((cid, True))
        return RestoreActions(tuple(join), tuple(mute), tuple(dropped))


class Reconnector:
    """Back-off and resume memory for one console's signaling link.

    Delays: `base * factor**n` for the n-th consecutive failure, capped at `max_delay`,
    times `jitter()` (a multiplier; the default draws from [0.5, 1.0], which keeps the cap).
    A connection that stayed up `stable_s` or longer resets the back-off; one that drops
    sooner does not, so a flapping link keeps backing off.
    """

    def __init__(
        self,
        clock: Callable[[], float],
        base: float = 0.5,
        factor: float = 2.0,
        max_delay: float = 30.0,
        jitter: Callable[[], float] | None = None,
        *,
        stable_s: float = 10.0,
    ) -> None:
        if base <= 0 or factor < 1 or max_delay < base:
            raise ValueError(f"bad back-off: base={base} factor={factor} max_delay={max_delay}")
        self._clock = clock
        self.base = base
        self.factor = factor
        self.max_delay = max_delay
        self.stable_s = stable_s
        self._jitter = jitter or (lambda: random.uniform(0.5, 1.0))
        self._state = ConnectionState.DISCONNECTED
        self._failures = 0  # consecutive attempts since the last stable connection
        self._connected_at: float | None = None
        self._retry_at: float | None = None
        self._session_id: str | None = None
        self._joined: list[int] = []
        self._muted: set[int] = set()
        self._target: int | None = None

    # --- link state ----------------------------------------------------------------

    @property
    def state(self) -> ConnectionState:
        return self._state

    @property
    def attempts(self) -> int:
        """Consecutive failed attempts counted towards the back-off."""
        return self._failures

    @property
    def retry_at(self) -> float | None:
        """Clock time of the next attempt while RECONNECTING (for "retrying in 4 s")."""
        return self._retry_at if self._state is ConnectionState.RECONNECTING else None

    def on_connecting(self) -> None:
        """An attempt starts now (the first one, or after a wait)."""
        self._state = ConnectionState.CONNECTING
        self._retry_at = None

    def on_connected(self, session_id: str | None = None) -> None:
        """hello was answered; `session_id` is the response's `session`."""
        self._state = ConnectionState.CONNECTED
        self._connected_at = self._clock()
        self._retry_at = None
        if session_id is not None:
            self._session_id = session_id

    def on_lost(self) -> float:
        """The link dropped, or an attempt failed: return how long to wait before the next."""
        self._note_lost()
        delay = self.next_delay()
        self._retry_at = self._clock() + delay
        return delay

    def on_failover(self, delay: float) -> float:
        """The link dropped, or an attempt failed, and another node of the site is still
        to be tried in this round (vpdesk.core.nodes): wait only `delay` (short), without
        counting towards the back-off. Returns `delay`."""
        self._note_lost()
        delay = max(0.0, delay)
        self._retry_at = self._clock() + delay
        return delay

    def _note_lost(self) -> None:
        if self._connected_at is not None and self._clock() - self._connected_at >= self.stable_s:
            self._failures = 0
        self._connected_at = None
        self._state = ConnectionState.RECONNECTING

    def next_delay(self) -> float:
        """The wait before the next attempt; counts one more failure."""
        raw = self.base * self.factor ** min(self._failures, 64)  # the cap applies long before
        self._failures += 1
        return max(0.0, min(self.max_delay, raw) * self._jitter())

    def on_auth_failed(self) -> None:
        """hello was refused (close 4001): stop retrying until the user logs in again."""
        self._state = ConnectionState.FAILED
        self._retry_at = None
        self._session_id = None  # a new login starts a new session

    def stop(self) -> None:
        """The user disconnected (or quit): no more attempts; back-off starts over."""
        self._state = ConnectionState.DISCONNECTED
        self._failures = 0
        self._connected_at = None
        self._retry_at = None

    # --- what to restore -----------------------------------------------------------

    def remember_join(self, channel: int) -> None:
        if channel not in self._joined:
            self._joined.append(channel)

    def remember_leave(self, channel: int) -> None:
        if channel in self._joined:
            self._joined.remove(channel)
        self._muted.discard(channel)

    def remember_mute(self, channel: int, muted: bool) -> None:
        if muted:
            self._muted.add(channel)
        else:
            self._muted.discard(channel)

    def remember_target(self, channel: int | None) -> None:
        self._target = channel

    def forget_channels(self, channels: Iterable[int]) -> None:
        """Channels we are no longer a member of (channels_changed removed them)."""
        for cid in channels:
            self.remember_leave(cid)
            if self._target == cid:
                self._target = None

    def resume_plan(self) -> ResumePlan:
        """The session id for hello's `resume` and the setup to restore after it."""
        return ResumePlan(
            session_id=self._session_id,
            joined=tuple(self._joined),
            muted=frozenset(c for c in self._muted if c in self._joined),
            target=self._target,
        )
