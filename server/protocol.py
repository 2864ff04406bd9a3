"""The wire envelope of PROTOCOL.md: parsing requests, typed field access, replies."""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from typing import Any

MAX_FRAME_BYTES = 64 * 1024
# Integer fields are ids stored as SQLite INTEGERs (signed 64-bit): a larger JSON number
# would fail deep in a handler as an internal error instead of a bad_request.
MIN_INT_FIELD = -(2**63)
MAX_INT_FIELD = 2**63 - 1


class ErrorCode(str, enum.Enum):
    BAD_REQUEST = "bad_request"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    RATE_LIMITED = "rate_limited"
    NO_SLOT = "no_slot"
    CONFLICT = "conflict"
    # The node cannot reach its shared state (Redis): nothing was done; try again shortly.
    UNAVAILABLE = "unavailable"
    INTERNAL = "internal"


class CloseCode(enum.IntEnum):
    UNAUTHORIZED = 4001
    RATE_LIMITED = 4008


class ProtocolError(Exception):
    """A request the server refuses; becomes an `ok: false` response, never a close."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def bad_request(message: str) -> ProtocolError:
    return ProtocolError(ErrorCode.BAD_REQUEST, message)


@dataclass
class Request:
    id: int
    type: str
    body: dict[str, Any]

    def int_field(self, name: str) -> int:
        value = self.body.get(name)
        # bool is an int in Python; on the wire true is not a channel id.
        if not isinstance(value, int) or isinstance(value, bool):
            raise bad_request(f"'{name}' must be an integer")
        if not MIN_INT_FIELD <= value <= MAX_INT_FIELD:
            raise bad_request(f"'{name}' is out of range")
        return value

    def bool_field(self, name: str) -> bool:
        value = self.body.get(name)
        if not isinstance(value, bool):
            raise bad_request(f"'{name}' must be true or false")
        return value

    def str_field(self, name: str, *, optional: bool = False, max_len: int = 256) -> str | None:
        value = self.body.get(name)
        if value is None and optional:
            return None
        if not isinstance(value, str):
            raise bad_request(f"'{name}' must be a string")
        if len(value) > max_len:
            raise bad_request(f"'{name}' is longer than {max_len} characters")
        return value

    def choice_field(self, name: str, choices: tuple[str, ...], default: str) -> str:
        value = self.body.get(name, default)
        if value is None:
            return default
        if value not in choices:
            raise bad_request(f"'{name}' must be one of {', '.join(choices)}")
        return value


def readable_id(obj: object) -> int | None:
    """The request id if one can be read, so even a bad request's error carries it."""
    if isinstance(obj, dict):
        value = obj.get("id")
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def parse_request(text: str) -> Request:
    """One text frame into a Request; ProtocolError(bad_request) names what is wrong.

    On error, `ProtocolError.request_id` holds the id when it could be read.
    """
    if len(text) > MAX_FRAME_BYTES or len(text.encode("utf-8", "surrogatepass")) > MAX_FRAME_BYTES:
        raise bad_request(f"frame larger than {MAX_FRAME_BYTES} bytes")
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError):
        raise bad_request("frame is not valid JSON") from None
    request_id = readable_id(obj)
    try:
        if not isinstance(obj, dict):
            raise bad_request("frame must be a JSON object")
        if request_id is None:
            raise bad_request("'id' must be an integer")
        kind = obj.get("type")
        if not isinstance(kind, str) or not kind:
            raise bad_request("'type' must be a non-empty string")
    except ProtocolError as exc:
        exc.request_id = request_id  # type: ignore[attr-defined]
        raise
    return Request(id=request_id, type=kind, body=obj)


def ok_response(request_id: int, fields: dict[str, Any] | None = None) -> dict[str, Any]:
    reply = {"id": request_id, "ok": True}
    if fields:
        reply.update(fields)
    return reply


def error_response(request_id: int | None, code: ErrorCode, message: str) -> dict[str, Any]:
    return {"id": request_id, "ok": False, "error": {"code": code.value, "message": message}}


def encode(message: dict[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False)
