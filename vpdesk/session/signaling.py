"""The client end of PROTOCOL.md's WebSocket envelope (no Qt).

One `SignalingClient` per WebSocket connection. Requests carry a per-connection id and
are matched to their responses by it; messages without an id are events, queued for
`next_event()`, recorded in `events_seen`, and handed to an optional `on_event` callback.

Everything here runs on one asyncio loop: the loop that called `connect()`. The console
runs it inside Qt through qasync; tests and benchmarks run it on pytest's loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from ssl import SSLContext
from typing import Any

import aiohttp

logger = logging.getLogger(__name__)

try:  # the installed distribution's version, when there is one
    from importlib.metadata import PackageNotFoundError, version as _dist_version

    CLIENT_VERSION = _dist_version("vpdesk")
except Exception:  # noqa: BLE001 - running from a source tree
    CLIENT_VERSION = "0.1.0"

# A reader nobody drains (the console uses on_event instead) must not grow forever.
MAX_QUEUED_EVENTS = 10_000

EventCallback = Callable[[dict], None]


class SignalingError(Exception):
    """Base class of this module's errors."""


class RequestError(SignalingError):
    """The server answered ok:false (or the login endpoint a non-200).

    `code` is the protocol's error code (`bad_request`, `unauthorized`, ...); `response`
    is the whole response object when there was one.
    """

    def __init__(
        self, code: str, message: str, response: dict | None = None, status: int | None = None
    ):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.response = response
        self.status = status


class ConnectionClosed(SignalingError):
    """The WebSocket closed before the awaited response or event arrived."""

    def __init__(self, close_code: int | None):
        super().__init__(f"signaling connection closed (close code {close_code})")
        self.close_code = close_code


async def login(
    base_url: str,
    username: str,
    password: str,
    *,
    session: aiohttp.ClientSession | None = None,
    timeout: float = 10.0,
    ssl: SSLContext | None = None,
) -> dict:
    """POST /api/login; return the JSON body (`token`, `expires_at`, `user`).

    `ssl`: the context for an https URL (a pinned certificate); None: the session's own
    (the system's CAs unless its connector says otherwise). Raises RequestError with the
    server's error code on any non-200 answer. Call on the client's loop.
    """
    owned = session is None
    http = session or aiohttp.ClientSession()
    try:
        async with http.post(
            base_url.rstrip("/") + "/api/login",
            json={"username": username, "password": password},
            timeout=aiohttp.ClientTimeout(total=timeout),
            ssl=_ssl_option(ssl),
        ) as resp:
            text = await resp.text()
            try:
                body = json.loads(text) if text else {}
            except ValueError:
                body = {}
            if resp.status != 200:
                error = body.get("error") if isinstance(body, dict) else None
                if isinstance(error, dict):
                    raise RequestError(
                        str(error.get("code", f"http_{resp.status}")),
                        str(error.get("message", "")),
                        response=body,
                        status=resp.status,
                    )
                raise RequestError(f"http_{resp.status}", text[:200], status=resp.status)
            if not isinstance(body, dict):
                raise RequestError(
                    "bad_response", "login answer is not a JSON object", status=resp.status
                )
            return body
    finally:
        if owned:
            await http.close()


def _ssl_option(context: SSLContext | None) -> SSLContext | bool:
    # aiohttp's per-request `ssl=True` means "the connector's default verification".
    return context if context is not None else True


class SignalingClient:
    """One WebSocket connection speaking the protocol's envelope.

    Create it with `await SignalingClient.connect(base_url)`; every method must be called
    on the loop that connected it.
    """

    def __init__(
        self,
        ws: aiohttp.ClientWebSocketResponse,
        http: aiohttp.ClientSession,
        owns_http: bool,
        on_event: EventCallback | None = None,
    ) -> None:
        self._ws = ws
        self._http = http
        self._owns_http = owns_http
        self.on_event = on_event
        self._next_id = 1
        self._pending: dict[Any, asyncio.Future[dict]] = {}
        # Events not yet taken by next_event(); the condition wakes its waiters.
        self._queued: list[dict] = []
        self._changed = asyncio.Condition()
        self.events_seen: list[dict] = []
        # Responses whose id matches no pending request (late ones after a timeout, or
        # answers to frames sent with send_raw): tests read them with next_unmatched().
        self._unmatched: list[dict] = []
        self.session_id: str | None = None
        self._closed = False
        self._reader = asyncio.get_running_loop().create_task(self._read(), name="signaling-reader")

    # --- lifecycle -------------------------------------------------------------------

    @classmethod
    async def connect(
        cls,
        base_url: str,
        *,
        session: aiohttp.ClientSession | None = None,
        on_event: EventCallback | None = None,
        heartbeat: float | None = 15.0,
        timeout: float = 10.0,
        ssl: SSLContext | None = None,
    ) -> SignalingClient:
        """Open `base_url + "/ws"` (http(s):// or ws(s)://) and start the reader task.

        `heartbeat`: WebSocket ping interval; the protocol pings both ways every 15 s.
        `ssl`: as for login(). A session passed in stays open after close(); one made
        here is closed with it.
        """
        owns = session is None
        http = session or aiohttp.ClientSession()
        try:
            ws = await http.ws_connect(
                base_url.rstrip("/") + "/ws",
                heartbeat=heartbeat,
                timeout=aiohttp.ClientWSTimeout(ws_close=timeout),
                ssl=_ssl_option(ssl),
            )
        except BaseException:
            if owns:
                await http.close()
            raise
        logger.debug("signaling %s: connected", base_url)
        return cls(ws, http, owns, on_event)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def close_code(self) -> int | None:
        """The WebSocket close code once closed (4001 unauthorized, 4008 rate limited)."""
        return self._ws.close_code

    async def wait_closed(self, timeout: float | None = None) -> int | None:
        """Wait until the connection is closed (by either side); return the close code.

        Raises TimeoutError if it is still open after `timeout` seconds.
        """
        async with asyncio.timeout(timeout):
            # shield: a timed-out waiter must not cancel the reader itself
            await asyncio.shield(self._reader)
        return self.close_code

    async def close(self) -> None:
        """Close the WebSocket, stop and await the reader, fail pending requests."""
        if not self._ws.closed:
            with contextlib.suppress(Exception):
                await self._ws.close()
        if not self._reader.done():
            self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
        await self._mark_closed()
        if self._owns_http and not self._http.closed:
            await self._http.close()

    # --- sending ---------------------------------------------------------------------

    async def request(self, type: str, timeout: float = 10.0, **fields: Any) -> dict:  # noqa: A002
        """Send `{"id", "type", **fields}` and return the matching ok:true response.

        Raises RequestError on ok:false, ConnectionClosed if the socket closes first,
        TimeoutError after `timeout` seconds (a late response then lands in the
        unmatched list).
        """
        if self._closed:
            raise ConnectionClosed(self.close_code)
        request_id = self._next_id
        self._next_id += 1
        future: asyncio.Future[dict] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            await self._ws.send_str(json.dumps({"id": request_id, "type": type, **fields}))
            async with asyncio.timeout(timeout):
                response = await future
        except (ConnectionResetError, aiohttp.ClientConnectionError) as exc:
            raise ConnectionClosed(self.close_code) from exc
        finally:
            self._pending.pop(request_id, None)
        if response.get("ok") is True:
            return response
        error = response.get("error") or {}
        raise RequestError(
            str(error.get("code", "bad_response")), str(error.get("message", "")), response=response
        )

    async def send_raw(self, text: str) -> None:
        """Send one text frame as is (tests send malformed frames with it).

        Answers to it are unmatched responses (see next_unmatched); choose ids far from
        the small counter request() uses if the frame carries one.
        """
        if self._closed:
            raise ConnectionClosed(self.close_code)
        await self._ws.send_str(text)

    async def hello(
        self,
        token: str,
        resume: str | None = None,
        name: str = "vpdesk",
        version: str = CLIENT_VERSION,
        timeout: float = 10.0,
    ) -> dict:
        """The session's first request; remembers the session id for a later resume."""
        response = await self.request(
            "hello",
            timeout=timeout,
            token=token,
            client={"name": name, "version": version},
            resume=resume,
        )
        self.session_id = response.get("session")
        return response

    # --- receiving -------------------------------------------------------------------

    async def next_event(self, type: str | None = None, timeout: float = 5.0) -> dict:  # noqa: A002
        """Take the oldest queued event of `type` (any type if None), waiting for one.

        Events of other types stay queued for other callers. Raises TimeoutError, or
        ConnectionClosed once the socket is closed and no such event is queued.
        """
        return await self._take(self._queued, type, timeout)

    async def next_unmatched(self, timeout: float = 5.0) -> dict:
        """Take the oldest response that matched no pending request (see send_raw)."""
        return await self._take(self._unmatched, None, timeout)

    async def _take(self, queue: list[dict], type: str | None, timeout: float) -> dict:  # noqa
        async with asyncio.timeout(timeout):
            async with self._changed:
                while True:
                    for index, message in enumerate(queue):
                        if type is None or message.get("type") == type:
                            return queue.pop(index)
                    if self._closed:
                        raise ConnectionClosed(self.close_code)
                    await self._changed.wait()

    async def _read(self) -> None:
        """Reader task: dispatch every frame until the socket closes."""
        try:
            async for msg in self._ws:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    await self._dispatch(msg.data)
                elif msg.type == aiohttp.WSMsgType.ERROR:
                    logger.warning("signaling: websocket error %s", self._ws.exception())
                    break
                # BINARY is not part of the protocol: ignore it rather than fail.
        finally:
            # Runs on cancellation too: nobody may wait on a dead connection.
            await asyncio.shield(self._mark_closed())
            logger.debug("signaling: closed with code %s", self.close_code)

    async def _dispatch(self, data: str) -> None:
        try:
            message = json.loads(data)
        except ValueError:
            logger.warning("signaling: dropped a frame that is not JSON: %.80r", data)
            return
        if not isinstance(message, dict):
            logger.warning("signaling: dropped a frame that is not an object: %.80r", data)
            return
        if "id" in message or "ok" in message:
            future = self._pending.get(message.get("id"))
            if future is not None and not future.done():
                future.set_result(message)
                return
            logger.debug("signaling: unmatched response %.120r", data)
            async with self._changed:
                self._unmatched.append(message)
                self._changed.notify_all()
            return
        self.events_seen.append(message)
        if self.on_event is not None:
            try:
                self.on_event(message)
            except Exception:  # a UI callback bug must not kill the reader
                logger.exception("signaling: on_event callback failed for %s", message.get("type"))
        async with self._changed:
            if len(self._queued) >= MAX_QUEUED_EVENTS:
                del self._queued[0]
            self._queued.append(message)
            self._changed.notify_all()

    async def _mark_closed(self) -> None:
        if self._closed:
            return
        self._closed = True
        for future in self._pending.values():
            if not future.done():
                future.set_exception(ConnectionClosed(self.close_code))
        async with self._changed:
            self._changed.notify_all()
