"""The aiohttp application: REST endpoints, the WebSocket, the web page."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from .api.errors import api_errors
from .app_keys import CONFIG, DIRECTORY, HUB, STORE, TOKENS
from .auth import TokenError, TokenIssuer, load_or_create_secret
from .config import ServerConfig
from .directory import Directory, Role, verify_password
from .hub import Hub
from .signaling import websocket_handler
from .state.base import LiveStore
from .web_routes import add_web_routes, default_tones_dir, default_web_dir

logger = logging.getLogger(__name__)



def error_json(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


async def login(request: web.Request) -> web.Response:
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError):
        return error_json(400, "bad_request", "body must be JSON")
    if not isinstance(body, dict):
        return error_json(400, "bad_request", "body must be a JSON object")
    username, password = body.get("username"), body.get("password")
    if not isinstance(username, str) or not isinstance(password, str):
        return error_json(400, "bad_request", "'username' and 'password' must be strings")
    if len(username) > 256 or len(password) > 1024:
        return error_json(401, "unauthorized", "wrong username or password")
    user, stored_hash = request.app[DIRECTORY].login_check(username)
    # scrypt takes ~50 ms of CPU: off the loop, so forwarding does not stall on a login.
    matches = await asyncio.to_thread(verify_password, stored_hash, password)
    if user is None or not matches:
        logger.info("login refused for %r from %s", username[:64], request.remote)
        return error_json(401, "unauthorized", "wrong username or password")
    token, expires_at = request.app[TOKENS].issue(user)
    logger.info("login %s from %s", user.name, request.remote)
    return web.json_response({"token": token, "expires_at": expires_at, "user": user.to_wire()})


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
    header = request.headers.get("Authorization", "")
    token = header[7:] if header.startswith("Bearer ") else request.query.get("token")
    try:
        user_id = request.app[TOKENS].verify(token)
    except TokenError as exc:
        return error_json(401, "unauthorized", f"token {exc.reason}")
    user = request.app[DIRECTORY].get_user(user_id)
    if user is None:
        return error_json(401, "unauthorized", "user no longer exists")
    if user.role not in (Role.ADMIN, Role.DISPATCH):
        return error_json(403, "forbidden", "stats need the admin or dispatch role")
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


def create_app(config: ServerConfig, store: LiveStore, directory: Directory) -> web.Application:
    """The node's application. The caller owns `store` and `directory` (and closes them)."""
    app = web.Application(client_max_size=256 * 1024, middlewares=[api_errors])
    tokens = TokenIssuer(load_or_create_secret(config.data_dir), config.token_ttl_s)
    hub = Hub(config, directory, store)
    app[CONFIG] = config
    app[DIRECTORY] = directory
    app[STORE] = store
    app[HUB] = hub
    app[TOKENS] = tokens
    app.router.add_post("/api/login", login)
    app.router.add_get("/api/health", health)
    app.router.add_get("/api/stats", stats)
    app.router.add_get("/ws", functools.partial(websocket_handler, hub, tokens))
    add_web_routes(
        app, config.web_dir or default_web_dir(), config.tones_dir or default_tones_dir()
    )
    app.on_response_prepare.append(_common_headers)
    app.on_shutdown.append(_close_websockets)
    app.cleanup_ctx.append(_hub_context)
    return app


__all__ = ["create_app", "CONFIG", "DIRECTORY", "STORE", "HUB", "TOKENS", "json"]
