"""REST errors: one exception type, one JSON shape, one middleware that turns one into the other.

Handlers raise `ApiError(status, code, message)` wherever a precondition fails; the
middleware answers `{"error": {"code", "message", ...extra}}` with that status. The codes
are the wire protocol's error codes (PROTOCOL.md "Envelope").
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from ..audit_redis import AuditStoreError
from ..directory_model import DirectoryUnavailable
from ..logins import LoginStoreUnavailable
from ..state.base import LiveStoreError

logger = logging.getLogger(__name__)

STATUS_OF_CODE = {
    "bad_request": 400,
    "unauthorized": 401,
    "forbidden": 403,
    "not_found": 404,
    "conflict": 409,
    "rate_limited": 429,
    "internal": 500,
    "unavailable": 503,
}


class ApiError(Exception):
    """A refused REST call. `extra` fields (e.g. `retry_after`) join the error object."""

    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.extra = extra


def error_json(status: int, code: str, message: str, **extra: Any) -> web.Response:
    body = {"error": {"code": code, "message": message, **extra}}
    response = web.json_response(body, status=status)
    if "retry_after" in extra:
        response.headers["Retry-After"] = str(max(1, int(round(extra["retry_after"]))))
    return response


def bad_request(message: str) -> ApiError:
    return ApiError(400, "bad_request", message)


def forbidden(message: str) -> ApiError:
    return ApiError(403, "forbidden", message)


def not_found(message: str) -> ApiError:
    return ApiError(404, "not_found", message)


def conflict(message: str) -> ApiError:
    return ApiError(409, "conflict", message)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# The failures of the site's shared state (Redis): answered 503 `unavailable` wherever they
# surface, in a login check, a directory write or an audit read.
SHARED_STATE_DOWN = (LoginStoreUnavailable, DirectoryUnavailable, AuditStoreError, LiveStoreError)


@web.middleware
async def api_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """ApiError -> its JSON answer; an unexpected error under /api/ -> a JSON 500."""
    try:
        return await handler(request)
    except ApiError as exc:
        return error_json(exc.status, exc.code, exc.message, **exc.extra)
    except web.HTTPException:
        raise
    except SHARED_STATE_DOWN as exc:
        # A site on Redis while Redis is down: the caller may retry; nothing changed.
        logger.warning("%s %s: shared state unavailable: %s", request.method, request.path, exc)
        return error_json(503, "unavailable", "the server cannot reach its shared state; try again")
    except Exception:
        if not request.path.startswith("/api/"):
            raise
        logger.exception("%s %s failed", request.method, request.path)
        return error_json(500, "internal", "internal error")
