"""The directory's REST API: what each call does, and how it refuses bad input.

A real server on loopback (tests/server/api_client.py's ControlSite) and real HTTP.
"""

from __future__ import annotations

import time

import jwt
import pytest

from server.app_keys import HUB
from server.auth import TokenIssuer, load_or_create_secret
from server.config import ServerConfig
from server.node import EmbeddedServer
from tests.server.api_client import ApiClient, start_control_site
from tests.server.harness import PttClient, start_site


@pytest.fixture
async def site(tmp_path):
    site = await start_control_site(tmp_path)
    yield site
    await site.stop()


def names(items: list[dict]) -> list[str]:
    return [item["name"] for item in items]


async def call(site, name: str, method: str, path: str, *args, **kwargs):
    """One request as the signed-in user `name`."""
    return await (await site.client(name)).call(method, path, *args, **kwargs)


def error_of(reply, status: int, code: str) -> str:
    assert (reply.status, reply.code) == (status, code), (reply.status, reply.body)
    return reply.body["error"]["message"]


# --- tokens ---------------------------------------------------------------------------


async def test_without_a_valid_token_every_route_is_401(site):
    admin = await site.client("admin")
    for path in ("/api/users", "/api/events", "/api/channels", "/api/settings", "/api/me"):
        error_of(await admin.get(path, token=None), 401, "unauthorized")
        error_of(await admin.get(path, token="not.a.token"), 401, "unauthorized")
    error_of(await admin.post("/api/events", {"name": "Sneaky"}, token=None), 401, "unauthorized")
    assert site.directory.event_by_name("Sneaky") is None


async def test_expired_token_is_401(site, tmp_path):
    admin = await site.client("admin")
    login_id = jwt.decode(admin.token, options={"verify_signature": False})["sid"]
    an_hour_ago = time.time() - 3600
    issuer = TokenIssuer(load_or_create_secret(tmp_path), 60, clock=lambda: an_hour_ago)
    old_token, _ = issuer.issue(site.directory.user_by_name("admin"), login_id)
    message = error_of(await admin.get("/api/users", token=old_token), 401, "unauthorized")
    assert "expired" in message
    # The same login with a fresh token still works: only the expiry was refused.
    (await admin.get("/api/users")).ok()


# --- bad input ------------------------------------------------------------------------


async def test_bodies_are_validated_strictly(site):
    admin = await site.client("admin")
    cases = [
        (b"{not json", "JSON"),
        (b'["a", "list"]', "JSON object"),
        (b'"text"', "JSON object"),
        (b"\xff\xfe", "JSON"),
        (b'{"name": 5}', "'name' must be a string"),
        (b'{"name": null}', "'name' must be a string"),
        (b'{"name": "ok", "colour": "red"}', "unknown field 'colour'"),
        (b"{}", "'name' is required"),
    ]
    for raw, expected in cases:
        message = error_of(await admin.call("POST", "/api/events", raw=raw), 400, "bad_request")
        assert expected in message, (raw, message)
    # An integer field refuses strings and booleans (JSON true is not 1).
    for event_id in ("1", True, 1.5, [1]):
        body = {"name": "x", "event_id": event_id}
        message = error_of(await admin.post("/api/channels", body), 400, "bad_request")
        assert "'event_id' must be an integer" in message
    # Nothing was created by any of them.
    assert names((await admin.get("/api/events")).ok()["events"]) == ["Marathon", "Parade"]
    assert site.directory.channel_by_name("x") is None


async def test_names_too_long_or_with_controls_are_400(site):
    admin = await site.client("admin")
    error_of(await admin.post("/api/events", {"name": "e" * 65}), 400, "bad_request")
    error_of(await admin.post("/api/events", {"name": "two\nlines"}), 400, "bad_request")
    error_of(await admin.post("/api/events", {"name": "   "}), 400, "bad_request")
    message = error_of(await admin.post("/api/events", {"name": "e" * 5000}), 400, "bad_request")
    assert "longer than" in message
    # A body beyond the server's limit is a 400 too, not a dropped connection.
    error_of(await admin.post("/api/events", {"name": "e" * 300_000}), 400, "bad_request")
    assert (await admin.post("/api/events", {"name": "e" * 64})).status == 201


async def test_path_ids_that_are_not_integers_are_404(site):
    admin = await site.client("admin")
    for raw in ("abc", "0", "-1", "1.0", "99999999999999999999999", "１"):
        error_of(await admin.get(f"/api/users/{raw}"), 404, "not_found")
        error_of(await admin.delete(f"/api/channels/{raw}"), 404, "not_found")
    error_of(await admin.get("/api/users/4242"), 404, "not_found")
    error_of(await admin.get("/api/channels?event=abc"), 400, "bad_request")
    error_of(await admin.get("/api/channels?event=4242"), 404, "not_found")


async def test_empty_patches_are_400(site):
    admin, ids = await site.client("admin"), site.ids
    for path in (f"/api/users/{ids['g1']}", f"/api/channels/{ids['course']}", "/api/settings"):
        error_of(await admin.patch(path, {}), 400, "bad_request")


# --- users ----------------------------------------------------------------------------


async def test_user_lifecycle(site):
    admin = await site.client("admin")
    created = (await admin.post("/api/users", {"name": "Zoe", "role": "general", "password": "pw-1"})).ok(201)
    zoe = created["user"]
    assert zoe["name"] == "Zoe" and zoe["role"] == "general"
    assert "Zoe" in names((await admin.get("/api/users")).ok()["users"])
    assert (await admin.get(f"/api/users/{zoe['id']}")).ok() == {"user": zoe}
    # Names are unique ignoring case.
    error_of(await admin.post("/api/users", {"name": "zoe", "role": "general", "password": "x"}), 409, "conflict")
    error_of(await admin.post("/api/users", {"name": "Yan", "role": "boss", "password": "x"}), 400, "bad_request")
    error_of(await admin.post("/api/users", {"name": "Yan", "role": "general", "password": ""}), 400, "bad_request")

    renamed = (await admin.patch(f"/api/users/{zoe['id']}", {"name": "Zoe B", "role": "dispatch"})).ok()
    assert renamed["user"] == {"id": zoe["id"], "name": "Zoe B", "role": "dispatch"}
    error_of(await admin.patch(f"/api/users/{zoe['id']}", {"name": "D1"}), 409, "conflict")

    zoe_client = await ApiClient.login(site.url, "Zoe B", "pw-1")
    try:
        (await zoe_client.get("/api/me")).ok()
        # A new password ends the user's logins: the token in hand stops working.
        (await admin.patch(f"/api/users/{zoe['id']}", {"password": "pw-2"})).ok()
        error_of(await zoe_client.get("/api/me"), 401, "unauthorized")
        error_of(await admin.post("/api/login", {"username": "Zoe B", "password": "pw-1"}, token=None),
                 401, "unauthorized")
        zoe_client = await ApiClient.login(site.url, "Zoe B", "pw-2")
        (await admin.delete(f"/api/users/{zoe['id']}")).ok()
        error_of(await zoe_client.get("/api/me"), 401, "unauthorized")
    finally:
        await zoe_client.close()
    error_of(await admin.get(f"/api/users/{zoe['id']}"), 404, "not_found")
    error_of(await admin.delete(f"/api/users/{zoe['id']}"), 404, "not_found")


async def test_the_last_admin_can_be_neither_deleted_nor_demoted(site):
    admin, ids = await site.client("admin"), site.ids
    error_of(await admin.delete(f"/api/users/{ids['admin']}"), 409, "conflict")
    message = error_of(await admin.patch(f"/api/users/{ids['admin']}", {"role": "general"}), 409, "conflict")
    assert "last admin" in message
    # A refused PATCH changes nothing, not even the fields that came before the refusal.
    error_of(await admin.patch(f"/api/users/{ids['g1']}", {"role": "dispatch", "name": "admin"}), 409, "conflict")
    assert site.directory.get_user(ids["g1"]).role.value == "general"
    assert site.directory.get_user(ids["admin"]).role.value == "admin"
    # With a second admin, either one may go.
    second = (await admin.post("/api/users", {"name": "root2", "role": "admin", "password": "pw"})).ok(201)["user"]
    (await admin.patch(f"/api/users/{second['id']}", {"role": "general"})).ok()
    (await admin.patch(f"/api/users/{second['id']}", {"role": "admin"})).ok()
    (await admin.delete(f"/api/users/{second['id']}")).ok()


async def test_me_lists_the_events_the_caller_sees(site):
    ids = site.ids
    me = (await call(site, "admin", "GET", "/api/me")).ok()
    assert me["user"]["name"] == "admin" and names(me["events"]) == ["Marathon", "Parade"]
    me = (await call(site, "d1", "GET", "/api/me")).ok()
    assert me == {"user": {"id": ids["d1"], "name": "d1", "role": "dispatch"},
                  "events": [{"id": ids["Marathon"], "name": "Marathon"}]}
    assert (await call(site, "g1", "GET", "/api/me")).ok()["events"] == []


# --- events, dispatchers, teams -------------------------------------------------------


async def test_event_lifecycle_and_dispatchers(site):
    admin, ids = await site.client("admin"), site.ids
    event = (await admin.post("/api/events", {"name": "Regatta"})).ok(201)["event"]
    error_of(await admin.post("/api/events", {"name": "regatta"}), 409, "conflict")
    path = f"/api/events/{event['id']}"
    (await admin.put(f"{path}/dispatchers/{ids['d2']}")).ok()
    (await admin.put(f"{path}/dispatchers/{ids['d2']}")).ok()  # idempotent
    message = error_of(await admin.put(f"{path}/dispatchers/{ids['g1']}"), 400, "bad_request")
    assert "dispatch" in message
    error_of(await admin.put(f"{path}/dispatchers/4242"), 404, "not_found")
    team = (await admin.post(f"{path}/teams", {"name": "Boats"})).ok(201)["team"]
    assert team == {"id": team["id"], "name": "Boats", "event_id": event["id"]}
    channel = (await admin.post("/api/channels", {"name": "boat-1", "team_id": team["id"]})).ok(201)["channel"]
    assert (channel["event_id"], channel["event"], channel["team"]) == (event["id"], "Regatta", "Boats")

    full = (await admin.get(path)).ok()
    assert full["event"] == event and full["teams"] == [team] and full["channels"] == [channel]
    assert names(full["dispatchers"]) == ["d2"]
    assert names((await call(site, "d2", "GET", "/api/events")).ok()["events"]) == ["Parade", "Regatta"]

    renamed = (await admin.patch(path, {"name": "Regatta 2"})).ok()["event"]
    assert renamed == {"id": event["id"], "name": "Regatta 2"}
    error_of(await admin.patch(path, {"name": "Marathon"}), 409, "conflict")

    (await admin.delete(f"{path}/dispatchers/{ids['d2']}")).ok()
    error_of(await admin.delete(f"{path}/dispatchers/{ids['d2']}"), 404, "not_found")
    assert names((await call(site, "d2", "GET", "/api/events")).ok()["events"]) == ["Parade"]

    # Deleting the event takes its teams and channels with it.
    (await admin.delete(path)).ok()
    error_of(await admin.get(path), 404, "not_found")
    error_of(await admin.get(f"/api/channels/{channel['id']}"), 404, "not_found")
    assert site.directory.get_team(team["id"]) is None


async def test_teams_are_managed_by_the_events_dispatcher(site):
    d1, ids = await site.client("d1"), site.ids
    teams_path = f"/api/events/{ids['Marathon']}/teams"
    team = (await d1.post(teams_path, {"name": "Water"})).ok(201)["team"]
    error_of(await d1.post(teams_path, {"name": "WATER"}), 409, "conflict")
    assert names((await d1.get(teams_path)).ok()["teams"]) == ["Medics", "Water"]
    assert (await d1.patch(f"/api/teams/{team['id']}", {"name": "Water 2"})).ok()["team"]["name"] == "Water 2"
    # Deleting a team keeps its channels, now without a team.
    (await d1.delete(f"/api/teams/{ids['Medics']}")).ok()
    med = (await d1.get(f"/api/channels/{ids['med-1']}")).ok()["channel"]
    assert (med["team_id"], med["team"], med["event_id"]) == (None, None, ids["Marathon"])
    error_of(await d1.delete(f"/api/teams/{ids['Medics']}"), 404, "not_found")
    error_of(await d1.post(f"/api/events/4242/teams", {"name": "Ghost"}), 404, "not_found")


# --- channels and members -------------------------------------------------------------


async def test_channel_listings_follow_the_role(site):
    ids = site.ids
    listing = {name: names((await call(site, name, "GET", "/api/channels")).ok()["channels"])
               for name in ("admin", "d1", "d2", "g1", "g2")}
    assert listing == {
        "admin": ["course", "lobby", "med-1", "parade-1"],
        "d1": ["course", "med-1"],
        "d2": ["parade-1"],
        "g1": ["med-1"],
        "g2": [],
    }
    admin = await site.client("admin")
    by_event = (await admin.get("/api/channels", params={"event": str(ids["Parade"])})).ok()["channels"]
    assert names(by_event) == ["parade-1"]
    by_event = (await call(site, "d2", "GET", "/api/channels", params={"event": str(ids["Marathon"])})).ok()
    assert by_event["channels"] == []


async def test_channel_lifecycle_for_a_dispatcher(site):
    d1, ids = await site.client("d1"), site.ids
    channel = (await d1.post("/api/channels", {"name": "first-aid", "event_id": ids["Marathon"]})).ok(201)["channel"]
    assert channel == {"id": channel["id"], "name": "first-aid", "team": None, "event": "Marathon",
                       "team_id": None, "event_id": ids["Marathon"]}
    error_of(await d1.post("/api/channels", {"name": "FIRST-AID", "event_id": ids["Marathon"]}), 409, "conflict")
    path = f"/api/channels/{channel['id']}"
    moved = (await d1.patch(path, {"team_id": ids["Medics"], "name": "first-aid 2"})).ok()["channel"]
    assert (moved["name"], moved["team"]) == ("first-aid 2", "Medics")
    assert (await d1.patch(path, {"team_id": None})).ok()["channel"]["team_id"] is None
    error_of(await d1.patch(path, {"name": "med-1"}), 409, "conflict")
    error_of(await d1.patch(path, {"team_id": 4242}), 404, "not_found")
    (await d1.delete(path)).ok()
    error_of(await d1.get(path), 404, "not_found")


async def test_a_team_of_another_event_is_refused(site):
    admin, ids = await site.client("admin"), site.ids
    parade_team = (await admin.post(f"/api/events/{ids['Parade']}/teams", {"name": "Floats"})).ok(201)["team"]
    body = {"name": "mixed", "event_id": ids["Marathon"], "team_id": parade_team["id"]}
    error_of(await admin.post("/api/channels", body), 400, "bad_request")
    message = error_of(await admin.patch(f"/api/channels/{ids['course']}", {"team_id": parade_team["id"]}),
                       400, "bad_request")
    assert f"team {parade_team['id']} is not in the channel's event" in message
    assert site.directory.get_channel(ids["course"]).team_id is None
    # d1 dispatches Marathon but not Parade: the team's event is out of its scope.
    error_of(await call(site, "d1", "POST", "/api/channels", body), 403, "forbidden")


async def test_site_wide_channels_are_admin_only(site):
    admin, d1, ids = await site.client("admin"), await site.client("d1"), site.ids
    error_of(await d1.post("/api/channels", {"name": "hq"}), 403, "forbidden")
    error_of(await d1.get(f"/api/channels/{ids['lobby']}"), 403, "forbidden")
    channel = (await admin.post("/api/channels", {"name": "hq"})).ok(201)["channel"]
    assert (channel["event_id"], channel["team_id"]) == (None, None)


async def test_members(site):
    d1, ids = await site.client("d1"), site.ids
    path = f"/api/channels/{ids['med-1']}/members"
    assert names((await d1.get(path)).ok()["members"]) == ["g1"]
    (await d1.put(f"{path}/{ids['g2']}")).ok()
    (await d1.put(f"{path}/{ids['g2']}")).ok()  # idempotent
    assert names((await d1.get(path)).ok()["members"]) == ["g1", "g2"]
    assert names((await call(site, "g2", "GET", "/api/channels")).ok()["channels"]) == ["med-1"]
    (await d1.delete(f"{path}/{ids['g2']}")).ok()
    error_of(await d1.delete(f"{path}/{ids['g2']}"), 404, "not_found")
    error_of(await d1.put(f"{path}/4242"), 404, "not_found")
    error_of(await d1.get("/api/channels/4242/members"), 404, "not_found")
    # General users read their own channels, not the member lists.
    assert (await call(site, "g1", "GET", f"/api/channels/{ids['med-1']}")).ok()["channel"]["name"] == "med-1"
    error_of(await call(site, "g1", "GET", path), 403, "forbidden")


# --- settings and audit ---------------------------------------------------------------


async def test_settings(site):
    admin = await site.client("admin")
    assert (await admin.get("/api/settings")).ok() == {"settings": {"site_name": "vpdesk", "max_talk_ms": 60000}}
    changed = (await admin.patch("/api/settings", {"site_name": "County", "max_talk_ms": 30000})).ok()
    assert changed == {"settings": {"site_name": "County", "max_talk_ms": 30000}}
    assert site.server.app[HUB].floor.max_talk_ms == 30000  # the floor uses it at once
    for bad in ({"max_talk_ms": 10}, {"max_talk_ms": "30000"}, {"site_name": ""}, {"colour": "red"}):
        error_of(await admin.patch("/api/settings", bad), 400, "bad_request")
    assert (await admin.get("/api/settings")).ok()["settings"]["site_name"] == "County"
    error_of(await call(site, "d1", "PATCH", "/api/settings", {"site_name": "Mine"}), 403, "forbidden")


async def test_audit_records_every_write_and_pages(site):
    admin, ids = await site.client("admin"), site.ids
    event = (await admin.post("/api/events", {"name": "Audited"})).ok(201)["event"]
    (await admin.put(f"/api/channels/{ids['course']}/members/{ids['g2']}")).ok()
    (await admin.delete(f"/api/channels/{ids['course']}/members/{ids['g2']}")).ok()
    (await admin.patch("/api/settings", {"site_name": "Audit site"})).ok()
    entries = (await admin.get("/api/audit")).ok()["entries"]
    kinds = [e["kind"] for e in entries]
    assert kinds[:4] == ["settings.update", "member.remove", "member.add", "event.create"]
    created = entries[3]
    assert (created["actor"], created["address"], created["detail"]["event_id"]) == ("admin", "127.0.0.1", event["id"])
    # Pages of one, newest first, chained through next_before.
    first = (await admin.get("/api/audit", params={"limit": "1"})).ok()
    second = (await admin.get("/api/audit", params={"limit": "1", "before": str(first["next_before"])})).ok()
    assert [e["kind"] for e in first["entries"] + second["entries"]] == kinds[:2]
    only = (await admin.get("/api/audit", params={"kind": "member.add"})).ok()
    assert [e["kind"] for e in only["entries"]] == ["member.add"] and only["next_before"] is None
    for bad in ({"limit": "0"}, {"limit": "1001"}, {"limit": "ten"}, {"before": "x"}):
        error_of(await admin.get("/api/audit", params=bad), 400, "bad_request")


async def test_a_stored_max_talk_time_applies_after_a_restart(tmp_path):
    site = await start_site(tmp_path, users=1, max_talk_ms=60_000)
    try:
        async with await ApiClient.login(site.url, "admin") as admin:
            (await admin.patch("/api/settings", {"max_talk_ms": 15_000})).ok()
    finally:
        await site.server.stop()
    # A new node on the same data folder: the floor and hello follow the stored setting.
    server = await EmbeddedServer(
        ServerConfig(data_dir=tmp_path, listen_port=0, ice_addresses=["127.0.0.1"], max_talk_ms=60_000)
    ).start()
    try:
        assert server.app[HUB].floor.max_talk_ms == 15_000
        client = await PttClient.connect(server.url, "u0", media=False)
        assert client.hello["limits"]["max_talk_ms"] == 15_000
        await client.close()
    finally:
        await server.stop()
