"""`/api/channels`: channels and their members, for admins anywhere and for dispatchers
inside their events; general users list and read only their own channels.

Every write is followed by `after_write`, so a removed member loses audio and floor, and
an added one hears `channels_changed`, before the reply leaves. Handlers run on the
server's event loop.
"""

from __future__ import annotations

from aiohttp import web

from .. import access
from ..access import Operation
from ..app_keys import DIRECTORY
from ..directory import Channel, User
from .errors import bad_request
from .handling import (
    Field, after_write, authorize, directory_errors, lookup, new_name, ok, path_id, query_id,
    read_body,
)

CREATE_FIELDS = {
    "name": Field(str),
    "event_id": Field(int, required=False, nullable=True),
    "team_id": Field(int, required=False, nullable=True),
}
UPDATE_FIELDS = {
    "name": Field(str, required=False),
    "team_id": Field(int, required=False, nullable=True),
}


def _channel(request: web.Request, operation: Operation, user: User) -> Channel:
    """The channel in the path (404), once `user` may do `operation` on it (403)."""
    channel = lookup(request, "channel", path_id(request))
    access.check(request.app[DIRECTORY], user, operation, event_id=channel.event_id, channel_id=channel.id)
    return channel


async def list_channels(request: web.Request) -> web.Response:
    caller = await authorize(request, Operation.CHANNELS_LIST)
    event_id = query_id(request, "event")
    directory = request.app[DIRECTORY]
    if event_id is not None:
        lookup(request, "event", event_id)
    channels = access.visible_channels(directory, caller.user, event_id)
    return ok({"channels": [c.to_wire() for c in channels]})


async def create_channel(request: web.Request) -> web.Response:
    """A channel in an event, in a team (and so in its event), or (admin) in neither."""
    caller = await authorize(request, Operation.CHANNELS_CREATE)
    body = await read_body(request, CREATE_FIELDS)
    directory = request.app[DIRECTORY]
    event_id, team_id = body.get("event_id"), body.get("team_id")
    if event_id is not None:
        lookup(request, "event", event_id)
    team = lookup(request, "team", team_id) if team_id is not None else None
    # Every event the request names must be in the caller's scope; None (no event, or a
    # site-wide team) is the admins' alone.
    targets = {event_id} if event_id is not None else set()
    if team is not None:
        targets.add(team.event_id)
    for target in targets or {None}:
        access.check(directory, caller.user, Operation.CHANNELS_CREATE, event_id=target)
    with directory_errors():
        channel = directory.create_channel(body["name"], event_id=event_id, team_id=team_id)
    await after_write(request, caller, "channel.create", channel_id=channel.id, name=channel.name,
                      event_id=channel.event_id, team_id=channel.team_id)
    return ok({"channel": channel.to_wire()}, status=201)


async def read_channel(request: web.Request) -> web.Response:
    caller = await authorize(request, Operation.CHANNELS_READ)
    return ok({"channel": _channel(request, Operation.CHANNELS_READ, caller.user).to_wire()})


async def update_channel(request: web.Request) -> web.Response:
    """Move to another team of its event (or none), rename; both checked before either."""
    caller = await authorize(request, Operation.CHANNELS_UPDATE)
    channel = _channel(request, Operation.CHANNELS_UPDATE, caller.user)
    body = await read_body(request, UPDATE_FIELDS)
    if not body:
        raise bad_request("give at least one of 'name', 'team_id'")
    directory = request.app[DIRECTORY]
    if "name" in body:
        new_name(body["name"], "channel", directory.channel_by_name, channel.id)
    if body.get("team_id") is not None:
        team = lookup(request, "team", body["team_id"])
        if team.event_id != channel.event_id:
            # By id, not name: the team may be in an event the caller does not see.
            raise bad_request(f"team {team.id} is not in the channel's event")
    with directory_errors():
        if "team_id" in body:
            directory.move_channel(channel.id, body["team_id"])
            await after_write(request, caller, "channel.move", channel_id=channel.id, name=channel.name,
                              team_id=body["team_id"], was=channel.team_id)
        if "name" in body:
            renamed = directory.rename_channel(channel.id, body["name"])
            await after_write(request, caller, "channel.rename", channel_id=channel.id,
                              name=renamed.name, was=channel.name)
    return ok({"channel": directory.get_channel(channel.id).to_wire()})


async def delete_channel(request: web.Request) -> web.Response:
    caller = await authorize(request, Operation.CHANNELS_DELETE)
    channel = _channel(request, Operation.CHANNELS_DELETE, caller.user)
    with directory_errors():
        request.app[DIRECTORY].delete_channel(channel.id)
    await after_write(request, caller, "channel.delete", channel_id=channel.id, name=channel.name,
                      event_id=channel.event_id)
    return ok()


# --- members -----------------------------------------------------------------------


async def list_members(request: web.Request) -> web.Response:
    caller = await authorize(request, Operation.MEMBERS_LIST)
    channel = _channel(request, Operation.MEMBERS_LIST, caller.user)
    return ok({"members": [u.to_wire() for u in request.app[DIRECTORY].members_of(channel.id)]})


async def add_member(request: web.Request) -> web.Response:
    caller = await authorize(request, Operation.MEMBERS_ADD)
    channel = _channel(request, Operation.MEMBERS_ADD, caller.user)
    user_id = path_id(request, "user_id")
    directory = request.app[DIRECTORY]
    user = lookup(request, "user", user_id)
    with directory_errors():
        directory.add_membership(user.id, channel.id)
    await after_write(request, caller, "member.add", channel_id=channel.id, channel=channel.name,
                      user_id=user.id, name=user.name)
    return ok()


async def remove_member(request: web.Request) -> web.Response:
    caller = await authorize(request, Operation.MEMBERS_REMOVE)
    channel = _channel(request, Operation.MEMBERS_REMOVE, caller.user)
    user_id = path_id(request, "user_id")
    with directory_errors():
        request.app[DIRECTORY].remove_membership(user_id, channel.id)
    await after_write(request, caller, "member.remove", channel_id=channel.id, channel=channel.name,
                      user_id=user_id)
    return ok()


def add_channel_routes(app: web.Application) -> None:
    router = app.router
    router.add_get("/api/channels", list_channels)
    router.add_post("/api/channels", create_channel)
    router.add_get("/api/channels/{id}", read_channel)
    router.add_patch("/api/channels/{id}", update_channel)
    router.add_delete("/api/channels/{id}", delete_channel)
    router.add_get("/api/channels/{id}/members", list_members)
    router.add_put("/api/channels/{id}/members/{user_id}", add_member)
    router.add_delete("/api/channels/{id}/members/{user_id}", remove_member)
