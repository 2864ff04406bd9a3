"""HTTPS/WSS: the certificate a node serves, and the contexts that serve and pin it.

A node listening beyond loopback speaks TLS, with either the certificate and key the
operator gives (`tls_cert`, `tls_key`) or a self-signed pair generated once in the data
folder (`tls_self_signed`: the embedded console's default). Field users' browsers accept
that certificate once (its SHA-256 fingerprint is logged so it can be checked); the
console trusts exactly that certificate and nothing else (`pinned_client_context`).

Blocking (file I/O, key generation in a few ms): call at startup, from any thread.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import os
import secrets
import shutil
import socket
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .config import ConfigError, ServerConfig

logger = logging.getLogger(__name__)

TLS_DIRNAME = "tls"
SELF_SIGNED_DIRNAME = "self-signed"
CERT_FILENAME = "cert.pem"
KEY_FILENAME = "key.pem"
VALIDITY = datetime.timedelta(days=3650)
# A phone whose clock runs a little behind must not see a "not yet valid" certificate.
BACKDATE = datetime.timedelta(days=1)
_WILDCARDS = frozenset({"", "0.0.0.0", "::"})


# --- self-signed certificate --------------------------------------------------------------


def self_signed_paths(data_dir: Path) -> tuple[Path, Path]:
    """Where `ensure_self_signed` keeps the pair: (cert, key)."""
    folder = Path(data_dir) / TLS_DIRNAME / SELF_SIGNED_DIRNAME
    return folder / CERT_FILENAME, folder / KEY_FILENAME


def ensure_self_signed(
    data_dir: Path,
    *,
    hostnames: list[str] | None = None,
    addresses: list[str] | None = None,
) -> tuple[Path, Path]:
    """The self-signed (cert, key) PEM files in `data_dir/tls/self-signed/`, made on first call.

    SANs: localhost, this machine's host name, 127.0.0.1, ::1, plus `hostnames` and
    `addresses` (names and IP addresses field users type). Later calls reuse the pair as
    it is, so the fingerprint users accepted stays valid. Safe against two processes at
    once: the pair is written into a private folder that is renamed into place whole.
    """
    cert_path, key_path = self_signed_paths(data_dir)
    if cert_path.exists() and key_path.exists():
        return cert_path, key_path
    folder = cert_path.parent
    folder.parent.mkdir(parents=True, exist_ok=True)
    temp = folder.parent / f".{SELF_SIGNED_DIRNAME}.{secrets.token_hex(8)}.tmp"
    temp.mkdir(mode=0o700)
    try:
        cert_pem, key_pem = _make_self_signed(
            ["localhost", _own_hostname(), *(hostnames or [])],
            ["127.0.0.1", "::1", *(addresses or [])],
        )
        _write_new(temp / KEY_FILENAME, key_pem, 0o600)
        _write_new(temp / CERT_FILENAME, cert_pem, 0o644)
        try:
            os.rename(temp, folder)
            logger.info("tls: created a self-signed certificate %s (SHA-256 %s)",
                        cert_path, fingerprint_sha256(cert_path))
        except OSError:
            if not (cert_path.exists() and key_path.exists()):
                raise  # not a concurrent creator's pair: a real failure
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    return cert_path, key_path


def _own_hostname() -> str:
    try:
        return socket.gethostname()
    except OSError:
        return "localhost"


def _write_new(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())


def _san_entries(hostnames: Iterable[str], addresses: Iterable[str]) -> list[x509.GeneralName]:
    """Unique SAN entries; an address that is no IP (or a wildcard) is skipped."""
    ips = []
    for text in addresses:
        try:
            ip = ipaddress.ip_address(str(text).strip("[]"))
        except ValueError:
            logger.warning("tls: %r is not an IP address; left out of the certificate", text)
            continue
        if not ip.is_unspecified:
            ips.append(ip)
    names = [h.strip().lower() for h in hostnames if h and h.strip()]
    return [
        *(x509.DNSName(name) for name in dict.fromkeys(names)),
        *(x509.IPAddress(ip) for ip in dict.fromkeys(ips)),
    ]


def _make_self_signed(hostnames: Iterable[str], addresses: Iterable[str]) -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "vpdesk"),
        x509.NameAttribute(NameOID.COMMON_NAME, f"vpdesk on {_own_hostname()}"[:64]),
    ])
    now = datetime.datetime.now(datetime.timezone.utc)
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.SubjectAlternativeName(_san_entries(hostnames, addresses)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=False,
                crl_sign=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


# --- contexts -----------------------------------------------------------------------------


def server_ssl_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A server context (TLS 1.2 or later) with this PEM certificate chain and key.

    Raises ConfigError naming the file that is missing or cannot be loaded.
    """
    for what, path in (("certificate", cert), ("key", key)):
        if not Path(path).is_file():
            raise ConfigError(f"TLS {what} file {path} does not exist")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(str(cert), str(key))
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(
            f"cannot load the TLS certificate {cert} with the key {key}: {exc} "
            "(both must be PEM, and the key must belong to the certificate)"
        ) from exc
    return context


def pinned_client_context(cert: Path) -> ssl.SSLContext:
    """A client context that trusts `cert` (PEM) and nothing else; host names are checked.

    For the embedded console and for `vpdesk --server-cert`: a self-signed server's own
    certificate becomes the only trust anchor (partial chains allowed, so pinning a
    CA-issued leaf works too). Raises ConfigError naming the file on a bad file.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # check_hostname and CERT_REQUIRED on
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    try:
        context.load_verify_locations(cafile=str(cert))
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"cannot load the certificate {cert} to trust: {exc}") from exc
    return context


def fingerprint_sha256(cert: Path) -> str:
    """The SHA-256 fingerprint of the (first) certificate in a PEM file, "AB:CD:…" form:
    what a browser shows in its certificate viewer."""
    loaded = x509.load_pem_x509_certificate(Path(cert).read_bytes())
    return ":".join(f"{byte:02X}" for byte in loaded.fingerprint(hashes.SHA256()))


def is_loopback(host: str) -> bool:
    """True when `host` can only be reached from this machine ("localhost", 127.x, ::1).

    A wildcard ("0.0.0.0", "::", "") or any other name counts as reachable from outside.
    """
    host = host.strip().strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# --- what a node serves -------------------------------------------------------------------


@dataclass(frozen=True)
class ServedTls:
    """The TLS a node serves: its context, and the certificate clients may pin."""

    context: ssl.SSLContext
    cert: Path
    self_signed: bool


def served_tls(config: ServerConfig) -> ServedTls | None:
    """The TLS `config` asks for, or None for plain http; checks the choice is safe.

    Raises ConfigError when the certificate options are incomplete or contradictory, a
    file cannot be loaded, or the node would listen beyond loopback without TLS and
    without `plain_http` (a TLS-terminating proxy in front). Blocking; call at startup.
    """
    given = (config.tls_cert is not None, config.tls_key is not None)
    if any(given) and not all(given):
        missing = "tls_key" if given[0] else "tls_cert"
        raise ConfigError(f"TLS needs both tls_cert and tls_key; {missing} is missing")
    if all(given):
        if config.tls_self_signed:
            raise ConfigError("give tls_cert and tls_key, or self-signed, not both")
        context = server_ssl_context(config.tls_cert, config.tls_key)
        return ServedTls(context, Path(config.tls_cert), self_signed=False)
    if config.tls_self_signed:
        hostnames, addresses = _names_of(config)
        cert, key = ensure_self_signed(config.data_dir, hostnames=hostnames, addresses=addresses)
        return ServedTls(server_ssl_context(cert, key), cert, self_signed=True)
    if not is_loopback(config.listen_host) and not config.plain_http:
        raise ConfigError(
            f"listening on {config.listen} needs TLS: give tls_cert and tls_key, "
            "or self-signed, or plain_http behind a TLS proxy"
        )
    return None


def _names_of(config: ServerConfig) -> tuple[list[str], list[str]]:
    """Host names and addresses a self-signed certificate should name for this node: a
    node on every interface names each interface's address, so that a client pinning the
    certificate (host names checked) may use any of them."""
    hostnames: list[str] = []
    addresses: list[str] = []
    wildcard = config.listen_host in _WILDCARDS
    interfaces = interface_addresses() if wildcard else []
    for host in (config.listen_host, config.announced_address, *config.ice_addresses, *interfaces):
        if not host or host in _WILDCARDS:
            continue
        try:
            ipaddress.ip_address(host.strip("[]"))
            addresses.append(host)
        except ValueError:
            hostnames.append(host)
    return hostnames, addresses


def interface_addresses() -> list[str]:
    """This machine's IPv4 and global IPv6 interface addresses (loopback left out)."""
    try:
        import ifaddr  # aioice's own interface lister

        adapters = ifaddr.get_adapters()
    except Exception as exc:  # noqa: BLE001 - interface enumeration is platform code
        logger.warning("tls: cannot list network interfaces (%s)", exc)
        return []
    found = []
    for adapter in adapters:
        for ip in adapter.ips:
            if isinstance(ip.ip, str):
                found.append(ip.ip)
            elif ip.ip[2] == 0:  # (address, flowinfo, scope id): link-local ones have a scope
                found.append(ip.ip[0])
    return [a for a in dict.fromkeys(found) if not ipaddress.ip_address(a).is_loopback]
