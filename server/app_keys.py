"""The typed keys under which the application keeps its parts (no module globals).

In a module of their own so that route modules can import them without importing the
application factory.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from .auth import TokenIssuer
from .config import ServerConfig
from .directory import Directory
from .hub import Hub
from .state.base import LiveStore

if TYPE_CHECKING:
    from .audit import AuditLog
    from .logins import LoginStore

CONFIG = web.AppKey("config", ServerConfig)
DIRECTORY = web.AppKey("directory", Directory)
STORE = web.AppKey("store", LiveStore)
HUB = web.AppKey("hub", Hub)
TOKENS = web.AppKey("tokens", TokenIssuer)
LOGINS: web.AppKey["LoginStore"] = web.AppKey("logins")
AUDIT: web.AppKey["AuditLog"] = web.AppKey("audit")
