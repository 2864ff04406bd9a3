"""A Janus VideoRoom client for bench/compare.py: the same talker and packet-counting
listeners as bench/forward.py, signalled through Janus's HTTP JSON API.

- JanusSession: one Janus session (create, attach, plugin messages whose answers arrive as
  events on the session's long-poll, keepalives, destroy).
- JanusPublisher: joins the room as publisher and configures it with an aiortc offer
  (sendonly Opus); bench.forward.Talker then writes pre-encoded packets on its connection.
- JanusListener: its own session and handle, joins as subscriber with
  `streams: [{"feed": publisher}]`, answers Janus's offer with aiortc (recvonly) and
  `start`s; it counts RTP with aiortc_hooks.tap_incoming_rtp and never decodes.
- JanusListenerGroup: bench.forward.ListenerGroup's interface, so that
  bench.forward.RemoteGroup can run these listeners in a worker process.

Not a Janus client for anything but this benchmark: no trickle ICE (both sides put their
candidates in the SDP), no renegotiation, no error recovery.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.forward import ListenerGroup  # noqa: E402

logger = logging.getLogger(__name__)

VIDEOROOM = "janus.plugin.videoroom"
ROOM = 1234
KEEPALIVE_S = 20.0  # Janus's session_timeout defaults to 60 s
LONG_POLL_S = 40.0  # Janus answers a long-poll after 30 s with a keepalive event

_transactions = itertools.count(1)


class JanusError(RuntimeError):
    """Janus (or its VideoRoom plugin) refused a request."""


class JanusSession:
    """One Janus session on the HTTP transport at `base_url` (e.g. http://host:8088/janus)."""

    def __init__(self, http, base_url: str) -> None:
        self.http = http
        self.base_url = base_url
        self.id: int | None = None
        self._waiting: dict[str, asyncio.Future] = {}
        self._tasks: list[asyncio.Task] = []

    @classmethod
    async def create(cls, http, base_url: str) -> "JanusSession":
        self = cls(http, base_url)
        reply = await self._post(base_url, {"janus": "create"})
        self.id = reply["data"]["id"]
        self._tasks = [asyncio.create_task(self._poll()), asyncio.create_task(self._keepalive())]
        return self

    @property
    def url(self) -> str:
        return f"{self.base_url}/{self.id}"

    async def _post(self, url: str, body: dict) -> dict:
        body = {**body, "transaction": f"t{next(_transactions)}"}
        async with self.http.post(url, json=body) as r:
            reply = await r.json(content_type=None)
        if reply.get("janus") == "error":
            raise JanusError(f"{body['janus']}: {reply.get('error')}")
        return reply

    async def attach(self, plugin: str = VIDEOROOM) -> int:
        reply = await self._post(self.url, {"janus": "attach", "plugin": plugin})
        return reply["data"]["id"]

    async def message(self, handle: int, body: dict, jsep: dict | None = None,
                      timeout: float = 30.0) -> tuple[dict, dict | None]:
        """Send a plugin request and wait for its answer: (plugin data, jsep or None).

        Asynchronous requests (join, configure, start) are acknowledged at once and
        answered later by an event with the same transaction on the long-poll.
        """
        transaction = f"t{next(_transactions)}"
        request = {"janus": "message", "body": body, "transaction": transaction}
        if jsep is not None:
            request["jsep"] = jsep
        answer = asyncio.get_running_loop().create_future()
        self._waiting[transaction] = answer
        try:
            async with self.http.post(f"{self.url}/{handle}", json=request) as r:
                reply = await r.json(content_type=None)
            if reply.get("janus") == "error":
                raise JanusError(f"{body.get('request')}: {reply.get('error')}")
            if reply.get("janus") == "success":  # a synchronous plugin answer
                event = reply
            else:
                event = await asyncio.wait_for(answer, timeout)
        finally:
            self._waiting.pop(transaction, None)
        data = event.get("plugindata", {}).get("data", {})
        if "error" in data:
            raise JanusError(f"{body.get('request')}: {data['error']}")
        return data, event.get("jsep")

    async def _poll(self) -> None:
        """The session's long-poll: hand each answer to the request waiting for it."""
        import aiohttp

        timeout = aiohttp.ClientTimeout(total=LONG_POLL_S)
        while True:
            try:
                async with self.http.get(f"{self.url}?maxev=10", timeout=timeout) as r:
                    events = await r.json(content_type=None)
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
                logger.debug("janus long-poll failed: %r", exc)
                await asyncio.sleep(0.5)
                continue
            for event in events if isinstance(events, list) else [events]:
                waiter = self._waiting.get(event.get("transaction"))
                if waiter is not None and not waiter.done() and event.get("janus") == "event":
                    waiter.set_result(event)

    async def _keepalive(self) -> None:
        while True:
            await asyncio.sleep(KEEPALIVE_S)
            with contextlib.suppress(Exception):
                await self._post(self.url, {"janus": "keepalive"})

    async def destroy(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self._post(self.url, {"janus": "destroy"})


async def wait_connected(pc, timeout: float = 30.0) -> None:
    for _ in range(int(timeout / 0.05)):  # bounded
        if pc.connectionState == "connected":
            return
        if pc.connectionState in ("failed", "closed"):
            break
        await asyncio.sleep(0.05)
    raise RuntimeError(f"peer connection {pc.connectionState}, not connected")


def no_trickle(pc) -> dict:
    """The local description as a Janus jsep: candidates are in the SDP, none will follow."""
    return {"type": pc.localDescription.type, "sdp": pc.localDescription.sdp, "trickle": False}


class _JanusPeer:
    """A Janus session of its own and one aiortc peer connection, closed together."""

    def __init__(self) -> None:
        self.session: JanusSession | None = None
        self.pc = None

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            if self.pc is not None:
                await self.pc.close()
        if self.session is not None:
            await self.session.destroy()


class JanusPublisher(_JanusPeer):
    """The talker: a VideoRoom publisher with one sendonly Opus m-line."""

    def __init__(self) -> None:
        super().__init__()
        self.publisher_id: int | None = None

    @classmethod
    async def connect(cls, http, base_url: str, room: int = ROOM) -> "JanusPublisher":
        from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

        from server.media import aiortc_hooks

        self = cls()
        self.session = await JanusSession.create(http, base_url)
        handle = await self.session.attach()
        joined, _ = await self.session.message(
            handle, {"request": "join", "room": room, "ptype": "publisher", "display": "talker"})
        self.publisher_id = joined["id"]
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        # A parked track keeps the sender's own RTP loop asleep; Talker writes the packets.
        mic = self.pc.addTransceiver(aiortc_hooks.ParkedTrack(), direction="sendonly")
        mic.setCodecPreferences(aiortc_hooks.opus_only())
        await self.pc.setLocalDescription(await self.pc.createOffer())
        _, answer = await self.session.message(
            handle, {"request": "configure", "audio": True, "video": False}, jsep=no_trickle(self.pc))
        if answer is None:
            raise JanusError("configure: no jsep answer")
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type=answer["type"]))
        await wait_connected(self.pc)
        return self


class JanusListener(_JanusPeer):
    """One subscriber to the publisher's feed, counting what arrives: (time, RTP bytes)."""

    def __init__(self) -> None:
        super().__init__()
        self.arrivals: list[tuple[float, bytes]] = []

    @classmethod
    async def connect(cls, http, base_url: str, feed: int, room: int = ROOM) -> "JanusListener":
        from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

        from server.media import aiortc_hooks

        self = cls()
        self.session = await JanusSession.create(http, base_url)
        handle = await self.session.attach()
        _, offer = await self.session.message(
            handle, {"request": "join", "room": room, "ptype": "subscriber", "streams": [{"feed": feed}]})
        if offer is None:
            raise JanusError("subscriber join: no jsep offer")
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=offer["sdp"], type=offer["type"]))
        arrivals = self.arrivals
        now = time.perf_counter

        def tap(data: bytes) -> None:
            arrivals.append((now(), data))

        await self.pc.setLocalDescription(await self.pc.createAnswer())
        # Before `start`: no media flows until Janus has the answer.
        aiortc_hooks.tap_incoming_rtp(aiortc_hooks.dtls_transport_of(self.pc), tap)
        await self.session.message(handle, {"request": "start", "room": room}, jsep=no_trickle(self.pc))
        await wait_connected(self.pc)
        for t in self.pc.getTransceivers():
            # Tapped RTP never reaches the receivers: their decoder threads would idle.
            aiortc_hooks.stop_receiver_decoder(t.receiver)
        return self


class JanusListenerGroup(ListenerGroup):
    """Subscribers on this process's loop, with bench.forward.ListenerGroup's interface."""

    def __init__(self) -> None:
        super().__init__()
        self.http = None

    async def connect(self, base_url: str, feed: int, count: int, batch: int = 10,
                      host_addresses: list[str] | None = None) -> int:
        import aiohttp

        from server.media import aiortc_hooks

        aiortc_hooks.use_host_addresses(host_addresses or ["127.0.0.1"])
        if self.http is None:
            # Every session holds a long-poll open: no cap on connections.
            self.http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        return await self._connect_batches(lambda: JanusListener.connect(self.http, base_url, feed), count, batch)

    async def close(self) -> None:
        await super().close()
        if self.http is not None:
            await self.http.close()
            self.http = None
