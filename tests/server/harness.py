"""A running embedded server with a provisioned directory, and scripted PTT clients.

The clients are the console's own client code (vpdesk.session.signaling, vpdesk.media.peer)
driving real aiortc peers over loopback.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from aiortc.mediastreams import MediaStreamTrack

from server.app import HUB
from server.config import ServerConfig
from server.directory import Directory, Role
from server.hub import Hub
from server.media import aiortc_hooks
from server.node import EmbeddedServer
from vpdesk.media.peer import ClientPeer
from vpdesk.session.signaling import SignalingClient, login

PASSWORD = "secret-pw"


@dataclass
class Site:
    """A provisioned, running server: users u0..uN-1 on channels 'alpha' and 'bravo'."""

    server: EmbeddedServer
    data_dir: Path
    channels: dict[str, int] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def directory(self) -> Directory:
        return self.server.directory

    @property
    def hub(self) -> Hub:
        return self.server.app[HUB]


def provision(data_dir: Path, users: int, *, outsider: bool = True) -> dict[str, int]:
    directory = Directory.open(data_dir)
    try:
        channels = {}
        for name in ("alpha", "bravo"):
            channels[name] = directory.add_channel(name, team="Ops", event="Exercise").id
        for i in range(users):
            role = Role.DISPATCH if i == 0 else Role.GENERAL
            directory.add_user(f"u{i}", role, PASSWORD)
            directory.add_member(f"u{i}", "alpha")
            directory.add_member(f"u{i}", "bravo")
        if outsider:
            directory.add_user("outsider", Role.GENERAL, PASSWORD)
        directory.add_user("admin", Role.ADMIN, PASSWORD)
        return channels
    finally:
        directory.close()


async def start_site(data_dir: Path, users: int = 4, **config: object) -> Site:
    channels = provision(data_dir, users)
    settings = dict(data_dir=data_dir, listen_port=0, ice_addresses=["127.0.0.1"])
    settings.update(config)
    server = await EmbeddedServer(ServerConfig(**settings)).start()
    return Site(server=server, data_dir=data_dir, channels=channels)


class PttClient:
    """A logged-in client with media: signaling, a peer connection, receive slots."""

    def __init__(self, name: str, signaling: SignalingClient, http: aiohttp.ClientSession) -> None:
        self.name = name
        self.signaling = signaling
        self.http = http
        self.peer: ClientPeer | None = None
        self.hello: dict = {}
        self.mids: dict[int, str] = {}

    @classmethod
    async def connect(
        cls,
        url: str,
        name: str,
        *,
        slots: int = 2,
        microphone: MediaStreamTrack | None = None,
        media: bool = True,
        password: str = PASSWORD,
    ) -> "PttClient":
        aiortc_hooks.use_host_addresses(["127.0.0.1"])
        http = aiohttp.ClientSession()
        try:
            auth = await login(url, name, password, session=http)
            signaling = await SignalingClient.connect(url, session=http)
        except BaseException:
            await http.close()
            raise
        client = cls(name, signaling, http)
        client.token = auth["token"]
        client.hello = await signaling.hello(auth["token"])
        if media:
            await client.negotiate(slots, microphone)
        return client

    @property
    def session_id(self) -> str:
        return self.hello["session"]

    async def negotiate(self, slots: int, microphone: MediaStreamTrack | None) -> None:
        self.peer = ClientPeer(slots, microphone)
        offer = await self.peer.create_offer()
        answer = await self.signaling.request("offer", sdp=offer)
        await self.peer.apply_answer(answer["sdp"])
        await self.peer.wait_connected()

    async def join(self, channel: int) -> dict:
        reply = await self.signaling.request("join", channel=channel)
        self.mids[channel] = reply["mid"]
        return reply

    def track(self, channel: int) -> MediaStreamTrack:
        return self.peer.track_for_mid(self.mids[channel])

    async def talk(self, channel: int, priority: str = "normal") -> dict:
        return await self.signaling.request("floor_request", channel=channel, priority=priority)

    async def release(self, channel: int) -> dict:
        return await self.signaling.request("floor_release", channel=channel)

    async def mute(self, channel: int, muted: bool = True) -> dict:
        return await self.signaling.request("mute", channel=channel, muted=muted)

    async def inbound_packets(self, channel: int) -> int:
        """RTP packets this client's slot for `channel` has received (aiortc stats)."""
        for transceiver in self.peer.pc.getTransceivers():
            if transceiver.mid == self.mids[channel]:
                stats = await transceiver.receiver.getStats()
                return sum(s.packetsReceived for s in stats.values() if s.type == "inbound-rtp")
        raise KeyError(channel)

    async def close(self) -> None:
        try:
            if self.peer is not None:
                await self.peer.close()
            await self.signaling.close()
        finally:
            await self.http.close()


async def close_all(*clients: PttClient) -> None:
    await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
