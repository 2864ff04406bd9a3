"""docs/openapi.json: valid itself, complete against the router, and true of real replies.

The tour calls every documented operation on a real server and validates every reply
body against the schema documented for its path, method and status; a status the
document does not list fails. Error statuses come from a generic sweep driven by the
document (no token -> 401, general caller -> 403, unknown id -> 404, non-object body ->
400) plus scripted cases (409, 429, query errors).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from tests.server.api_client import ApiClient, start_control_site
from tests.server.harness import PASSWORD

DOC_PATH = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"
DOC_URI = "urn:vpdesk:openapi"
METHODS = ("get", "put", "post", "patch", "delete")
MISSING = 999_999
# Documented but not reachable in a healthy test server.
UNREACHED = {("/api/health", "get", "503")}


@pytest.fixture(scope="module")
def doc() -> dict:
    return json.loads(DOC_PATH.read_text(encoding="utf-8"))


def operations(doc: dict) -> list[tuple[str, str, dict]]:
    return [(path, method, op) for path, item in doc["paths"].items()
            for method, op in item.items() if method in METHODS]


def schemas_in(node: Any):
    """Every JSON Schema object in the document (components and inline)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "schema":
                yield value
            else:
                yield from schemas_in(value)
    elif isinstance(node, list):
        for value in node:
            yield from schemas_in(value)


def pointer(*parts: str) -> str:
    return "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)


def test_the_document_is_valid_openapi_31(doc):
    assert doc["openapi"].startswith("3.1.")
    for name, schema in doc["components"]["schemas"].items():
        Draft202012Validator.check_schema(schema)
    inline = list(schemas_in(doc["paths"]))
    assert len(inline) > 50
    for schema in inline:
        Draft202012Validator.check_schema(schema)
    # Every $ref points at a component that exists.
    refs = re.findall(r'"\$ref": "#/components/schemas/([^"]+)"', DOC_PATH.read_text())
    assert refs and set(refs) <= set(doc["components"]["schemas"])
    ids = [op["operationId"] for _, _, op in operations(doc)]
    assert len(ids) == len(set(ids)), "operationIds must be unique"
    for path, method, op in operations(doc):
        assert op["responses"], (path, method)
        for status, response in op["responses"].items():
            assert re.fullmatch(r"[1-5]\d\d", status), (path, method, status)
            assert "application/json" in response["content"], (path, method, status)
        templated = set(re.findall(r"{(\w+)}", path))
        declared = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
        assert templated == declared, (path, method)
        # Closed shapes: a success body the server grows without documenting fails.
        ok_schema = next(r for s, r in op["responses"].items() if s.startswith("2"))
        schema = ok_schema["content"]["application/json"]["schema"]
        if "$ref" not in schema:
            assert schema.get("additionalProperties") is False, (path, method)


def test_the_rules_name_real_operations(doc):
    from server.access import Operation

    named = {op["x-operation"] for _, _, op in operations(doc) if "x-operation" in op}
    assert named <= {o.value for o in Operation}
    assert named == {o.value for o in Operation}


@pytest.fixture
async def site(tmp_path):
    # A low per-user login limit, so that the tour can show 429.
    site = await start_control_site(tmp_path, login_failures_per_user=2)
    yield site
    await site.stop()


async def test_every_api_route_is_documented_and_vice_versa(site, doc):
    served = set()
    for resource in site.server.app.router.resources():
        path = resource.canonical
        if not path.startswith("/api/"):
            continue
        for route in resource:
            if route.method != "HEAD":
                served.add((path, route.method.lower()))
    documented = {(path, method) for path, method, _ in operations(doc)}
    assert served == documented


# --- the tour ------------------------------------------------------------------------


def fill(path: str, ids: dict[str, int]) -> str:
    return re.sub(r"{(\w+)}", lambda m: str(ids[m.group(1)]), path)


async def sweep(site, doc, admin: ApiClient, general: ApiClient, anonymous: ApiClient) -> None:
    """The error statuses every operation documents, driven by the document itself."""
    ids = site.ids
    for path, method, op in operations(doc):
        statuses = set(op["responses"])
        target = {"id": ids["lobby"] if path.startswith("/api/channels") else
                  ids["Medics"] if path.startswith("/api/teams") else
                  ids["Marathon"] if path.startswith("/api/events") else ids["g2"],
                  "user_id": ids["g2"]}
        has_body = "requestBody" in op
        body = {"raw": b"{}"} if has_body else {}
        if "401" in statuses:
            await anonymous.call(method.upper(), fill(path, target), token=None, **body)
        if "403" in statuses and op.get("x-operation") != "me.password":
            await general.call(method.upper(), fill(path, target), **body)
        if "404" in statuses and "{id}" in path:
            await admin.call(method.upper(), fill(path, {**target, "id": MISSING}), **body)
        if "400" in statuses and has_body:
            await admin.call(method.upper(), fill(path, target), raw=b"[1, 2]")


async def scripted_tour(site, admin: ApiClient, d1: ApiClient, anonymous: ApiClient) -> None:
    """Every operation's success, and the errors the sweep cannot produce."""
    ids = site.ids
    # tokens
    body = (await anonymous.post("/api/refresh", {"refresh_token": admin.login_body["refresh_token"]})).ok()
    admin.token, admin.login_body = body["token"], body
    await anonymous.post("/api/refresh", {"refresh_token": "spent-or-made-up"})
    for _ in range(3):
        await anonymous.post("/api/login", {"username": "nobody", "password": "wrong"}, token=None)
    await anonymous.get("/api/health")
    await anonymous.get("/api/tones")
    # me, stats
    await d1.get("/api/me")
    await admin.get("/api/stats")
    # users
    await admin.get("/api/users")
    user = (await admin.post("/api/users", {"name": "tour", "role": "dispatch", "password": "pw"})).ok(201)["user"]
    await admin.post("/api/users", {"name": "TOUR", "role": "general", "password": "pw"})
    await admin.get(f"/api/users/{user['id']}")
    await admin.patch(f"/api/users/{user['id']}", {"name": "tour 2", "password": "pw2"})
    await admin.patch(f"/api/users/{user['id']}", {"name": "d1"})
    await admin.delete(f"/api/users/{ids['admin']}")
    # events, dispatchers, teams
    await admin.get("/api/events")
    event = (await admin.post("/api/events", {"name": "Tour event"})).ok(201)["event"]
    await admin.post("/api/events", {"name": "tour EVENT"})
    path = f"/api/events/{event['id']}"
    await admin.patch(path, {"name": "Tour event 2"})
    await admin.patch(path, {"name": "Marathon"})
    await admin.put(f"{path}/dispatchers/{user['id']}")
    await admin.put(f"{path}/dispatchers/{ids['g1']}")
    await admin.get(path)
    team = (await admin.post(f"{path}/teams", {"name": "Tour team"})).ok(201)["team"]
    await admin.post(f"{path}/teams", {"name": "tour team"})
    await admin.post(f"{path}/teams", {"name": "Tour team b"})
    await admin.get(f"{path}/teams")
    await admin.patch(f"/api/teams/{team['id']}", {"name": "Tour team 2"})
    await admin.patch(f"/api/teams/{team['id']}", {"name": "TOUR TEAM B"})
    await d1.patch(f"/api/teams/{ids['Medics']}", {"name": "Medics 2"})
    # channels and members
    channel = (await d1.post("/api/channels", {"name": "tour-1", "team_id": ids["Medics"]})).ok(201)["channel"]
    await d1.post("/api/channels", {"name": "tour-1", "event_id": ids["Marathon"]})
    await d1.post("/api/channels", {"name": "tour-2", "team_id": MISSING})
    await admin.post("/api/channels", {"name": "lobby-2"})
    await d1.get("/api/channels")
    await admin.get("/api/channels", params={"event": str(ids["Marathon"])})
    await admin.get("/api/channels", params={"event": str(MISSING)})
    await admin.get("/api/channels", params={"event": "x"})
    cpath = f"/api/channels/{channel['id']}"
    await d1.get(cpath)
    await d1.patch(cpath, {"name": "tour-1b", "team_id": None})
    await d1.patch(cpath, {"name": "course"})
    await d1.put(f"{cpath}/members/{ids['g2']}")
    await d1.get(f"{cpath}/members")
    await d1.delete(f"{cpath}/members/{ids['g2']}")
    await d1.delete(f"{cpath}/members/{ids['g2']}")
    await d1.delete(cpath)
    # settings, audit
    await admin.get("/api/settings")
    await admin.patch("/api/settings", {"site_name": "Tour", "max_talk_ms": 45000})
    await admin.patch("/api/settings", {"max_talk_ms": 1})
    first = (await admin.get("/api/audit", params={"limit": "2"})).ok()
    await admin.get("/api/audit", params={"before": str(first["next_before"]), "kind": "user.*"})
    await admin.get("/api/audit", params={"limit": "0"})
    # deletions last
    await admin.delete(f"{path}/dispatchers/{user['id']}")
    await admin.delete(f"{path}/dispatchers/{user['id']}")
    await admin.delete(f"/api/teams/{team['id']}")
    await admin.delete(path)
    await admin.delete(f"/api/users/{user['id']}")


async def tour_of_self_service(site) -> list[ApiClient]:
    """Password change (200, 403 wrong old password, 429 after that) and logout."""
    g1 = await ApiClient.login(site.url, "g1")
    await g1.post("/api/me/password", {"old_password": "wrong", "new_password": "x"})
    await g1.post("/api/me/password", {"old_password": "wrong", "new_password": "x"})
    await g1.post("/api/me/password", {"old_password": PASSWORD, "new_password": "x"})  # 429 by now
    g2 = await ApiClient.login(site.url, "g2")
    await g2.post("/api/me/password", {"old_password": PASSWORD, "new_password": "new-pw"})
    d2 = await ApiClient.login(site.url, "d2")
    await d2.post("/api/logout")
    return [g1, g2, d2]


def response_validator(doc: dict, registry: Registry, path: str, method: str, status: str):
    location = pointer("paths", path, method, "responses", status, "content", "application/json", "schema")
    return Draft202012Validator({"$ref": f"{DOC_URI}#/{location}"}, registry=registry)


async def test_every_reply_of_a_tour_matches_the_document(site, doc):
    admin, d1, general = await site.client("admin"), await site.client("d1"), await site.client("g2")
    anonymous = ApiClient(site.url)
    extra: list[ApiClient] = []
    try:
        await sweep(site, doc, admin, general, anonymous)
        await scripted_tour(site, admin, d1, anonymous)
        extra = await tour_of_self_service(site)
    finally:
        await anonymous.close()
        for client in extra:
            await client.close()
    replies = [r for c in (*site.clients.values(), anonymous, *extra) for r in c.replies]

    templates = [(re.compile("^" + re.sub(r"{\w+}", r"[^/]+", p) + "$"), p) for p in doc["paths"]]
    registry = Registry().with_resource(DOC_URI, Resource.from_contents(doc, default_specification=DRAFT202012))
    seen = set()
    for method, concrete, status, body in replies:
        matches = [p for pattern, p in templates if pattern.match(concrete)]
        assert len(matches) == 1, concrete
        key = (matches[0], method.lower(), str(status))
        responses = doc["paths"][key[0]][key[1]]["responses"]
        assert key[2] in responses, f"undocumented status: {method} {concrete} -> {status} {body}"
        errors = sorted(response_validator(doc, registry, *key).iter_errors(body), key=str)
        assert not errors, f"{method} {concrete} -> {status}: {errors[0].message} in {body}"
        seen.add(key)
    documented = {(p, m, s) for p, m, op in operations(doc) for s in op["responses"]}
    assert documented - seen == UNREACHED, sorted(documented - seen - UNREACHED)
