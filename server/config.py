"""Server configuration: defaults, an optional TOML file, then command-line overrides."""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import platformdirs


class ConfigError(Exception):
    """The configuration file or an option is invalid; the message names the key."""


def default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("vpserver", "vpdesk"))


@dataclass
class ServerConfig:
    data_dir: Path = field(default_factory=default_data_dir)
    listen_host: str = "127.0.0.1"
    listen_port: int = 8080
    # Addresses ICE gathers host candidates on. Empty: every interface but loopback
    # (aioice's default). Tests and benchmarks set ["127.0.0.1"].
    ice_addresses: list[str] = field(default_factory=list)
    # The UDP port all sessions' media share (ICE, DTLS, SRTP), per ICE address: 0 or
    # "auto" for one the system picks at start, a number for that port (what a firewall
    # opens), "off" for aioice's own socket (and port) per connection.
    media_port: int | str = 0
    # Address written into the answer's candidates instead of the gathered one, for a
    # server behind NAT (mediasoup's announcedIp).
    announced_address: str | None = None
    # STUN/TURN servers handed to clients in `hello`.
    ice_servers: list[dict] = field(default_factory=list)
    # STUN and TURN servers handed out in `hello` as well, with ephemeral TURN
    # credentials (coturn's REST-API scheme: `use-auth-secret`, `static-auth-secret`).
    stun_urls: list[str] = field(default_factory=list)
    turn_urls: list[str] = field(default_factory=list)
    turn_secret: str | None = None
    turn_ttl_s: int = 24 * 3600
    # Live state (floor leases): in this process when None, else on this Redis server
    # (redis://[:password@]host[:port][/db]), shared by every node of the site. Keys start
    # with the prefix, so several sites can share one Redis.
    redis_url: str | None = None
    redis_prefix: str = "vpdesk:"
    # With Redis, the node is one of several (server.cluster). `node_id` names it in the
    # registry and logs (default host:port); `public_url` is where clients reach it,
    # handed to them in `hello` so that they can fail over (default: the listen URL).
    # Media for listeners on other nodes goes over UDP from `relay_listen`; other nodes
    # send to `relay_announce` (default: the bound address). 127.0.0.1 only reaches
    # nodes on this machine.
    node_id: str | None = None
    public_url: str | None = None
    relay_listen: str = "127.0.0.1:0"
    relay_announce: str | None = None
    # Worker processes of this server on this machine (server.workers): 1 is this process
    # alone; N > 1 (or 0 / "auto": one per CPU core) makes it a supervisor of N processes
    # sharing the listen port (SO_REUSEPORT, Linux) and the site's state in Redis.
    workers: int | str = 1
    floor_lease_ms: int = 3000
    max_talk_ms: int = 60_000
    # Access tokens are short-lived; a refresh token (rotated on every use) gets new ones.
    token_ttl_s: int = 15 * 60
    refresh_ttl_s: int = 30 * 24 * 3600
    # Login throttling: failed attempts per user name and per client address within the
    # window; beyond them login answers 429 rate_limited until the window has passed.
    login_failures_per_user: int = 5
    login_failures_per_address: int = 20
    login_window_s: float = 300.0
    # Signaling: a token bucket per connection. A request beyond it gets `rate_limited`;
    # more than `signaling_abuse_limit` refusals within `signaling_abuse_window_s` close
    # the connection with 4008. The burst covers a dispatcher joining and muting 64
    # channels at once.
    signaling_rate_per_s: float = 50.0
    signaling_burst: int = 200
    signaling_abuse_limit: int = 100
    signaling_abuse_window_s: float = 10.0
    # HTTPS/WSS. A certificate and key (PEM), or a self-signed pair generated in the data
    # folder on first run. Listening beyond loopback without TLS is refused unless
    # `plain_http` says a TLS-terminating proxy sits in front.
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_self_signed: bool = False
    plain_http: bool = False
    hello_timeout_s: float = 10.0
    # WebSocket pings this often; a client that does not answer one within half of it is
    # closed (so a dead link goes within ~1.5 periods, inside the protocol's 45 s).
    heartbeat_s: float = 15.0
    max_frame_bytes: int = 64 * 1024
    max_receive_slots: int = 64
    # The field users' web page and the tone WAVs it plays. None: the defaults in
    # server.web_routes (beside the package, or inside a PyInstaller bundle).
    web_dir: Path | None = None
    tones_dir: Path | None = None

    @property
    def listen(self) -> str:
        return f"{self.listen_host}:{self.listen_port}"

    def with_overrides(self, **values) -> "ServerConfig":
        """A copy with the given fields replaced; None values are ignored."""
        return dataclasses.replace(self, **{k: v for k, v in values.items() if v is not None})


def media_port_number(value: int | str) -> int | None:
    """The `media_port` setting as a port number (0: the system's pick), or None for a
    port per connection."""
    if isinstance(value, str):
        word = value.strip().lower()
        if word == "auto":
            return 0
        if word in ("off", "per-connection"):
            return None
        if not word.isdigit():
            raise ConfigError(f"media_port must be a port number, 'auto' or 'off', not {value!r}")
        value = int(word)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
        raise ConfigError(f"media_port must be a port number (0-65535), 'auto' or 'off', not {value!r}")
    return value


def parse_listen(value: str) -> tuple[str, int]:
    """'HOST:PORT', '[::1]:PORT' or ':PORT' into (host, port)."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"listen address {value!r} is not HOST:PORT")
    host = host.strip("[]") or "127.0.0.1"
    return host, int(port)


_PATH_KEYS = frozenset({"data_dir", "web_dir", "tones_dir", "tls_cert", "tls_key"})


def load_config(path: Path | None) -> ServerConfig:
    """Read a TOML file whose top-level keys are ServerConfig field names."""
    config = ServerConfig()
    if path is None:
        return config
    try:
        raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read config {path}: {exc}") from exc
    known = {f.name: f for f in dataclasses.fields(ServerConfig)}
    values: dict = {}
    for key, value in raw.items():
        if key == "listen":
            values["listen_host"], values["listen_port"] = parse_listen(str(value))
        elif key not in known:
            raise ConfigError(f"unknown config key {key!r} in {path}")
        elif key in _PATH_KEYS:
            if not isinstance(value, str):
                raise ConfigError(f"config key {key!r} in {path} must be a path string")
            values[key] = Path(value)
        else:
            values[key] = value
    return config.with_overrides(**values)
