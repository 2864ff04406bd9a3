"""FloorController: the server's rules for one talker per channel.

The floor itself is a lease in the LiveStore (shared by every node); this controller keeps
a local view of it for the channels it has seen, grants and renews the leases of its own
sessions, enforces the maximum talk time, and reports every change as a FloorEvent through
``on_event``. Clients never decide who talks.

Local state, all touched only on the asyncio loop:
- ``_owned``: leases this controller granted (it renews them);
- ``_view``: the last lease seen per channel, owned or not (``current()``, and the
  channels whose expiry ``tick()`` watches);
- ``_held``: session -> channels it talks on (``held_by()``, the media hot path).
Every change to them that depends on the store happens under the channel's asyncio.Lock,
so the local view and the store cannot disagree because of interleaved coroutines.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Set
from dataclasses import dataclass
from typing import Callable

from server.floor_events import (
    Denial,
    FloorEvent,
    FloorIdle,
    FloorRevoked,
    FloorTaken,
    Grant,
    Holder,
    RevokeReason,
)
from server.state.base import FloorLease, LiveStore, LiveStoreError, Priority

__all__ = [
    "Denial",
    "FloorController",
    "FloorEvent",
    "FloorIdle",
    "FloorRevoked",
    "FloorTaken",
    "Grant",
    "Holder",
    "RevokeReason",
]

log = logging.getLogger(__name__)

# Returned by held_by() for a session that talks nowhere: shared, so the hot path never
# allocates.
_NO_CHANNELS: frozenset[int] = frozenset()
_REASONS = frozenset(r.value for r in RevokeReason)


@dataclass(slots=True)
class _Owned:
    """A lease this controller granted and keeps renewing."""

    lease: FloorLease
    granted_at: float  # on the controller's monotonic clock, for max_talk_ms


class FloorController:
    """Grants, renews and revokes floors. Every method runs on the server's asyncio loop.

    ``clock`` (monotonic seconds) measures talk time; ``wall_clock`` (unix seconds) stamps
    ``since``. ``on_event`` is called synchronously, in order, from inside the controller;
    it must not raise (an exception is logged and swallowed so floor state stays intact)
    and must not await the controller.
    """

    def __init__(
        self,
        store: LiveStore,
        *,
        lease_ms: int = 3000,
        max_talk_ms: int = 60_000,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        on_event: Callable[[FloorEvent], None],
        on_change: Callable[[int, str | None, str | None], None] | None = None,
    ) -> None:
        if lease_ms <= 0 or max_talk_ms <= 0:
            raise ValueError(f"lease_ms and max_talk_ms must be positive, got {lease_ms}, {max_talk_ms}")
        self._store = store
        self._lease_ms = lease_ms
        self._max_talk_ms = max_talk_ms
        self._clock = clock
        self._wall_clock = wall_clock
        self._on_event = on_event
        # Told (channel, revoked session or None, reason or None) whenever this controller
        # has changed a floor in the store, so that other nodes look at it (the cluster).
        self.on_change = on_change
        self._owned: dict[int, _Owned] = {}
        self._view: dict[int, FloorLease] = {}
        self._held: dict[str, set[int]] = {}
        self._locks: dict[int, asyncio.Lock] = {}
        self._task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ queries (sync)

    @property
    def max_talk_ms(self) -> int:
        return self._max_talk_ms

    @max_talk_ms.setter
    def max_talk_ms(self, value: int) -> None:
        """An admin's new limit: applies to floors held now (checked each tick) and later."""
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"max_talk_ms must be a positive integer, got {value!r}")
        self._max_talk_ms = value

    def held_by(self, session_id: str) -> Set[int]:
        """Channels on which ``session_id`` holds the floor granted by this controller.

        Called per media packet: one dict lookup, no allocation. It returns the live set
        object itself: callers must not mutate it and must not keep it across awaits (it
        is replaced when the session next gains a floor after holding none).
        """
        return self._held.get(session_id, _NO_CHANNELS)

    def current(self, channel_id: int) -> FloorLease | None:
        """The local view of the channel's lease (no store round trip). It may lag the
        store by up to one tick for floors granted by other nodes."""
        return self._view.get(channel_id)

    async def floor_state(self, channel_id: int) -> dict:
        """The PROTOCOL ``Floor`` shape, read from the store (the authority).

        Also brings the local view up to date, emitting the events members missed if it
        was stale (e.g. a lease that expired since the last tick).
        """
        async with self._lock(channel_id):
            lease = await self._store.floor_get(channel_id)
            self._reconcile(channel_id, lease)
        if lease is None:
            return {"state": "idle"}
        return {"state": "taken", "holder": Holder.from_lease(lease).to_wire(), "since": lease.since}

    async def observe(
        self, channel_id: int, revoked_session: str | None = None, reason: str | None = None
    ) -> None:
        """Another node changed the channel's floor: read it from the store and tell our
        members. `revoked_session`/`reason` say why a lease was taken away, for when the
        talker is ours (an admin on another node removed them)."""
        hint = None
        if revoked_session is not None and reason in _REASONS:
            hint = (revoked_session, RevokeReason(reason))
        async with self._lock(channel_id):
            self._reconcile(channel_id, await self._store.floor_get(channel_id), hint)

    # ------------------------------------------------------------------ requests

    async def request(
        self,
        channel_id: int,
        session_id: str,
        user_id: int,
        name: str,
        priority: str = Priority.NORMAL,
    ) -> Grant | Denial:
        """A session asks to talk on a channel (``floor_request``).

        Idle: granted, FloorTaken. Already held by this session: granted again with the
        remaining talk time, no event (an emergency request upgrades the lease so it can no
        longer be pre-empted). Held by another session: Denial, unless this request is an
        emergency and the holder is not, in which case the holder is pre-empted
        (FloorRevoked "preempted", then FloorTaken). Raises ValueError for an unknown
        priority.
        """
        prio = Priority(priority)
        async with self._lock(channel_id):
            owned = self._owned.get(channel_id)
            if owned is not None and owned.lease.session_id == session_id:
                grant = await self._regrant(owned, prio)
                if grant is not None:
                    return grant
                # The lease was lost (reconciled and announced); fall through to a fresh try.
            return await self._acquire(channel_id, session_id, user_id, name, prio)

    async def _regrant(self, owned: _Owned, prio: Priority) -> Grant | None:
        """Grant again to the session that already holds the floor, confirming with the
        store that the lease is still ours. None when it was lost."""
        lease = owned.lease
        ch = lease.channel_id
        if prio is Priority.EMERGENCY and lease.priority != Priority.EMERGENCY:
            upgraded = FloorLease(
                channel_id=ch,
                token=_new_token(),
                session_id=lease.session_id,
                user_id=lease.user_id,
                name=lease.name,
                priority=Priority.EMERGENCY,
                since=lease.since,
            )
            still_ours = await self._store.floor_replace(upgraded, lease.token, self._lease_ms)
            if still_ours:
                owned.lease = upgraded
                self._view[ch] = upgraded
                log.info("floor ch=%s session=%s upgraded to emergency", ch, lease.session_id)
                self._changed(ch)
        else:
            still_ours = await self._store.floor_renew(ch, lease.token, self._lease_ms)
        if not still_ours:
            self._reconcile(ch, await self._store.floor_get(ch))
            return None
        elapsed_ms = (self._clock() - owned.granted_at) * 1000.0
        log.debug("floor ch=%s session=%s granted again", ch, lease.session_id)
        return Grant(max_ms=max(0, int(self._max_talk_ms - elapsed_ms)))

    async def _acquire(
        self, channel_id: int, session_id: str, user_id: int, name: str, prio: Priority
    ) -> Grant | Denial:
        lease = FloorLease(
            channel_id=channel_id,
            token=_new_token(),
            session_id=session_id,
            user_id=user_id,
            name=name,
            priority=prio,
            since=self._wall_clock(),
        )
        # Retries only matter with other nodes: a compare-and-set can lose to a change made
        # between our read and our write. Three rounds are plenty for human press rates.
        current: FloorLease | None = None
        for _ in range(3):
            current = await self._store.floor_acquire(lease, self._lease_ms)
            if current is None:
                self._take(lease)
                return Grant(max_ms=self._max_talk_ms)
            takeover = current.session_id == session_id or (
                prio is Priority.EMERGENCY and current.priority != Priority.EMERGENCY
            )
            if not takeover:
                break
            if await self._store.floor_replace(lease, current.token, self._lease_ms):
                self._take(lease, displaced=current)
                return Grant(max_ms=self._max_talk_ms)
        assert current is not None
        self._reconcile(channel_id, current)
        log.info(
            "floor ch=%s session=%s denied: held by session=%s",
            channel_id, session_id, current.session_id,
        )
        return Denial(holder=Holder.from_lease(current))

    def _take(self, lease: FloorLease, displaced: FloorLease | None = None) -> None:
        """Record a lease just written to the store and announce it. ``displaced`` is the
        lease it replaced (pre-emption), whose talker is told first."""
        ch = lease.channel_id
        old = self._owned.get(ch)
        if old is not None:
            # Our previous holder of this channel is gone: either pre-empted just now, or
            # its lease expired in the store before a tick noticed.
            self._forget(ch)
        if displaced is not None and displaced.session_id != lease.session_id:
            log.info(
                "floor ch=%s session=%s preempted by session=%s",
                ch, displaced.session_id, lease.session_id,
            )
            self._emit(FloorRevoked(ch, displaced.session_id, RevokeReason.PREEMPTED))
        elif old is not None and old.lease.session_id != lease.session_id:
            self._emit(FloorRevoked(ch, old.lease.session_id, RevokeReason.DISCONNECTED))
        self._owned[ch] = _Owned(lease=lease, granted_at=self._clock())
        self._view[ch] = lease
        held = self._held.get(lease.session_id)
        if held is None:
            held = self._held[lease.session_id] = set()
        held.add(ch)
        log.info("floor ch=%s session=%s granted (%s)", ch, lease.session_id, lease.priority)
        self._emit(FloorTaken(ch, Holder.from_lease(lease), lease.since))
        if displaced is not None and displaced.session_id != lease.session_id:
            self._changed(ch, displaced.session_id, RevokeReason.PREEMPTED)
        else:
            self._changed(ch)

    # ------------------------------------------------------------------ releases

    async def release(self, channel_id: int, session_id: str) -> bool:
        """The talker lets go (``floor_release``). Only the holder's release counts:
        True and FloorIdle when ``session_id`` held the floor here, else False."""
        async with self._lock(channel_id):
            owned = self._owned.get(channel_id)
            if owned is None or owned.lease.session_id != session_id:
                log.debug("floor ch=%s session=%s release ignored: not the holder", channel_id, session_id)
                return False
            self._forget(channel_id)
            log.info("floor ch=%s session=%s released", channel_id, session_id)
            await self._release_in_store(owned.lease)
            return True

    async def revoke(self, channel_id: int, reason: str = RevokeReason.REMOVED) -> bool:
        """Take the floor from whoever holds it, on any node (FloorRevoked, FloorIdle).
        False when the floor was idle."""
        reason = RevokeReason(reason)
        async with self._lock(channel_id):
            owned = self._owned.get(channel_id)
            if owned is not None:
                await self._revoke_owned(owned, reason)
                return True
            # Another node's talker: release it with its own token, so a floor that changed
            # hands between our read and our delete is left alone.
            lease = await self._store.floor_get(channel_id)
            if lease is None:
                self._reconcile(channel_id, None)
                return False
            if not await self._store.floor_release(channel_id, lease.token):
                self._reconcile(channel_id, await self._store.floor_get(channel_id))
                return False
            self._view.pop(channel_id, None)
            log.info("floor ch=%s session=%s revoked: %s", channel_id, lease.session_id, reason)
            self._emit(FloorRevoked(channel_id, lease.session_id, reason))
            self._emit(FloorIdle(channel_id))
            self._changed(channel_id, lease.session_id, reason)
            return True

    async def release_session(
        self, session_id: str, reason: str = RevokeReason.DISCONNECTED
    ) -> frozenset[int]:
        """Revoke every floor ``session_id`` holds here (its session closed, or its user
        was removed): FloorRevoked then FloorIdle per channel. Returns those channels."""
        reason = RevokeReason(reason)
        freed: set[int] = set()
        for ch in list(self._held.get(session_id, ())):
            async with self._lock(ch):
                owned = self._owned.get(ch)
                # Re-check under the lock: the floor may have changed hands while we waited.
                if owned is not None and owned.lease.session_id == session_id:
                    await self._revoke_owned(owned, reason)
                    freed.add(ch)
        return frozenset(freed)

    async def _revoke_owned(self, owned: _Owned, reason: RevokeReason) -> None:
        """Under the channel's lock: end one of our leases and announce it."""
        lease = owned.lease
        ch = lease.channel_id
        self._forget(ch)
        log.info("floor ch=%s session=%s revoked: %s", ch, lease.session_id, reason)
        self._emit(FloorRevoked(ch, lease.session_id, reason))
        await self._release_in_store(lease)

    async def _release_in_store(self, lease: FloorLease) -> None:
        """Under the channel's lock, after ``_forget``: delete our lease from the store
        and announce what the channel's floor is now."""
        ch = lease.channel_id
        try:
            if await self._store.floor_release(ch, lease.token):
                self._emit(FloorIdle(ch))
                self._changed(ch)
            else:
                # The lease had already gone (expired, or another node took it): say what
                # the store holds now rather than a blind "idle".
                self._announce(ch, await self._store.floor_get(ch))
        except LiveStoreError as exc:
            # The store is unreachable. Our talker has stopped all the same (a session
            # closing must not fail on this), and nobody renews the lease any more, so it
            # expires in the store by itself within lease_ms.
            log.warning("floor ch=%s session=%s lease left to expire: %s", ch, lease.session_id, exc)
            self._emit(FloorIdle(ch))

    # ------------------------------------------------------------------ lease maintenance

    async def tick(self) -> None:
        """One round of lease maintenance (the background task calls it every lease/3):
        revoke talkers past max_talk_ms, renew our leases, and notice leases of other
        nodes that expired or changed in the store."""
        now = self._clock()
        for ch in list(self._owned):
            async with self._lock(ch):
                owned = self._owned.get(ch)
                if owned is None:
                    continue  # released while we waited for the lock
                if (now - owned.granted_at) * 1000.0 >= self._max_talk_ms:
                    await self._revoke_owned(owned, RevokeReason.MAX_DURATION)
                elif not await self._store.floor_renew(ch, owned.lease.token, self._lease_ms):
                    self._reconcile(ch, await self._store.floor_get(ch))
        for ch in [ch for ch in self._view if ch not in self._owned]:
            async with self._lock(ch):
                if ch in self._owned or ch not in self._view:
                    continue
                self._reconcile(ch, await self._store.floor_get(ch))

    async def start(self) -> None:
        """Start the background maintenance task (idempotent)."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="floor-leases")

    async def stop(self) -> None:
        """Cancel the maintenance task and wait for it. Leases are left to expire in the
        store: the sessions' own shutdown releases what should be released."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass

    async def _run(self) -> None:
        interval = self._lease_ms / 3000.0
        while True:
            await asyncio.sleep(interval)
            try:
                await self.tick()
            except LiveStoreError as exc:
                # Expected while the store is down: one line per round, no traceback.
                log.warning("floor lease maintenance failed: %s", exc)
            except Exception:
                # A store outage must not kill maintenance; the next round retries and
                # leases the store lost are reconciled then.
                log.exception("floor lease maintenance failed")

    # ------------------------------------------------------------------ local state

    def _reconcile(
        self,
        channel_id: int,
        lease: FloorLease | None,
        hint: tuple[str, RevokeReason] | None = None,
    ) -> None:
        """Under the channel's lock: make the local view match ``lease`` (the store's
        answer) and emit what members have not been told yet. ``hint``: (session,
        reason) another node gave for taking that session's lease away."""
        owned = self._owned.get(channel_id)
        if owned is not None:
            if lease is not None and lease.token == owned.lease.token:
                return
            # Our lease is gone from the store: expired (we stalled or the store lost it)
            # or replaced by an emergency talker on another node.
            reason = hint[1] if hint is not None and hint[0] == owned.lease.session_id else (
                RevokeReason.PREEMPTED
                if lease is not None
                and lease.priority == Priority.EMERGENCY
                and owned.lease.priority != Priority.EMERGENCY
                else RevokeReason.DISCONNECTED
            )
            self._forget(channel_id)
            log.warning(
                "floor ch=%s session=%s lease lost: %s", channel_id, owned.lease.session_id, reason
            )
            self._emit(FloorRevoked(channel_id, owned.lease.session_id, reason))
            self._announce(channel_id, lease)
            return
        known = self._view.get(channel_id)
        if lease is None:
            if known is not None:
                log.info("floor ch=%s session=%s lease expired", channel_id, known.session_id)
                self._announce(channel_id, None)
        elif known is None or known.token != lease.token:
            self._announce(channel_id, lease)

    def _announce(self, channel_id: int, lease: FloorLease | None) -> None:
        """Record a floor we do not own (or idle) and tell the members."""
        if lease is None:
            self._view.pop(channel_id, None)
            self._emit(FloorIdle(channel_id))
        else:
            self._view[channel_id] = lease
            self._emit(FloorTaken(channel_id, Holder.from_lease(lease), lease.since))

    def _forget(self, channel_id: int) -> None:
        """Drop our ownership of the channel's floor from every local index."""
        owned = self._owned.pop(channel_id, None)
        self._view.pop(channel_id, None)
        if owned is None:
            return
        held = self._held.get(owned.lease.session_id)
        if held is not None:
            held.discard(channel_id)
            if not held:
                del self._held[owned.lease.session_id]

    def _lock(self, channel_id: int) -> asyncio.Lock:
        lock = self._locks.get(channel_id)
        if lock is None:
            lock = self._locks[channel_id] = asyncio.Lock()
        return lock

    def _changed(self, channel_id: int, revoked_session: str | None = None,
                 reason: str | None = None) -> None:
        if self.on_change is None:
            return
        try:
            self.on_change(channel_id, revoked_session, None if reason is None else str(reason))
        except Exception:
            log.exception("floor ch=%s on_change failed", channel_id)

    def _emit(self, event: FloorEvent) -> None:
        try:
            self._on_event(event)
        except Exception:
            log.exception("floor ch=%s on_event failed for %r", event.channel_id, event)


def _new_token() -> str:
    return secrets.token_urlsafe(16)
