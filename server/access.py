"""Who may do what: the rules every REST call and `vpserver` command honours, as one table.

Three roles. Admin may do everything. Dispatch works inside the events assigned to it:
teams, channels and memberships there, plus reading the user list and stats. General
reads itself, changes its own password and sees its own channels. The table `RULES`
says, per operation, which targets each role may act on; `check` enforces it and
`visible_events` / `visible_channels` filter the listings the same way.

Everything here is synchronous and reads the directory only: call it on the thread that
owns the directory (the server's event loop, or the CLI's main thread).
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass

from .api.errors import forbidden
from .directory import Channel, Directory, Event, Role, User

logger = logging.getLogger(__name__)


class Operation(str, enum.Enum):
    """Every operation of the control plane; the value is its name in messages and docs."""

    USERS_LIST = "users.list"
    USERS_CREATE = "users.create"
    USERS_READ = "users.read"
    USERS_UPDATE = "users.update"
    USERS_DELETE = "users.delete"
    EVENTS_LIST = "events.list"
    EVENTS_CREATE = "events.create"
    EVENTS_READ = "events.read"
    EVENTS_UPDATE = "events.update"
    EVENTS_DELETE = "events.delete"
    DISPATCHERS_ASSIGN = "dispatchers.assign"
    DISPATCHERS_UNASSIGN = "dispatchers.unassign"
    TEAMS_LIST = "teams.list"
    TEAMS_CREATE = "teams.create"
    TEAMS_UPDATE = "teams.update"
    TEAMS_DELETE = "teams.delete"
    CHANNELS_LIST = "channels.list"
    CHANNELS_CREATE = "channels.create"
    CHANNELS_READ = "channels.read"
    CHANNELS_UPDATE = "channels.update"
    CHANNELS_DELETE = "channels.delete"
    MEMBERS_LIST = "members.list"
    MEMBERS_ADD = "members.add"
    MEMBERS_REMOVE = "members.remove"
    SETTINGS_READ = "settings.read"
    SETTINGS_UPDATE = "settings.update"
    AUDIT_READ = "audit.read"
    STATS_READ = "stats.read"
    ME_READ = "me.read"
    ME_PASSWORD = "me.password"
    LOGOUT = "logout"


class Scope(enum.Flag):
    """Which targets a role may act on for one operation.

    NONE: refused. ANY: allowed whatever the target. EVENT: allowed when the target's
    event is one the caller dispatches (a target with no event is out of scope). MEMBER:
    allowed when the caller is a member of the target channel.
    """

    NONE = 0
    EVENT = enum.auto()
    MEMBER = enum.auto()
    ANY = enum.auto()


@dataclass(frozen=True)
class Rule:
    """One row of the rules table: what the operation does, in words, and who may."""

    does: str  # completes "dispatch users cannot ...", e.g. "create events"
    dispatch: Scope
    general: Scope

    def scope_of(self, role: Role) -> Scope:
        if role is Role.ADMIN:
            return Scope.ANY
        return self.dispatch if role is Role.DISPATCH else self.general


_ = Scope.NONE
ANY, EVENT, MEMBER = Scope.ANY, Scope.EVENT, Scope.MEMBER

# The rules. Admin may do everything, so only dispatch and general have columns.
# The listings (users.list, events.list, channels.list) are filtered by visible_events
# and visible_channels; their rule only says whether the role may list at all.
RULES: dict[Operation, Rule] = {
    Operation.USERS_LIST: Rule("list users", ANY, _),
    Operation.USERS_CREATE: Rule("create users", _, _),
    Operation.USERS_READ: Rule("read users", ANY, _),
    Operation.USERS_UPDATE: Rule("change users", _, _),
    Operation.USERS_DELETE: Rule("delete users", _, _),
    Operation.EVENTS_LIST: Rule("list events", ANY, _),
    Operation.EVENTS_CREATE: Rule("create events", _, _),
    Operation.EVENTS_READ: Rule("read events", EVENT, _),
    Operation.EVENTS_UPDATE: Rule("rename events", _, _),
    Operation.EVENTS_DELETE: Rule("delete events", _, _),
    Operation.DISPATCHERS_ASSIGN: Rule("assign dispatchers", _, _),
    Operation.DISPATCHERS_UNASSIGN: Rule("unassign dispatchers", _, _),
    Operation.TEAMS_LIST: Rule("list teams", EVENT, _),
    Operation.TEAMS_CREATE: Rule("create teams", EVENT, _),
    Operation.TEAMS_UPDATE: Rule("rename teams", EVENT, _),
    Operation.TEAMS_DELETE: Rule("delete teams", EVENT, _),
    Operation.CHANNELS_LIST: Rule("list channels", ANY, ANY),
    Operation.CHANNELS_CREATE: Rule("create channels", EVENT, _),
    Operation.CHANNELS_READ: Rule("read channels", EVENT | MEMBER, MEMBER),
    Operation.CHANNELS_UPDATE: Rule("change channels", EVENT, _),
    Operation.CHANNELS_DELETE: Rule("delete channels", EVENT, _),
    Operation.MEMBERS_LIST: Rule("list channel members", EVENT, _),
    Operation.MEMBERS_ADD: Rule("add channel members", EVENT, _),
    Operation.MEMBERS_REMOVE: Rule("remove channel members", EVENT, _),
    Operation.SETTINGS_READ: Rule("read settings", _, _),
    Operation.SETTINGS_UPDATE: Rule("change settings", _, _),
    Operation.AUDIT_READ: Rule("read the audit log", _, _),
    Operation.STATS_READ: Rule("read stats", ANY, _),
    Operation.ME_READ: Rule("read themselves", ANY, ANY),
    Operation.ME_PASSWORD: Rule("change their password", ANY, ANY),
    Operation.LOGOUT: Rule("log out", ANY, ANY),
}
del _

_NO_TARGET = object()


def may(user: User, operation: Operation) -> bool:
    """Whether the role may do `operation` on some target at all (no directory lookup)."""
    return bool(RULES[operation].scope_of(user.role))


def check_role(user: User, operation: Operation) -> None:
    """Refuse at once a role that may never do `operation`, whatever the target.

    Handlers call this before reading the request body, so that a refused caller learns
    nothing from validation messages.
    """
    if not may(user, operation):
        raise forbidden(f"{user.role.value} users cannot {RULES[operation].does}")


def check(
    directory: Directory,
    user: User,
    operation: Operation,
    *,
    event_id: int | None | object = _NO_TARGET,
    channel_id: int | None = None,
) -> None:
    """Allow `operation` on a target, or raise `forbidden` naming the role or the event.

    `event_id` is the event the target belongs to (None: a target outside any event, which
    only admins may touch); leave it out for operations without a target event.
    `channel_id` names the target channel for member-scoped reads.
    """
    scope = RULES[operation].scope_of(user.role)
    if not scope:
        check_role(user, operation)
    if Scope.ANY in scope:
        return
    if Scope.MEMBER in scope and channel_id is not None and directory.is_member(user.id, channel_id):
        return
    if Scope.EVENT in scope and event_id is not _NO_TARGET:
        if event_id is None:
            raise forbidden(f"{user.role.value} users cannot {RULES[operation].does} outside an event")
        if directory.is_dispatcher_of(user.id, event_id):
            return
        event = directory.get_event(event_id)
        name = event.name if event is not None else str(event_id)
        raise forbidden(f"you are not a dispatcher of event {name!r}")
    if Scope.MEMBER in scope:
        raise forbidden("you are not a member of that channel")
    # A scoped rule checked without its target: a handler bug, refused rather than allowed.
    raise forbidden(f"{user.role.value} users cannot {RULES[operation].does} here")


def visible_events(directory: Directory, user: User) -> list[Event]:
    """The events `user` may see: all for admin, the assigned ones for dispatch, none else."""
    if user.role is Role.ADMIN:
        return directory.list_events()
    if user.role is Role.DISPATCH:
        return directory.events_of_dispatcher(user.id)
    return []


def visible_channels(directory: Directory, user: User, event_id: int | None = None) -> list[Channel]:
    """The channels `user` may see, optionally only those of one event, ordered by name.

    Admin: all. Dispatch: those of its events and those it is a member of. General: those
    it is a member of.
    """
    if user.role is Role.ADMIN:
        channels = directory.list_channels()
    else:
        by_id = {c.id: c for c in directory.channels_of(user.id)}
        if user.role is Role.DISPATCH:
            for event in directory.events_of_dispatcher(user.id):
                by_id.update((c.id, c) for c in directory.channels_in_event(event.id))
        channels = sorted(by_id.values(), key=lambda c: (c.name.casefold(), c.id))
    if event_id is not None:
        channels = [c for c in channels if c.event_id == event_id]
    return channels


def rules_table() -> list[tuple[str, str, str, str]]:
    """The table as rows (operation, admin, dispatch, general) for docs and `vpserver`."""
    def word(scope: Scope) -> str:
        if Scope.ANY in scope:
            return "yes"
        parts = [w for flag, w in ((Scope.EVENT, "own events"), (Scope.MEMBER, "own channels")) if flag in scope]
        return " or ".join(parts) or "no"

    return [
        (op.value, "yes", word(rule.dispatch), word(rule.general)) for op, rule in RULES.items()
    ]


__all__ = [
    "Operation", "Rule", "RULES", "Scope", "check", "check_role", "may",
    "rules_table", "visible_channels", "visible_events",
]
