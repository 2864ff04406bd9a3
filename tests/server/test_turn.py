"""TURN: the ephemeral credentials `hello` hands out, checked against a real coturn.

coturn (/usr/bin/turnserver) runs on 127.0.0.1 with its REST-API secret scheme
(`use-auth-secret`); a call whose aiortc client may only use relay candidates goes through
it to the real server, and an expired credential, or one made with another secret, gets
no allocation. Run inside a loopback-only network namespace (see the README).
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import hmac
import re
import secrets
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from aioice import stun
from aioice.turn import create_turn_endpoint
from aiortc import RTCConfiguration, RTCIceTransportPolicy

from server.config import ServerConfig
from server.turn import ice_servers_for, turn_credentials
from tests.audio_tools import RATE, WavTrack
from tests.server.harness import PttClient, close_all, start_site
from vpdesk.media import peer as peer_module
from vpdesk.media.peer import ClientPeer

TURNSERVER = Path("/usr/bin/turnserver")
REALM = "vpdesk.test"
START_TIMEOUT_S = 10.0


# --- credentials, without a TURN server ----------------------------------------------------


def expected_credential(secret: str, username: str) -> str:
    """coturn's check, computed independently: base64(HMAC-SHA1(secret, username))."""
    mac = hmac.new(secret.encode(), username.encode(), hashlib.sha1)
    return base64.b64encode(mac.digest()).decode()


def test_credentials_follow_the_rest_api_scheme():
    username, credential = turn_credentials("s3cret", 42, ttl_s=600, now=1_700_000_000.7)
    assert username == "1700000600:42"  # the expiry, then the user id
    assert credential == expected_credential("s3cret", username)
    assert len(base64.b64decode(credential)) == 20  # a SHA-1 digest
    assert turn_credentials("other", 42, ttl_s=600, now=1_700_000_000)[1] != credential


def test_expiry_is_now_plus_ttl():
    before = int(time.time())
    username, _ = turn_credentials("s3cret", 7, ttl_s=3600)
    expiry, user_id = username.split(":")
    assert user_id == "7"
    assert before + 3600 <= int(expiry) <= int(time.time()) + 3600
    expired, _ = turn_credentials("s3cret", 7, ttl_s=-60, now=1000)
    assert expired == "940:7"


def test_credentials_need_a_secret():
    with pytest.raises(ValueError, match="secret"):
        turn_credentials("", 1, ttl_s=60)


def test_hello_ice_servers_static_then_stun_then_turn(tmp_path):
    config = ServerConfig(
        data_dir=tmp_path,
        ice_servers=[{"urls": ["stun:static.example:3478"]}],
        stun_urls=["stun:stun.example:3478"],
        turn_urls=["turn:turn.example:3478?transport=udp", "turn:turn.example:3478?transport=tcp"],
        turn_secret="s3cret",
        turn_ttl_s=120,
    )
    servers = ice_servers_for(config, user_id=5, now=2_000_000_000)
    assert servers[0] == {"urls": ["stun:static.example:3478"]}
    assert servers[1] == {"urls": ["stun:stun.example:3478"]}
    turn = servers[2]
    assert turn["urls"] == config.turn_urls
    assert turn["username"] == "2000000120:5"
    assert turn["credential"] == expected_credential("s3cret", "2000000120:5")
    assert len(servers) == 3
    # The reply is a copy: changing it leaves the configuration alone.
    servers[0]["urls"].append("stun:changed.example")
    servers[0]["extra"] = True
    assert config.ice_servers == [{"urls": ["stun:static.example:3478"]}]


def test_turn_without_a_secret_is_handed_out_bare_and_nothing_is_nothing(tmp_path):
    bare = ServerConfig(data_dir=tmp_path, turn_urls=["turn:turn.example:3478"])
    assert ice_servers_for(bare, user_id=1) == [{"urls": ["turn:turn.example:3478"]}]
    assert ice_servers_for(ServerConfig(data_dir=tmp_path), user_id=1) == []


# --- a real coturn on loopback ------------------------------------------------------------


@dataclass
class Coturn:
    port: int
    secret: str
    log: Path

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    @property
    def url(self) -> str:
        return f"turn:127.0.0.1:{self.port}?transport=udp"

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stun_answers(address: tuple[str, int]) -> bool:
    """True when a STUN Binding request to `address` gets a response within 0.2 s."""
    request = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.2)
        sock.sendto(bytes(request), address)
        try:
            data, _ = sock.recvfrom(2048)
        except (TimeoutError, ConnectionRefusedError):
            return False
    return stun.parse_message(data).transaction_id == request.transaction_id


@pytest.fixture(scope="module")
def coturn(tmp_path_factory) -> Iterator[Coturn]:
    if not TURNSERVER.exists():
        pytest.fail(f"{TURNSERVER} is missing (Debian package: coturn)")
    folder = tmp_path_factory.mktemp("coturn")
    port = free_port(socket.SOCK_DGRAM)
    # Relay ports below Linux's ephemeral range, so aiortc's own sockets never take them.
    relay_base = 20000 + secrets.randbelow(200) * 50
    server = Coturn(port=port, secret=secrets.token_hex(16), log=folder / "turnserver.log")
    conf = folder / "turnserver.conf"
    conf.write_text("\n".join([
        "listening-ip=127.0.0.1",
        "relay-ip=127.0.0.1",
        f"listening-port={port}",
        "use-auth-secret",
        f"static-auth-secret={server.secret}",
        f"realm={REALM}",
        "no-tls",
        "no-dtls",
        "no-cli",
        # coturn refuses to relay to loopback peers otherwise; here every peer is one.
        "allow-loopback-peers",
        f"min-port={relay_base}",
        f"max-port={relay_base + 49}",
        "log-file=stdout",
        "simple-log",
        f"pidfile={folder / 'turnserver.pid'}",
        f"userdb={folder / 'turndb'}",
        "",
    ]))
    with server.log.open("wb") as log:
        process = subprocess.Popen([str(TURNSERVER), "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not stun_answers(server.address):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"turnserver did not answer on {server.address}:\n{server.log_tail()}")
            time.sleep(0.05)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


class Received(asyncio.DatagramProtocol):
    """A datagram protocol that keeps what arrives and notices when it is closed."""

    def __init__(self) -> None:
        self.datagrams: asyncio.Queue[bytes] = asyncio.Queue()
        self.lost = asyncio.Event()

    def datagram_received(self, data: bytes, addr) -> None:
        self.datagrams.put_nowait(data)

    def connection_lost(self, exc) -> None:
        self.lost.set()


async def allocate(coturn: Coturn, username: str, password: str):
    return await asyncio.wait_for(
        create_turn_endpoint(Received, coturn.address, username, password), timeout=10
    )


async def test_a_fresh_credential_gets_a_relay_that_carries_data(coturn):
    username, password = turn_credentials(coturn.secret, 3, ttl_s=300)
    transport, protocol = await allocate(coturn, username, password)
    peer_transport, peer = await asyncio.get_running_loop().create_datagram_endpoint(
        Received, local_addr=("127.0.0.1", 0)
    )
    try:
        relayed = transport.get_extra_info("sockname")
        assert relayed[0] == "127.0.0.1"
        transport.sendto(b"through the relay", peer_transport.get_extra_info("sockname"))
        assert await asyncio.wait_for(peer.datagrams.get(), timeout=5) == b"through the relay"
        peer_transport.sendto(b"and back", relayed)
        assert await asyncio.wait_for(protocol.datagrams.get(), timeout=5) == b"and back"
    finally:
        peer_transport.close()
        transport.close()
        await asyncio.wait_for(protocol.lost.wait(), timeout=5)


@pytest.mark.parametrize("kind", ["expired", "wrong secret", "forged user"])
async def test_a_bad_credential_gets_no_allocation(coturn, kind):
    if kind == "expired":
        username, password = turn_credentials(coturn.secret, 3, ttl_s=-60)
    elif kind == "wrong secret":
        username, password = turn_credentials(secrets.token_hex(16), 3, ttl_s=300)
    else:  # a valid credential's password under another user name
        username, password = turn_credentials(coturn.secret, 3, ttl_s=300)
        username = username.replace(":3", ":4")
    with pytest.raises(stun.TransactionFailed) as refused:
        await allocate(coturn, username, password)
    assert refused.value.response.attributes["ERROR-CODE"][0] == 401, coturn.log_tail()


# --- a call relayed through coturn ---------------------------------------------------------


def tone(seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(RATE * seconds)) / RATE
    return (8000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)


async def until(predicate, timeout: float = 15.0) -> None:
    async with asyncio.timeout(timeout):
        while not await predicate():
            await asyncio.sleep(0.05)


def candidate_types(sdp: str) -> list[str]:
    return re.findall(r"^a=candidate:.* typ (\w+)", sdp, flags=re.MULTILINE)


async def relay_only_client(url: str, name: str, microphone, monkeypatch) -> PttClient:
    """A PttClient whose peer takes `ice_servers` from hello and may use relay candidates
    only (RTCIceTransportPolicy.RELAY)."""
    client = await PttClient.connect(url, name, media=False)
    relay_only = functools.partial(RTCConfiguration, iceTransportPolicy=RTCIceTransportPolicy.RELAY)
    with monkeypatch.context() as patched:  # ClientPeer has no transport-policy option
        patched.setattr(peer_module, "RTCConfiguration", relay_only)
        client.peer = ClientPeer(1, microphone, ice_servers=client.hello["ice_servers"])
    offer = await client.peer.create_offer()
    answer = await client.signaling.request("offer", sdp=offer)
    await client.peer.apply_answer(answer["sdp"])
    await client.peer.wait_connected(timeout=20)
    return client


async def test_a_relay_only_client_talks_and_listens_through_coturn(tmp_path, coturn, monkeypatch):
    site = await start_site(tmp_path, users=3, turn_urls=[coturn.url], turn_secret=coturn.secret)
    clients: list[PttClient] = []
    try:
        alpha = site.channels["alpha"]
        relayed_mic = WavTrack(tone(), autostart=True, loop=True)
        relayed = await relay_only_client(site.url, "u0", relayed_mic, monkeypatch)
        clients.append(relayed)
        (turn_entry,) = [s for s in relayed.hello["ice_servers"] if "username" in s]
        assert turn_entry["urls"] == [coturn.url]
        assert turn_entry["username"].endswith(f":{relayed.hello['user']['id']}")
        types = candidate_types(relayed.peer.pc.localDescription.sdp)
        assert types and set(types) == {"relay"}, types

        listener = await PttClient.connect(site.url, "u1", slots=1)
        clients.append(listener)
        talker = await PttClient.connect(
            site.url, "u2", slots=1, microphone=WavTrack(tone(), autostart=True, loop=True)
        )
        clients.append(talker)
        for client in (relayed, listener):
            await client.join(alpha)

        # Talking: the relayed client holds the floor; its audio reaches a plain listener.
        assert (await relayed.talk(alpha))["granted"] is True
        await until(lambda: _at_least(listener, alpha, 25))
        await relayed.release(alpha)

        # Listening: a plain talker's audio reaches the relayed client.
        before = await relayed.inbound_packets(alpha)
        assert (await talker.talk(alpha))["granted"] is True
        await until(lambda: _at_least(relayed, alpha, before + 25))
        await talker.release(alpha)
    finally:
        await close_all(*clients)
        await site.server.stop()


async def _at_least(client: PttClient, channel: int, packets: int) -> bool:
    return await client.inbound_packets(channel) >= packets
