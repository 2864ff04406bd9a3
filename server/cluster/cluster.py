"""One node's part in a site of several: heartbeat, the bus, the media relay, sessions.

A Cluster is attached to the node's Hub when the site's state is in Redis. It keeps
- the node's registry record (relay address, public URL, channels it has listeners on),
  renewed every second, and everyone else's, from which it derives where a channel's
  packets must go (`relay_packet`, the hot path: one dict lookup);
- the bus, a Redis pub/sub channel: a node that changed a floor says so and every node
  re-reads that floor from the store and tells its members; a node whose listeners
  changed says so and talkers' nodes re-read its record; a node that took over a
  resumed session says so and the old node drops its copy;
- session records, so that a client whose node died resumes on another one;
- after Redis lost its data: the secrets put back and the session records rewritten.

Redis failures never propagate to callers: the heartbeat logs one warning per outage and
carries on; the bus resubscribes and then re-reads every floor its members care about.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from ..state.base import LiveStore, LiveStoreError
from . import secrets as site_secrets
from .registry import HEARTBEAT_S, NodeRecord, NodeRegistry
from .relay import MediaRelay
from .session_records import RENEW_EVERY_S, SessionRecord, SessionRecords

if TYPE_CHECKING:
    from ..hub import Hub
    from ..session import ClientSession

logger = logging.getLogger(__name__)

_FAILURES = (RedisError, OSError, LiveStoreError, asyncio.TimeoutError)


class Cluster:
    def __init__(
        self,
        *,
        client: aioredis.Redis,
        prefix: str,
        node_id: str,
        store: LiveStore,
        lease_ms: int,
        relay_key: bytes,
        relay_listen: tuple[str, int],
        relay_announce: tuple[str, int] | None = None,
        secrets: dict[str, bytes] | None = None,
    ) -> None:
        self.node_id = node_id
        self.public_url: str | None = None  # set once the node listens (EmbeddedServer)
        self._client = client
        self._prefix = prefix
        self._store = store
        self._lease_ms = lease_ms
        self._relay_listen = relay_listen
        self._relay_announce = relay_announce
        self._secrets = dict(secrets or {})
        self.relay = MediaRelay(relay_key, self._on_relayed)
        self.registry = NodeRegistry(client, prefix)
        self.records = SessionRecords(client, prefix)
        self._hub: Hub | None = None
        self._listening: set[int] = set()
        self.nodes: dict[str, NodeRecord] = {}
        # channel -> relay addresses of the other nodes with listeners on it
        self._routes: dict[int, tuple[tuple[str, int], ...]] = {}
        self._saved: dict[str, tuple] = {}  # session id -> what its record says
        self._last_full_save = 0.0
        self._announce_pending = False
        self._tasks: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[Any]] = set()
        self._outage = False
        self._bus_lost = False

    @property
    def bus_channel(self) -> str:
        return f"{self._prefix}bus"

    # --- lifecycle -----------------------------------------------------------------

    async def start(self, hub: Hub) -> None:
        self._hub = hub
        host, port = await self.relay.start(*self._relay_listen)
        logger.info("node %s: relay on %s:%d", self.node_id, host, port)
        self._tasks = [
            asyncio.create_task(self._heartbeat(), name="cluster heartbeat"),
            asyncio.create_task(self._listen_bus(), name="cluster bus"),
        ]

    async def stop(self) -> None:
        tasks = self._tasks + list(self._background)
        for task in tasks:
            task.cancel()
        if tasks:
            # Bounded: a Redis call that turns the cancel into its own error is caught
            # above and re-raised, but a stop must never hang on a stuck connection.
            _, stuck = await asyncio.wait(tasks, timeout=2.0)
            for task in stuck:
                logger.warning("node %s: %s did not stop", self.node_id, task.get_name())
        self._tasks = []
        try:
            await asyncio.wait_for(self.registry.remove(self.node_id), timeout=1.0)
        except _FAILURES:
            pass  # the record expires by itself
        self.relay.close()
        await self._client.aclose()

    async def announce(self, public_url: str) -> None:
        """The node listens at `public_url`: publish its record now."""
        self.public_url = public_url
        try:
            await self._publish_record()
            await self._publish("node")
        except _FAILURES as exc:
            logger.warning("node %s: cannot announce itself yet: %s", self.node_id, exc)

    # --- media ---------------------------------------------------------------------

    def relay_packet(self, channel_id: int, token: str, data: bytes) -> None:
        """A local talker's packet: to every other node with listeners on the channel."""
        addresses = self._routes.get(channel_id)
        if addresses:
            self.relay.send(channel_id, token, data, addresses)

    def _on_relayed(self, channel_id: int, tag: bytes, data: bytes) -> None:
        if self._hub is not None:
            self._hub.ingest_relayed(channel_id, tag, data)

    def set_listening(self, channel_id: int, listening: bool) -> None:
        """Whether this node has unmuted listeners on the channel; other nodes learn it
        within a round trip (record rewritten, then a word on the bus)."""
        if listening == (channel_id in self._listening):
            return
        if listening:
            self._listening.add(channel_id)
        else:
            self._listening.discard(channel_id)
        if not self._announce_pending:
            self._announce_pending = True
            self.spawn(self._announce_listening(), "announce listeners")

    async def _announce_listening(self) -> None:
        self._announce_pending = False  # changes from here on get an announcement of their own
        await self._publish_record()
        await self._publish("node")

    def _set_nodes(self, records: dict[str, NodeRecord]) -> None:
        self.nodes = records
        routes: dict[int, list[tuple[str, int]]] = {}
        for record in records.values():
            if record.node_id == self.node_id:
                continue
            for channel_id in record.channels:
                routes.setdefault(channel_id, []).append(record.relay_address)
        self._routes = {ch: tuple(addresses) for ch, addresses in routes.items()}

    def node_urls(self) -> list[str]:
        """The site's nodes as clients reach them, this one first (for `hello`)."""
        others = [r.public_url for i, r in sorted(self.nodes.items()) if i != self.node_id]
        # Once each: the workers of `vpserver --workers` share one URL.
        return list(dict.fromkeys(([self.public_url] if self.public_url else []) + others))

    # --- floors --------------------------------------------------------------------

    def floor_changed(self, channel_id: int, revoked_session: str | None, reason: str | None) -> None:
        """This node changed the channel's floor in the store: every node re-reads it."""
        self.spawn(self._publish("floor", channel=channel_id, revoked=revoked_session, reason=reason),
                    "floor announcement")

    # --- sessions ------------------------------------------------------------------

    async def load_session(self, session_id: str) -> SessionRecord | None:
        """The site's record of a session; None when there is none or Redis fails (the
        client then gets a fresh session, which is what it would get anyway)."""
        try:
            return await self.records.load(session_id)
        except _FAILURES as exc:
            logger.warning("node %s: cannot read session %s: %s", self.node_id, session_id, exc)
            return None

    async def claim_session(self, session: ClientSession) -> None:
        """This node resumed a session another node had: record it here, and tell the
        old node (if alive) to drop its copy. A failure is logged: the next heartbeat
        writes the record again."""
        try:
            await self.records.save([self._record_of(session)])
            self._saved[session.id] = self._signature(session)
            await self._publish("session", session=session.id)
        except _FAILURES as exc:
            logger.warning("node %s: cannot record session %s: %s", self.node_id, session.id, exc)

    def forget_session(self, session_id: str) -> None:
        """The session ended for good: delete its record, if this node still owns it."""
        self._saved.pop(session_id, None)
        self.spawn(self.records.delete(session_id, self.node_id), "session record delete")

    def _record_of(self, session: ClientSession) -> SessionRecord:
        return SessionRecord(
            session_id=session.id, user_id=session.user.id, login_id=session.login_id,
            joined=frozenset(session.joined), muted=frozenset(session.muted), node=self.node_id,
        )

    @staticmethod
    def _signature(session: ClientSession) -> tuple:
        return frozenset(session.joined), frozenset(session.muted), session.login_id

    async def save_sessions(self, *, everything: bool = False) -> None:
        """Write the records whose joins or mutes changed (or all, renewing expiry)."""
        hub = self._hub
        if hub is None:
            return
        changed = []
        for session in hub.resumable_sessions():
            signature = self._signature(session)
            if everything or self._saved.get(session.id) != signature:
                changed.append((session, signature))
        live = {s.id for s in hub.resumable_sessions()}
        for gone in [sid for sid in self._saved if sid not in live]:
            del self._saved[gone]
        await self.records.save([self._record_of(s) for s, _ in changed])
        for session, signature in changed:
            self._saved[session.id] = signature

    # --- heartbeat -----------------------------------------------------------------

    async def _heartbeat(self) -> None:
        while True:
            try:
                await self.beat()
                if self._outage:
                    logger.warning("node %s: redis answers again", self.node_id)
                self._outage = False
            except _FAILURES as exc:
                _reraise_if_cancelled()
                if not self._outage:
                    logger.warning("node %s: heartbeat failed (redis unreachable?): %s", self.node_id, exc)
                self._outage = True
            except Exception:
                _reraise_if_cancelled()
                logger.exception("node %s: heartbeat failed", self.node_id)
            await asyncio.sleep(HEARTBEAT_S)

    async def beat(self) -> None:
        """One heartbeat: notice a Redis that lost its data, renew this node's record,
        read everyone's, and write changed session records."""
        lost = await self._store.detect_data_loss(self._lease_ms)
        if lost:
            for name, value in self._secrets.items():
                await site_secrets.reseed(self._client, self._prefix, name, value)
        await self._publish_record()
        self._set_nodes(await self.registry.load_all())
        now = time.monotonic()
        everything = lost or now - self._last_full_save >= RENEW_EVERY_S
        await self.save_sessions(everything=everything)
        if everything:
            self._last_full_save = now

    async def _publish_record(self) -> None:
        if self.public_url is None or self.relay.address is None:
            return
        host, port = self._relay_announce or self.relay.address
        await self.registry.publish(NodeRecord(
            node_id=self.node_id, public_url=self.public_url, relay_host=host, relay_port=port,
            channels=tuple(sorted(self._listening)),
        ))

    # --- the bus -------------------------------------------------------------------

    async def _publish(self, kind: str, **fields: Any) -> None:
        message = json.dumps({"from": self.node_id, "kind": kind, **fields}, separators=(",", ":"))
        await self._client.publish(self.bus_channel, message)

    async def _listen_bus(self) -> None:
        backoff = 0.2
        while True:
            pubsub = self._client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.bus_channel)
                if self._bus_lost:
                    logger.warning("node %s: bus back; re-reading floors", self.node_id)
                    self._bus_lost = False
                    await self._resync()
                backoff = 0.2
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is not None:
                        self._on_bus(message["data"])
            except _FAILURES as exc:
                _reraise_if_cancelled()
                if not self._bus_lost:
                    logger.warning("node %s: bus lost: %s", self.node_id, exc)
                self._bus_lost = True
            finally:
                try:
                    await pubsub.aclose()
                except _FAILURES:
                    pass
            await asyncio.sleep(backoff)
            backoff = min(2.0, backoff * 2)

    async def _resync(self) -> None:
        """After missing bus messages: every floor our members care about, from the store."""
        hub = self._hub
        if hub is None:
            return
        self._set_nodes(await self.registry.load_all())
        for channel_id in list(hub.members):
            await hub.floor.observe(channel_id)

    def _on_bus(self, data: bytes | str) -> None:
        try:
            message = json.loads(data)
            sender, kind = message["from"], message["kind"]
        except (ValueError, KeyError, TypeError):
            logger.warning("bus: malformed message %r", data[:200])
            return
        if sender == self.node_id or self._hub is None:
            return
        try:
            if kind == "floor":
                revoked, reason = message.get("revoked"), message.get("reason")
                self.spawn(self._hub.floor.observe(
                    int(message["channel"]),
                    revoked if isinstance(revoked, str) else None,
                    reason if isinstance(reason, str) else None,
                ), "floor observe")
            elif kind == "node":
                self.spawn(self._refresh_node(str(sender)), "node refresh")
            elif kind == "session":
                self.spawn(self._hub.session_moved(str(message["session"])), "session moved")
        except (ValueError, KeyError, TypeError):
            logger.warning("bus: malformed %s message %r", kind, data[:200])

    async def _refresh_node(self, node_id: str) -> None:
        record = await self.registry.get(node_id)
        nodes = dict(self.nodes)
        if record is None:
            nodes.pop(node_id, None)
        else:
            nodes[node_id] = record
        self._set_nodes(nodes)

    def spawn(self, coroutine: Coroutine[Any, Any, Any], what: str) -> None:
        task = asyncio.create_task(coroutine, name=what)
        self._background.add(task)
        task.add_done_callback(lambda t: self._done(t, what))

    def _done(self, task: asyncio.Task[Any], what: str) -> None:
        self._background.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if isinstance(exc, _FAILURES):
            logger.warning("node %s: %s failed: %s", self.node_id, what, exc)
        elif exc is not None:
            logger.error("node %s: %s failed", self.node_id, what, exc_info=exc)

    def stats(self) -> dict[str, Any]:
        return {
            "node": self.node_id,
            "nodes": len(self.nodes),
            "relay_sent": self.relay.sent,
            "relay_received": self.relay.received,
            "relay_refused": self.relay.refused,
        }


def _reraise_if_cancelled() -> None:
    """redis-py can turn a cancellation during a call into a connection error; a loop
    that catches those must still end when its task is cancelled."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
