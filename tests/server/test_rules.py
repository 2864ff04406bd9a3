"""The rules table as tests: every operation x every role, against the real API.

Each case builds a fresh little world inside a new event X (dispatcher d1 assigned to X;
d2 dispatches another event only; g1 is a member of X's channel), calls the endpoint as
the role, and expects 2xx or 403 `forbidden`. A forbidden call must change nothing: the
directory's revision (bumped by every write) and its whole content are compared.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from server.access import RULES, Operation, rules_table
from tests.server.api_client import ApiClient, start_control_site
from tests.server.harness import PASSWORD

Y, N = True, False
ROLES = ("admin", "dispatch_of_event", "dispatch_not_of_event", "general")

# operation, method, path, body; then allowed for: admin, dispatch of X, dispatch not of X,
# general member of X's channel. Placeholders: {event} {team} {channel} {other_channel}
# (a channel of X g1 is not in) {victim} (a fresh general user) {member} (g2, in {channel})
# {outsider} (d2, not in {channel}) {dispatcher} (d1) {stranger} (d2) {fresh} (a new name).
TABLE: list[tuple[str, str, str, Any, bool, bool, bool, bool]] = [
    ("users.list", "GET", "/api/users", None, Y, Y, Y, N),
    ("users.create", "POST", "/api/users", {"name": "{fresh}", "role": "general", "password": "pw"}, Y, N, N, N),
    ("users.read", "GET", "/api/users/{victim}", None, Y, Y, Y, N),
    ("users.update", "PATCH", "/api/users/{victim}", {"name": "{fresh}"}, Y, N, N, N),
    ("users.update", "PATCH", "/api/users/{victim}", {"role": "dispatch"}, Y, N, N, N),
    ("users.delete", "DELETE", "/api/users/{victim}", None, Y, N, N, N),
    ("events.list", "GET", "/api/events", None, Y, Y, Y, N),
    ("events.create", "POST", "/api/events", {"name": "{fresh}"}, Y, N, N, N),
    ("events.read", "GET", "/api/events/{event}", None, Y, Y, N, N),
    ("events.update", "PATCH", "/api/events/{event}", {"name": "{fresh}"}, Y, N, N, N),
    ("events.delete", "DELETE", "/api/events/{event}", None, Y, N, N, N),
    ("dispatchers.assign", "PUT", "/api/events/{event}/dispatchers/{stranger}", None, Y, N, N, N),
    ("dispatchers.unassign", "DELETE", "/api/events/{event}/dispatchers/{dispatcher}", None, Y, N, N, N),
    ("teams.list", "GET", "/api/events/{event}/teams", None, Y, Y, N, N),
    ("teams.create", "POST", "/api/events/{event}/teams", {"name": "{fresh}"}, Y, Y, N, N),
    ("teams.update", "PATCH", "/api/teams/{team}", {"name": "{fresh}"}, Y, Y, N, N),
    ("teams.delete", "DELETE", "/api/teams/{team}", None, Y, Y, N, N),
    ("channels.list", "GET", "/api/channels", None, Y, Y, Y, Y),
    ("channels.create", "POST", "/api/channels", {"name": "{fresh}", "event_id": "{event}"}, Y, Y, N, N),
    ("channels.create", "POST", "/api/channels", {"name": "{fresh}", "team_id": "{team}"}, Y, Y, N, N),
    ("channels.create", "POST", "/api/channels", {"name": "{fresh}"}, Y, N, N, N),  # no event: admin only
    ("channels.read", "GET", "/api/channels/{channel}", None, Y, Y, N, Y),
    ("channels.read", "GET", "/api/channels/{other_channel}", None, Y, Y, N, N),  # g1 not a member
    ("channels.update", "PATCH", "/api/channels/{channel}", {"name": "{fresh}"}, Y, Y, N, N),
    ("channels.update", "PATCH", "/api/channels/{channel}", {"team_id": None}, Y, Y, N, N),
    ("channels.delete", "DELETE", "/api/channels/{channel}", None, Y, Y, N, N),
    ("members.list", "GET", "/api/channels/{channel}/members", None, Y, Y, N, N),
    ("members.add", "PUT", "/api/channels/{channel}/members/{outsider}", None, Y, Y, N, N),
    ("members.remove", "DELETE", "/api/channels/{channel}/members/{member}", None, Y, Y, N, N),
    ("settings.read", "GET", "/api/settings", None, Y, N, N, N),
    ("settings.update", "PATCH", "/api/settings", {"site_name": "{fresh}"}, Y, N, N, N),
    ("audit.read", "GET", "/api/audit", None, Y, N, N, N),
    ("stats.read", "GET", "/api/stats", None, Y, Y, Y, N),
    ("me.read", "GET", "/api/me", None, Y, Y, Y, Y),
    # These two end the caller's login: each case signs in a fresh user of the role.
    ("me.password", "POST", "/api/me/password", {"old_password": PASSWORD, "new_password": "{fresh}"}, Y, Y, Y, Y),
    ("logout", "POST", "/api/logout", None, Y, Y, Y, Y),
]
SELF_ENDING = {"me.password", "logout"}

_names = itertools.count(1)


def _cases():
    for index, row in enumerate(TABLE):
        operation, method, path, body, *allowed = row
        for role, expected in zip(ROLES, allowed):
            label = f"{index:02d}-{operation}-{role}"
            yield pytest.param(operation, method, path, body, role, expected, id=label)


@dataclass
class World:
    """The fresh targets of one case, as placeholder values."""

    values: dict[str, Any]

    def fill(self, template: Any) -> Any:
        if isinstance(template, str):
            if template.startswith("{") and template.endswith("}") and template.count("{") == 1:
                return self.values[template[1:-1]]  # a whole placeholder keeps its type
            return template.format(**self.values)
        if isinstance(template, dict):
            return {k: self.fill(v) for k, v in template.items()}
        return template


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def site(tmp_path_factory):
    site = await start_control_site(tmp_path_factory.mktemp("rules"))
    yield site
    await site.stop()


def make_world(site, *, victim: bool) -> World:
    """A new event X: d1 dispatches it; team T with channel C (g1 and g2 in it); channel
    C2 in X without them. Names are unique per case."""
    directory, ids = site.directory, site.ids
    n = next(_names)
    event = directory.add_event(f"X{n}")
    team = directory.add_team(event.id, f"T{n}")
    channel = directory.create_channel(f"c{n}", team_id=team.id)
    other = directory.create_channel(f"c{n}-other", event_id=event.id)
    directory.assign_dispatcher(event.id, ids["d1"])
    directory.add_membership(ids["g1"], channel.id)
    directory.add_membership(ids["g2"], channel.id)
    values = {
        "event": event.id, "team": team.id, "channel": channel.id, "other_channel": other.id,
        "outsider": ids["d2"], "member": ids["g2"], "dispatcher": ids["d1"],
        "stranger": ids["d2"], "fresh": f"n{n}",
    }
    if victim:
        values["victim"] = directory.add_user(f"victim{n}", "general", PASSWORD).id
    return World(values)


async def caller_for(site, role: str, world: World, fresh: bool) -> tuple[ApiClient, bool]:
    """The client acting as `role` in this world, and whether the test must close it."""
    shared = {"admin": "admin", "dispatch_of_event": "d1", "dispatch_not_of_event": "d2", "general": "g1"}
    if not fresh:
        return await site.client(shared[role]), False
    directory, n = site.directory, world.values["fresh"]
    user_role = {"admin": "admin", "general": "general"}.get(role, "dispatch")
    user = directory.add_user(f"self-{n}", user_role, PASSWORD)
    if role == "dispatch_of_event":
        directory.assign_dispatcher(world.values["event"], user.id)
    elif role == "dispatch_not_of_event":
        directory.assign_dispatcher(site.ids["Parade"], user.id)
    elif role == "general":
        directory.add_membership(user.id, world.values["channel"])
    return await ApiClient.login(site.url, user.name), True


def snapshot(directory) -> tuple:
    """Everything the API can change, and the revision every write bumps."""
    events = directory.list_events()
    channels = directory.list_channels()
    return (
        directory.revision(),
        directory.list_users(),
        events,
        [(e.id, directory.list_teams(e.id), directory.dispatchers_of(e.id)) for e in events],
        directory.list_teams(None),
        channels,
        [(c.id, directory.members_of(c.id)) for c in channels],
        directory.get_settings(),
    )


def test_the_table_covers_every_operation():
    assert {row[0] for row in TABLE} == {op.value for op in Operation}
    assert set(RULES) == set(Operation)


def test_the_documented_table_is_the_code_s():
    doc = Path(__file__).resolve().parents[2] / "docs" / "control-plane.md"
    lines = doc.read_text(encoding="utf-8").splitlines()
    for operation, admin, dispatch, general in rules_table():
        row = [line for line in lines if line.startswith(f"| {operation} |")]
        assert len(row) == 1, operation
        assert row[0].endswith(f"| {admin} | {dispatch} | {general} |"), row[0]


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("operation, method, path, body, role, allowed", list(_cases()))
async def test_rule(site, operation, method, path, body, role, allowed):
    world = make_world(site, victim="{victim}" in path)
    client, close = await caller_for(site, role, world, fresh=operation in SELF_ENDING)
    try:
        before = snapshot(site.directory)
        args = () if body is None else (world.fill(body),)
        reply = await client.call(method, world.fill(path), *args)
        if allowed:
            assert reply.status in (200, 201), (reply.status, reply.body)
            return
        assert reply.status == 403, (reply.status, reply.body)
        assert reply.code == "forbidden"
        message = reply.body["error"]["message"]
        role_word = "general" if role == "general" else "dispatch"
        assert f"{role_word} users cannot" in message or message.startswith("you are not a"), message
        assert snapshot(site.directory) == before, "a forbidden call changed the directory"
    finally:
        if close:
            await client.close()
