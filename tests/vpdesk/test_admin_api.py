"""AdminApi against a real in-process server: every method, what it changes in the
directory, and refusals mapped to ApiRefused with the server's status and code."""

from __future__ import annotations

import aiohttp
import pytest
import pytest_asyncio

from server.directory import Role
from tests.server.harness import PASSWORD, start_site
from vpdesk.session.admin_api import NO_TEAM, AdminApi, ApiRefused, request_json
from vpdesk.session.tokens import TokenKeeper


@pytest_asyncio.fixture
async def site(tmp_path):
    site = await start_site(tmp_path / "site", users=2)
    directory = site.directory
    # u0 (dispatch) runs the "Exercise" event; "Other" is an event they do not see.
    exercise = directory.event_by_name("Exercise")
    directory.assign_dispatcher(exercise.id, directory.user_by_name("u0").id)
    directory.add_channel("charlie", team="Fire", event="Other")
    yield site
    await site.server.stop()


@pytest_asyncio.fixture
async def apis(site):
    made = []

    async def make(name: str) -> AdminApi:
        keeper = TokenKeeper(site.url, name, PASSWORD)
        api = AdminApi(site.url, keeper.access_token)
        made.append(api)
        return api

    yield make
    for api in made:
        await api.close()


async def refused(call) -> ApiRefused:
    with pytest.raises(ApiRefused) as info:
        await call
    return info.value


async def test_me_and_users(site, apis):
    admin = await apis("admin")
    me = await admin.me()
    assert me["user"]["name"] == "admin" and me["user"]["role"] == "admin"
    assert {e["name"] for e in me["events"]} == {"Exercise", "Other"}

    names = {u["name"] for u in await admin.list_users()}
    assert {"admin", "u0", "u1", "outsider"} <= names
    created = await admin.create_user("medic7", "general", "medic-pass-1")
    assert created["role"] == "general"
    assert (await admin.get_user(created["id"]))["name"] == "medic7"
    renamed = await admin.update_user(created["id"], name="medic8")
    assert renamed["name"] == "medic8" and site.directory.user_by_name("medic8") is not None
    promoted = await admin.update_user(created["id"], role="dispatch")
    assert promoted["role"] == "dispatch"
    assert site.directory.get_user(created["id"]).role is Role.DISPATCH
    await admin.update_user(created["id"], password="another-pass-2")
    assert site.directory.authenticate("medic8", "another-pass-2") is not None
    await admin.delete_user(created["id"])
    assert site.directory.get_user(created["id"]) is None


async def test_events_dispatchers_and_teams(site, apis):
    admin = await apis("admin")
    event = await admin.create_event("Harbour Fest")
    assert event["name"] == "Harbour Fest"
    assert "Harbour Fest" in {e["name"] for e in await admin.list_events()}
    event = await admin.rename_event(event["id"], "Harbour Festival")
    assert site.directory.get_event(event["id"]).name == "Harbour Festival"

    u0 = site.directory.user_by_name("u0")
    await admin.assign_dispatcher(event["id"], u0.id)
    detail = await admin.event_detail(event["id"])
    assert detail["event"]["name"] == "Harbour Festival"
    assert [d["name"] for d in detail["dispatchers"]] == ["u0"]
    await admin.unassign_dispatcher(event["id"], u0.id)
    assert not site.directory.is_dispatcher_of(u0.id, event["id"])

    team = await admin.create_team(event["id"], "Medics")
    assert team["event_id"] == event["id"]
    assert [t["name"] for t in await admin.list_teams(event["id"])] == ["Medics"]
    team = await admin.rename_team(team["id"], "First Aid")
    assert site.directory.get_team(team["id"]).name == "First Aid"
    await admin.delete_team(team["id"])
    assert site.directory.get_team(team["id"]) is None

    await admin.delete_event(event["id"])
    assert site.directory.get_event(event["id"]) is None


async def test_channels_and_members(site, apis):
    admin = await apis("admin")
    event = site.directory.event_by_name("Exercise")
    team = await admin.create_team(event.id, "Water")
    channel = await admin.create_channel("Boat 1", team_id=team["id"])
    assert (channel["event_id"], channel["team_id"]) == (event.id, team["id"])
    loose = await admin.create_channel("Shore", event_id=event.id)
    assert loose["team_id"] is None
    site_wide = await admin.create_channel("All hands")
    assert site_wide["event_id"] is None
    in_event = {c["name"] for c in await admin.list_channels(event.id)}
    assert {"alpha", "bravo", "Boat 1", "Shore"} <= in_event and "All hands" not in in_event
    assert "All hands" in {c["name"] for c in await admin.list_channels()}
    assert (await admin.get_channel(channel["id"]))["name"] == "Boat 1"

    moved = await admin.update_channel(loose["id"], name="Shore 1", team_id=team["id"])
    assert (moved["name"], moved["team_id"]) == ("Shore 1", team["id"])
    out = await admin.update_channel(loose["id"], team_id=NO_TEAM)
    assert out["team_id"] is None and out["name"] == "Shore 1"

    u1 = site.directory.user_by_name("u1")
    await admin.add_member(channel["id"], u1.id)
    assert site.directory.is_member(u1.id, channel["id"])
    assert [m["name"] for m in await admin.list_members(channel["id"])] == ["u1"]
    await admin.remove_member(channel["id"], u1.id)
    assert await admin.list_members(channel["id"]) == []

    for made in (channel, loose, site_wide):
        await admin.delete_channel(made["id"])
        assert site.directory.get_channel(made["id"]) is None


async def test_settings_and_audit(site, apis):
    admin = await apis("admin")
    settings = await admin.update_settings(site_name="County Ops", max_talk_ms=45_000)
    assert settings["site_name"] == "County Ops" and settings["max_talk_ms"] == 45_000
    assert (await admin.get_settings())["site_name"] == "County Ops"
    await admin.create_event("Audited")

    page = await admin.audit(limit=50)
    kinds = [e["kind"] for e in page["entries"]]
    assert "settings.update" in kinds and "event.create" in kinds and "login" in kinds
    assert kinds.index("event.create") < kinds.index("settings.update")  # newest first
    only = await admin.audit(kind="event.create")
    assert {e["kind"] for e in only["entries"]} == {"event.create"}
    first = await admin.audit(limit=1)
    older = await admin.audit(limit=1, before=first["next_before"])
    assert older["entries"][0]["id"] < first["entries"][0]["id"]


async def test_dispatcher_works_inside_their_event_only(site, apis):
    dispatch = await apis("u0")
    me = await dispatch.me()
    assert [e["name"] for e in me["events"]] == ["Exercise"]
    exercise = me["events"][0]
    team = await dispatch.create_team(exercise["id"], "Relief")
    channel = await dispatch.create_channel("Relief 1", team_id=team["id"])
    u1 = site.directory.user_by_name("u1")
    await dispatch.add_member(channel["id"], u1.id)
    assert site.directory.is_member(u1.id, channel["id"])

    other = site.directory.event_by_name("Other")
    for call in (
        dispatch.create_event("Mine"),
        dispatch.create_team(other.id, "Sneaky"),
        dispatch.create_user("x1", "general", "pass-word-1"),
        dispatch.get_settings(),
        dispatch.audit(),
    ):
        error = await refused(call)
        assert (error.status, error.code) == (403, "forbidden"), error
        assert error.message  # the server's sentence, shown as it is


async def test_refusals_carry_the_servers_status_code_and_message(site, apis):
    admin = await apis("admin")
    me = await admin.me()
    last_admin = await refused(admin.delete_user(me["user"]["id"]))
    assert (last_admin.status, last_admin.code) == (409, "conflict")
    assert "admin" in last_admin.message
    missing = await refused(admin.rename_event(999_999, "Nowhere"))
    assert (missing.status, missing.code) == (404, "not_found")
    bad_role = await refused(admin.create_user("x2", "emperor", "pass-word-1"))
    assert (bad_role.status, bad_role.code) == (400, "bad_request")
    general = await apis("u1")
    forbidden = await refused(general.list_users())
    assert (forbidden.status, forbidden.code) == (403, "forbidden")


async def test_a_bad_token_is_unauthorized(site):
    async def garbage() -> str:
        return "not-a-token"

    api = AdminApi(site.url, garbage)
    try:
        error = await refused(api.me())
        assert (error.status, error.code) == (401, "unauthorized")
    finally:
        await api.close()


async def test_an_answer_that_is_not_the_apis_is_still_a_refusal(site):
    async with aiohttp.ClientSession() as http:
        error = await refused(request_json(http, "GET", site.url + "/api/no-such-route"))
    assert error.status == 404 and error.code in ("http_404", "not_found")
