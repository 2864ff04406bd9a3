"""One UDP port for every session's media.

aioice gives each connection sockets of its own: a site's firewall then has to let a
range of ports through, and a fan-out's copies leave through as many sockets as there are
listeners, one system call each. Here all of the server's connections share one socket
per ICE address (a port the admin chooses, or one the system picks at start), so a site
opens one UDP port, and the fan-out queues its copies in that socket's batch and sends
them with one sendmmsg (server/media/udp_batch.py).

Each connection gets a stand-in for aioice's per-socket StunProtocol whose transport
writes to the shared socket. The shared socket hands each datagram to its connection:
- a STUN binding request by its USERNAME (our ufrag, before the colon), once its
  MESSAGE-INTEGRITY checks out with that connection's password: the sender's address is
  then that connection's (a client that moves is followed by its next check);
- a binding success that answers one of the server's consent checks to the consent
  checker (server/media/consent.py), by its transaction;
- anything else by the sender's address. A datagram from an address no connection has
  checked from or sent a check to is dropped, and counted.
A consent check on a connection's nominated pair is answered here, without aioice
(server/media/stun_checks.py), and the server's own consent checks come from one timer
wheel for all connections instead of a coroutine each; every other request, and ICE's
connectivity checks until a pair is nominated, still go to aioice.
Clients see nothing new: host candidates as before, all with the same port.

This reaches into aioice (pinned with aiortc); the attach() checks fail loudly as
HookError when an upgrade moves what it uses.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import secrets
import socket
import string

import aioice.ice
from aioice.candidate import Candidate, candidate_foundation, candidate_priority

from .aiortc_hooks import HookError
from .consent import ConsentChecker
from .stun_checks import ICE_CONTROLLED, ICE_CONTROLLING, USE_CANDIDATE, BindingMessage, binding_success, parse_binding_request
from .udp_batch import OUTBOX, DatagramBatch, Outbox

logger = logging.getLogger(__name__)

# aioice's UDP_SOCKET_BUFFER_SIZE is per connection; this socket carries all of them.
RECEIVE_BUFFER_BYTES = 4 << 20
SEND_BUFFER_BYTES = 4 << 20
_UFRAG_ALPHABET = string.ascii_letters + string.digits
_UFRAG_LENGTH = 12  # aioice's 4 characters collide too often among thousands of sessions


class _PortTransport(asyncio.DatagramTransport):
    """What one connection's protocol sees as its transport: the shared socket, with the
    addresses it sends checks to remembered as its own."""

    def __init__(self, shared: _SharedSocket, protocol: _ConnectionProtocol) -> None:
        super().__init__()
        self._shared = shared
        self._protocol = protocol
        self._closing = False
        self.batch = shared.batch  # aiortc_hooks.RawRtpWriter queues fan-out copies here

    def sendto(self, data, addr=None) -> None:
        if self._closing:
            return
        self._shared.claim(addr, self._protocol, steal=False)
        self._shared.transport.sendto(data, addr)

    def get_extra_info(self, name, default=None):
        return self._shared.transport.get_extra_info(name, default)

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._shared.forget(self._protocol)
        asyncio.get_running_loop().call_soon(self._protocol.connection_lost, None)

    def abort(self) -> None:
        self.close()


class _ConnectionProtocol(aioice.ice.StunProtocol):
    """aioice's StunProtocol for one connection on a shared socket."""

    def __init__(self, connection: aioice.ice.Connection, shared: _SharedSocket, component: int) -> None:
        super().__init__(connection)
        self.component = component
        self.connection_made(_PortTransport(shared, self))


class _SharedSocket(asyncio.DatagramProtocol):
    """The socket of one address, and which connection each remote address belongs to."""

    def __init__(self, outbox: Outbox, consent: ConsentChecker) -> None:
        self._outbox = outbox
        self._consent = consent
        self.transport: asyncio.DatagramTransport | None = None
        self.batch: DatagramBatch | None = None
        self.by_address: dict[tuple, _ConnectionProtocol] = {}
        self.by_ufrag: dict[str, _ConnectionProtocol] = {}
        self._addresses_of: dict[_ConnectionProtocol, set[tuple]] = {}
        self.unrouted = 0
        self.consent_answered = 0

    def connection_made(self, transport) -> None:
        self.transport = transport
        sock = transport.get_extra_info("socket")
        raw = getattr(sock, "_sock", sock)
        for option, size in ((socket.SO_RCVBUF, RECEIVE_BUFFER_BYTES), (socket.SO_SNDBUF, SEND_BUFFER_BYTES)):
            try:
                raw.setsockopt(socket.SOL_SOCKET, option, size)
            except OSError as exc:  # a capped system keeps its own limit
                logger.debug("media socket buffer size not set: %s", exc)
        self.batch = self._outbox.batch_for(raw)

    def connection_lost(self, exc) -> None:
        if self.batch is not None:
            self.batch.close()
        for protocol in list(self._addresses_of):
            protocol.transport.close()

    def claim(self, addr, protocol: _ConnectionProtocol, steal: bool) -> None:
        key = (addr[0], addr[1])
        owner = self.by_address.get(key)
        if owner is protocol or (owner is not None and not steal):
            return
        if owner is not None:
            self._addresses_of[owner].discard(key)
        self.by_address[key] = protocol
        self._addresses_of.setdefault(protocol, set()).add(key)

    def register(self, ufrag: str, protocol: _ConnectionProtocol) -> None:
        self.by_ufrag[ufrag] = protocol
        self._addresses_of.setdefault(protocol, set())

    def forget(self, protocol: _ConnectionProtocol) -> None:
        for key in self._addresses_of.pop(protocol, ()):
            if self.by_address.get(key) is protocol:
                del self.by_address[key]
        for ufrag in [u for u, p in self.by_ufrag.items() if p is protocol]:
            del self.by_ufrag[ufrag]

    def datagram_received(self, data: bytes, addr) -> None:
        if not data:
            return
        first = data[0]
        if first == 0 and len(data) >= 20 and data[1] == 1:  # a STUN binding request (0x0001)
            request = parse_binding_request(data)
            protocol = self._route_request(request, addr) if request is not None else None
            if protocol is not None and self._answer_consent(protocol, request, addr):
                return
        elif first == 1 and len(data) >= 20 and data[1] == 1 and self._consent.response_received(data, addr):
            return  # a binding success (0x0101) answering one of our consent checks
        else:
            protocol = self.by_address.get((addr[0], addr[1]))
        if protocol is None:
            self.unrouted += 1
            return
        if 127 < first < 192:
            # RTP and RTCP (RFC 7983): straight to the connection, past aioice's STUN parse.
            protocol.receiver.data_received(data, protocol.component)
        else:
            protocol.datagram_received(data, addr)

    def _route_request(self, request: BindingMessage, addr) -> _ConnectionProtocol | None:
        protocol = self.by_ufrag.get(request.username.partition(":")[0])
        if protocol is None:
            return None
        if not request.check(protocol.receiver.local_password.encode("utf8")):
            return None  # a forged check must not move anyone's address
        self.claim(addr, protocol, steal=True)
        return protocol

    def _answer_consent(self, protocol: _ConnectionProtocol, request: BindingMessage, addr) -> bool:
        """Answer a consent check on the connection's nominated pair here (True), as aioice
        would: a success, nothing else to do. Anything that could change ICE's state (a
        role conflict, a nomination, a new pair, checks before connect()) goes to aioice."""
        connection = protocol.receiver
        pair = connection._nominated.get(protocol.component)
        if (
            pair is None
            or pair.protocol is not protocol
            or pair.remote_addr != (addr[0], addr[1])
            or connection._closing
            or not connection._early_checks_done
        ):
            return False
        attributes = request.attributes
        conflicting = ICE_CONTROLLING if connection.ice_controlling else ICE_CONTROLLED
        if conflicting in attributes:
            return False
        if USE_CANDIDATE in attributes and not pair.remote_nominated:
            return False
        key = connection.local_password.encode("utf8")
        self.transport.sendto(binding_success(request.transaction_id, addr, key), addr)
        self.consent_answered += 1
        return True

    def error_received(self, exc) -> None:
        logger.debug("media socket error: %s", exc)


class MediaPort:
    """The server's shared media sockets: one per ICE address, all on one port number
    where the system allows (port 0: the first socket's pick, then the same for the rest)."""

    def __init__(self, port: int = 0, outbox: Outbox = OUTBOX) -> None:
        self.port = port
        self._outbox = outbox
        self._sockets: dict[str, _SharedSocket] = {}
        self._opening: dict[str, asyncio.Future] = {}
        self._ufrags: set[str] = set()
        self.consent = ConsentChecker()

    @property
    def bound_ports(self) -> dict[str, int]:
        """The port each address's socket is bound to."""
        return {a: s.transport.get_extra_info("sockname")[1] for a, s in self._sockets.items()}

    @property
    def unrouted(self) -> int:
        """Datagrams dropped because no connection owned their sender."""
        return sum(s.unrouted for s in self._sockets.values())

    def consent_stats(self) -> dict[str, int]:
        """ICE consent on the port: checks answered here, and the server's own checks."""
        return {"answered": sum(s.consent_answered for s in self._sockets.values()), **self.consent.stats()}

    async def _socket_for(self, address: str) -> _SharedSocket:
        shared = self._sockets.get(address)
        if shared is not None:
            return shared
        opening = self._opening.get(address)
        if opening is not None:
            return await asyncio.shield(opening)
        future = self._opening[address] = asyncio.get_running_loop().create_future()
        try:
            shared = await self._bind(address)
        except OSError as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: concurrent gatherers get it from their await
            raise
        finally:
            del self._opening[address]
        self._sockets[address] = shared
        future.set_result(shared)
        return shared

    async def _bind(self, address: str) -> _SharedSocket:
        loop = asyncio.get_running_loop()
        chosen = self.port or next(iter(self.bound_ports.values()), 0)
        try:
            _, shared = await loop.create_datagram_endpoint(
                lambda: _SharedSocket(self._outbox, self.consent), local_addr=(address, chosen)
            )
        except OSError:
            if self.port or not chosen:
                raise
            # That number is taken on this address: any port will do.
            _, shared = await loop.create_datagram_endpoint(
                lambda: _SharedSocket(self._outbox, self.consent), local_addr=(address, 0)
            )
        logger.info("media port: %s:%d", address, shared.transport.get_extra_info("sockname")[1])
        return shared

    def attach(self, connection: aioice.ice.Connection) -> bool:
        """Make `connection` gather its host candidates on the shared sockets.

        Call before it gathers (before the answer is created). A connection with a STUN or
        TURN server keeps aioice's own sockets (False): its other candidates need them.
        """
        for name in ("_local_username", "_local_candidates_start", "_protocols", "get_component_candidates",
                     "_nominated", "_closing", "_early_checks_done", "ice_controlling", "local_password",
                     "remote_password", "remote_username", "_tie_breaker", "query_consent", "_query_consent_task"):
            if not hasattr(connection, name):
                raise HookError(f"aioice Connection.{name} is gone")
        if connection._local_candidates_start:
            raise HookError("attach() after the connection started gathering")
        if connection.stun_server is not None or connection.turn_server is not None:
            return False
        ufrag = self._new_ufrag()
        connection._local_username = ufrag

        async def get_component_candidates(component: int, addresses: list[str], timeout: int = 5) -> list:
            candidates = []
            for address in addresses:
                try:
                    shared = await self._socket_for(address)
                except OSError as exc:
                    logger.warning("media port: cannot bind %s: %s", address, exc)
                    continue
                protocol = _ConnectionProtocol(connection, shared, component)
                host, port = shared.transport.get_extra_info("sockname")[:2]
                protocol.local_candidate = Candidate(
                    foundation=candidate_foundation("host", "udp", host),
                    component=component,
                    transport="udp",
                    priority=candidate_priority(component, "host"),
                    host=host,
                    port=port,
                    type="host",
                )
                shared.register(ufrag, protocol)
                connection._protocols.append(protocol)
                candidates.append(protocol.local_candidate)
            return candidates

        connection.get_component_candidates = get_component_candidates
        # aioice starts this as a task once ICE completes, and cancels it on close().
        connection.query_consent = functools.partial(self.consent.watch, connection)
        original_close = connection.close

        async def close() -> None:
            try:
                await original_close()
            finally:
                self._ufrags.discard(ufrag)

        connection.close = close
        return True

    def _new_ufrag(self) -> str:
        while True:
            ufrag = "".join(secrets.choice(_UFRAG_ALPHABET) for _ in range(_UFRAG_LENGTH))
            if ufrag not in self._ufrags:
                self._ufrags.add(ufrag)
                return ufrag

    def close(self) -> None:
        for shared in self._sockets.values():
            if shared.transport is not None:
                shared.transport.close()
        self._sockets.clear()
