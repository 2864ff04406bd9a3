"""The management panel's view model: the site's events, teams, channels, members, users,
settings and audit log as the signed-in user may see them, and the changes they may make.

It talks to the server through `AdminApi` on the console's loop (qasync's under Qt). Every
action runs as a task: it shows "Working…", calls the server, then shows what was done or
the server's refusal in `statusChanged` (never an exception in the widgets), and reloads
what it shows. The server enforces the rules; the `can_*` properties only say which
controls make sense for the role, so the widgets can hide the rest.

GUI thread only (the loop's thread).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp
from PySide6.QtCore import QObject, Signal

from vpdesk.session.admin_api import AdminApi, ApiRefused
from vpdesk.session.console import LoginRefused
from vpdesk.session.tokens import TokenRefused

logger = logging.getLogger(__name__)

ROLES = ("admin", "dispatch", "general")
MANAGING_ROLES = ("admin", "dispatch")
# The tree's node for the channels of no event. Not "Site": an embedded site's first
# event is called that.
SITE_NAME = "Site-wide"
AUDIT_PAGE = 100
# Failures whose message says it all (no traceback in the log).
_EXPECTED_FAILURES = (ApiRefused, LoginRefused, TokenRefused, aiohttp.ClientError, OSError, TimeoutError)


@dataclass(frozen=True)
class Node:
    """One row of the events → teams → channels tree. `kind`: event, site, team, channel."""

    kind: str
    id: int | None
    name: str
    event_id: int | None = None
    team_id: int | None = None
    children: tuple["Node", ...] = field(default=(), compare=False)

    @property
    def key(self) -> tuple[str, int | None]:
        return (self.kind, self.id)


def _channel_node(channel: dict) -> Node:
    return Node("channel", channel["id"], channel["name"], channel.get("event_id"), channel.get("team_id"))


def _by_name(items):
    return sorted(items, key=lambda item: str(item["name"]).casefold())


def _grouped(event_id: int | None, teams: list[dict], channels: list[dict]) -> tuple[Node, ...]:
    """Teams (with their channels), then the channels in no team."""
    known = {team["id"] for team in teams}
    # A channel may name a team the lists did not give (site-wide teams have no list route).
    extra = {c["team_id"]: {"id": c["team_id"], "name": c.get("team") or "team", "event_id": event_id}
             for c in channels if c.get("team_id") is not None and c["team_id"] not in known}
    nodes = []
    for team in _by_name([*teams, *extra.values()]):
        inside = tuple(_channel_node(c) for c in _by_name(c for c in channels if c.get("team_id") == team["id"]))
        nodes.append(Node("team", team["id"], team["name"], event_id, team["id"], inside))
    nodes.extend(_channel_node(c) for c in _by_name(c for c in channels if c.get("team_id") is None))
    return tuple(nodes)


def build_tree(events: list[dict], details: dict[int, dict], site_channels: list[dict] | None) -> list[Node]:
    """The tree the panel shows: each event with its teams and channels; then, when
    `site_channels` is given (admin), the "Site" node with the channels of no event."""
    tree = []
    for event in _by_name(events):
        detail = details.get(event["id"], {})
        children = _grouped(event["id"], detail.get("teams", []), detail.get("channels", []))
        tree.append(Node("event", event["id"], event["name"], event["id"], None, children))
    if site_channels is not None:
        tree.append(Node("site", None, SITE_NAME, None, None, _grouped(None, [], site_channels)))
    return tree


def describe_failure(exc: BaseException) -> str:
    """A sentence for the status line: the server's own message when it refused."""
    if isinstance(exc, ApiRefused):
        return exc.message
    if isinstance(exc, (aiohttp.ClientError, OSError, TimeoutError)):
        return f"cannot reach the server ({exc or type(exc).__name__})"
    return str(exc) or type(exc).__name__


class ManagementViewModel(QObject):
    """State and actions of the management panel over `api`, as a user of `role`."""

    dataChanged = Signal()  # tree, users, dispatchers, settings
    membersChanged = Signal()
    auditChanged = Signal()
    roleChanged = Signal(str)
    statusChanged = Signal(str, str)  # text, kind: "busy" | "ok" | "error" | ""

    def __init__(self, api: AdminApi, role: str, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.api = api
        self.role = role
        self.user: dict = {}
        self.events: list[dict] = []
        self.details: dict[int, dict] = {}
        self.site_channels: list[dict] = []
        self.users: list[dict] = []
        self.settings: dict = {}
        self.tree: list[Node] = []
        self.selected: tuple[str, int | None] | None = None
        self.members: list[dict] = []
        self.audit_entries: list[dict] = []
        self.audit_next_before = None
        self.status_text, self.status_kind = "", ""
        self._tasks: set[asyncio.Task] = set()
        self._reload_lock = asyncio.Lock()

    @classmethod
    def for_session(cls, session, role: str, parent: QObject | None = None) -> "ManagementViewModel":
        """A view model calling the server `session` (a ConsoleSession) is signed in to."""
        credentials = session.credentials
        # The URL of the node in use, asked per request: it changes when the console fails over.
        api = AdminApi(lambda: session.credentials.url, session.access_token, ssl=credentials.ssl)
        return cls(api, role, parent)

    # --- what the role may do ----------------------------------------------------------

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def can_manage(self) -> bool:
        return self.role in MANAGING_ROLES

    def can_edit(self, node: Node | None) -> bool:
        """Rename/delete this node: events and site-wide things need admin; a dispatcher
        edits the teams and channels of the events the server shows them."""
        if node is None or node.kind == "site":
            return False
        if node.kind == "event" or node.event_id is None:
            return self.is_admin
        return self.can_manage

    def can_add_inside(self, node: Node | None) -> bool:
        """Create a team or channel under this node."""
        if node is None:
            return False
        return self.is_admin if node.event_id is None else self.can_manage

    # --- reading -------------------------------------------------------------------------

    def node(self, key: tuple[str, int | None] | None) -> Node | None:
        stack = list(self.tree)
        while stack:
            node = stack.pop()
            if node.key == key:
                return node
            stack.extend(node.children)
        return None

    def selected_node(self) -> Node | None:
        return self.node(self.selected)

    def teams_of(self, event_id: int | None) -> list[dict]:
        return _by_name(self.details.get(event_id, {}).get("teams", [])) if event_id is not None else []

    def dispatchers_of(self, event_id: int) -> list[dict]:
        return _by_name(self.details.get(event_id, {}).get("dispatchers", []))

    def user_named(self, name: str) -> dict | None:
        return next((u for u in self.users if u["name"] == name), None)

    def addable_members(self) -> list[dict]:
        present = {m["id"] for m in self.members}
        return [u for u in _by_name(self.users) if u["id"] not in present]

    def assignable_dispatchers(self, event_id: int) -> list[dict]:
        present = {d["id"] for d in self.dispatchers_of(event_id)}
        return [u for u in _by_name(self.users) if u["role"] == "dispatch" and u["id"] not in present]

    # --- loading -------------------------------------------------------------------------

    def refresh(self) -> asyncio.Task:
        """Reload everything (the Refresh button, the panel opening)."""
        return self._spawn(self._act("Loading…", "Up to date", "Could not load", None))

    def select(self, key: tuple[str, int | None] | None) -> asyncio.Task | None:
        """The tree's selection changed: a channel loads its members."""
        self.selected = key
        self.members = []
        self.membersChanged.emit()
        if key is not None and key[0] == "channel":
            return self._spawn(self._quietly(self._load_members()))
        return None

    def load_audit(self, older: bool = False) -> asyncio.Task:
        before = self.audit_next_before if older else None

        async def load() -> None:
            page = await self.api.audit(limit=AUDIT_PAGE, before=before)
            entries = list(page.get("entries") or [])
            self.audit_entries = [*self.audit_entries, *entries] if older else entries
            self.audit_next_before = page.get("next_before")
            self.auditChanged.emit()

        return self._spawn(self._quietly(load(), "Could not read the audit log"))

    async def _reload(self) -> None:
        async with self._reload_lock:  # clicks in a row: one reload after another
            me = await self.api.me()
            self.user = me.get("user") or {}
            role = str(self.user.get("role") or self.role)
            if role != self.role:
                self.role = role
                self.roleChanged.emit(role)
            if not self.can_manage:
                self.events, self.details, self.site_channels, self.users = [], {}, [], []
            else:
                self.events = list(me.get("events") or [])
                found = await asyncio.gather(*(self.api.event_detail(e["id"]) for e in self.events))
                self.details = {e["id"]: d for e, d in zip(self.events, found)}
                self.users = await self.api.list_users()
                if self.is_admin:
                    self.site_channels = [c for c in await self.api.list_channels() if c.get("event_id") is None]
                    self.settings = await self.api.get_settings()
            self.tree = build_tree(self.events, self.details, self.site_channels if self.is_admin else None)
            if self.node(self.selected) is None:
                self.selected = None
            self.dataChanged.emit()
            if self.selected is not None and self.selected[0] == "channel":
                await self._load_members()
            else:
                self.members = []
                self.membersChanged.emit()

    async def _load_members(self) -> None:
        key = self.selected
        members = await self.api.list_members(key[1]) if key is not None and key[0] == "channel" else []
        if key == self.selected:  # not already another channel's
            self.members = _by_name(members)
            self.membersChanged.emit()

    # --- actions -------------------------------------------------------------------------

    def _change(self, done: str, failed: str, call: Callable[[], Awaitable]) -> asyncio.Task:
        return self._spawn(self._act("Working…", done, failed, call))

    def create_event(self, name: str) -> asyncio.Task:
        return self._change(f"Created event “{name}”", f"Could not create event “{name}”",
                            lambda: self.api.create_event(name))

    def rename_event(self, event_id: int, name: str) -> asyncio.Task:
        return self._change(f"Renamed the event to “{name}”", "Could not rename the event",
                            lambda: self.api.rename_event(event_id, name))

    def delete_event(self, event_id: int) -> asyncio.Task:
        return self._change("Deleted the event", "Could not delete the event", lambda: self.api.delete_event(event_id))

    def create_team(self, event_id: int, name: str) -> asyncio.Task:
        return self._change(f"Created team “{name}”", f"Could not create team “{name}”",
                            lambda: self.api.create_team(event_id, name))

    def rename_team(self, team_id: int, name: str) -> asyncio.Task:
        return self._change(f"Renamed the team to “{name}”", "Could not rename the team",
                            lambda: self.api.rename_team(team_id, name))

    def delete_team(self, team_id: int) -> asyncio.Task:
        return self._change("Deleted the team", "Could not delete the team", lambda: self.api.delete_team(team_id))

    def create_channel(self, name: str, event_id: int | None, team_id: int | None) -> asyncio.Task:
        return self._change(f"Created channel “{name}”", f"Could not create channel “{name}”",
                            lambda: self.api.create_channel(name, event_id=event_id, team_id=team_id))

    def update_channel(self, channel_id: int, name: str, team_id: int | None) -> asyncio.Task:
        return self._change(f"Saved channel “{name}”", "Could not change the channel",
                            lambda: self.api.update_channel(channel_id, name=name, team_id=team_id))

    def delete_channel(self, channel_id: int) -> asyncio.Task:
        return self._change("Deleted the channel", "Could not delete the channel",
                            lambda: self.api.delete_channel(channel_id))

    def add_member(self, channel_id: int, user: dict) -> asyncio.Task:
        return self._change(f"Added {user['name']}", f"Could not add {user['name']}",
                            lambda: self.api.add_member(channel_id, user["id"]))

    def remove_member(self, channel_id: int, user: dict) -> asyncio.Task:
        return self._change(f"Removed {user['name']}", f"Could not remove {user['name']}",
                            lambda: self.api.remove_member(channel_id, user["id"]))

    def assign_dispatcher(self, event_id: int, user: dict) -> asyncio.Task:
        return self._change(f"{user['name']} now dispatches this event", f"Could not assign {user['name']}",
                            lambda: self.api.assign_dispatcher(event_id, user["id"]))

    def unassign_dispatcher(self, event_id: int, user: dict) -> asyncio.Task:
        return self._change(f"{user['name']} no longer dispatches this event", f"Could not unassign {user['name']}",
                            lambda: self.api.unassign_dispatcher(event_id, user["id"]))

    def create_user(self, name: str, role: str, password: str) -> asyncio.Task:
        return self._change(f"Created user {name} ({role})", f"Could not create user {name}",
                            lambda: self.api.create_user(name, role, password))

    def rename_user(self, user: dict, name: str) -> asyncio.Task:
        return self._change(f"Renamed {user['name']} to {name}", f"Could not rename {user['name']}",
                            lambda: self.api.update_user(user["id"], name=name))

    def set_role(self, user: dict, role: str) -> asyncio.Task:
        return self._change(f"{user['name']} is now {role}", f"Could not change the role of {user['name']}",
                            lambda: self.api.update_user(user["id"], role=role))

    def reset_password(self, user: dict, password: str) -> asyncio.Task:
        return self._change(f"Set a new password for {user['name']}", f"Could not set the password of {user['name']}",
                            lambda: self.api.update_user(user["id"], password=password))

    def delete_user(self, user: dict) -> asyncio.Task:
        return self._change(f"Deleted user {user['name']}", f"Could not delete {user['name']}",
                            lambda: self.api.delete_user(user["id"]))

    def save_settings(self, site_name: str, max_talk_ms: int | None) -> asyncio.Task:
        """`max_talk_ms` None: leave the talk limit as it is (the server's default)."""
        values = {"site_name": site_name, **({"max_talk_ms": max_talk_ms} if max_talk_ms is not None else {})}
        return self._change("Saved the settings", "Could not save the settings",
                            lambda: self.api.update_settings(**values))

    # --- running them ----------------------------------------------------------------------

    async def _act(self, busy: str, done: str, failed: str, call: Callable[[], Awaitable] | None) -> bool:
        self._set_status(busy, "busy")
        try:
            if call is not None:
                await call()
        except Exception as exc:  # noqa: BLE001 - every failure becomes a sentence
            self._failed(failed, exc)
            return False
        try:
            await self._reload()  # the panel shows the server's state after each change
        except Exception as exc:  # noqa: BLE001
            self._failed(f"{done}, but could not reload", exc)
            return False
        self._set_status(done, "ok")
        return True

    async def _quietly(self, work: Awaitable, failed: str = "Could not load the members") -> None:
        try:
            await work
        except Exception as exc:  # noqa: BLE001
            self._failed(failed, exc)

    def _failed(self, what: str, exc: Exception) -> None:
        if not isinstance(exc, _EXPECTED_FAILURES):  # a bug here: keep its traceback
            logger.error("ManagementViewModel: %s", what, exc_info=exc)
        self._set_status(f"{what}: {describe_failure(exc)}", "error")

    def _set_status(self, text: str, kind: str) -> None:
        self.status_text, self.status_kind = text, kind
        self.statusChanged.emit(text, kind)

    def _spawn(self, coro) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def settle(self) -> None:
        """Wait for every call started so far (tests; closing the panel)."""
        while others := [t for t in self._tasks if t is not asyncio.current_task()]:
            await asyncio.gather(*others, return_exceptions=True)

    async def close(self) -> None:
        """Finish what runs, then close the API client's connections."""
        await self.settle()
        await self.api.close()

    def shutdown(self, then: Callable[[], None] | None = None) -> asyncio.Task:
        """close() as a task of this object, then `then()` (the panel deletes itself)."""

        async def closing() -> None:
            try:
                await self.close()
            finally:
                if then is not None:
                    then()

        return self._spawn(closing())


__all__ = ["ManagementViewModel", "Node", "ROLES", "MANAGING_ROLES", "build_tree", "describe_failure"]
