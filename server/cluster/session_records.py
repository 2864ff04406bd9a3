"""Session records: what a client's session needs to be resumed on another node.

`{prefix}session:{session_id}` is a hash: the user, the login, the joined and muted
channels, and the node that has the session now. The owning node writes it when the
joins or mutes change and renews its expiry while the session lives; after the node dies
the record outlives it by more than the resume grace, so the client can `resume` on any
other node. Only the owning node may delete a record (the check is atomic), so a node
dropping its stale copy never deletes the record the new node just took over.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

import redis.asyncio as aioredis

logger = logging.getLogger(__name__)

# Longer than the hub's resume grace (60 s) plus the renewal period.
RECORD_TTL_MS = 90_000
RENEW_EVERY_S = 20.0

# KEYS[1] the record   ARGV[1] the node that asks
# returns 1 when deleted; 0 when the record is gone or another node owns it
_DELETE_IF_OWNER = """
if redis.call('HGET', KEYS[1], 'node') == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


@dataclass(frozen=True)
class SessionRecord:
    session_id: str
    user_id: int
    login_id: str | None
    joined: frozenset[int]
    muted: frozenset[int]
    node: str

    def fields(self) -> dict[str, str]:
        return {
            "user_id": str(self.user_id),
            "login_id": self.login_id or "",
            "joined": json.dumps(sorted(self.joined)),
            "muted": json.dumps(sorted(self.muted)),
            "node": self.node,
        }

    @classmethod
    def from_fields(cls, session_id: str, raw: dict) -> SessionRecord | None:
        text = {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
                for k, v in raw.items()}
        try:
            return cls(
                session_id=session_id,
                user_id=int(text["user_id"]),
                login_id=text["login_id"] or None,
                joined=frozenset(int(c) for c in json.loads(text["joined"])),
                muted=frozenset(int(c) for c in json.loads(text["muted"])),
                node=text["node"],
            )
        except (ValueError, KeyError, TypeError) as exc:
            logger.warning("session record %s malformed: %s", session_id, exc)
            return None


class SessionRecords:
    """Reads and writes session records; coroutines, Redis errors propagate."""

    def __init__(self, client: aioredis.Redis, prefix: str) -> None:
        self._client = client
        self._prefix = prefix
        self._delete_if_owner = client.register_script(_DELETE_IF_OWNER)

    def _key(self, session_id: str) -> str:
        return f"{self._prefix}session:{session_id}"

    async def save(self, records: list[SessionRecord]) -> None:
        if not records:
            return
        # One transaction: a reader never sees a record half rewritten.
        async with self._client.pipeline(transaction=True) as pipe:
            for record in records:
                key = self._key(record.session_id)
                pipe.delete(key)
                pipe.hset(key, mapping=record.fields())
                pipe.pexpire(key, RECORD_TTL_MS)
            await pipe.execute()

    async def load(self, session_id: str) -> SessionRecord | None:
        raw = await self._client.hgetall(self._key(session_id))
        return SessionRecord.from_fields(session_id, raw) if raw else None

    async def delete(self, session_id: str, node: str) -> bool:
        return bool(await self._delete_if_owner(keys=[self._key(session_id)], args=[node]))
