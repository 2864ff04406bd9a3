"""`/api/events` and `/api/teams`: events (admin), their dispatchers (admin), and the
teams inside them (admin, or a dispatcher of that event). Handlers run on the server's
event loop.
"""

from __future__ import annotations

from aiohttp import web

from .. import access
from ..access import Operation
from ..app_keys import DIRECTORY
from ..directory import Event, Team
from .handling import Field, after_write, authorize, directory_errors, lookup, ok, path_id, read_body

NAME_FIELDS = {"name": Field(str)}


def _event(request: web.Request) -> Event:
    return lookup(request, "event", path_id(request))


def _team(request: web.Request) -> Team:
    return lookup(request, "team", path_id(request))


# --- events ------------------------------------------------------------------------


async def list_events(request: web.Request) -> web.Response:
    caller = await authorize(request, Operation.EVENTS_LIST)
    events = access.visible_events(request.app[DIRECTORY], caller.user)
    return ok({"events": [e.to_wire() for e in events]})


async def create_event(request: web.Request) -> web.Response:
    caller = await authorize(request, Operation.EVENTS_CREATE)
    body = await read_body(request, NAME_FIELDS)
    with directory_errors():
        event = request.app[DIRECTORY].add_event(body["name"])
    await after_write(request, caller, "event.create", event_id=event.id, name=event.name)
    return ok({"event": event.to_wire()}, status=201)


async def read_event(request: web.Request) -> web.Response:
    caller = await authorize(request, Operation.EVENTS_READ)
    event = _event(request)
    directory = request.app[DIRECTORY]
    access.check(directory, caller.user, Operation.EVENTS_READ, event_id=event.id)
    return ok({
        "event": event.to_wire(),
        "teams": [t.to_wire() for t in directory.list_teams(event.id)],
        "channels": [c.to_wire() for c in directory.channels_in_event(event.id)],
        "dispatchers": [u.to_wire() for u in directory.dispatchers_of(event.id)],
    })


async def rename_event(request: web.Request) -> web.Response:
    caller = await authorize(request, Operation.EVENTS_UPDATE)
    event = _event(request)
    body = await read_body(request, NAME_FIELDS)
    with directory_errors():
        renamed = request.app[DIRECTORY].rename_event(event.id, body["name"])
    await after_write(request, caller, "event.rename", event_id=event.id, name=renamed.name, was=event.name)
    return ok({"event": renamed.to_wire()})


async def delete_event(request: web.Request) -> web.Response:
    caller = await authorize(request, Operation.EVENTS_DELETE)
    event = _event(request)
    with directory_errors():
        request.app[DIRECTORY].delete_event(event.id)
    await after_write(request, caller, "event.delete", event_id=event.id, name=event.name)
    return ok()


# --- dispatchers -------------------------------------------------------------------


async def _change_dispatcher(request: web.Request, operation: Operation, kind: str) -> web.Response:
    caller = await authorize(request, operation)
    event = _event(request)
    user_id = path_id(request, "user_id")
    directory = request.app[DIRECTORY]
    change = directory.assign_dispatcher if operation is Operation.DISPATCHERS_ASSIGN else directory.unassign_dispatcher
    with directory_errors():
        change(event.id, user_id)
    await after_write(request, caller, kind, event_id=event.id, event=event.name, user_id=user_id)
    return ok()


async def assign_dispatcher(request: web.Request) -> web.Response:
    """Let a dispatch user manage the event (the directory refuses other roles: 400)."""
    return await _change_dispatcher(request, Operation.DISPATCHERS_ASSIGN, "dispatcher.assign")


async def unassign_dispatcher(request: web.Request) -> web.Response:
    return await _change_dispatcher(request, Operation.DISPATCHERS_UNASSIGN, "dispatcher.unassign")


# --- teams -------------------------------------------------------------------------


async def list_teams(request: web.Request) -> web.Response:
    caller = await authorize(request, Operation.TEAMS_LIST)
    event = _event(request)
    directory = request.app[DIRECTORY]
    access.check(directory, caller.user, Operation.TEAMS_LIST, event_id=event.id)
    return ok({"teams": [t.to_wire() for t in directory.list_teams(event.id)]})


async def create_team(request: web.Request) -> web.Response:
    caller = await authorize(request, Operation.TEAMS_CREATE)
    event = _event(request)
    directory = request.app[DIRECTORY]
    access.check(directory, caller.user, Operation.TEAMS_CREATE, event_id=event.id)
    body = await read_body(request, NAME_FIELDS)
    with directory_errors():
        team = directory.add_team(event.id, body["name"])
    await after_write(request, caller, "team.create", team_id=team.id, name=team.name, event_id=event.id)
    return ok({"team": team.to_wire()}, status=201)


async def rename_team(request: web.Request) -> web.Response:
    caller = await authorize(request, Operation.TEAMS_UPDATE)
    team = _team(request)
    directory = request.app[DIRECTORY]
    access.check(directory, caller.user, Operation.TEAMS_UPDATE, event_id=team.event_id)
    body = await read_body(request, NAME_FIELDS)
    with directory_errors():
        renamed = directory.rename_team(team.id, body["name"])
    await after_write(request, caller, "team.rename", team_id=team.id, name=renamed.name,
                      was=team.name, event_id=team.event_id)
    return ok({"team": renamed.to_wire()})


async def delete_team(request: web.Request) -> web.Response:
    caller = await authorize(request, Operation.TEAMS_DELETE)
    team = _team(request)
    directory = request.app[DIRECTORY]
    access.check(directory, caller.user, Operation.TEAMS_DELETE, event_id=team.event_id)
    with directory_errors():
        directory.delete_team(team.id)
    await after_write(request, caller, "team.delete", team_id=team.id, name=team.name, event_id=team.event_id)
    return ok()


def add_event_routes(app: web.Application) -> None:
    router = app.router
    router.add_get("/api/events", list_events)
    router.add_post("/api/events", create_event)
    router.add_get("/api/events/{id}", read_event)
    router.add_patch("/api/events/{id}", rename_event)
    router.add_delete("/api/events/{id}", delete_event)
    router.add_put("/api/events/{id}/dispatchers/{user_id}", assign_dispatcher)
    router.add_delete("/api/events/{id}/dispatchers/{user_id}", unassign_dispatcher)
    router.add_get("/api/events/{id}/teams", list_teams)
    router.add_post("/api/events/{id}/teams", create_team)
    router.add_patch("/api/teams/{id}", rename_team)
    router.add_delete("/api/teams/{id}", delete_team)
