"""The small-site bootstrap against a real embedded server on loopback."""

from __future__ import annotations

import socket

import pytest

from server.config import ConfigError
from server.directory import Directory, Role
from vpdesk.embedded import (
    DEFAULT_CHANNELS,
    SetupError,
    create_site,
    embedded_config,
    embedded_ice_addresses,
    local_url,
    needs_setup,
    start_embedded,
)
from vpdesk.session.signaling import RequestError, SignalingClient, login

PASSWORD = "correct horse"


def directory_contents(data_dir):
    with Directory.open(data_dir) as d:
        return d.list_users(), d.list_channels(), d.revision()


def test_needs_setup_until_a_site_is_created(tmp_path):
    assert needs_setup(tmp_path) is True
    create_site(tmp_path, "  chief  ", PASSWORD, DEFAULT_CHANNELS)
    assert needs_setup(tmp_path) is False
    with Directory.open(tmp_path) as d:
        (admin,) = d.list_users()
        assert (admin.name, admin.role) == ("chief", Role.ADMIN)
        channels = d.list_channels()
        assert sorted(c.name for c in channels) == sorted(DEFAULT_CHANNELS)
        assert all((c.team, c.event) == ("Dispatch", "Site") for c in channels)
        assert {c.id for c in d.channels_of(admin.id)} == {c.id for c in channels}
        assert d.authenticate("chief", PASSWORD) is not None


@pytest.mark.parametrize(
    "args, kwargs, words",
    [
        (("", PASSWORD, ["A"]), {}, "empty"),
        (("bad\nname", PASSWORD, ["A"]), {}, "control"),
        (("x" * 65, PASSWORD, ["A"]), {}, "longer"),
        (("chief", "short", ["A"]), {}, "at least 8"),
        (("chief", PASSWORD, ["A"]), {"confirm_password": "different!"}, "differ"),
        (("chief", PASSWORD, []), {}, "at least one channel"),
        (("chief", PASSWORD, ["", "   "]), {}, "at least one channel"),
        (("chief", PASSWORD, ["Ops", "B", " ops "]), {}, "twice"),
        (("chief", PASSWORD, ["A", "tab\there"]), {}, "control"),
        (("chief", PASSWORD, ["A"]), {"team": ""}, "empty"),
        (("chief", PASSWORD, ["A"]), {"event": "e" * 65}, "longer"),
    ],
)
def test_bad_setup_changes_nothing(tmp_path, args, kwargs, words):
    before = directory_contents(tmp_path)
    with pytest.raises(SetupError, match=words):
        create_site(tmp_path, *args, **kwargs)
    assert directory_contents(tmp_path) == before == ([], [], 0)
    assert needs_setup(tmp_path) is True


def test_setup_error_is_a_value_error():
    assert issubclass(SetupError, ValueError)


def test_blank_channel_lines_are_skipped_and_matching_confirmation_passes(tmp_path):
    create_site(tmp_path, "chief", PASSWORD, ["", "North", "  "], confirm_password=PASSWORD)
    with Directory.open(tmp_path) as d:
        assert [c.name for c in d.list_channels()] == ["North"]


def test_a_set_up_site_is_not_set_up_twice(tmp_path):
    create_site(tmp_path, "chief", PASSWORD, ["A"])
    before = directory_contents(tmp_path)
    with pytest.raises(SetupError, match="already"):
        create_site(tmp_path, "other", PASSWORD, ["B"])
    assert directory_contents(tmp_path) == before


def test_existing_channels_are_reused(tmp_path):
    with Directory.open(tmp_path) as d:
        existing = d.add_channel("Dispatch", team="Old")
    create_site(tmp_path, "chief", PASSWORD, ["dispatch", "Ops 1"])
    with Directory.open(tmp_path) as d:
        assert sorted(c.name for c in d.list_channels()) == ["Dispatch", "Ops 1"]
        admin = d.user_by_name("chief")
        assert existing.id in {c.id for c in d.channels_of(admin.id)}


def test_ice_addresses_include_loopback_once():
    addresses = embedded_ice_addresses()
    assert "127.0.0.1" in addresses
    assert len(addresses) == len(set(addresses))
    assert all(":" not in a for a in addresses)  # IPv4 only


def test_embedded_config(tmp_path):
    config = embedded_config(tmp_path, "0.0.0.0:9000")
    assert (config.listen_host, config.listen_port) == ("0.0.0.0", 9000)
    assert config.data_dir == tmp_path
    assert "127.0.0.1" in config.ice_addresses
    assert config.ice_servers == []
    with pytest.raises(ConfigError):
        embedded_config(tmp_path, "nonsense")


async def test_admin_logs_in_and_hello_lists_the_channels(tmp_path):
    create_site(tmp_path, "chief", PASSWORD, DEFAULT_CHANNELS)
    server = await start_embedded(tmp_path, "127.0.0.1:0")
    try:
        url = local_url(server)
        assert url == f"http://127.0.0.1:{server.port}"
        auth = await login(url, "chief", PASSWORD)
        assert auth["user"]["role"] == "admin"
        with pytest.raises(RequestError):
            await login(url, "chief", "wrong password")
        signaling = await SignalingClient.connect(url)
        try:
            hello = await signaling.hello(auth["token"])
        finally:
            await signaling.close()
        assert sorted(c["name"] for c in hello["channels"]) == sorted(DEFAULT_CHANNELS)
    finally:
        await server.stop()


async def test_start_falls_back_to_a_free_port_when_taken(tmp_path, caplog):
    create_site(tmp_path, "chief", PASSWORD, ["A"])
    blocker = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        taken = blocker.getsockname()[1]
        server = await start_embedded(tmp_path, f"127.0.0.1:{taken}")
        try:
            assert server.port not in (None, 0, taken)
            assert server.config.listen_host == "127.0.0.1"
            assert "in use" in caplog.text
            auth = await login(local_url(server), "chief", PASSWORD)
            assert auth["user"]["name"] == "chief"
        finally:
            await server.stop()
    finally:
        blocker.close()


async def test_local_url_for_every_interface(tmp_path):
    create_site(tmp_path, "chief", PASSWORD, ["A"])
    server = await start_embedded(tmp_path, "0.0.0.0:0")
    try:
        assert local_url(server) == f"http://127.0.0.1:{server.port}"
        auth = await login(local_url(server), "chief", PASSWORD)
        assert auth["token"]
    finally:
        await server.stop()
