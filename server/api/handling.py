"""What every directory handler does: who calls, what they send, what the directory says,
and what follows a write.

- `authorize`: the caller (401 without a valid token) and a first, target-free rules check.
- `path_id`, `query_id`, `read_body`, `lookup`: strict input. A path id that is not a positive
  integer is 404 (no such resource); a body that is not a JSON object of the declared
  fields and types is 400 naming the field.
- `directory_errors`: the directory's exceptions as REST errors.
- `after_write`: live sessions act on the change at once, and the audit log records it.

All of it runs on the server's event loop.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from .. import access
from ..access import Operation
from ..app_keys import AUDIT, DIRECTORY, HUB
from ..directory import (
    AlreadyExists,
    DirectoryError,
    DirectoryUnavailable,
    InvalidName,
    InvalidPassword,
    InvalidPlacement,
    InvalidRole,
    InvalidSetting,
    LastAdmin,
    NotFound,
    normalize_name,
)
from .errors import ApiError, bad_request, conflict, not_found
from .guard import Caller, require_user

logger = logging.getLogger(__name__)

# SQLite integers are signed 64-bit; a larger id can name nothing.
MAX_ID = 2**63 - 1
# Longer than any name (64) or password anyone types; keeps scrypt's input bounded.
MAX_STRING_LENGTH = 1024


async def authorize(request: web.Request, operation: Operation) -> Caller:
    """The signed-in caller, refused (403) at once if its role may never do `operation`."""
    caller = await require_user(request)
    access.check_role(caller.user, operation)
    return caller


def path_id(request: web.Request, name: str = "id") -> int:
    """The integer id in the path; anything else names no resource: 404."""
    raw = request.match_info[name]
    if not (raw.isascii() and raw.isdigit()) or not 0 < int(raw) <= MAX_ID:
        raise not_found(f"no resource with id {raw[:32]!r}")
    return int(raw)


def query_id(request: web.Request, name: str) -> int | None:
    """An optional integer id in the query string; a malformed one is 400."""
    raw = request.query.get(name)
    if raw is None:
        return None
    if not (raw.isascii() and raw.isdigit()) or not 0 < int(raw) <= MAX_ID:
        raise bad_request(f"query parameter {name!r} must be a positive integer")
    return int(raw)


_GETTERS = {"user": "get_user", "event": "get_event", "team": "get_team", "channel": "get_channel"}


def lookup(request: web.Request, what: str, ident: int) -> Any:
    """The directory's user, event, team or channel with that id; 404 naming it if none."""
    found = getattr(request.app[DIRECTORY], _GETTERS[what])(ident)
    if found is None:
        raise not_found(f"no {what} {ident}")
    return found


@dataclass(frozen=True)
class Field:
    """One body field: its JSON type (str or int), and whether it may be absent or null."""

    kind: type
    required: bool = True
    nullable: bool = False


def _type_name(kind: type) -> str:
    return {str: "a string", int: "an integer"}[kind]


async def read_body(request: web.Request, fields: Mapping[str, Field]) -> dict[str, Any]:
    """The JSON object body, checked against `fields`: unknown, missing or mistyped -> 400.

    Absent optional fields are absent from the result; a null is kept (as None) only
    where the field is nullable.
    """
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise bad_request("body is too large") from None
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise bad_request("body must be JSON") from None
    if not isinstance(body, dict):
        raise bad_request("body must be a JSON object")
    for key in body:
        if key not in fields:
            raise bad_request(f"unknown field {key[:64]!r}")
    for key, field in fields.items():
        if key not in body:
            if field.required:
                raise bad_request(f"field {key!r} is required")
            continue
        value = body[key]
        if value is None and field.nullable:
            continue
        # bool is an int to Python, never to JSON.
        if not isinstance(value, field.kind) or isinstance(value, bool):
            nullable = " or null" if field.nullable else ""
            raise bad_request(f"field {key!r} must be {_type_name(field.kind)}{nullable}")
        if isinstance(value, str) and len(value) > MAX_STRING_LENGTH:
            raise bad_request(f"field {key!r} is longer than {MAX_STRING_LENGTH} characters")
        if isinstance(value, int) and not -MAX_ID <= value <= MAX_ID:
            raise bad_request(f"field {key!r} is out of range")
    return body


def unavailable(message: str) -> ApiError:
    return ApiError(503, "unavailable", message)


_STATUS_OF_ERROR: list[tuple[type[DirectoryError], Any]] = [
    (DirectoryUnavailable, unavailable),
    (NotFound, not_found),
    (AlreadyExists, conflict),
    (LastAdmin, conflict),
    (InvalidName, bad_request),
    (InvalidRole, bad_request),
    (InvalidPassword, bad_request),
    (InvalidPlacement, bad_request),
    (InvalidSetting, bad_request),
]


@contextmanager
def directory_errors() -> Iterator[None]:
    """Directory exceptions as REST errors: missing 404, taken or last admin 409, bad 400,
    the shared store (Redis) unreachable 503."""
    try:
        yield
    except DirectoryError as exc:
        for kind, make in _STATUS_OF_ERROR:
            if isinstance(exc, kind):
                raise make(str(exc)) from None
        raise ApiError(400, "bad_request", str(exc)) from None


def new_name(name: str, what: str, lookup: Callable[[str], Any], own_id: int) -> str:
    """A rename's normalized name, refused before any write: bad 400, another's 409.

    `lookup` finds the current holder of a name (e.g. `Directory.user_by_name`).
    """
    with directory_errors():
        name = normalize_name(name, f"{what} name")
    holder = lookup(name)
    if holder is not None and holder.id != own_id:
        raise conflict(f"{what} {name!r} exists already")
    return name


async def hashing_write(request: web.Request, method: str, *args: Any) -> Any:
    """Call a Directory method that hashes a password (scrypt, ~50 ms of CPU) in a worker
    thread, on an instance of its own (`open_worker_copy`): forwarding must not stall on
    it, and the loop's instance is not shared across threads. The revision it bumps is
    seen by the hub."""
    loop_directory = request.app[DIRECTORY]

    def run() -> Any:
        with loop_directory.open_worker_copy() as directory:
            return getattr(directory, method)(*args)

    return await asyncio.to_thread(run)


async def after_write(request: web.Request, caller: Caller, kind: str, **detail: Any) -> None:
    """A write succeeded: live sessions act on it now (not at the next poll); audit it."""
    await request.app[HUB].apply_directory_changes()
    request.app[AUDIT].record(kind, actor=caller.user, address=request.remote, **detail)
    logger.info("%s by %s: %s", kind, caller.user.name, detail)


def ok(body: dict[str, Any] | None = None, status: int = 200) -> web.Response:
    return web.json_response({} if body is None else body, status=status)
