"""`/api/me` and `/api/users`: who am I, and the admin's user management.

A changed password or a deleted user ends that user's logins (refresh tokens) and live
sessions at once, so the old credentials stop working everywhere. Handlers run on the
server's event loop.
"""

from __future__ import annotations

import inspect
import logging

from aiohttp import web

from .. import access
from ..access import Operation
from ..app_keys import DIRECTORY, HUB, LOGINS
from ..directory import User
from .errors import bad_request
from .handling import (
    Field, after_write, authorize, directory_errors, hashing_write, lookup, new_name, ok,
    path_id, read_body,
)

logger = logging.getLogger(__name__)

CREATE_FIELDS = {"name": Field(str), "role": Field(str), "password": Field(str)}
UPDATE_FIELDS = {
    "name": Field(str, required=False),
    "role": Field(str, required=False),
    "password": Field(str, required=False),
}


async def me(request: web.Request) -> web.Response:
    caller = await authorize(request, Operation.ME_READ)
    events = access.visible_events(request.app[DIRECTORY], caller.user)
    return ok({"user": caller.user.to_wire(), "events": [e.to_wire() for e in events]})


async def list_users(request: web.Request) -> web.Response:
    await authorize(request, Operation.USERS_LIST)
    return ok({"users": [u.to_wire() for u in request.app[DIRECTORY].list_users()]})


async def create_user(request: web.Request) -> web.Response:
    caller = await authorize(request, Operation.USERS_CREATE)
    body = await read_body(request, CREATE_FIELDS)
    with directory_errors():
        user = await hashing_write(request, "create_user", body["name"], body["role"], body["password"])
    await after_write(request, caller, "user.create", user_id=user.id, name=user.name, role=user.role.value)
    return ok({"user": user.to_wire()}, status=201)


def _user(request: web.Request, user_id: int) -> User:
    return lookup(request, "user", user_id)


async def read_user(request: web.Request) -> web.Response:
    await authorize(request, Operation.USERS_READ)
    return ok({"user": _user(request, path_id(request)).to_wire()})


async def update_user(request: web.Request) -> web.Response:
    """Change role, rename, set password: each given field in turn.

    Everything that could refuse the later steps (a bad or taken name, an empty password)
    is checked before the first write, so a refused request changes nothing; the role
    change goes first since it alone can meet the last-admin rule.
    """
    caller = await authorize(request, Operation.USERS_UPDATE)
    user = _user(request, path_id(request))
    body = await read_body(request, UPDATE_FIELDS)
    if not body:
        raise bad_request("give at least one of 'name', 'role', 'password'")
    directory = request.app[DIRECTORY]
    with directory_errors():
        if "name" in body:
            new_name(body["name"], "user", directory.user_by_name, user.id)
        if body.get("password") == "":
            raise bad_request("password must not be empty")
        if "role" in body:
            directory.set_user_role(user.id, body["role"])
            await after_write(request, caller, "user.role", user_id=user.id, name=user.name,
                              role=body["role"], was=user.role.value)
        if "name" in body:
            directory.rename_user(user.id, body["name"])
            await after_write(request, caller, "user.rename", user_id=user.id, name=body["name"],
                              was=user.name)
        if "password" in body:
            await hashing_write(request, "set_user_password", user.id, body["password"])
            await end_logins(request, user.id, "password changed")
            await after_write(request, caller, "password_changed", user_id=user.id, name=user.name)
    return ok({"user": _user(request, user.id).to_wire()})


async def delete_user(request: web.Request) -> web.Response:
    caller = await authorize(request, Operation.USERS_DELETE)
    user = _user(request, path_id(request))
    with directory_errors():
        request.app[DIRECTORY].delete_user(user.id)
    await end_logins(request, user.id, "user deleted")
    await after_write(request, caller, "user.delete", user_id=user.id, name=user.name)
    return ok()


async def end_logins(request: web.Request, user_id: int, reason: str) -> None:
    """Revoke every login of the user (its refresh tokens) and close its live sessions."""
    revoked = request.app[LOGINS].revoke_user(user_id)
    if inspect.isawaitable(revoked):
        revoked = await revoked
    ended = await request.app[HUB].end_sessions(user_id=user_id, reason=reason)
    logger.info("user %s: %s; %s logins revoked, %s sessions ended", user_id, reason, revoked, ended)


def add_user_routes(app: web.Application) -> None:
    app.router.add_get("/api/me", me)
    app.router.add_get("/api/users", list_users)
    app.router.add_post("/api/users", create_user)
    app.router.add_get("/api/users/{id}", read_user)
    app.router.add_patch("/api/users/{id}", update_user)
    app.router.add_delete("/api/users/{id}", delete_user)

