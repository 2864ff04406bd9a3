"""Running a server node: standalone (`run_node`) or inside another program's loop.

`EmbeddedServer` is what the console uses for a small site: the same application as a
standalone node, started and stopped on the caller's asyncio loop.

TLS (server/tls.py): HTTPS/WSS with the configured certificate, or a self-signed one made
in the data folder; plain http only on loopback, or with `plain_http` behind a proxy.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from pathlib import Path

from aiohttp import web

from .app import create_app
from .app_keys import HUB
from .config import ConfigError, ServerConfig
from .directory import Directory
from .directory_redis import open_directory
from .gc_pacer import GarbagePacer
from .media import aiortc_hooks
from .state.base import LiveStore, LiveStoreError
from .state.memory import MemoryLiveStore
from .state.redis_store import RedisLiveStore
from .tls import ServedTls, fingerprint_sha256, served_tls

logger = logging.getLogger(__name__)


class EmbeddedServer:
    """A server node on the caller's event loop.

    `await start()` binds and serves (port 0 picks a free port: see `url`); `await stop()`
    closes every session and releases the port. Both must be awaited on the same loop.
    `start()` raises server.config.ConfigError, before opening anything, for TLS options
    that cannot work or a listen address beyond loopback without TLS (see server.tls).
    `reuse_port` shares the listen port with the other workers of `vpserver --workers`
    (SO_REUSEPORT: the kernel spreads new connections over them; see server.workers).
    `pace_gc` runs Python's garbage collector between packets (server.gc_pacer): for a
    standalone node, which owns its process; an embedding program keeps its own policy.
    """

    def __init__(
        self,
        config: ServerConfig,
        *,
        store: LiveStore | None = None,
        directory: Directory | None = None,
        reuse_port: bool = False,
        pace_gc: bool = False,
    ) -> None:
        self.config = config
        self.reuse_port = reuse_port
        self.pace_gc = pace_gc
        self._gc_pacer: GarbagePacer | None = None
        self._own_store = store is None
        self._own_directory = directory is None
        self.store = store
        self.directory = directory
        self.app: web.Application | None = None
        self._runner: web.AppRunner | None = None
        self.port: int | None = None
        self._tls: ServedTls | None = None

    @property
    def tls_cert(self) -> Path | None:
        """The certificate served (PEM), for clients to pin; None for plain http."""
        return self._tls.cert if self._tls is not None else None

    @property
    def url(self) -> str:
        host = self.config.listen_host
        if ":" in host:
            host = f"[{host}]"
        scheme = "https" if self._tls is not None else "http"
        return f"{scheme}://{host}:{self.port}"

    async def start(self) -> "EmbeddedServer":
        config = self.config
        config.data_dir.mkdir(parents=True, exist_ok=True)
        self._tls = served_tls(config)
        aiortc_hooks.use_host_addresses(config.ice_addresses)
        if self.store is None:  # first: a bad redis_url then leaves nothing open
            self.store = await open_live_store(config)
        if self.directory is None:
            self.directory = open_directory(config.data_dir, config.redis_url,
                                            config.redis_prefix)
        self.app = create_app(config, self.store, self.directory)
        self._runner = web.AppRunner(self.app, handle_signals=False, access_log=None)
        await self._runner.setup()
        family = socket.AF_INET6 if ":" in config.listen_host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        if hasattr(socket, "SO_EXCLUSIVEADDRUSE"):  # Windows: REUSEADDR would allow a second bind
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_EXCLUSIVEADDRUSE, 1)
        else:  # POSIX: rebind at once after a restart despite TIME_WAIT
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if self.reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            sock.bind((config.listen_host, config.listen_port))
        except BaseException:
            sock.close()
            await self._runner.cleanup()
            self._runner = None
            if self._own_store:
                await self.store.close()
                self.store = None
            raise
        self.port = sock.getsockname()[1]
        site = web.SockSite(self._runner, sock, ssl_context=self._tls.context if self._tls else None)
        await site.start()
        cluster = self.app[HUB].cluster
        if cluster is not None:
            await cluster.announce(config.public_url or self.url)
        if self.pace_gc:
            # Last: what start-up made is frozen, never walked by a collection again.
            self._gc_pacer = self.app[HUB].gc_pacer = GarbagePacer()
            self._gc_pacer.start()
        if self._tls is not None:
            kind = "self-signed certificate" if self._tls.self_signed else "certificate"
            logger.info("serving on %s (data %s; %s %s, SHA-256 %s)", self.url, config.data_dir,
                        kind, self._tls.cert, fingerprint_sha256(self._tls.cert))
        else:
            logger.info("serving on %s (data %s)", self.url, config.data_dir)
        return self

    async def stop(self) -> None:
        if self._gc_pacer is not None:
            self._gc_pacer.stop()
            self._gc_pacer = None
            if self.app is not None:
                self.app[HUB].gc_pacer = None
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()
        if self._own_store and self.store is not None:
            await self.store.close()
        if self._own_directory and self.directory is not None:
            self.directory.close()
        logger.info("stopped")

    async def __aenter__(self) -> "EmbeddedServer":
        return await self.start()

    async def __aexit__(self, *exc_info) -> None:
        await self.stop()


async def open_live_store(config: ServerConfig) -> LiveStore:
    """The live-state store the config asks for: Redis when `redis_url` is set, else one
    in this process. Raises ConfigError for a Redis URL that cannot be parsed. An
    unreachable Redis is not an error: the node serves, /api/health says 503 and floor
    requests fail until Redis answers (it reconnects by itself)."""
    if config.redis_url is None:
        return MemoryLiveStore()
    try:
        store = RedisLiveStore.from_url(config.redis_url, prefix=config.redis_prefix)
    except LiveStoreError as exc:
        raise ConfigError(f"redis_url: {exc}") from None
    if await store.ping():
        logger.info("live state in %s (prefix %r)", store.name, config.redis_prefix)
    else:
        logger.warning("live state in %s (prefix %r): not answering yet; health is 503 "
                       "and floors cannot be granted until it does", store.name, config.redis_prefix)
    return store


async def serve_until_signalled(config: ServerConfig, *, reuse_port: bool = False) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    server = EmbeddedServer(config, reuse_port=reuse_port, pace_gc=True)
    await server.start()
    try:
        await stop.wait()
    finally:
        await server.stop()


def run_node(config: ServerConfig, *, reuse_port: bool = False) -> None:
    """Run a standalone node until SIGINT or SIGTERM (`reuse_port`: as one worker of
    `vpserver --workers`, see EmbeddedServer).

    Raises ConfigError before the loop starts when the TLS options cannot work (see
    server.tls.served_tls); `vpserver` prints it and exits with code 2.
    """
    served_tls(config)  # fail before anything starts; start() repeats it (cheap)
    asyncio.run(serve_until_signalled(config, reuse_port=reuse_port))
