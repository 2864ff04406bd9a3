"""The live-state store interface: short-lived, shared facts such as floor leases.

Two backends implement it: ``memory`` (one process, the embedded default) and
``redis`` (several nodes). The interface is shaped after what Redis can do atomically, so
that the memory backend never promises more than Redis will keep:

- ``floor_acquire``  ``SET floor:{ch} <lease> NX PX ttl``
- ``floor_replace``  Lua: replace the value only if its token is the expected one
- ``floor_renew``    Lua: ``PEXPIRE`` only if the stored token matches
- ``floor_release``  Lua: ``DEL`` only if the stored token matches
- ``floor_get``      ``GET``

Expiry is decided by the store's own clock: an expired lease is absent for every method.
All methods are coroutines to be awaited on the server's asyncio loop.
"""

from __future__ import annotations

import abc
import enum
import json
from dataclasses import asdict, dataclass


class Priority(enum.StrEnum):
    """How hard a talker holds the floor: an emergency talker cannot be pre-empted."""

    NORMAL = "normal"
    EMERGENCY = "emergency"


class LiveStoreError(Exception):
    """The live-state store failed or was used wrongly; the message names the state."""


class LiveStoreClosedError(LiveStoreError):
    """A method was called after ``close()``."""


class LiveStoreRecovering(LiveStoreError):
    """The store lost its data (Redis restarted without persistence): floors are not
    granted until every lease it lost has been noticed by its holder (one lease)."""

    def __init__(self, wait_ms: int) -> None:
        super().__init__(
            f"the site's state store restarted and lost its floors; grants resume in {wait_ms} ms"
        )
        self.wait_ms = wait_ms


@dataclass(frozen=True)
class FloorLease:
    """Who holds one channel's floor, stored under the channel's key.

    ``token`` is a fresh random string per grant: renew, release and replace only act when
    the caller presents the token it was granted, so a late call from a previous holder can
    never touch a newer holder's lease. ``since`` is wall-clock unix seconds (it goes on the
    wire); expiry is not stored here, it is the store's business.
    """

    channel_id: int
    token: str
    session_id: str
    user_id: int
    name: str
    priority: str  # a Priority value: "normal" | "emergency"
    since: float

    def encode(self) -> str:
        """The lease as a JSON string, the value a networked backend stores."""
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def decode(cls, data: str | bytes) -> FloorLease:
        """Inverse of :meth:`encode`; raises LiveStoreError on a malformed value."""
        try:
            raw = json.loads(data)
            return cls(
                channel_id=int(raw["channel_id"]),
                token=str(raw["token"]),
                session_id=str(raw["session_id"]),
                user_id=int(raw["user_id"]),
                name=str(raw["name"]),
                priority=str(Priority(raw["priority"])),
                since=float(raw["since"]),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise LiveStoreError(f"malformed floor lease {data!r}: {exc}") from exc


class LiveStore(abc.ABC):
    """Shared live state. Every method is called on the asyncio loop and is atomic with
    respect to every other caller of the same store (in any process, for networked ones).
    ``ttl_ms`` must be positive."""

    @abc.abstractmethod
    async def floor_acquire(self, lease: FloorLease, ttl_ms: int) -> FloorLease | None:
        """Store ``lease`` for ``lease.channel_id`` if no live lease is there.

        Returns None when stored, or the current (live) lease when the floor is taken.
        """

    @abc.abstractmethod
    async def floor_replace(self, lease: FloorLease, expected_token: str, ttl_ms: int) -> bool:
        """Replace the channel's lease with ``lease`` only if the live lease's token is
        ``expected_token`` (compare-and-set, used for emergency pre-emption). False when
        the floor is idle or held under another token."""

    @abc.abstractmethod
    async def floor_renew(self, channel_id: int, token: str, ttl_ms: int) -> bool:
        """Reset the lease's time-to-live to ``ttl_ms`` from now, only if the live lease
        has ``token``. False means the holder has lost the floor."""

    @abc.abstractmethod
    async def floor_release(self, channel_id: int, token: str) -> bool:
        """Delete the lease only if the live lease has ``token``; True when deleted."""

    @abc.abstractmethod
    async def floor_get(self, channel_id: int) -> FloorLease | None:
        """The channel's live lease, or None when the floor is idle."""

    async def detect_data_loss(self, quiet_ms: int) -> bool:
        """Look whether the store lost its data since this object last looked; if so,
        hold grants for ``quiet_ms`` (see LiveStoreRecovering). True when this call found
        a loss. A store in this process cannot lose data: False."""
        return False

    @abc.abstractmethod
    async def ping(self) -> bool:
        """True when the store can serve (the health check); never raises."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release the store's resources; later calls raise LiveStoreClosedError and
        ``ping()`` answers False. Closing twice is harmless."""


def check_ttl(ttl_ms: int) -> None:
    """Backends call this first: Redis rejects a non-positive PX, so memory does too."""
    if ttl_ms <= 0:
        raise ValueError(f"ttl_ms must be positive, got {ttl_ms}")
