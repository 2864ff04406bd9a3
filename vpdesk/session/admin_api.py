"""The console's client of the server's REST API under /api/ (no Qt).

`AdminApi` has one coroutine per route of the management API (users, events, teams,
channels, memberships, settings, audit, `me`). Each returns the useful part of the
answer (a list, one object, or nothing) and raises `ApiRefused` with the server's
status, error code and message when the server says no: the management panel shows that
message as it is. Network failures stay what aiohttp raises (`aiohttp.ClientError`,
`OSError`, `TimeoutError`).

The access token comes from a callable (a `TokenKeeper`, or the embedded server's own
minting) asked once per request, so a token that expired between two clicks is never
sent.

Everything here runs on the console's one asyncio loop (qasync's under Qt).
"""

from __future__ import annotations

import json
import logging
import ssl as ssl_module
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 10.0
# update_channel(team_id=NO_TEAM) takes a channel out of its team; leaving team_id out
# keeps the team. None cannot say both.
NO_TEAM: Any = None
_UNCHANGED: Any = object()


class ApiRefused(Exception):
    """The server answered a REST call with an error: `status`, `code`, `message`."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{code} ({status}): {message}" if message else f"{code} ({status})")
        self.status = status
        self.code = code
        self.message = message or code


async def request_json(
    http: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    body: dict | None = None,
    params: dict | None = None,
    token: str | None = None,
    ssl: ssl_module.SSLContext | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> dict:
    """One JSON request: the answer's JSON object, or ApiRefused for any non-2xx answer.

    Shared by AdminApi and TokenKeeper. Call on the loop that owns `http`.
    """
    headers = {"Authorization": f"Bearer {token}"} if token is not None else None
    async with http.request(
        method,
        url,
        json=body,
        params=params,
        headers=headers,
        ssl=ssl if ssl is not None else True,
        timeout=aiohttp.ClientTimeout(total=timeout),
    ) as resp:
        text = await resp.text()
        try:
            answer = json.loads(text) if text else {}
        except ValueError:
            answer = None
        if 200 <= resp.status < 300:
            if not isinstance(answer, dict):
                raise ApiRefused(resp.status, "bad_response", f"{method} {url}: the answer is not a JSON object")
            return answer
        error = answer.get("error") if isinstance(answer, dict) else None
        if isinstance(error, dict):
            raise ApiRefused(resp.status, str(error.get("code") or f"http_{resp.status}"), str(error.get("message") or ""))
        # Not the API's own answer (a proxy's error page, say): keep its start readable.
        raise ApiRefused(resp.status, f"http_{resp.status}", (text or resp.reason or "")[:200])


class AdminApi:
    """REST calls as the signed-in user; the server checks every one against the rules.

    `token` is awaited before each request. `base_url` is the server's URL, or a callable
    asked before each request (a site of several nodes: the node the console uses now).
    `session` is used when given (and then not closed here); otherwise the client opens
    its own and `close()` closes it. Call everything on one loop.
    """

    def __init__(
        self,
        base_url: str | Callable[[], str],
        token: Callable[[], Awaitable[str]],
        *,
        session: aiohttp.ClientSession | None = None,
        ssl: ssl_module.SSLContext | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        self._base_url = base_url
        self._token = token
        self._http = session
        self._owns_http = session is None
        self.ssl = ssl
        self.timeout = timeout

    @property
    def base_url(self) -> str:
        url = self._base_url() if callable(self._base_url) else self._base_url
        return url.rstrip("/")

    async def close(self) -> None:
        if self._owns_http and self._http is not None:
            http, self._http = self._http, None
            await http.close()

    async def _call(self, method: str, path: str, body: dict | None = None, params: dict | None = None) -> dict:
        if self._http is None:
            self._http = aiohttp.ClientSession()
        token = await self._token()
        logger.debug("AdminApi: %s %s", method, path)
        return await request_json(
            self._http, method, self.base_url + path,
            body=body, params=params, token=token, ssl=self.ssl, timeout=self.timeout,
        )

    # --- who am I ------------------------------------------------------------------

    async def me(self) -> dict:
        """{"user": User, "events": [Event]}: the caller, and the events they may see."""
        return await self._call("GET", "/api/me")

    async def logout(self) -> None:
        """End this login: its refresh token and its live sessions."""
        await self._call("POST", "/api/logout")

    async def change_password(self, old_password: str, new_password: str) -> None:
        """Change the caller's own password (ends all their logins, this one too)."""
        await self._call("POST", "/api/me/password", {"old_password": old_password, "new_password": new_password})

    # --- users ---------------------------------------------------------------------

    async def list_users(self) -> list[dict]:
        return (await self._call("GET", "/api/users"))["users"]

    async def get_user(self, user_id: int) -> dict:
        return (await self._call("GET", f"/api/users/{user_id}"))["user"]

    async def create_user(self, name: str, role: str, password: str) -> dict:
        return (await self._call("POST", "/api/users", {"name": name, "role": role, "password": password}))["user"]

    async def update_user(
        self, user_id: int, *, name: str | None = None, role: str | None = None, password: str | None = None
    ) -> dict:
        """Rename, change the role or reset the password (only the given fields change)."""
        changes = {k: v for k, v in (("name", name), ("role", role), ("password", password)) if v is not None}
        return (await self._call("PATCH", f"/api/users/{user_id}", changes))["user"]

    async def delete_user(self, user_id: int) -> None:
        await self._call("DELETE", f"/api/users/{user_id}")

    # --- events --------------------------------------------------------------------

    async def list_events(self) -> list[dict]:
        return (await self._call("GET", "/api/events"))["events"]

    async def create_event(self, name: str) -> dict:
        return (await self._call("POST", "/api/events", {"name": name}))["event"]

    async def event_detail(self, event_id: int) -> dict:
        """{"event", "teams", "channels", "dispatchers"} of one event."""
        return await self._call("GET", f"/api/events/{event_id}")

    async def rename_event(self, event_id: int, name: str) -> dict:
        return (await self._call("PATCH", f"/api/events/{event_id}", {"name": name}))["event"]

    async def delete_event(self, event_id: int) -> None:
        await self._call("DELETE", f"/api/events/{event_id}")

    async def assign_dispatcher(self, event_id: int, user_id: int) -> None:
        await self._call("PUT", f"/api/events/{event_id}/dispatchers/{user_id}")

    async def unassign_dispatcher(self, event_id: int, user_id: int) -> None:
        await self._call("DELETE", f"/api/events/{event_id}/dispatchers/{user_id}")

    # --- teams ---------------------------------------------------------------------

    async def list_teams(self, event_id: int) -> list[dict]:
        return (await self._call("GET", f"/api/events/{event_id}/teams"))["teams"]

    async def create_team(self, event_id: int, name: str) -> dict:
        return (await self._call("POST", f"/api/events/{event_id}/teams", {"name": name}))["team"]

    async def rename_team(self, team_id: int, name: str) -> dict:
        return (await self._call("PATCH", f"/api/teams/{team_id}", {"name": name}))["team"]

    async def delete_team(self, team_id: int) -> None:
        await self._call("DELETE", f"/api/teams/{team_id}")

    # --- channels ------------------------------------------------------------------

    async def list_channels(self, event_id: int | None = None) -> list[dict]:
        params = {"event": str(event_id)} if event_id is not None else None
        return (await self._call("GET", "/api/channels", params=params))["channels"]

    async def get_channel(self, channel_id: int) -> dict:
        return (await self._call("GET", f"/api/channels/{channel_id}"))["channel"]

    async def create_channel(self, name: str, *, event_id: int | None = None, team_id: int | None = None) -> dict:
        """A channel in a team (and so its event), in an event, or site-wide (admin)."""
        body: dict[str, Any] = {"name": name}
        if event_id is not None:
            body["event_id"] = event_id
        if team_id is not None:
            body["team_id"] = team_id
        return (await self._call("POST", "/api/channels", body))["channel"]

    async def update_channel(self, channel_id: int, *, name: str | None = None, team_id: Any = _UNCHANGED) -> dict:
        """Rename and/or move to another team of its event (`team_id=NO_TEAM`: out of any team)."""
        body: dict[str, Any] = {}
        if name is not None:
            body["name"] = name
        if team_id is not _UNCHANGED:
            body["team_id"] = team_id
        return (await self._call("PATCH", f"/api/channels/{channel_id}", body))["channel"]

    async def delete_channel(self, channel_id: int) -> None:
        await self._call("DELETE", f"/api/channels/{channel_id}")

    # --- members -------------------------------------------------------------------

    async def list_members(self, channel_id: int) -> list[dict]:
        return (await self._call("GET", f"/api/channels/{channel_id}/members"))["members"]

    async def add_member(self, channel_id: int, user_id: int) -> None:
        await self._call("PUT", f"/api/channels/{channel_id}/members/{user_id}")

    async def remove_member(self, channel_id: int, user_id: int) -> None:
        await self._call("DELETE", f"/api/channels/{channel_id}/members/{user_id}")

    # --- settings and audit ----------------------------------------------------------

    async def get_settings(self) -> dict:
        return (await self._call("GET", "/api/settings"))["settings"]

    async def update_settings(self, **values: Any) -> dict:
        """Change `site_name` and/or `max_talk_ms`; the whole settings object back."""
        return (await self._call("PATCH", "/api/settings", values))["settings"]

    async def audit(self, limit: int = 100, before: Any = None, kind: str | None = None) -> dict:
        """{"entries": [AuditEntry], "next_before"}: newest first; pass next_before for older."""
        params = {"limit": str(limit)}
        if before is not None:
            params["before"] = str(before)
        if kind is not None:
            params["kind"] = kind
        return await self._call("GET", "/api/audit", params=params)


__all__ = ["AdminApi", "ApiRefused", "NO_TEAM", "request_json"]
