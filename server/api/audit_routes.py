"""`GET /api/audit`: the audit log, newest first, a page at a time (admin only).

Pages go backwards: pass the previous page's `next_before` as `before` for the next.
Handlers run on the server's event loop.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from ..access import Operation
from ..app_keys import AUDIT
from .errors import bad_request
from .handling import authorize, ok, query_id

MAX_LIMIT = 1000
DEFAULT_LIMIT = 100
MAX_KIND_LENGTH = 64


def _limit(request: web.Request) -> int:
    raw = request.query.get("limit")
    if raw is None:
        return DEFAULT_LIMIT
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= MAX_LIMIT:
        raise bad_request(f"query parameter 'limit' must be an integer from 1 to {MAX_LIMIT}")
    return int(raw)


async def read_audit(request: web.Request) -> web.Response:
    await authorize(request, Operation.AUDIT_READ)
    limit = _limit(request)
    before = query_id(request, "before")
    kind = request.query.get("kind") or None
    if kind is not None and len(kind) > MAX_KIND_LENGTH:
        raise bad_request(f"query parameter 'kind' is longer than {MAX_KIND_LENGTH} characters")
    log = request.app[AUDIT]
    await log.flush_async()  # what was just done is in the answer
    # A network read with the Redis log (tens of ms for a full page): off the loop.
    entries = await asyncio.to_thread(log.query, limit=limit, before=before, kind=kind)
    next_before = entries[-1]["id"] if len(entries) == limit else None
    return ok({"entries": entries, "next_before": next_before})


def add_audit_routes(app: web.Application) -> None:
    app.router.add_get("/api/audit", read_audit)
