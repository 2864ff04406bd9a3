"""The aiohttp application: REST endpoints, the WebSocket, the web page."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from .access import Operation, check_role
from .api.errors import api_errors
from .api.guard import bearer_token, caller_of_token
from .api.routes import add_api_routes
from .api.token_routes import add_token_routes
from .app_keys import AUDIT, CONFIG, DIRECTORY, HUB, LOGINS, STORE, TOKENS
from .audit_redis import open_audit_log
from .auth import TokenIssuer
from .cluster.site import open_cluster, token_secret
from .config import ServerConfig
from .directory import Directory
from .hub import Hub
from .logins_redis import open_login_store
from .signaling import websocket_handler
from .transmissions import attach_transmission_log
from .state.base import LiveStore
from .web_routes import add_web_routes, default_tones_dir, default_web_dir

logger = logging.getLogger(__name__)


async def health(request: web.Request) -> web.Response:
    try:
        reachable = await asyncio.wait_for(request.app[STORE].ping(), timeout=2.0)
    except Exception:
        reachable = False
    if not reachable:
        return web.json_response({"status": "unavailable", "state_backend": "unreachable"}, status=503)
    hub = request.app[HUB]
    return web.json_response({"status": "ok", "sessions": hub.stats()["sessions"]})


async def stats(request: web.Request) -> web.Response:
    token = bearer_token(request) or request.query.get("token")
    user = caller_of_token(request.app, token).user  # ApiError(401): see api_errors
    check_role(user, Operation.STATS_READ)  # ApiError(403) for general users
    return web.json_response(request.app[HUB].stats())


async def _common_headers(request: web.Request, response: web.StreamResponse) -> None:
    """Every response, JSON and files alike: no MIME sniffing, no Referer to elsewhere."""
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")


async def _close_websockets(app: web.Application) -> None:
    await app[HUB].close_connections()


async def _hub_context(app: web.Application) -> AsyncIterator[None]:
    hub = app[HUB]
    await hub.start()
    yield
    await hub.stop()


async def _stores_context(app: web.Application) -> AsyncIterator[None]:
    """Close the logins and the audit log after the hub has stopped (it uses both)."""
    yield
    app[LOGINS].close()
    # The audit writer thread joins (flushing what is queued): not on the loop.
    await asyncio.to_thread(app[AUDIT].close)


def create_app(config: ServerConfig, store: LiveStore, directory: Directory) -> web.Application:
    """The node's application. The caller owns `store` and `directory` (and closes them)."""
    app = web.Application(client_max_size=256 * 1024, middlewares=[api_errors])
    signing_key = token_secret(config)
    tokens = TokenIssuer(signing_key, config.token_ttl_s)
    logins = open_login_store(config.data_dir, config.redis_url, config.redis_prefix)
    hub = Hub(config, directory, store, logins=logins)
    hub.cluster = open_cluster(config, store, signing_key)
    app[CONFIG] = config
    app[DIRECTORY] = directory
    app[STORE] = store
    app[HUB] = hub
    app[TOKENS] = tokens
    app[LOGINS] = logins
    app[AUDIT] = open_audit_log(config.data_dir, config.redis_url, config.redis_prefix,
                                node_id=hub.cluster.node_id if hub.cluster else "")
    hub.transmissions = attach_transmission_log(hub, app[AUDIT])
    add_token_routes(app)
    add_api_routes(app)
    app.router.add_get("/api/health", health)
    app.router.add_get("/api/stats", stats)
    app.router.add_get("/ws", functools.partial(websocket_handler, hub, tokens))
    add_web_routes(
        app, config.web_dir or default_web_dir(), config.tones_dir or default_tones_dir()
    )
    app.on_response_prepare.append(_common_headers)
    app.on_shutdown.append(_close_websockets)
    # cleanup_ctx unwinds in reverse: the hub stops first, then the stores close.
    app.cleanup_ctx.append(_stores_context)
    app.cleanup_ctx.append(_hub_context)
    return app


__all__ = ["create_app", "AUDIT", "CONFIG", "DIRECTORY", "HUB", "LOGINS", "STORE", "TOKENS", "json"]
