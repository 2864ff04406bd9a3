"""BASELINE ONLY — a naive aiortc MediaRelay "SFU" for bench/forward.py to compare against.

This is not part of vpdesk and must never be used as a server. It speaks just the subset
of PROTOCOL.md that the load generator uses (POST /api/login, GET /api/health, /ws with
hello, offer, join, floor_request, floor_release), accepts any login, checks nothing, and
does media the naive way: the talker's track goes through aiortc's normal receive path
(jitter buffer + Opus decoder), aiortc's MediaRelay hands every listener its own proxy of
the decoded track, and every listener's RTCRtpSender re-encodes it (PTT Opus settings,
same as the clients). That is the "decode once, re-encode per listener" row of DESIGN.md.

Run: python bench/relay_server.py --listen 127.0.0.1:PORT --ice-address 127.0.0.1
Stops on SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import logging
import signal
import sys
from pathlib import Path

from aiohttp import WSMsgType, web

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription  # noqa: E402
from aiortc.contrib.media import MediaRelay  # noqa: E402

from server.media import aiortc_hooks  # noqa: E402

logger = logging.getLogger("naive-relay")

_ids = itertools.count(1)


class Channel:
    """One channel: the current talker's decoded track and the listeners' senders."""

    def __init__(self, channel_id: int) -> None:
        self.id = channel_id
        self.source = None  # the floor holder's remote (decoded) track
        self.senders: list = []  # RTCRtpSender of every joined listener slot


class Session:
    def __init__(self, relay_app: "RelayApp") -> None:
        self.app = relay_app
        self.id = f"naive-{next(_ids)}"
        self.pc: RTCPeerConnection | None = None
        self.mic = None
        self.free = []  # listener transceivers not bound to a channel

    async def offer(self, sdp: str) -> str:
        self.pc = pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))

        @pc.on("track")
        def on_track(track) -> None:
            if track.kind == "audio" and self.mic is None:
                self.mic = track

        await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        opus = aiortc_hooks.opus_only()
        transceivers = pc.getTransceivers()
        for t in transceivers:
            t.setCodecPreferences(opus)
        transceivers[0].direction = "recvonly"  # the client's microphone
        for t in transceivers[1:]:
            t.direction = "sendonly"
            self.free.append(t)
        answer = await pc.createAnswer()
        await pc.setLocalDescription(answer)
        return pc.localDescription.sdp

    async def close(self) -> None:
        if self.pc is not None:
            await self.pc.close()


class RelayApp:
    def __init__(self) -> None:
        self.relay = MediaRelay()
        self.channels: dict[int, Channel] = {}
        self.sessions: set[Session] = set()

    def channel(self, channel_id: int) -> Channel:
        if channel_id not in self.channels:
            self.channels[channel_id] = Channel(channel_id)
        return self.channels[channel_id]

    # -- HTTP -------------------------------------------------------------------------

    async def login(self, request: web.Request) -> web.Response:
        body = await request.json()
        name = str(body.get("username", "?"))
        return web.json_response({
            "token": f"naive:{name}", "expires_at": 0,
            "user": {"id": 1, "name": name, "role": "dispatch"},
        })

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "sessions": len(self.sessions)})

    # -- WebSocket --------------------------------------------------------------------

    async def ws(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=15.0)
        await ws.prepare(request)
        session = Session(self)
        self.sessions.add(session)
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                req = json.loads(msg.data)
                try:
                    fields = await self.handle(session, req)
                    reply = {"id": req.get("id"), "ok": True, **fields}
                except Exception as exc:  # baseline: report and go on
                    logger.exception("request %s failed", req.get("type"))
                    reply = {"id": req.get("id"), "ok": False,
                             "error": {"code": "internal", "message": str(exc)}}
                await ws.send_str(json.dumps(reply))
        finally:
            self.sessions.discard(session)
            for channel in self.channels.values():
                if session.mic is not None and channel.source is session.mic:
                    channel.source = None
            await session.close()
        return ws

    async def handle(self, session: Session, req: dict) -> dict:
        kind = req.get("type")
        if kind == "hello":
            return {
                "session": session.id, "resumed": False,
                "user": {"id": 1, "name": "naive", "role": "dispatch"},
                "channels": [{"id": 1, "name": "bench", "team": None, "event": None}],
                "ice_servers": [], "limits": {}, "joined": [],
            }
        if kind == "offer":
            return {"sdp": await session.offer(req["sdp"]), "bindings": []}
        if kind == "join":
            channel = self.channel(int(req["channel"]))
            transceiver = session.free.pop(0)
            channel.senders.append(transceiver.sender)
            if channel.source is not None:
                transceiver.sender.replaceTrack(self.relay.subscribe(channel.source))
            return {"mid": transceiver.mid, "floor": {"state": "idle"}, "muted": False}
        if kind == "floor_request":
            channel = self.channel(int(req["channel"]))
            if session.mic is None:
                raise RuntimeError("no microphone track")
            if channel.source is not session.mic:
                channel.source = session.mic
                # Every listener gets its own relay proxy, so its sender re-encodes.
                for sender in channel.senders:
                    sender.replaceTrack(self.relay.subscribe(session.mic))
            return {"granted": True, "max_ms": 0}
        if kind == "floor_release":
            return {}
        raise ValueError(f"unsupported request {kind!r}")


async def main_async(host: str, port: int, ice: list[str]) -> None:
    aiortc_hooks.use_host_addresses(ice)
    aiortc_hooks.configure_opus_encoder()  # the re-encode uses the same PTT Opus settings
    relay_app = RelayApp()
    app = web.Application()
    app.router.add_post("/api/login", relay_app.login)
    app.router.add_get("/api/health", relay_app.health)
    app.router.add_get("/ws", relay_app.ws)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    logger.info("naive MediaRelay baseline on http://%s:%s", host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for session in list(relay_app.sessions):
        await session.close()
    await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description="naive aiortc MediaRelay baseline (benchmark only)")
    parser.add_argument("--listen", default="127.0.0.1:8090")
    parser.add_argument("--ice-address", action="append", default=[])
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("aioice", "aiortc"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    host, _, port = args.listen.rpartition(":")
    asyncio.run(main_async(host, int(port), args.ice_address or ["127.0.0.1"]))


if __name__ == "__main__":
    main()
