"""The small-site bootstrap against a real embedded server on loopback."""

from __future__ import annotations

import socket
from types import SimpleNamespace

import aiohttp
import pytest
from cryptography import x509

from server.config import ConfigError
from server.directory import Directory, Role
from server.logins import local_token_source
from server.node import EmbeddedServer
from server.tls import ensure_self_signed, served_tls
from tests.vpdesk.session_helpers import RecordingListener, RecordingSpeaker, until
from vpdesk.app import parse_args
from vpdesk.embedded import (
    DEFAULT_CHANNELS,
    DEFAULT_LISTEN,
    SetupError,
    create_site,
    embedded_config,
    embedded_ice_addresses,
    local_ssl_context,
    local_url,
    needs_setup,
    start_embedded,
)
from vpdesk.media.peer import ClientPeer
from vpdesk.session.console import ConsoleSession, Credentials, check_login
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
    assert config.ice_addresses == embedded_ice_addresses()
    assert config.tls_self_signed is True and config.plain_http is False
    assert config.ice_servers == []
    with pytest.raises(ConfigError):
        embedded_config(tmp_path, "nonsense")


def test_the_default_site_is_tls_on_every_interface(tmp_path):
    assert DEFAULT_LISTEN == "0.0.0.0:8443"
    config = embedded_config(tmp_path)
    assert (config.listen_host, config.listen_port) == ("0.0.0.0", 8443)
    assert config.tls_self_signed is True
    assert "127.0.0.1" in config.ice_addresses
    # The certificate it would serve (made here without binding anything) names every
    # LAN address field users may type, and loopback for the console itself.
    tls = served_tls(config)
    assert tls is not None and tls.self_signed
    assert tls.cert.parent.parent == tmp_path / "tls"
    names = x509.load_pem_x509_certificate(tls.cert.read_bytes()).extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    ).value
    ips = {str(ip) for ip in names.get_values_for_type(x509.IPAddress)}
    assert set(config.ice_addresses) | {"::1"} <= ips


def test_a_loopback_site_is_plain_http_with_loopback_ice(tmp_path):
    config = embedded_config(tmp_path, "127.0.0.1:8080")
    assert config.tls_self_signed is False
    assert config.ice_addresses == ["127.0.0.1"]
    assert served_tls(config) is None


def test_console_options_for_tls():
    assert parse_args([]).server_cert is None
    options = parse_args(["--server", "https://dispatch.example:8443", "--server-cert", "site.pem"])
    assert (options.server, str(options.server_cert)) == ("https://dispatch.example:8443", "site.pem")


def test_local_url_reaches_a_wildcard_listen_over_loopback():
    def stand_in(host, cert):
        return SimpleNamespace(config=SimpleNamespace(listen_host=host), port=8443, tls_cert=cert,
                               url=f"https://{host}:8443")

    assert local_url(stand_in("0.0.0.0", "cert.pem")) == "https://127.0.0.1:8443"
    assert local_url(stand_in("0.0.0.0", None)) == "http://127.0.0.1:8443"
    assert local_url(stand_in("::", "cert.pem")) == "https://[::1]:8443"
    assert local_url(stand_in("192.0.2.5", "cert.pem")) == "https://192.0.2.5:8443"
    assert local_ssl_context(stand_in("127.0.0.1", None)) is None


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


@pytest.fixture
async def tls_site(tmp_path):
    """The embedded site as the console runs it by default (self-signed TLS, ICE on the
    site's addresses), but on 127.0.0.1: tests never bind every interface."""
    create_site(tmp_path, "chief", PASSWORD, DEFAULT_CHANNELS)
    config = embedded_config(tmp_path, "127.0.0.1:0")
    config.tls_self_signed = True
    server = await EmbeddedServer(config).start()
    try:
        yield server
    finally:
        await server.stop()


async def test_login_hello_and_offer_over_wss_with_the_pinned_certificate(tls_site):
    url = local_url(tls_site)
    assert url == f"https://127.0.0.1:{tls_site.port}"
    pinned = local_ssl_context(tls_site)
    assert pinned is not None
    auth = await login(url, "chief", PASSWORD, ssl=pinned)
    signaling = await SignalingClient.connect(url, ssl=pinned)
    peer = ClientPeer(len(DEFAULT_CHANNELS))
    try:
        hello = await signaling.hello(auth["token"])
        assert sorted(c["name"] for c in hello["channels"]) == sorted(DEFAULT_CHANNELS)
        answer = await signaling.request("offer", sdp=await peer.create_offer())
        await peer.apply_answer(answer["sdp"])
        await peer.wait_connected()
        joined = await signaling.request("join", channel=hello["channels"][0]["id"])
        assert joined["mid"]
    finally:
        await peer.close()
        await signaling.close()
    # Without the pin (the system's CAs) the same site is refused.
    with pytest.raises(aiohttp.ClientConnectorCertificateError):
        await login(url, "chief", PASSWORD)


async def test_the_console_session_connects_through_the_pin(tls_site):
    user = tls_site.directory.user_by_name("chief")
    url = local_url(tls_site)
    pinned = local_ssl_context(tls_site)
    assert (await check_login(Credentials(url, "chief", PASSWORD, ssl=pinned)))["user"]["name"] == "chief"
    session = ConsoleSession(
        Credentials(url, "chief", token_source=local_token_source(tls_site.app, user), ssl=pinned),
        listener=RecordingListener(),
        speaker=RecordingSpeaker(),
    )
    session.start()
    try:
        await session.wait_connected()
        await until(lambda: len(session.board.joined_ids()) == len(DEFAULT_CHANNELS))
        assert session.connected
    finally:
        await session.stop()


async def test_a_console_pinned_to_another_certificate_never_connects(tls_site, tmp_path):
    from server.tls import pinned_client_context

    stranger, _ = ensure_self_signed(tmp_path / "stranger")
    credentials = Credentials(local_url(tls_site), "chief", PASSWORD, ssl=pinned_client_context(stranger))
    with pytest.raises(aiohttp.ClientConnectorCertificateError):
        await check_login(credentials)
    session = ConsoleSession(credentials, listener=RecordingListener(), speaker=RecordingSpeaker())
    session.start()
    try:
        await until(lambda: session.reconnector.attempts >= 1)
        assert not session.connected
        assert not session.hello  # never got as far as the WebSocket
    finally:
        await session.stop()
