"""One client's session: who it is, its media, the channels it joined and muted.

A session outlives its WebSocket for a short while so that a client that lost its link can
`resume` it: the joins and mutes come back, the media is negotiated anew. Everything here
runs on the server's event loop.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from .directory import Channel, User
from .media.peer import ServerPeer
from .protocol import encode

logger = logging.getLogger(__name__)

OUTBOX_LIMIT = 1024  # messages queued for a client that stopped reading


class Link(Protocol):
    """The session's WebSocket, as far as the hub needs it (aiohttp's WebSocketResponse)."""

    def close(self, *, code: int, message: bytes) -> Awaitable[Any]: ...


class SessionState(enum.Enum):
    ACTIVE = "active"  # a WebSocket is attached
    DETACHED = "detached"  # the link dropped; resumable until the grace period ends
    CLOSED = "closed"


class SessionLog(logging.LoggerAdapter):
    """Prefixes every line with the session id, so one session's story can be grepped."""

    def process(self, msg, kwargs):
        return f"session={self.extra['session']} {msg}", kwargs


def new_session_id() -> str:
    return "s-" + secrets.token_urlsafe(12)


class ClientSession:
    """A logged-in client. `send` queues a message; a writer task delivers them in order."""

    def __init__(
        self, session_id: str, user: User, client: dict[str, Any], *, login_id: str | None = None
    ) -> None:
        self.id = session_id
        self.user = user
        self.client = client
        # The login whose token said hello: logout or a password change ends the session.
        self.login_id = login_id
        self.link: Link | None = None  # the attached WebSocket, to close it from the hub
        self.state = SessionState.ACTIVE
        self.log = SessionLog(logger, {"session": session_id})
        self.channels: dict[int, Channel] = {}
        self.joined: set[int] = set()  # channel ids bound to a receive slot (or pending one)
        self.muted: set[int] = set()
        self.peer: ServerPeer | None = None
        self.microphone_payload_type: int | None = None
        self.packets_dropped_no_floor = 0
        self._outbox: asyncio.Queue[str | None] = asyncio.Queue(maxsize=OUTBOX_LIMIT)
        self._writer: asyncio.Task[None] | None = None
        self.detached_at: float | None = None

    # --- outgoing messages ---------------------------------------------------------

    def attach(self, send_text: Callable[[str], Any], link: Link | None = None) -> None:
        """Start delivering queued messages through `send_text` (a coroutine function)."""
        self.link = link
        self.state = SessionState.ACTIVE
        self.detached_at = None
        self._outbox = asyncio.Queue(maxsize=OUTBOX_LIMIT)
        self._writer = asyncio.create_task(self._deliver(send_text), name=f"outbox {self.id}")

    async def _deliver(self, send_text: Callable[[str], Any]) -> None:
        while True:
            text = await self._outbox.get()
            if text is None:
                return
            try:
                await send_text(text)
            except (ConnectionError, RuntimeError) as exc:
                self.log.debug("send failed: %s", exc)
                return

    def send(self, message: dict[str, Any]) -> None:
        """Queue a message for the client; dropped when detached or hopelessly behind."""
        if self.state is not SessionState.ACTIVE:
            return
        try:
            self._outbox.put_nowait(encode(message))
        except asyncio.QueueFull:
            self.log.warning("outbox full; dropping %s", message.get("type") or message.get("id"))

    async def stop_writer(self, flush: bool = True) -> None:
        """Stop the writer task; with `flush`, after what is queued has been sent."""
        self.link = None  # the link goes with its writer
        writer, self._writer = self._writer, None
        if writer is None:
            return
        if flush:
            try:
                self._outbox.put_nowait(None)
                await asyncio.wait_for(asyncio.shield(writer), timeout=2.0)
            except (asyncio.QueueFull, asyncio.TimeoutError):
                pass
        if not writer.done():
            writer.cancel()
        try:
            await writer
        except asyncio.CancelledError:
            pass

    # --- views ---------------------------------------------------------------------

    def channel_list(self) -> list[dict[str, Any]]:
        return [channel.to_wire() for channel in self.channels.values()]

    def is_member(self, channel_id: int) -> bool:
        return channel_id in self.channels
