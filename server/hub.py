"""The node's live state: sessions, channel fan-outs, and where floor events go.

One Hub per server node. It owns the FloorController and routes its events to members;
it turns a talker's tapped RTP into forwarded packets; it watches the directory so that
membership changes made elsewhere (the CLI, another node) act on live sessions. Every
method runs on the server's event loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .cluster.relay import lease_tag
from .config import ServerConfig, media_port_number
from .gc_pacer import GarbagePacer
from .directory import Directory, User
from .floor import FloorController
from .floor_events import FloorEvent, FloorIdle, FloorRevoked, FloorTaken, RevokeReason
from .logins import LoginStoreUnavailable
from .media.fast_fanout import c_fanout_enabled, channel_fanout
from .media.forwarder import ChannelFanout
from .media.media_port import MediaPort
from .media.peer import ServerPeer
from .media.udp_batch import OUTBOX
from .protocol import CloseCode
from .session import ClientSession, SessionState, new_session_id
from .state.base import LiveStore

if TYPE_CHECKING:
    from .cluster.cluster import Cluster
    from .logins import LoginStore
    from .transmissions import TransmissionLog

logger = logging.getLogger(__name__)

RESUME_GRACE_S = 60.0
# The poll is one SELECT of the directory's revision (and SQLite's data_version of the
# logins file); a change made by the CLI (a membership, a password that revoked logins)
# acts on live sessions within this.
DIRECTORY_POLL_S = 0.25
# A WebSocket close reason is at most 123 bytes (RFC 6455 5.5).
MAX_CLOSE_REASON_BYTES = 123


class Hub:
    def __init__(
        self,
        config: ServerConfig,
        directory: Directory,
        store: LiveStore,
        *,
        logins: "LoginStore | None" = None,
    ) -> None:
        self.config = config
        self.directory = directory
        self.store = store
        # Where sessions' logins are checked; None (unit tests) leaves logins unchecked.
        self.logins = logins
        self.floor = FloorController(
            store,
            lease_ms=config.floor_lease_ms,
            # An admin's setting (PATCH /api/settings) outlives a restart.
            max_talk_ms=directory.get_settings()["max_talk_ms"] or config.max_talk_ms,
            on_event=self._on_floor_event,
        )
        self.sessions: dict[str, ClientSession] = {}
        self.members: dict[int, set[ClientSession]] = {}
        self.fanouts: dict[int, ChannelFanout] = {}
        # Every session's media on one UDP port (None: a port per connection, aioice's way).
        port = media_port_number(config.media_port)
        self.media_port = MediaPort(port) if port is not None else None
        self.started_at = time.time()
        self._tasks: list[asyncio.Task[None]] = []
        self._revision = -1
        self.packets_dropped_no_floor = 0
        self.websockets: set = set()  # open /ws connections, closed on shutdown
        # Called with every floor event after the members have been told (the audit log's
        # transmission records); an observer's failure is logged, never propagated.
        self.floor_observers: list[Callable[[FloorEvent], None]] = []
        # The audit log's transmission records (create_app sets it); signaling reports
        # denied presses to it.
        self.transmissions: TransmissionLog | None = None
        # The other nodes of the site (None: this node is the whole site). Set before
        # start(); see server.cluster.
        self.cluster: Cluster | None = None
        self.packets_relayed_in = 0
        self.packets_relayed_stale = 0
        self._stale_looks: dict[int, float] = {}
        # Runs the garbage collector between packets (a standalone node; see
        # server.gc_pacer); None leaves collection to CPython or to the embedding console.
        self.gc_pacer: GarbagePacer | None = None

    # --- lifecycle -----------------------------------------------------------------

    async def start(self) -> None:
        if self.cluster is not None:
            self.floor.on_change = self.cluster.floor_changed
            await self.cluster.start(self)
        await self.floor.start()
        self._revision = self.directory.revision()
        self._tasks = [
            asyncio.create_task(self._watch_directory(), name="directory watch"),
            asyncio.create_task(self._expire_detached(), name="session expiry"),
        ]

    async def close_connections(self) -> None:
        """Close every client WebSocket (1001 going away): the node is shutting down."""
        for ws in list(self.websockets):
            await ws.close(code=1001, message=b"server shutting down")

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except asyncio.CancelledError:
                pass
        self._tasks = []
        if self.cluster is not None:
            try:
                # The latest joins and mutes, for the clients resuming on another node.
                await asyncio.wait_for(self.cluster.save_sessions(), timeout=2.0)
            except Exception as exc:  # Redis down: the records a heartbeat wrote stand
                logger.warning("session records not saved at shutdown: %s", exc)
        for session in list(self.sessions.values()):
            # Kept in the site's records: the clients resume on another node.
            await self.close_session(session, forget=False)
        await self.floor.stop()
        if self.media_port is not None:
            self.media_port.close()
        if self.cluster is not None:
            await self.cluster.stop()

    # --- sessions ------------------------------------------------------------------

    def open_session(
        self, user: User, client: dict[str, Any], resume: str | None, login_id: str | None = None
    ) -> tuple[ClientSession, bool]:
        """A fresh session, or the user's detached one when `resume` names it.

        `login_id` is the login of the token that said hello (ended with it).
        """
        previous = self.sessions.get(resume) if resume else None
        if (
            previous is not None
            and previous.user.id == user.id
            and previous.state is SessionState.DETACHED
        ):
            previous.user = user
            previous.client = client
            previous.login_id = login_id
            self._refresh_channels(previous, notify=False)
            previous.log.info("resumed by %s", user.name)
            return previous, True
        session = ClientSession(new_session_id(), user, client, login_id=login_id)
        self.sessions[session.id] = session
        self._refresh_channels(session, notify=False)
        session.log.info("opened for user %s (%s)", user.name, user.role.value)
        return session, False

    async def detach(self, session: ClientSession) -> None:
        """The WebSocket closed: stop talking and media, keep joins/mutes for `resume`."""
        if session.state is not SessionState.ACTIVE:
            return
        session.state = SessionState.DETACHED
        session.detached_at = time.monotonic()
        await self.floor.release_session(session.id, RevokeReason.DISCONNECTED)
        await self._close_media(session)
        await session.stop_writer(flush=False)
        session.log.info("detached; resumable for %.0f s", RESUME_GRACE_S)

    async def close_session(self, session: ClientSession, *, forget: bool = True) -> None:
        """End a session here. `forget`: for good, on every node (its record goes); else
        only this node's copy (shutting down, or the session moved to another node)."""
        if session.state is SessionState.CLOSED:
            return
        session.state = SessionState.CLOSED
        if forget and self.cluster is not None:
            self.cluster.forget_session(session.id)
        await self.floor.release_session(session.id, RevokeReason.DISCONNECTED)
        await self._close_media(session)
        await session.stop_writer(flush=False)
        for members in self.members.values():
            members.discard(session)
        self.sessions.pop(session.id, None)
        session.log.info("closed" if forget else "closed on this node")

    def resumable_sessions(self) -> list[ClientSession]:
        return [s for s in self.sessions.values() if s.state is not SessionState.CLOSED]

    async def adopt_session(self, session_id: str, user: User) -> bool:
        """`resume` named a session this node does not have: take it over from the
        site's records (its node died, or the client moved). True when adopted; it is
        then a detached session here that `open_session` resumes."""
        if self.cluster is None or session_id in self.sessions:
            return False
        record = await self.cluster.load_session(session_id)
        if record is None or record.user_id != user.id:
            return False
        session = ClientSession(session_id, user, {}, login_id=record.login_id)
        session.state = SessionState.DETACHED
        session.detached_at = time.monotonic()
        session.joined = set(record.joined)
        session.muted = set(record.muted) & session.joined
        self.sessions[session_id] = session
        await self.cluster.claim_session(session)
        session.log.info("taken over from node %s", record.node)
        return True

    async def session_moved(self, session_id: str) -> None:
        """Another node took over the session: drop our detached copy (not its record)."""
        session = self.sessions.get(session_id)
        if session is not None and session.state is SessionState.DETACHED:
            await self.close_session(session, forget=False)

    async def end_sessions(
        self, *, user_id: int | None = None, login_id: str | None = None, reason: str
    ) -> int:
        """Close the sessions of a user and/or a login for good (no resume): logout, a
        changed password, a deleted user. Their WebSockets close with 4001 and `reason`.
        Returns how many sessions ended."""
        if user_id is None and login_id is None:
            raise ValueError("end_sessions needs a user_id or a login_id")
        ending = [
            s for s in self.sessions.values()
            if s.state is not SessionState.CLOSED
            and (user_id is None or s.user.id == user_id)
            and (login_id is None or s.login_id == login_id)
        ]
        await self._end(ending, reason)
        return len(ending)

    async def _end(self, sessions: list[ClientSession], reason: str) -> None:
        message = reason.encode("utf-8")[:MAX_CLOSE_REASON_BYTES]
        links = []
        for session in sessions:
            session.log.info("ending: %s", reason)
            link = session.link
            # Closed first, so that the WebSocket's own teardown finds nothing to detach.
            await self.close_session(session)
            if link is not None:
                links.append(link.close(code=CloseCode.UNAUTHORIZED, message=message))
        await asyncio.gather(*links, return_exceptions=True)

    async def _close_media(self, session: ClientSession) -> None:
        peer, session.peer = session.peer, None
        if peer is None:
            return
        for channel_id in session.joined:
            slot = peer.slot_for(channel_id)
            fanout = self.fanouts.get(channel_id)
            if slot is not None and fanout is not None and slot.output is not None:
                fanout.remove(slot.output)
                self._listeners_changed(fanout)
        await peer.close()

    async def _expire_detached(self) -> None:
        while True:
            await asyncio.sleep(5.0)
            cutoff = time.monotonic() - RESUME_GRACE_S
            for session in list(self.sessions.values()):
                if session.state is SessionState.DETACHED and (session.detached_at or 0) < cutoff:
                    await self.close_session(session)

    # --- media ---------------------------------------------------------------------

    def media_for(self, session: ClientSession) -> ServerPeer:
        if session.peer is None:
            session.peer = ServerPeer(
                session.id,
                lambda data, s=session: self.ingest(s, data),
                max_receive_slots=self.config.max_receive_slots,
                announced_address=self.config.announced_address,
                media_port=self.media_port,
            )
        return session.peer

    def ingest(self, session: ClientSession, data: bytes) -> None:
        """A packet from a session's microphone: forward it where it holds the floor.

        The hot path: no floor, no forwarding; a payload type other than the negotiated
        Opus is dropped too, so nothing but Opus reaches a listener.
        """
        channels = self.floor.held_by(session.id)
        if not channels:
            session.packets_dropped_no_floor += 1
            self.packets_dropped_no_floor += 1
            return
        if len(data) < 12 or (data[1] & 0x7F) != session.microphone_payload_type:
            return
        peer = session.peer
        cluster = self.cluster
        for channel_id in channels:
            lease = self.floor.current(channel_id)
            if lease is None:
                continue
            if cluster is not None:
                cluster.relay_packet(channel_id, lease.token, data)
            fanout = self.fanouts.get(channel_id)
            if fanout is None:
                continue
            own = peer.slot_for(channel_id) if peer is not None else None
            # The lease token is new per grant: each transmission is a new run downstream.
            fanout.forward(lease.token, data, exclude=own.output if own is not None else None)
        if self.gc_pacer is not None:
            self.gc_pacer.after_packet()

    def ingest_relayed(self, channel_id: int, tag: bytes, data: bytes) -> None:
        """A packet another node relayed (genuine: the relay checked it): to our
        listeners, if it belongs to the lease we know for the channel. A packet of an
        earlier grant is dropped; one of a grant we have not heard of yet makes us look
        at the store (at most every 100 ms per channel)."""
        lease = self.floor.current(channel_id)
        if lease is None or lease_tag(lease.token) != tag:
            self.packets_relayed_stale += 1
            now = time.monotonic()
            if now - self._stale_looks.get(channel_id, 0.0) >= 0.1 and self.cluster is not None:
                self._stale_looks[channel_id] = now
                self.cluster.spawn(self.floor.observe(channel_id), "floor look")
            return
        self.packets_relayed_in += 1
        fanout = self.fanouts.get(channel_id)
        if fanout is not None:
            fanout.forward(lease.token, data)
        if self.gc_pacer is not None:
            self.gc_pacer.after_packet()

    def fanout(self, channel_id: int) -> ChannelFanout:
        fanout = self.fanouts.get(channel_id)
        if fanout is None:
            # On the shared media port a packet's copies leave in one system call.
            outbox = OUTBOX if self.media_port is not None else None
            fanout = self.fanouts[channel_id] = channel_fanout(channel_id, outbox=outbox)
        return fanout

    def listen(self, session: ClientSession, channel_id: int) -> None:
        """Put the session's slot for `channel_id` into the fan-out unless muted."""
        peer = session.peer
        slot = peer.slot_for(channel_id) if peer is not None else None
        if slot is None or slot.output is None:
            return
        fanout = self.fanout(channel_id)
        if channel_id in session.muted:
            fanout.remove(slot.output)
        else:
            fanout.add(slot.output)
        self._listeners_changed(fanout)

    def unlisten(self, session: ClientSession, channel_id: int) -> None:
        peer = session.peer
        slot = peer.slot_for(channel_id) if peer is not None else None
        fanout = self.fanouts.get(channel_id)
        if slot is not None and fanout is not None and slot.output is not None:
            fanout.remove(slot.output)
            self._listeners_changed(fanout)

    def _listeners_changed(self, fanout: ChannelFanout) -> None:
        if self.cluster is not None:
            self.cluster.set_listening(fanout.channel_id, bool(fanout.outputs))

    def rebind_joined(self, session: ClientSession) -> list[dict[str, Any]]:
        """After an offer: bind remembered joins (from `resume`) that have no slot yet."""
        bindings = []
        peer = session.peer
        for channel_id in sorted(session.joined):
            slot = peer.slot_for(channel_id)
            if slot is None:
                try:
                    slot = peer.bind(channel_id)
                except Exception:  # NoFreeSlot: the client offered fewer slots than before
                    continue
            self.listen(session, channel_id)
            bindings.append({"channel": channel_id, "mid": slot.mid, "muted": channel_id in session.muted})
        return bindings

    # --- floor events --------------------------------------------------------------

    def _on_floor_event(self, event: FloorEvent) -> None:
        if isinstance(event, FloorRevoked):
            session = self.sessions.get(event.session_id)
            if session is not None:
                session.send(event.to_wire())
        else:
            message = event.to_wire()
            for session in self.members.get(event.channel_id, ()):
                session.send(message)
            logger.debug("floor ch=%s %s", event.channel_id, message["type"])
        for observer in self.floor_observers:
            try:
                observer(event)
            except Exception:
                logger.exception("floor observer %r failed", observer)

    # --- directory changes ---------------------------------------------------------

    def _refresh_channels(self, session: ClientSession, *, notify: bool) -> set[int]:
        """Reload the session's channel list; returns the channel ids it lost."""
        channels = {c.id: c for c in self.directory.channels_of(session.user.id)}
        lost = set(session.channels) - set(channels)
        changed = lost or set(channels) != set(session.channels) or any(
            channels[cid] != session.channels.get(cid) for cid in channels
        )
        for cid in session.channels:
            self.members.get(cid, set()).discard(session)
        session.channels = channels
        if session.state is not SessionState.CLOSED:
            for cid in channels:
                self.members.setdefault(cid, set()).add(session)
        if changed and notify:
            session.send({"type": "channels_changed", "channels": session.channel_list()})
        return lost

    async def apply_directory_changes(self) -> None:
        """Act on membership, channel, user and login changes made since the last look."""
        # Logins revoked by another process (`vpserver user passwd`), whichever of its two
        # files that process wrote first.
        if self.logins is not None and self.logins.changed_by_others():
            await self._end_revoked_logins()
        revision = self.directory.revision()
        if revision == self._revision:
            return
        self._revision = revision
        await self._end_revoked_logins()
        for session in list(self.sessions.values()):
            if session.state is SessionState.CLOSED:
                continue
            user = self.directory.get_user(session.user.id)
            if user is None:
                await self._end([session], "user no longer exists")
                continue
            session.user = user
            lost = self._refresh_channels(session, notify=True)
            for channel_id in lost:
                await self.remove_from_channel(session, channel_id)

    async def _end_revoked_logins(self) -> None:
        """End sessions whose login was revoked elsewhere (the CLI changed a password)."""
        if self.logins is None:
            return
        live = [s for s in self.sessions.values() if s.login_id is not None and s.state is not SessionState.CLOSED]
        if not live:
            return
        try:
            active = self.logins.active_among(s.login_id for s in live)
        except LoginStoreUnavailable as exc:
            # Not known now; the next look (every DIRECTORY_POLL_S) asks again.
            logger.warning("logins unavailable; revoked logins are ended later: %s", exc)
            return
        revoked = [s for s in live if s.login_id not in active]
        if revoked:
            await self._end(revoked, "login ended")

    def login_active(self, login_id: str) -> bool:
        """Whether a token's login may still be used (always, without a login store)."""
        return self.logins is None or self.logins.is_active(login_id)

    async def remove_from_channel(self, session: ClientSession, channel_id: int) -> None:
        if channel_id in self.floor.held_by(session.id):
            await self.floor.revoke(channel_id, RevokeReason.REMOVED)
        self.unlisten(session, channel_id)
        if session.peer is not None:
            session.peer.unbind(channel_id)
        session.joined.discard(channel_id)
        session.muted.discard(channel_id)
        session.log.info("removed from channel %s", channel_id)

    async def _watch_directory(self) -> None:
        while True:
            await asyncio.sleep(DIRECTORY_POLL_S)
            try:
                await self.apply_directory_changes()
            except Exception:
                logger.exception("directory watch failed; retrying")

    # --- figures -------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        active = [s for s in self.sessions.values() if s.state is SessionState.ACTIVE]
        talkers = sum(1 for s in active if self.floor.held_by(s.id))
        return {
            "sessions": len(active),
            "sessions_detached": sum(1 for s in self.sessions.values() if s.state is SessionState.DETACHED),
            "channels": len([f for f in self.fanouts.values() if f.outputs]),
            "talkers": talkers,
            "packets_in": sum(f.packets_in for f in self.fanouts.values()),
            "packets_forwarded": sum(f.packets_out for f in self.fanouts.values()),
            "bytes_forwarded": sum(f.bytes_out for f in self.fanouts.values()),
            "packets_dropped_no_floor": self.packets_dropped_no_floor,
            "fanout": "c" if c_fanout_enabled() else "python",
            **({} if self.media_port is None else {
                "media_ports": self.media_port.bound_ports,
                "media_datagrams_unrouted": self.media_port.unrouted,
                "ice_consent": self.media_port.consent_stats(),
            }),
            **({} if self.gc_pacer is None else {
                "gc_collections": list(self.gc_pacer.collections),
                "gc_longest_pause_ms": [round(ms, 2) for ms in self.gc_pacer.longest_pause_ms],
            }),
            "uptime_s": round(time.time() - self.started_at, 1),
            **({} if self.cluster is None else {
                **self.cluster.stats(),
                "packets_relayed_in": self.packets_relayed_in,
                "packets_relayed_stale": self.packets_relayed_stale,
            }),
        }
