"""Access tokens: HS256 JWTs that `POST /api/login` issues and `hello` presents.

The signing secret lives in the data folder so that tokens survive a restart; several
nodes of one site share it by sharing that file.
"""

from __future__ import annotations

import logging
import os
import secrets
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import jwt

from server.directory import User

logger = logging.getLogger(__name__)

ALGORITHM = "HS256"
SECRET_BYTES = 32
SECRET_FILENAME = "token.key"
# Tolerated clock difference between nodes for `iat`.
IAT_LEEWAY_S = 60


class TokenError(Exception):
    """A token was refused; `reason` is "expired" or "invalid"."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"token {reason}" + (f": {detail}" if detail else ""))
        self.reason = reason


class TokenIssuer:
    """Issues and verifies access tokens.

    Pure CPU and stateless apart from its secret: any thread may call it.
    """

    def __init__(
        self, secret: bytes, ttl_s: int, clock: Callable[[], float] = time.time
    ) -> None:
        # RFC 7518 3.2: an HS256 key shorter than the hash is weaker than the algorithm.
        if len(secret) < SECRET_BYTES:
            raise ValueError(f"token secret is {len(secret)} bytes; at least {SECRET_BYTES} needed")
        if ttl_s <= 0:
            raise ValueError(f"token ttl {ttl_s} s is not positive")
        self._secret = secret
        self._ttl_s = ttl_s
        self._clock = clock

    def issue(self, user: User) -> tuple[str, float]:
        """A token for `user` and its expiry time (unix seconds)."""
        now = int(self._clock())
        expires_at = now + self._ttl_s
        claims = {
            "sub": str(user.id),
            "name": user.name,
            "role": user.role.value,
            "iat": now,
            "exp": expires_at,
            "jti": uuid.uuid4().hex,
        }
        return jwt.encode(claims, self._secret, algorithm=ALGORITHM), float(expires_at)

    def verify(self, token: object) -> int:
        """The user id a valid token names; TokenError("expired" | "invalid") otherwise.

        The caller still checks that the user exists: a removed user's token stays
        well-formed until it expires.
        """
        if not isinstance(token, str):
            raise TokenError("invalid", f"not a string but {type(token).__name__}")
        try:
            # algorithms pins HS256: a token claiming "none", HS512 or an asymmetric
            # algorithm is refused before its signature is looked at. Time claims are
            # checked below against the injected clock, not PyJWT's own.
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=[ALGORITHM],
                options={
                    "require": ["sub", "iat", "exp"],
                    "verify_exp": False,
                    "verify_iat": False,
                    "verify_nbf": False,
                },
            )
        except jwt.InvalidTokenError as exc:
            raise TokenError("invalid", str(exc)) from None
        now = self._clock()
        exp, iat, sub = claims["exp"], claims["iat"], claims["sub"]
        if not _is_number(exp) or not _is_number(iat):
            raise TokenError("invalid", "exp or iat is not a number")
        if iat > now + IAT_LEEWAY_S:
            raise TokenError("invalid", "issued in the future")
        if now >= exp:
            raise TokenError("expired")
        if not isinstance(sub, str) or not sub.isascii() or not sub.isdigit():
            raise TokenError("invalid", f"subject {sub!r} is not a user id")
        return int(sub)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def load_or_create_secret(data_dir: Path) -> bytes:
    """The token secret in `data_dir/token.key`, created (mode 0600) on first use.

    Called once at startup from any thread. Safe against two processes starting at once:
    the file appears complete or not at all (written aside, then hard-linked into place).
    """
    data_dir = Path(data_dir)
    path = data_dir / SECRET_FILENAME
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        _create_secret(path)
    secret = path.read_bytes()
    if len(secret) != SECRET_BYTES:
        raise ValueError(
            f"token secret {path} holds {len(secret)} bytes, not {SECRET_BYTES}; "
            "remove it to create a new one (this logs everyone out)"
        )
    return secret


def _create_secret(path: Path) -> None:
    temp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(secrets.token_bytes(SECRET_BYTES))
            file.flush()
            os.fsync(file.fileno())
        try:
            os.link(temp, path)
            logger.info("auth: created token secret %s", path)
        except FileExistsError:
            pass  # another process won the race; use its secret
    finally:
        temp.unlink(missing_ok=True)
