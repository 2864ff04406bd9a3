"""Setting up a node's part in a site from its configuration (used by create_app)."""

from __future__ import annotations

import logging
import secrets
import socket

import redis
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from ..auth import SECRET_BYTES, SECRET_FILENAME, load_or_create_secret
from ..config import ConfigError, ServerConfig, parse_listen
from ..state.base import LiveStore
from .cluster import Cluster
from .relay import KEY_BYTES
from .secrets import shared_secret

logger = logging.getLogger(__name__)

RELAY_KEY_FILENAME = "relay.key"
TIMEOUT_S = 1.0


def token_secret(config: ServerConfig) -> bytes:
    """The token-signing key: the site's (through Redis) when there is one, else this
    node's own file."""
    if config.redis_url is None:
        return load_or_create_secret(config.data_dir)
    with _sync_client(config) as client:
        return shared_secret(client, config.redis_prefix, "token",
                             config.data_dir / SECRET_FILENAME, SECRET_BYTES)


def open_cluster(config: ServerConfig, store: LiveStore, token_key: bytes) -> Cluster | None:
    """This node's Cluster when the site's state is in Redis, else None. `token_key`
    (from `token_secret`) is put back into Redis should Redis lose it."""
    if config.redis_url is None:
        return None
    relay_listen = parse_listen(config.relay_listen)
    relay_announce = parse_listen(config.relay_announce) if config.relay_announce else None
    with _sync_client(config) as client:
        relay_key = shared_secret(client, config.redis_prefix, "relay",
                                  config.data_dir / RELAY_KEY_FILENAME, KEY_BYTES)
    node_id = config.node_id or _default_node_id(config)
    return Cluster(
        client=aioredis.Redis.from_url(
            config.redis_url, socket_timeout=TIMEOUT_S, socket_connect_timeout=TIMEOUT_S,
            retry=Retry(NoBackoff(), 1),
        ),
        prefix=config.redis_prefix,
        node_id=node_id,
        store=store,
        lease_ms=config.floor_lease_ms,
        relay_key=relay_key,
        relay_listen=relay_listen,
        relay_announce=relay_announce,
        secrets={"relay": relay_key, "token": token_key},
    )


def _default_node_id(config: ServerConfig) -> str:
    host = socket.gethostname()
    if config.listen_port:
        return f"{host}:{config.listen_port}"
    return f"{host}-{secrets.token_hex(3)}"  # port chosen at bind time (tests)


def _sync_client(config: ServerConfig) -> redis.Redis:
    try:
        return redis.Redis.from_url(config.redis_url, socket_timeout=TIMEOUT_S,
                                    socket_connect_timeout=TIMEOUT_S)
    except ValueError as exc:
        raise ConfigError(f"redis_url: {exc}") from None
