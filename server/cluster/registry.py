"""The node registry: which nodes of the site are alive, where to reach them, and which
channels each has listeners on.

Each node keeps one record, `{prefix}node:{node_id}`, with a short expiry that its
heartbeat renews; the set `{prefix}nodes` indexes them. A node that dies (even SIGKILL)
vanishes when its record expires, and readers drop it from the index. The channel list
is what lets a talker's node send a channel's packets only to nodes that have someone
listening on it.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field

import redis.asyncio as aioredis

logger = logging.getLogger(__name__)

# A record lives this long without a heartbeat (the heartbeat runs every HEARTBEAT_S).
NODE_TTL_MS = 3000
HEARTBEAT_S = 1.0


@dataclass(frozen=True)
class NodeRecord:
    node_id: str
    public_url: str  # where clients reach the node (handed out in `hello`)
    relay_host: str  # where other nodes send it media
    relay_port: int
    channels: tuple[int, ...] = ()  # channels with at least one unmuted listener here
    started: float = field(default_factory=time.time)

    @property
    def relay_address(self) -> tuple[str, int]:
        return self.relay_host, self.relay_port

    def encode(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def decode(cls, data: str | bytes) -> NodeRecord | None:
        """The record, or None (logged) for a value that is not one."""
        try:
            raw = json.loads(data)
            return cls(
                node_id=str(raw["node_id"]),
                public_url=str(raw["public_url"]),
                relay_host=str(raw["relay_host"]),
                relay_port=int(raw["relay_port"]),
                channels=tuple(int(c) for c in raw["channels"]),
                started=float(raw["started"]),
            )
        except (ValueError, KeyError, TypeError) as exc:
            logger.warning("node registry: malformed record %r: %s", data[:200], exc)
            return None


class NodeRegistry:
    """Reads and writes node records. Coroutines for the node's loop; Redis errors
    propagate (the caller's heartbeat logs them and tries again)."""

    def __init__(self, client: aioredis.Redis, prefix: str) -> None:
        self._client = client
        self._prefix = prefix

    def _key(self, node_id: str) -> str:
        return f"{self._prefix}node:{node_id}"

    @property
    def _index(self) -> str:
        return f"{self._prefix}nodes"

    async def publish(self, record: NodeRecord) -> None:
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.set(self._key(record.node_id), record.encode(), px=NODE_TTL_MS)
            pipe.sadd(self._index, record.node_id)
            await pipe.execute()

    async def remove(self, node_id: str) -> None:
        """A clean shutdown: gone at once rather than when the record expires."""
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.delete(self._key(node_id))
            pipe.srem(self._index, node_id)
            await pipe.execute()

    async def get(self, node_id: str) -> NodeRecord | None:
        value = await self._client.get(self._key(node_id))
        return None if value is None else NodeRecord.decode(value)

    async def load_all(self) -> dict[str, NodeRecord]:
        """Every live node's record, dropping expired ones from the index."""
        ids = sorted(i.decode() if isinstance(i, bytes) else i for i in await self._client.smembers(self._index))
        if not ids:
            return {}
        values = await self._client.mget([self._key(i) for i in ids])
        records: dict[str, NodeRecord] = {}
        stale = []
        for node_id, value in zip(ids, values):
            record = NodeRecord.decode(value) if value is not None else None
            if record is None:
                stale.append(node_id)
            else:
                records[node_id] = record
        if stale:
            await self._client.srem(self._index, *stale)
            logger.info("node registry: %s gone", ", ".join(stale))
        return records
