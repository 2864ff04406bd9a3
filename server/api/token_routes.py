"""Signing in and out: login, refresh, logout and the caller's own password change.

`POST /api/login` checks the password (scrypt, off the loop) after the failure limiters
said yes, opens a login (server.logins) and answers a short-lived access token plus the
login's refresh token. `POST /api/refresh` rotates the refresh token for a new access
token. Logout and a password change revoke logins and end their live sessions at once.
Handlers run on the server's loop.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from ..app_keys import AUDIT, CONFIG, DIRECTORY, HUB, LOGINS, TOKENS
from ..directory import Directory, DirectoryError, DirectoryUnavailable, User, verify_password
from ..logins import LoginStoreUnavailable, RefreshRefused
from ..ratelimit import FailureLimiter
from ..ratelimit_redis import RedisFailureLimiter, login_limiters
from .errors import ApiError, Handler, bad_request
from .guard import Caller, require_user, unauthorized

logger = logging.getLogger(__name__)

MAX_USERNAME_CHARS = 256
MAX_PASSWORD_CHARS = 1024
MAX_REFRESH_TOKEN_CHARS = 256
MAX_CLIENT_CHARS = 128
WRONG_CREDENTIALS = "wrong username or password"


@dataclass
class LoginLimiters:
    """Failed logins counted per user name (casefolded) and per client address."""

    per_user: FailureLimiter | RedisFailureLimiter
    per_address: FailureLimiter | RedisFailureLimiter

    def retry_after(self, user_key: str, address: str) -> float:
        return max(self.per_user.retry_after(user_key), self.per_address.retry_after(address))

    def failed(self, user_key: str, address: str) -> None:
        self.per_user.failed(user_key)
        self.per_address.failed(address)

    def succeeded(self, user_key: str) -> None:
        # The address keeps its failures: otherwise one valid account would let an
        # address reset its count between guesses at other users' passwords.
        self.per_user.succeeded(user_key)


LIMITERS = web.AppKey("login_limiters", LoginLimiters)


def add_token_routes(app: web.Application) -> None:
    """Register /api/login, /api/refresh, /api/logout and /api/me/password."""
    config = app[CONFIG]
    app[LIMITERS] = LoginLimiters(*login_limiters(config))
    app.on_cleanup.append(_close_limiters)
    app.router.add_post("/api/login", login)
    app.router.add_post("/api/refresh", refresh)
    app.router.add_post("/api/logout", logout)
    app.router.add_post("/api/me/password", change_password)


async def _close_limiters(app: web.Application) -> None:
    for limiter in (app[LIMITERS].per_user, app[LIMITERS].per_address):
        if isinstance(limiter, RedisFailureLimiter):
            limiter.close()


# --- helpers -------------------------------------------------------------------------


def unavailable_as_503(handler: Handler) -> Handler:
    """The logins or their throttle in Redis unreachable: 503 "unavailable" (a login can
    be neither granted nor refused now), not a 500."""

    @functools.wraps(handler)
    async def guarded(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except LoginStoreUnavailable as exc:
            logger.warning("%s refused: %s", request.path, exc)
            raise ApiError(503, "unavailable", "the server cannot reach its shared state; try again") from None

    return guarded


async def json_object(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError):
        raise bad_request("body must be JSON") from None
    if not isinstance(body, dict):
        raise bad_request("body must be a JSON object")
    return body


def string_fields(body: dict[str, Any], *names: str) -> list[str]:
    values = [body.get(name) for name in names]
    if not all(isinstance(value, str) for value in values):
        quoted = " and ".join(f"'{name}'" for name in names)
        raise bad_request(f"{quoted} must be strings")
    return values


def address_of(request: web.Request) -> str:
    return request.remote or "?"


def audit(request: web.Request, kind: str, **fields: Any) -> None:
    log = request.app.get(AUDIT)
    if log is not None:
        log.record(kind, address=request.remote, **fields)


def rate_limited(retry_after: float) -> ApiError:
    """429 with `retry_after` (the error middleware adds the Retry-After header)."""
    seconds = max(1, math.ceil(retry_after))
    return ApiError(
        429, "rate_limited", f"too many failed attempts; try again in {seconds} s",
        retry_after=seconds,
    )


def tokens_body(app: web.Application, user: User, login_id: str, refresh_token: str,
                refresh_expires_at: float) -> dict[str, Any]:
    token, expires_at = app[TOKENS].issue(user, login_id)
    return {
        "token": token,
        "expires_at": expires_at,
        "user": user.to_wire(),
        "refresh_token": refresh_token,
        "refresh_expires_at": refresh_expires_at,
    }


async def check_password(request: web.Request, name: str, password: str) -> User | None:
    """The user when `password` is theirs, else None; ApiError 429 while the name or the
    client address has too many recent failures (the password is not even checked then).
    Takes as long for an unknown name as for a known one."""
    limiters, address = request.app[LIMITERS], address_of(request)
    user_key = name.strip().casefold()
    # Before scrypt: a refused attempt costs the server nothing and is not counted.
    wait = limiters.retry_after(user_key, address)
    if wait > 0:
        logger.info("password check throttled for %r from %s (%.0f s)", name[:64], address, wait)
        raise rate_limited(wait)
    user, stored_hash = request.app[DIRECTORY].login_check(name)
    # scrypt takes ~50 ms of CPU: off the loop, so forwarding does not stall on a login.
    matches = await asyncio.to_thread(verify_password, stored_hash, password)
    if user is None or not matches:
        limiters.failed(user_key, address)
        return None
    limiters.succeeded(user_key)
    return user


def _client_name(request: web.Request, body: dict[str, Any]) -> str | None:
    client = body.get("client")
    if isinstance(client, dict):
        client = client.get("name")
    if not isinstance(client, str):
        client = request.headers.get("User-Agent")
    return client[:MAX_CLIENT_CHARS] if client else None


# --- handlers ------------------------------------------------------------------------


@unavailable_as_503
async def login(request: web.Request) -> web.Response:
    body = await json_object(request)
    username, password = string_fields(body, "username", "password")
    if len(username) > MAX_USERNAME_CHARS or len(password) > MAX_PASSWORD_CHARS:
        raise unauthorized(WRONG_CREDENTIALS)
    app, address = request.app, address_of(request)
    user = await check_password(request, username, password)
    if user is None:
        logger.info("login refused for %r from %s", username[:64], address)
        audit(request, "login_failed", username=username[:64])
        raise unauthorized(WRONG_CREDENTIALS)
    config = app[CONFIG]
    login_id, refresh_token, refresh_expires_at = app[LOGINS].create(
        user, address=request.remote, client=_client_name(request, body),
        refresh_ttl_s=config.refresh_ttl_s,
    )
    logger.info("login %s from %s (login %s)", user.name, address, login_id)
    audit(request, "login", actor=user, login=login_id)
    return web.json_response(tokens_body(app, user, login_id, refresh_token, refresh_expires_at))


@unavailable_as_503
async def refresh(request: web.Request) -> web.Response:
    body = await json_object(request)
    (refresh_token,) = string_fields(body, "refresh_token")
    if len(refresh_token) > MAX_REFRESH_TOKEN_CHARS:
        raise unauthorized("refresh token unknown")
    app = request.app
    logins = app[LOGINS]
    try:
        login_id, user_id, new_token, expires_at = logins.rotate(
            refresh_token, app[CONFIG].refresh_ttl_s
        )
    except RefreshRefused as exc:
        if exc.reason == "reused":  # a stolen token, or a client bug: worth a line
            audit(request, "login_failed", reason="refresh token reused")
        raise unauthorized(str(exc)) from None
    user = app[DIRECTORY].get_user(user_id)
    if user is None:
        logins.revoke(login_id)
        raise unauthorized("user no longer exists")
    return web.json_response(tokens_body(app, user, login_id, new_token, expires_at))


@unavailable_as_503
async def logout(request: web.Request) -> web.Response:
    caller = await require_user(request)
    app = request.app
    app[LOGINS].revoke(caller.login_id)
    ended = await app[HUB].end_sessions(login_id=caller.login_id, reason="logged out")
    logger.info("logout %s (login %s, %d sessions ended)", caller.user.name, caller.login_id, ended)
    audit(request, "logout", actor=caller.user, login=caller.login_id)
    return web.json_response({})


@unavailable_as_503
async def change_password(request: web.Request) -> web.Response:
    caller: Caller = await require_user(request)
    body = await json_object(request)
    old_password, new_password = string_fields(body, "old_password", "new_password")
    if len(new_password) > MAX_PASSWORD_CHARS:
        raise bad_request(f"'new_password' is longer than {MAX_PASSWORD_CHARS} characters")
    if not new_password:
        raise bad_request("'new_password' must not be empty")
    app, user = request.app, caller.user
    # Throttled like login: a stolen access token must not become a way to guess the
    # password.
    if len(old_password) > MAX_PASSWORD_CHARS or await check_password(request, user.name, old_password) is None:
        raise ApiError(403, "forbidden", "the old password is wrong")
    try:
        await asyncio.to_thread(_set_password, app[DIRECTORY], user, new_password)
    except DirectoryUnavailable as exc:
        raise ApiError(503, "unavailable", str(exc)) from None
    except DirectoryError as exc:
        raise bad_request(str(exc)) from None
    revoked = app[LOGINS].revoke_user(user.id)
    ended = await app[HUB].end_sessions(user_id=user.id, reason="password changed")
    logger.info("%s changed their password: %d logins revoked, %d sessions ended",
                user.name, revoked, ended)
    audit(request, "password_changed", actor=user, user_id=user.id)
    return web.json_response({})


def _set_password(loop_directory: Directory, user: User, password: str) -> None:
    """Hash and store a password on an instance of its own (runs in a worker thread:
    scrypt is ~50 ms, and the loop's instance must not be shared across threads)."""
    with loop_directory.open_worker_copy() as directory:
        directory.set_user_password(user.id, password)
