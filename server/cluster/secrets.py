"""Secrets every node of a site must share: the token-signing key and the relay key.

Each lives in Redis (`{prefix}secret:{name}`) and in a file in every node's data folder.
The first node to start puts its file's secret (or a new one) into Redis with SET NX and
every node then uses the one in Redis, caching it in its file. So a single-node site
moved onto Redis keeps its signing key (nobody is logged out), and if Redis loses its
data the nodes put the same secret back (`reseed`) instead of making a new one.
"""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path

import redis
import redis.asyncio as aioredis
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)


def secret_key(prefix: str, name: str) -> str:
    return f"{prefix}secret:{name}"


def shared_secret(client: redis.Redis, prefix: str, name: str, cache: Path, size: int) -> bytes:
    """The site's secret `name` (`size` bytes), agreed through Redis and cached in
    `cache`. With Redis unreachable the cached one is used (a warning says so), or a new
    one is made; raises ValueError for a cached file of the wrong size."""
    local = cache.read_bytes() if cache.exists() else None
    if local is not None and len(local) != size:
        raise ValueError(f"{cache} holds {len(local)} bytes, not {size}; remove it to take the site's")
    key = secret_key(prefix, name)
    try:
        client.set(key, local or secrets.token_bytes(size), nx=True)
        agreed = client.get(key)
    except (RedisError, OSError) as exc:
        logger.warning("secret %s: redis unreachable (%s); using the %s one", name, exc,
                       "cached" if local else "new, unshared")
        agreed = None
    if agreed is None:
        agreed = local or secrets.token_bytes(size)
    if len(agreed) != size:
        raise ValueError(f"redis key {key} holds {len(agreed)} bytes, not {size}")
    if agreed != local:
        _write_private(cache, agreed)
    return agreed


async def reseed(client: aioredis.Redis, prefix: str, name: str, value: bytes) -> None:
    """Put a secret back after Redis lost it (SET NX: an existing one is left alone)."""
    await client.set(secret_key(prefix, name), value, nx=True)


def _write_private(path: Path, data: bytes) -> None:
    """Write `data` to `path` readable by the owner only, replacing it in one step."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(data)
    os.replace(temp, path)
