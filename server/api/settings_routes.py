"""`/api/settings`: the site's settings (admin only).

`max_talk_ms` reaches the floor controller at once: it applies to transmissions under way
(checked on the controller's next tick) and to later ones. Handlers run on the server's
event loop.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ..access import Operation
from ..app_keys import CONFIG, DIRECTORY, HUB
from .handling import Field, after_write, authorize, directory_errors, ok, read_body
from .errors import bad_request

UPDATE_FIELDS = {
    "site_name": Field(str, required=False),
    "max_talk_ms": Field(int, required=False),
}


def effective_settings(app: web.Application) -> dict[str, Any]:
    """The stored settings with defaults filled in (an unset max_talk_ms is the config's)."""
    settings = dict(app[DIRECTORY].get_settings())
    if settings.get("max_talk_ms") is None:
        settings["max_talk_ms"] = app[CONFIG].max_talk_ms
    return settings


async def read_settings(request: web.Request) -> web.Response:
    await authorize(request, Operation.SETTINGS_READ)
    return ok({"settings": effective_settings(request.app)})


async def update_settings(request: web.Request) -> web.Response:
    caller = await authorize(request, Operation.SETTINGS_UPDATE)
    body = await read_body(request, UPDATE_FIELDS)
    if not body:
        raise bad_request("give at least one of 'site_name', 'max_talk_ms'")
    with directory_errors():
        request.app[DIRECTORY].update_settings(**body)
    if "max_talk_ms" in body:
        request.app[HUB].floor.max_talk_ms = body["max_talk_ms"]
    await after_write(request, caller, "settings.update", **body)
    return ok({"settings": effective_settings(request.app)})


def add_settings_routes(app: web.Application) -> None:
    app.router.add_get("/api/settings", read_settings)
    app.router.add_patch("/api/settings", update_settings)
