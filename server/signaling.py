"""The `/ws` endpoint: one dispatch table for the protocol's requests.

Each handler checks its preconditions first and raises ProtocolError for a request the
server refuses; the dispatcher turns that into an `ok: false` reply and the connection goes
on. Only a failed `hello` (or its absence) closes the socket, or sustained abuse: each
connection has a token bucket (`signaling_rate_per_s`, `signaling_burst`); a request over
it is answered `rate_limited` unprocessed, and more than `signaling_abuse_limit` such
refusals within `signaling_abuse_window_s` close the socket with 4008. Runs on the
server's loop.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import WSMsgType, web

from .auth import TokenError, TokenIssuer
from .floor_events import Denial
from .hub import MAX_CLOSE_REASON_BYTES, Hub
from .logins import LoginStoreUnavailable
from .media.peer import BadOffer, MediaNotReady, NoFreeSlot
from .protocol import (
    CloseCode,
    ErrorCode,
    ProtocolError,
    Request,
    bad_request,
    encode,
    error_response,
    ok_response,
    parse_request,
    readable_id,
)
from .ratelimit import FailureLimiter, TokenBucket
from .session import ClientSession
from .state.base import LiveStoreError, LiveStoreRecovering
from .turn import ice_servers_for

logger = logging.getLogger(__name__)

# aiohttp closes a connection on a frame above its limit; ours is larger so that an
# oversized frame (up to this) gets the protocol's bad_request reply instead.
WS_READ_LIMIT = 4 * 1024 * 1024

Handler = Callable[["Connection", Request], Awaitable[dict[str, Any] | None]]


class Connection:
    """One WebSocket: before `hello` it has no session; afterwards requests act on one."""

    def __init__(self, hub: Hub, tokens: TokenIssuer, ws: web.WebSocketResponse, peer_name: str) -> None:
        self.hub = hub
        self.tokens = tokens
        self.ws = ws
        self.peer_name = peer_name
        self.session: ClientSession | None = None
        self.close_code: int | None = None
        self.close_reason = b""
        config = hub.config
        self.bucket = TokenBucket(config.signaling_rate_per_s, config.signaling_burst)
        # "More than the limit within the window": the limit + 1st refusal closes.
        self.refusals = FailureLimiter(
            config.signaling_abuse_limit + 1, config.signaling_abuse_window_s, max_keys=1
        )

    def close_with(self, code: CloseCode, reason: str) -> None:
        """Close the socket once the current reply is out."""
        self.close_code = code
        self.close_reason = reason.encode("utf-8")[:MAX_CLOSE_REASON_BYTES]

    async def reply(self, message: dict[str, Any]) -> None:
        """Before hello there is no session outbox: write directly."""
        if self.session is not None:
            self.session.send(message)
        elif not self.ws.closed:
            await self.ws.send_str(encode(message))

    def need_session(self) -> ClientSession:
        if self.session is None:
            raise ProtocolError(ErrorCode.UNAUTHORIZED, "send hello first")
        return self.session

    def member_channel(self, request: Request) -> int:
        session = self.need_session()
        channel_id = request.int_field("channel")
        if not self.hub.directory.is_member(session.user.id, channel_id):
            if self.hub.directory.get_channel(channel_id) is None:
                raise ProtocolError(ErrorCode.NOT_FOUND, f"no channel {channel_id}")
            raise ProtocolError(ErrorCode.FORBIDDEN, f"not a member of channel {channel_id}")
        return channel_id


# --- handlers ------------------------------------------------------------------------


async def handle_hello(conn: Connection, request: Request) -> dict[str, Any]:
    if conn.session is not None:
        raise ProtocolError(ErrorCode.CONFLICT, "hello was already sent on this connection")
    token = request.body.get("token")
    try:
        claims = conn.tokens.verify_claims(token)
    except TokenError as exc:
        raise refuse_hello(conn, f"token {exc.reason}") from None
    try:
        active = conn.hub.login_active(claims.login_id)
    except LoginStoreUnavailable as exc:
        # Neither yes nor no: the socket stays open and the client may say hello again.
        logger.warning("hello from %s refused: %s", conn.peer_name, exc)
        raise ProtocolError(ErrorCode.UNAVAILABLE, "the server cannot reach its shared state; try again") from None
    if not active:
        raise refuse_hello(conn, "token revoked")
    user = conn.hub.directory.get_user(claims.user_id)
    if user is None:
        raise refuse_hello(conn, "user no longer exists")
    client = request.body.get("client")
    if client is not None and not isinstance(client, dict):
        raise bad_request("'client' must be an object")
    resume = request.body.get("resume")
    if resume is not None and not isinstance(resume, str):
        raise bad_request("'resume' must be a session id or null")
    if resume is not None and resume not in conn.hub.sessions:
        await conn.hub.adopt_session(resume, user)  # a session of another node of the site
    session, resumed = conn.hub.open_session(user, client or {}, resume, claims.login_id)
    conn.session = session
    session.attach(conn.ws.send_str, conn.ws)
    session.log.info("hello from %s (%s)", conn.peer_name, (client or {}).get("name", "?"))
    config = conn.hub.config
    cluster = conn.hub.cluster
    return {
        # The site's nodes, this one first, for clients that fail over (several nodes only).
        **({"nodes": cluster.node_urls()} if cluster is not None else {}),
        "session": session.id,
        "resumed": resumed,
        "user": user.to_wire(),
        "channels": session.channel_list(),
        "ice_servers": ice_servers_for(config, user.id),
        "limits": {
            "max_frame_bytes": config.max_frame_bytes,
            "max_receive_slots": config.max_receive_slots,
            "max_talk_ms": conn.hub.floor.max_talk_ms,  # the admin setting, if any
            "floor_lease_ms": config.floor_lease_ms,
        },
        # Restored by resume; bound to receive slots after the next offer.
        "joined": [
            {"channel": cid, "muted": cid in session.muted} for cid in sorted(session.joined)
        ],
    }


def refuse_hello(conn: Connection, message: str) -> ProtocolError:
    conn.close_with(CloseCode.UNAUTHORIZED, "unauthorized")
    return ProtocolError(ErrorCode.UNAUTHORIZED, message)


async def handle_offer(conn: Connection, request: Request) -> dict[str, Any]:
    session = conn.need_session()
    sdp = request.body.get("sdp")
    peer = conn.hub.media_for(session)
    try:
        answer = await peer.answer(sdp)
    except BadOffer as exc:
        raise bad_request(f"bad offer: {exc}") from None
    except MediaNotReady as exc:
        raise ProtocolError(ErrorCode.CONFLICT, str(exc)) from None
    session.microphone_payload_type = peer.microphone_payload_type
    bindings = conn.hub.rebind_joined(session)
    return {"sdp": answer, "bindings": bindings}


async def handle_join(conn: Connection, request: Request) -> dict[str, Any]:
    channel_id = conn.member_channel(request)
    session = conn.need_session()
    peer = session.peer
    if peer is None or not peer.has_media:
        raise ProtocolError(ErrorCode.CONFLICT, "send an offer before joining")
    try:
        slot = peer.bind(channel_id)
    except NoFreeSlot as exc:
        raise ProtocolError(ErrorCode.NO_SLOT, f"{exc}; re-offer with more recvonly m-lines") from None
    session.joined.add(channel_id)
    conn.hub.listen(session, channel_id)
    floor = await conn.hub.floor.floor_state(channel_id)
    session.log.info("joined channel %s on mid %s", channel_id, slot.mid)
    return {"mid": slot.mid, "floor": floor, "muted": channel_id in session.muted}


async def handle_leave(conn: Connection, request: Request) -> dict[str, Any]:
    session = conn.need_session()
    channel_id = request.int_field("channel")
    if channel_id not in session.joined:
        raise ProtocolError(ErrorCode.NOT_FOUND, f"not joined to channel {channel_id}")
    conn.hub.unlisten(session, channel_id)
    if session.peer is not None:
        session.peer.unbind(channel_id)
    session.joined.discard(channel_id)
    session.muted.discard(channel_id)
    session.log.info("left channel %s", channel_id)
    return {}


async def handle_mute(conn: Connection, request: Request) -> dict[str, Any]:
    session = conn.need_session()
    channel_id = request.int_field("channel")
    muted = request.bool_field("muted")
    if channel_id not in session.joined:
        raise ProtocolError(ErrorCode.NOT_FOUND, f"not joined to channel {channel_id}")
    if muted:
        session.muted.add(channel_id)
    else:
        session.muted.discard(channel_id)
    conn.hub.listen(session, channel_id)
    session.log.info("channel %s %s", channel_id, "muted" if muted else "unmuted")
    return {}


async def handle_floor_request(conn: Connection, request: Request) -> dict[str, Any]:
    channel_id = conn.member_channel(request)
    session = conn.need_session()
    priority = request.choice_field("priority", ("normal", "emergency"), "normal")
    result = await conn.hub.floor.request(
        channel_id, session.id, session.user.id, session.user.name, priority
    )
    if isinstance(result, Denial) and conn.hub.transmissions is not None:
        conn.hub.transmissions.denied(channel_id, session.user, result.holder)
    return result.to_wire()


async def handle_floor_release(conn: Connection, request: Request) -> dict[str, Any]:
    session = conn.need_session()
    channel_id = request.int_field("channel")
    # Only the holder's release does anything. Checking here keeps arbitrary channel ids
    # from a client out of the floor controller, which keeps a lock per channel it sees.
    if channel_id in conn.hub.floor.held_by(session.id):
        await conn.hub.floor.release(channel_id, session.id)
    return {}


HANDLERS: dict[str, Handler] = {
    "hello": handle_hello,
    "offer": handle_offer,
    "join": handle_join,
    "leave": handle_leave,
    "mute": handle_mute,
    "floor_request": handle_floor_request,
    "floor_release": handle_floor_release,
}


# --- the socket loop -----------------------------------------------------------------


async def dispatch(conn: Connection, text: str) -> None:
    request_id: int | None = None
    try:
        if len(text) > conn.hub.config.max_frame_bytes:
            raise bad_request(f"frame larger than {conn.hub.config.max_frame_bytes} bytes")
        request = parse_request(text)
        request_id = request.id
        handler = HANDLERS.get(request.type)
        if handler is None:
            raise bad_request(f"unknown request type {request.type[:64]!r}")
        fields = await handler(conn, request)
        await conn.reply(ok_response(request.id, fields))
    except ProtocolError as exc:
        rid = request_id if request_id is not None else getattr(exc, "request_id", None)
        await conn.reply(error_response(rid, exc.code, exc.message))
    except LiveStoreRecovering as exc:
        await conn.reply(error_response(request_id, ErrorCode.UNAVAILABLE, str(exc)))
    except LiveStoreError as exc:
        logger.warning("request refused: state backend unreachable: %s", exc)
        await conn.reply(error_response(
            request_id, ErrorCode.UNAVAILABLE, "the server cannot reach its shared state; try again"
        ))
    except Exception:
        who = conn.session.id if conn.session else conn.peer_name
        logger.exception("request failed (%s)", who)
        await conn.reply(error_response(request_id, ErrorCode.INTERNAL, "internal error"))


async def websocket_handler(hub: Hub, tokens: TokenIssuer, request: web.Request) -> web.WebSocketResponse:
    config = hub.config
    ws = web.WebSocketResponse(heartbeat=config.heartbeat_s, max_msg_size=WS_READ_LIMIT)
    await ws.prepare(request)
    conn = Connection(hub, tokens, ws, request.remote or "?")
    hub.websockets.add(ws)
    try:
        await _serve(conn, config.hello_timeout_s)
    finally:
        hub.websockets.discard(ws)
        if conn.session is not None:
            await hub.detach(conn.session)
        if not ws.closed:
            await ws.close()
    return ws


async def _serve(conn: Connection, hello_timeout_s: float) -> None:
    ws = conn.ws
    loop = asyncio.get_running_loop()
    hello_deadline = loop.time() + hello_timeout_s
    while not ws.closed:
        timeout = None
        if conn.session is None:
            timeout = hello_deadline - loop.time()
            if timeout <= 0:
                await ws.close(code=CloseCode.UNAUTHORIZED, message=b"hello timeout")
                return
        try:
            msg = await ws.receive(timeout=timeout)
        except asyncio.TimeoutError:
            continue
        if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY) and not conn.bucket.take():
            await refuse_over_rate(conn, msg.data if msg.type == WSMsgType.TEXT else None)
        elif msg.type == WSMsgType.TEXT:
            await dispatch(conn, msg.data)
        elif msg.type == WSMsgType.BINARY:
            await conn.reply(error_response(None, ErrorCode.BAD_REQUEST, "binary frames are not accepted"))
        elif msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
            return
        if conn.close_code is not None:
            if conn.session is not None:
                # The refusal that led here is still queued: send it before the close.
                await conn.session.stop_writer(flush=True)
            await ws.close(code=conn.close_code, message=conn.close_reason)
            return


async def refuse_over_rate(conn: Connection, text: str | None) -> None:
    """A frame over the connection's bucket: `rate_limited`, not processed; sustained
    abuse closes the socket (4008)."""
    conn.refusals.failed(None)
    if conn.refusals.retry_after(None) > 0:
        who = conn.session.id if conn.session else conn.peer_name
        logger.warning("signaling: closing %s: more than %d requests over the rate within %.0f s",
                       who, conn.refusals.max_failures - 1, conn.refusals.window_s)
        conn.close_with(CloseCode.RATE_LIMITED, "rate limited")
    wait = conn.bucket.retry_after()
    await conn.reply(error_response(
        request_id_of(conn, text), ErrorCode.RATE_LIMITED, f"too many requests; retry in {wait:.2f} s"
    ))


def request_id_of(conn: Connection, text: str | None) -> int | None:
    """The id of a refused frame, so the client can match the refusal (None if unreadable)."""
    if text is None or len(text) > conn.hub.config.max_frame_bytes:
        return None
    try:
        return readable_id(json.loads(text))
    except (ValueError, RecursionError):
        return None
