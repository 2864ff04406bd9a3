"""Keeping a standalone server's access token fresh (no Qt).

Access tokens live minutes (the server's `token_ttl_s`, 15 min by default); the login
also hands out a refresh token, rotated on every use. `TokenKeeper` holds both and
answers `access_token()` with a token still valid for at least `margin_s` seconds:
refreshing through `POST /api/refresh` when needed, logging in again with the password
when the refresh is refused (and a password is known), and raising `TokenRefused`
otherwise.

Lifetimes are measured on this machine's monotonic clock from the moment an answer
arrives, using the lifetime the server meant (`expires_at` minus the token's own `iat`):
a console PC whose clock is minutes off would otherwise refresh on every call, or send
tokens the server already considers expired.

One asyncio loop; one refresh at a time (a lock), because presenting an already rotated
refresh token makes the server end the whole login as stolen.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import math
import ssl as ssl_module
import time
from collections.abc import Callable

import aiohttp

from vpdesk.session.admin_api import DEFAULT_TIMEOUT_S, ApiRefused, request_json

logger = logging.getLogger(__name__)

REFRESH_MARGIN_S = 60.0
# Statuses with which the server refuses a refresh token (unknown, expired, revoked) or
# a login: anything else (429, 5xx) is a passing problem, not a verdict on the credentials.
_REFUSALS = (400, 401, 403)


class TokenRefused(Exception):
    """No token can be had with what the keeper holds: signing in again is needed."""


def _issued_at(token: str) -> float | None:
    """The `iat` claim of a JWT (read, not verified: the server verifies), or None."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        iat = claims.get("iat")
    except (IndexError, ValueError, AttributeError, TypeError):
        return None
    return float(iat) if isinstance(iat, (int, float)) and not isinstance(iat, bool) else None


class TokenKeeper:
    """The access and refresh tokens of one login (see the module docstring).

    `session` may be set or replaced between calls (the console's session opens a new
    HTTP session per run); with none, each call opens a short-lived one. `base_url` may be
    changed between calls too: on a site of several nodes the console refreshes and signs
    in on the node it is using now. Loop only.
    """

    def __init__(
        self,
        base_url: str,
        username: str = "",
        password: str = "",
        *,
        session: aiohttp.ClientSession | None = None,
        ssl: ssl_module.SSLContext | None = None,
        margin_s: float = REFRESH_MARGIN_S,
        clock: Callable[[], float] = time.monotonic,
        timeout: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.username = username
        self.password = password
        self.session = session
        self.ssl = ssl
        self.margin_s = margin_s
        self.timeout = timeout
        self._clock = clock
        self._lock = asyncio.Lock()
        self.user: dict | None = None
        self._token: str | None = None
        self._token_until = -math.inf
        self._refresh_token: str | None = None
        self._refresh_until = -math.inf
        self.refreshes = 0  # how many times /api/refresh answered (tests, logs)
        self.logins = 0

    # --- state ---------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """The server (node) the next refresh or sign-in goes to."""
        return self._base_url

    @base_url.setter
    def base_url(self, url: str) -> None:
        self._base_url = url.rstrip("/")

    @property
    def has_token(self) -> bool:
        return self._token is not None

    @property
    def refresh_token(self) -> str | None:
        return self._refresh_token

    def accept(self, body: dict) -> None:
        """Take the tokens of a login or refresh answer (`token`, `expires_at`,
        `refresh_token`, `refresh_expires_at`, `user`)."""
        now = self._clock()
        token = str(body["token"])
        issued = _issued_at(token)
        server_now = issued if issued is not None else time.time()
        self._token = token
        self._token_until = now + (float(body["expires_at"]) - server_now)
        refresh = body.get("refresh_token")
        if refresh:
            self._refresh_token = str(refresh)
            expiry = body.get("refresh_expires_at")
            self._refresh_until = now + (float(expiry) - server_now) if expiry is not None else math.inf
        if isinstance(body.get("user"), dict):
            self.user = body["user"]

    def forget_access_token(self) -> None:
        """The server refused the access token (expired early, revoked): get another."""
        self._token, self._token_until = None, -math.inf

    def seconds_left(self) -> float:
        """How long the access token held now stays valid (negative: expired or none)."""
        return self._token_until - self._clock()

    # --- getting a token -------------------------------------------------------------

    async def access_token(self) -> str:
        """A token valid for at least `margin_s` more seconds.

        Raises TokenRefused when neither the refresh token nor the password is accepted;
        ApiRefused for other refusals (429 rate_limited, 5xx); aiohttp.ClientError,
        OSError or TimeoutError when the server cannot be reached.
        """
        async with self._lock:  # a second caller waits for the first one's refresh
            if self._token is not None and self.seconds_left() >= self.margin_s:
                return self._token
            if self._refresh_token is not None and self._clock() < self._refresh_until:
                if await self._refresh():
                    return self._token_checked()
            if not self.password:
                raise TokenRefused("the session has expired; sign in again")
            await self._login()
            return self._token_checked()

    def _token_checked(self) -> str:
        assert self._token is not None
        if self.seconds_left() < self.margin_s:
            # A server whose tokens live shorter than the margin: use them anyway.
            logger.debug("TokenKeeper %s: token lives only %.0f s", self.base_url, self.seconds_left())
        return self._token

    async def _refresh(self) -> bool:
        """Rotate the refresh token; False when the server refused it (then forgotten)."""
        try:
            body = await self._post("/api/refresh", {"refresh_token": self._refresh_token})
        except ApiRefused as exc:
            if exc.status not in _REFUSALS:
                raise
            logger.info("TokenKeeper %s: refresh refused (%s): %s", self.base_url, exc.code, exc.message)
            self._refresh_token, self._refresh_until = None, -math.inf
            return False
        self.accept(body)
        self.refreshes += 1
        logger.debug("TokenKeeper %s: refreshed, valid %.0f s", self.base_url, self.seconds_left())
        return True

    async def _login(self) -> None:
        try:
            body = await self._post("/api/login", {"username": self.username, "password": self.password})
        except ApiRefused as exc:
            if exc.status in _REFUSALS:
                raise TokenRefused("wrong user name or password") from exc
            raise
        self.accept(body)
        self.logins += 1
        logger.info("TokenKeeper %s: signed in as %s", self.base_url, self.username)

    async def _post(self, path: str, body: dict) -> dict:
        http = self.session if self.session is not None and not self.session.closed else None
        if http is not None:
            return await request_json(http, "POST", self.base_url + path, body=body, ssl=self.ssl, timeout=self.timeout)
        async with aiohttp.ClientSession() as own:
            return await request_json(own, "POST", self.base_url + path, body=body, ssl=self.ssl, timeout=self.timeout)


__all__ = ["REFRESH_MARGIN_S", "TokenKeeper", "TokenRefused"]
