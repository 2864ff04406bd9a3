"""The in-process live-state store: the embedded default for a single server process."""

from __future__ import annotations

import logging
import time
from typing import Callable

from server.state.base import FloorLease, LiveStore, LiveStoreClosedError, check_ttl

log = logging.getLogger(__name__)


class MemoryLiveStore(LiveStore):
    """LiveStore in a dict, for one process and one asyncio loop.

    Atomicity comes from never awaiting inside a method: each coroutine runs to completion
    without yielding, so it behaves like a single Redis command or Lua script. Expired
    leases are purged lazily whenever their key is touched, as Redis does on access.
    ``clock`` is in seconds and only needs to be monotonic; tests inject a fake one.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        # channel_id -> (lease, deadline on self._clock)
        self._floors: dict[int, tuple[FloorLease, float]] = {}
        self._closed = False

    def _live(self, channel_id: int) -> FloorLease | None:
        """The unexpired lease for the channel, dropping an expired one."""
        entry = self._floors.get(channel_id)
        if entry is None:
            return None
        lease, deadline = entry
        if self._clock() >= deadline:
            # Redis removes the key at its deadline: at `deadline` it is already gone.
            del self._floors[channel_id]
            log.debug("memory store ch=%s session=%s lease expired", channel_id, lease.session_id)
            return None
        return lease

    def _put(self, lease: FloorLease, ttl_ms: int) -> None:
        self._floors[lease.channel_id] = (lease, self._clock() + ttl_ms / 1000.0)

    def _check_open(self) -> None:
        if self._closed:
            raise LiveStoreClosedError("memory live store is closed")

    async def floor_acquire(self, lease: FloorLease, ttl_ms: int) -> FloorLease | None:
        self._check_open()
        check_ttl(ttl_ms)
        current = self._live(lease.channel_id)
        if current is not None:
            return current
        self._put(lease, ttl_ms)
        return None

    async def floor_replace(self, lease: FloorLease, expected_token: str, ttl_ms: int) -> bool:
        self._check_open()
        check_ttl(ttl_ms)
        current = self._live(lease.channel_id)
        if current is None or current.token != expected_token:
            return False
        self._put(lease, ttl_ms)
        return True

    async def floor_renew(self, channel_id: int, token: str, ttl_ms: int) -> bool:
        self._check_open()
        check_ttl(ttl_ms)
        current = self._live(channel_id)
        if current is None or current.token != token:
            return False
        self._put(current, ttl_ms)
        return True

    async def floor_release(self, channel_id: int, token: str) -> bool:
        self._check_open()
        current = self._live(channel_id)
        if current is None or current.token != token:
            return False
        del self._floors[channel_id]
        return True

    async def floor_get(self, channel_id: int) -> FloorLease | None:
        self._check_open()
        return self._live(channel_id)

    async def ping(self) -> bool:
        return not self._closed

    async def close(self) -> None:
        self._closed = True
        self._floors.clear()
