"""The directory's REST API under /api/: one registration function for every route.

Login, refresh, logout and `POST /api/me/password` are registered by `token_routes`;
`/api/health` and `/api/stats` by the application itself. `docs/openapi.json` documents
all of them, and `docs/control-plane.md` the rules behind them (`server/access.py`).
"""

from __future__ import annotations

from aiohttp import web

from .audit_routes import add_audit_routes
from .channels_routes import add_channel_routes
from .events_routes import add_event_routes
from .settings_routes import add_settings_routes
from .users_routes import add_user_routes


def add_api_routes(app: web.Application) -> None:
    """Register the directory routes (me, users, events, teams, channels, settings, audit).

    Call once, while building the application (before it starts).
    """
    add_user_routes(app)
    add_event_routes(app)
    add_channel_routes(app)
    add_settings_routes(app)
    add_audit_routes(app)
