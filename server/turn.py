"""The ICE servers a client is handed in `hello`: STUN, and TURN with ephemeral credentials.

TURN credentials follow coturn's REST-API scheme (`use-auth-secret`): the user name is
"<expiry unix time>:<user id>" and the password is base64(HMAC-SHA1(secret, user name)).
The TURN server checks both with the shared secret alone, so no per-user state is kept
anywhere, and a credential stops working at its expiry.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import time
from typing import Any

from .config import ServerConfig


def turn_credentials(secret: str, user_id: int, ttl_s: int, now: float | None = None) -> tuple[str, str]:
    """(username, credential) valid for `ttl_s` seconds from `now`. Any thread."""
    if not secret:
        raise ValueError("a TURN shared secret is needed for TURN credentials")
    expiry = int(time.time() if now is None else now) + int(ttl_s)
    username = f"{expiry}:{user_id}"
    digest = hmac.new(secret.encode("utf-8"), username.encode("utf-8"), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode("ascii")


def ice_servers_for(config: ServerConfig, user_id: int, now: float | None = None) -> list[dict[str, Any]]:
    """The `hello` reply's `ice_servers`: static entries, STUN, then TURN with fresh credentials.

    TURN URLs without a `turn_secret` are handed out as they are (a TURN server with
    static users configured elsewhere expects the client to know its credentials).
    """
    # Deep copies: a caller changing the reply must not change the configuration.
    servers: list[dict[str, Any]] = copy.deepcopy(list(config.ice_servers))
    if config.stun_urls:
        servers.append({"urls": list(config.stun_urls)})
    if config.turn_urls:
        if config.turn_secret:
            username, credential = turn_credentials(config.turn_secret, user_id, config.turn_ttl_s, now)
            servers.append({"urls": list(config.turn_urls), "username": username, "credential": credential})
        else:
            servers.append({"urls": list(config.turn_urls)})
    return servers
