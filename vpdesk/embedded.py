"""The small-site bootstrap: set up and start the server the console carries inside it.

On a small site one dispatcher PC runs the console with the server embedded, and field
users' phones open the web page it serves. The first run has no users: the console asks
for an admin name, a password and the channel names, and `create_site` writes them to the
directory in the data folder (vpdesk.paths.embedded_data_dir()). After that,
`start_embedded` serves on the console's own asyncio loop.

The site opens to the LAN by default (DEFAULT_LISTEN, every interface) so that field
users' phones reach it, and then serves HTTPS/WSS with a self-signed certificate made in
the data folder on first run; the console reaches its own server over loopback and trusts
exactly that certificate (`local_ssl_context`). A loopback `listen` serves plain http.

No Qt. `needs_setup` and `create_site` block (SQLite, and scrypt for the password, ~0.1 s):
call them before the loop runs or in an executor. `start_embedded` is a coroutine for the
console's loop.
"""

from __future__ import annotations

import errno
import logging
import ssl
from collections.abc import Iterable
from pathlib import Path

from server.config import ServerConfig, parse_listen
from server.directory import Directory, InvalidName, Role, normalize_name
from server.media import aiortc_hooks
from server.node import EmbeddedServer
from server.tls import fingerprint_sha256, is_loopback, pinned_client_context
from vpdesk import paths

logger = logging.getLogger(__name__)

DEFAULT_CHANNELS: tuple[str, ...] = ("Dispatch", "Ops 1", "Ops 2")
MIN_PASSWORD_LENGTH = 8
LOOPBACK = "127.0.0.1"
# Every interface, TLS with the site's self-signed certificate (vpdesk.core.settings keeps
# the dispatcher's choice; this is what a fresh install gets).
DEFAULT_LISTEN = "0.0.0.0:8443"
# Hosts whose server the console itself reaches over IPv4 loopback.
_LOOPBACK_REACHABLE = frozenset({"0.0.0.0", "127.0.0.1", "localhost", ""})
_ADDRESS_IN_USE = {errno.EADDRINUSE, 10048}  # 10048: WSAEADDRINUSE on Windows

# The directory compares names ignoring ASCII case only (SQLite's NOCASE).
_ASCII_FOLD = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


class SetupError(ValueError):
    """The site cannot be set up as asked; the message is for the person setting it up."""


def needs_setup(data_dir: Path) -> bool:
    """True when the directory in `data_dir` has no users yet (creates an empty one if
    there is none). Blocking."""
    with Directory.open(data_dir) as directory:
        return not directory.list_users()


def _checked_name(name: object, what: str) -> str:
    try:
        return normalize_name(name, what)  # type: ignore[arg-type]
    except InvalidName as exc:
        raise SetupError(str(exc)[:1].upper() + str(exc)[1:]) from None


def _checked_channels(channel_names: Iterable[str]) -> list[str]:
    """Normalised channel names; blank entries (empty lines in a text box) are skipped."""
    names: list[str] = []
    seen: dict[str, str] = {}
    for raw in channel_names:
        if isinstance(raw, str) and not raw.strip():
            continue
        name = _checked_name(raw, "channel name")
        folded = name.translate(_ASCII_FOLD)
        if folded in seen:
            raise SetupError(f"Channel {name!r} is listed twice (as {seen[folded]!r} too)")
        seen[folded] = name
        names.append(name)
    if not names:
        raise SetupError("Give at least one channel")
    return names


def create_site(
    data_dir: Path,
    admin_name: str,
    password: str,
    channel_names: Iterable[str],
    *,
    team: str = "Dispatch",
    event: str = "Site",
    confirm_password: str | None = None,
) -> None:
    """Create the admin user (role admin), every channel, and make the admin a member of
    each. Everything is checked before anything is written: on SetupError the directory
    is unchanged. `confirm_password`, when given, must equal `password`. A channel that
    already exists (made with `vpserver`) is reused. Blocking (~0.1 s)."""
    admin_name = _checked_name(admin_name, "admin name")
    if not isinstance(password, str) or len(password) < MIN_PASSWORD_LENGTH:
        raise SetupError(f"The password must be at least {MIN_PASSWORD_LENGTH} characters")
    if confirm_password is not None and confirm_password != password:
        raise SetupError("The two passwords differ")
    names = _checked_channels(channel_names)
    team = _checked_name(team, "team name")
    event = _checked_name(event, "event name")

    with Directory.open(data_dir) as directory:
        if directory.list_users():
            raise SetupError("This site is set up already: it has users")
        created_channels: list[str] = []
        created_admin = False
        try:
            directory.add_user(admin_name, Role.ADMIN, password)
            created_admin = True
            for name in names:
                if directory.channel_by_name(name) is None:
                    directory.add_channel(name, team=team, event=event)
                    created_channels.append(name)
                directory.add_member(admin_name, name)
        except BaseException:
            # Checked inputs leave only disk errors or a concurrent writer: take back what
            # was written, so a retry starts from the same empty directory.
            _undo(directory, admin_name if created_admin else None, created_channels)
            raise
    logger.info("site: created admin %r with channels %s in %s", admin_name, names, data_dir)


def _undo(directory: Directory, admin_name: str | None, channels: list[str]) -> None:
    try:
        for name in channels:
            directory.remove_channel(name)
        if admin_name is not None:
            directory.remove_user(admin_name, allow_last_admin=True)
    except Exception as exc:  # noqa: BLE001 - best effort
        logger.error("site: could not undo a half-made setup: %s", exc)


def embedded_ice_addresses() -> list[str]:
    """This machine's IPv4 host addresses as aioice would offer them, plus 127.0.0.1.

    Field users' browsers reach the embedded server over the LAN; the console's own peer
    reaches it over loopback, which also works on a machine with no network at all.
    """
    try:
        found = aiortc_hooks._original_get_host_addresses(use_ipv4=True, use_ipv6=False)
    except Exception as exc:  # noqa: BLE001 - interface enumeration is platform code
        logger.warning("site: cannot list network interfaces (%s); loopback only", exc)
        found = []
    return list(dict.fromkeys([*found, LOOPBACK]))


def embedded_config(data_dir: Path, listen: str = DEFAULT_LISTEN) -> ServerConfig:
    """The embedded server's configuration. Raises server.config.ConfigError for a
    `listen` that is not HOST:PORT.

    Beyond loopback: HTTPS/WSS with a self-signed certificate in the data folder, and ICE
    on the LAN interfaces (plus loopback for the console's own peer). On loopback: plain
    http, ICE on 127.0.0.1 only (nobody else can reach the site anyway).
    """
    host, port = parse_listen(listen)
    local_only = is_loopback(host)
    return ServerConfig(
        data_dir=Path(data_dir),
        listen_host=host,
        listen_port=port,
        ice_addresses=[LOOPBACK] if local_only else embedded_ice_addresses(),
        tls_self_signed=not local_only,
        ice_servers=[],
        # The page and tones shipped with the console (inside its bundle when frozen);
        # web_dir None leaves the server's own default.
        web_dir=paths.web_dir(),
        tones_dir=paths.shipped_tones_dir(),
    )


async def start_embedded(data_dir: Path, listen: str = DEFAULT_LISTEN) -> EmbeddedServer:
    """Start the embedded server on the running loop. When the port is taken, serve on a
    free port on the same host instead (logged); the caller connects to `local_url()`
    with `local_ssl_context()`."""
    config = embedded_config(data_dir, listen)
    server = EmbeddedServer(config)
    try:
        await server.start()
        _log_field_access(server)
        return server
    except OSError as exc:
        if exc.errno not in _ADDRESS_IN_USE or config.listen_port == 0:
            await server.stop()
            raise
        await server.stop()  # start() opened the directory and app before the bind
    config.listen_port = 0
    server = await EmbeddedServer(config).start()
    logger.warning(
        "site: port %s on %s is in use; serving on %s instead",
        parse_listen(listen)[1], config.listen_host, server.url,
    )
    _log_field_access(server)
    return server


def _log_field_access(server: EmbeddedServer) -> None:
    """Say where field users point their browsers, and which certificate they accept."""
    if server.tls_cert is None:
        return
    host = server.config.listen_host
    hosts = [a for a in server.config.ice_addresses if a != LOOPBACK] if host in ("0.0.0.0", "::") else [host]
    urls = ", ".join(f"https://{h}:{server.port}/" for h in hosts) or "(no LAN address found)"
    logger.info(
        "site: field users open %s and accept the certificate with SHA-256 fingerprint %s",
        urls, fingerprint_sha256(server.tls_cert),
    )


def local_url(server: EmbeddedServer) -> str:
    """The URL the console itself uses for its embedded server: loopback when the server
    listens on every interface or on loopback, else its own address. https when the
    server serves TLS (its certificate names 127.0.0.1 and ::1)."""
    host = server.config.listen_host
    scheme = "https" if server.tls_cert is not None else "http"
    if host in _LOOPBACK_REACHABLE:
        return f"{scheme}://{LOOPBACK}:{server.port}"
    if host in ("::", "::1"):
        return f"{scheme}://[::1]:{server.port}"
    return server.url


def local_ssl_context(server: EmbeddedServer) -> ssl.SSLContext | None:
    """The client context for `local_url(server)`: trusts only the certificate this server
    serves (pinned; host names checked), or None for plain http."""
    return pinned_client_context(server.tls_cert) if server.tls_cert is not None else None
