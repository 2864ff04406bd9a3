"""A small client for the REST API in tests: bearer token, JSON in and out, every reply kept.

`ApiClient.login(url, name)` signs in; `await api.get("/api/users")` returns a `Reply`
(status, body). `api.replies` records (method, path, status, body) for schema checks.
"""

from __future__ import annotations

import json as jsonlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from tests.server.harness import PASSWORD

_ABSENT = object()


@dataclass
class Reply:
    status: int
    body: Any

    @property
    def code(self) -> str | None:
        """The error code of an error reply, else None."""
        if isinstance(self.body, dict) and isinstance(self.body.get("error"), dict):
            return self.body["error"].get("code")
        return None

    def ok(self, status: int = 200) -> Any:
        """The body, after checking the status (the assertion shows the whole reply)."""
        assert self.status == status, (self.status, self.body)
        return self.body


class ApiClient:
    """One caller of the API. Not thread-safe; one event loop."""

    def __init__(self, url: str, token: str | None = None) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.login_body: dict = {}
        self.replies: list[tuple[str, str, int, Any]] = []
        self._http = aiohttp.ClientSession()

    @classmethod
    async def login(cls, url: str, name: str, password: str = PASSWORD) -> "ApiClient":
        client = cls(url)
        try:
            client.login_body = (await client.post("/api/login", {"username": name, "password": password})).ok()
        except BaseException:
            await client.close()
            raise
        client.token = client.login_body["token"]
        return client

    @property
    def user(self) -> dict:
        return self.login_body["user"]

    async def call(
        self,
        method: str,
        path: str,
        body: Any = _ABSENT,
        *,
        raw: bytes | None = None,
        token: str | None | object = _ABSENT,
        params: dict[str, str] | None = None,
    ) -> Reply:
        """One request. `raw` sends bytes as they are; `token=None` sends no Authorization."""
        token = self.token if token is _ABSENT else token
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        data = raw
        if body is not _ABSENT:
            data = jsonlib.dumps(body).encode()
        if data is not None:
            headers["Content-Type"] = "application/json"
        async with self._http.request(method, self.url + path, data=data, headers=headers, params=params) as response:
            text = await response.text()
            try:
                parsed = jsonlib.loads(text)
            except ValueError:
                parsed = text
        self.replies.append((method, path, response.status, parsed))
        return Reply(response.status, parsed)

    async def get(self, path: str, **kwargs: Any) -> Reply:
        return await self.call("GET", path, **kwargs)

    async def post(self, path: str, body: Any = _ABSENT, **kwargs: Any) -> Reply:
        return await self.call("POST", path, body, **kwargs)

    async def patch(self, path: str, body: Any = _ABSENT, **kwargs: Any) -> Reply:
        return await self.call("PATCH", path, body, **kwargs)

    async def put(self, path: str, **kwargs: Any) -> Reply:
        return await self.call("PUT", path, **kwargs)

    async def delete(self, path: str, **kwargs: Any) -> Reply:
        return await self.call("DELETE", path, **kwargs)

    async def close(self) -> None:
        await self._http.close()

    async def __aenter__(self) -> "ApiClient":
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


# --- a provisioned site for the control-plane tests ------------------------------------


@dataclass
class ControlSite:
    """A running server with a small organisation; `await client(name)` signs a user in.

    Users: admin; d1 (dispatch, event Marathon); d2 (dispatch, event Parade); g1 (general,
    member of 'med-1' in Marathon); g2 (general, no channels). Marathon holds team Medics
    with channel med-1, and channel course (no team); Parade holds channel parade-1; the
    channel lobby is in no event. `ids` maps every one of those names to its id. All
    passwords are harness.PASSWORD.
    """

    server: Any
    ids: dict[str, int]
    clients: dict[str, ApiClient] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def directory(self) -> Any:
        return self.server.directory

    async def client(self, name: str) -> ApiClient:
        """The signed-in client of `name`, made on first use (a login runs scrypt)."""
        if name not in self.clients:
            self.clients[name] = await ApiClient.login(self.url, name)
        return self.clients[name]

    async def stop(self) -> None:
        for client in self.clients.values():
            await client.close()
        await self.server.stop()


def provision_control(directory: Any) -> dict[str, int]:
    ids: dict[str, int] = {}
    for name, role in (("admin", "admin"), ("d1", "dispatch"), ("d2", "dispatch"),
                       ("g1", "general"), ("g2", "general")):
        ids[name] = directory.add_user(name, role, PASSWORD).id
    ids["Marathon"] = directory.add_event("Marathon").id
    ids["Parade"] = directory.add_event("Parade").id
    ids["Medics"] = directory.add_team(ids["Marathon"], "Medics").id
    ids["med-1"] = directory.create_channel("med-1", team_id=ids["Medics"]).id
    ids["course"] = directory.create_channel("course", event_id=ids["Marathon"]).id
    ids["parade-1"] = directory.create_channel("parade-1", event_id=ids["Parade"]).id
    ids["lobby"] = directory.create_channel("lobby").id
    directory.assign_dispatcher(ids["Marathon"], ids["d1"])
    directory.assign_dispatcher(ids["Parade"], ids["d2"])
    directory.add_membership(ids["g1"], ids["med-1"])
    return ids


# The provisioned directory file and its ids, made once per test process: scrypt makes
# adding five users cost far more than copying the file.
_template: tuple[bytes, dict[str, int]] | None = None


def _control_template(scratch: Path) -> tuple[bytes, dict[str, int]]:
    global _template
    if _template is None:
        from server.directory import DIRECTORY_FILENAME, Directory

        scratch.mkdir(parents=True, exist_ok=True)
        with Directory.open(scratch) as directory:
            ids = provision_control(directory)
        # Closing the last connection checkpoints the WAL: the one file holds everything.
        _template = ((scratch / DIRECTORY_FILENAME).read_bytes(), ids)
    return _template


async def start_control_site(data_dir: Path, **config: Any) -> ControlSite:
    """A ControlSite serving from `data_dir` (which must not hold a directory yet)."""
    from server.config import ServerConfig
    from server.directory import DIRECTORY_FILENAME
    from server.node import EmbeddedServer

    data_dir = Path(data_dir)
    content, ids = _control_template(data_dir / "template")
    (data_dir / DIRECTORY_FILENAME).write_bytes(content)
    settings = dict(data_dir=data_dir, listen_port=0, ice_addresses=["127.0.0.1"])
    settings.update(config)
    server = await EmbeddedServer(ServerConfig(**settings)).start()
    return ControlSite(server, dict(ids))
