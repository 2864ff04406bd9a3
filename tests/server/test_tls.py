"""HTTPS/WSS: the self-signed certificate, the server and pinned client contexts, and the
rule that nothing listens beyond loopback without TLS. Servers run on 127.0.0.1 only."""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import re
import socket
import ssl
import stat
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from server.config import ConfigError, ServerConfig
from server.node import EmbeddedServer
from server.tls import (
    ensure_self_signed,
    fingerprint_sha256,
    is_loopback,
    pinned_client_context,
    served_tls,
    server_ssl_context,
)
from vpdesk.session.signaling import SignalingClient, login
from tests.server.harness import PASSWORD, provision

ROOT = Path(__file__).resolve().parents[2]


def load_cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def sans(path: Path) -> tuple[set[str], set[str]]:
    names = load_cert(path).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return (set(names.get_values_for_type(x509.DNSName)),
            {str(ip) for ip in names.get_values_for_type(x509.IPAddress)})


def plain_config(tmp_path: Path, **values) -> ServerConfig:
    settings = dict(data_dir=tmp_path, listen_port=0, ice_addresses=["127.0.0.1"])
    settings.update(values)
    return ServerConfig(**settings)


# --- the certificate ------------------------------------------------------------------------


def test_self_signed_pair_is_made_once_with_a_private_key(tmp_path):
    cert, key = ensure_self_signed(tmp_path, hostnames=["Dispatch.Example"], addresses=["192.0.2.7", "nonsense"])
    assert cert.parent == key.parent and cert.parent.parent == tmp_path / "tls"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert "PRIVATE KEY" in key.read_text() and "PRIVATE KEY" not in cert.read_text()
    loaded = load_cert(cert)
    assert isinstance(loaded.public_key(), ec.EllipticCurvePublicKey)
    assert loaded.public_key().curve.name == "secp256r1"
    assert loaded.issuer == loaded.subject
    lifetime = loaded.not_valid_after_utc - loaded.not_valid_before_utc
    assert lifetime >= datetime.timedelta(days=3650)
    now = datetime.datetime.now(datetime.timezone.utc)
    assert loaded.not_valid_before_utc < now < loaded.not_valid_after_utc
    names, ips = sans(cert)
    assert {"localhost", socket.gethostname().lower(), "dispatch.example"} <= names
    assert {"127.0.0.1", "::1", "192.0.2.7"} <= ips
    before = fingerprint_sha256(cert)
    # A second call (other names, even) keeps the pair users already accepted.
    assert ensure_self_signed(tmp_path, addresses=["198.51.100.1"]) == (cert, key)
    assert fingerprint_sha256(cert) == before
    assert "198.51.100.1" not in sans(cert)[1]
    assert [p.name for p in (tmp_path / "tls").iterdir()] == [cert.parent.name]  # no temp left


def test_fingerprint_is_the_sha256_of_the_der_in_colon_form(tmp_path):
    cert, _ = ensure_self_signed(tmp_path)
    digest = hashlib.sha256(ssl.PEM_cert_to_DER_cert(cert.read_text())).hexdigest().upper()
    fingerprint = fingerprint_sha256(cert)
    assert re.fullmatch(r"([0-9A-F]{2}:){31}[0-9A-F]{2}", fingerprint)
    assert fingerprint.replace(":", "") == digest


@pytest.mark.parametrize(
    "host, expected",
    [
        ("127.0.0.1", True), ("127.0.0.53", True), ("::1", True), ("[::1]", True),
        ("localhost", True), ("LOCALHOST", True),
        ("0.0.0.0", False), ("::", False), ("", False), ("192.168.1.20", False),
        ("10.0.0.1", False), ("fd00::2", False), ("dispatch.example", False),
    ],
)
def test_is_loopback(host, expected):
    assert is_loopback(host) is expected


def test_contexts_need_tls_1_2_and_pin_checks_host_names(tmp_path):
    cert, key = ensure_self_signed(tmp_path)
    assert server_ssl_context(cert, key).minimum_version == ssl.TLSVersion.TLSv1_2
    client = pinned_client_context(cert)
    assert client.minimum_version == ssl.TLSVersion.TLSv1_2
    assert client.check_hostname is True and client.verify_mode == ssl.CERT_REQUIRED
    # The one trust anchor is that certificate: no system CA is loaded.
    assert client.cert_store_stats()["x509"] == 1


# --- what a node refuses ----------------------------------------------------------------------


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10"])
async def test_plain_http_beyond_loopback_is_refused_before_binding(tmp_path, host):
    server = EmbeddedServer(plain_config(tmp_path, listen_host=host, listen_port=8443))
    with pytest.raises(ConfigError) as refused:
        await server.start()
    message = str(refused.value)
    assert "needs TLS" in message and "tls_cert" in message and "plain_http" in message
    assert f"{host}:8443" in message
    assert server.port is None and server.app is None  # nothing was opened or bound
    await server.stop()


def test_plain_http_is_allowed_behind_a_proxy_or_on_loopback(tmp_path):
    assert served_tls(plain_config(tmp_path, listen_host="0.0.0.0", plain_http=True)) is None
    assert served_tls(plain_config(tmp_path, listen_host="127.0.0.1")) is None
    assert not (tmp_path / "tls").exists()


def test_bad_certificate_options_name_the_problem(tmp_path):
    cert, key = ensure_self_signed(tmp_path / "a")
    other_cert, _ = ensure_self_signed(tmp_path / "b")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    missing = tmp_path / "missing.pem"
    cases = [
        (dict(tls_cert=cert), "tls_key is missing"),
        (dict(tls_key=key), "tls_cert is missing"),
        (dict(tls_cert=cert, tls_key=key, tls_self_signed=True), "not both"),
        (dict(tls_cert=missing, tls_key=key), str(missing)),
        (dict(tls_cert=cert, tls_key=missing), str(missing)),
        (dict(tls_cert=garbage, tls_key=key), str(garbage)),
        (dict(tls_cert=other_cert, tls_key=key), str(other_cert)),  # the key is not its key
    ]
    for values, words in cases:
        with pytest.raises(ConfigError, match=re.escape(words)):
            served_tls(plain_config(tmp_path, listen_host="0.0.0.0", **values))
    with pytest.raises(ConfigError, match=re.escape(str(garbage))):
        pinned_client_context(garbage)


def test_vpserver_exits_2_with_the_message_without_tls(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "server", "--data", str(tmp_path), "--listen", "0.0.0.0:8443"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert "listening on 0.0.0.0:8443 needs TLS" in done.stderr
    assert "Traceback" not in done.stderr


# --- serving -----------------------------------------------------------------------------------


@pytest.fixture
async def tls_server(tmp_path):
    provision(tmp_path, users=2)
    server = await EmbeddedServer(plain_config(tmp_path, tls_self_signed=True)).start()
    try:
        yield server
    finally:
        await server.stop()


async def peer_certificate(port: int, context: ssl.SSLContext) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
    try:
        return writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    finally:
        writer.close()
        await writer.wait_closed()


async def test_self_signed_server_answers_https_and_wss_to_a_pinned_client(tls_server, tmp_path):
    assert tls_server.url == f"https://127.0.0.1:{tls_server.port}"
    assert tls_server.tls_cert == tmp_path / "tls" / "self-signed" / "cert.pem"
    pinned = pinned_client_context(tls_server.tls_cert)
    async with aiohttp.ClientSession() as http:
        async with http.get(tls_server.url + "/api/health", ssl=pinned) as response:
            assert response.status == 200
            assert (await response.json())["status"] == "ok"
    auth = await login(tls_server.url, "u1", PASSWORD, ssl=pinned)
    signaling = await SignalingClient.connect(tls_server.url, ssl=pinned)
    try:
        hello = await signaling.hello(auth["token"])
        assert {c["name"] for c in hello["channels"]} == {"alpha", "bravo"}
    finally:
        await signaling.close()
    der = await peer_certificate(tls_server.port, pinned)
    assert hashlib.sha256(der).hexdigest().upper() == fingerprint_sha256(tls_server.tls_cert).replace(":", "")


async def test_a_client_pinned_to_another_certificate_is_refused(tls_server, tmp_path):
    stranger, _ = ensure_self_signed(tmp_path / "stranger")
    wrong = pinned_client_context(stranger)
    with pytest.raises(aiohttp.ClientConnectorCertificateError):
        await login(tls_server.url, "u1", PASSWORD, ssl=wrong)
    with pytest.raises(aiohttp.ClientConnectorCertificateError):
        await SignalingClient.connect(tls_server.url, ssl=wrong)
    with pytest.raises(aiohttp.ClientConnectorCertificateError):  # the system's CAs: refused too
        await login(tls_server.url, "u1", PASSWORD)
    with pytest.raises(ssl.SSLCertVerificationError):
        await peer_certificate(tls_server.port, wrong)
    # Plain http to the TLS port gets no answer from the application.
    with pytest.raises(aiohttp.ClientError):
        await login(tls_server.url.replace("https", "http"), "u1", PASSWORD, timeout=5)


async def test_pinning_checks_the_host_name(tls_server):
    assert "127.0.0.1" in sans(tls_server.tls_cert)[1]
    pinned = pinned_client_context(tls_server.tls_cert)
    assert await peer_certificate(tls_server.port, pinned)
    # The trusted certificate, asked for a name it does not carry: refused.
    with pytest.raises(ssl.SSLCertVerificationError, match="match"):
        await asyncio.open_connection(
            "127.0.0.1", tls_server.port, ssl=pinned, server_hostname="elsewhere.example"
        )


async def test_a_given_certificate_and_key_are_served(tmp_path):
    cert, key = ensure_self_signed(tmp_path / "issued")
    provision(tmp_path / "data", users=1)
    config = plain_config(tmp_path / "data", tls_cert=cert, tls_key=key)
    async with EmbeddedServer(config) as server:
        assert server.tls_cert == cert and server.url.startswith("https://")
        der = await peer_certificate(server.port, pinned_client_context(cert))
        assert hashlib.sha256(der).hexdigest().upper() == fingerprint_sha256(cert).replace(":", "")
    assert not (tmp_path / "data" / "tls").exists()  # no self-signed pair made beside it
