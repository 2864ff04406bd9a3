"""Access tokens: HS256 JWTs that `POST /api/login` issues and `hello` presents.

A token is short-lived (`token_ttl_s`, 15 min) and names the login it belongs to (claim
`sid`, a row in server.logins): logging out or changing the password revokes the login,
and with it every token issued for it, at once. Clients get new tokens with the login's
refresh token (`POST /api/refresh`).

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
from dataclasses import dataclass
from pathlib import Path

import jwt

from server.directory import User

logger = logging.getLogger(__name__)

ALGORITHM = "HS256"
SECRET_BYTES = 32
SECRET_FILENAME = "token.key"
# Tolerated clock difference between nodes for `iat`.
IAT_LEEWAY_S = 60
# A login id is `secrets.token_urlsafe(18)` (24 characters); anything far longer is junk.
MAX_LOGIN_ID_LENGTH = 64


class TokenError(Exception):
    """A token was refused; `reason` is "expired", "invalid" or "revoked"."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"token {reason}" + (f": {detail}" if detail else ""))
        self.reason = reason


@dataclass(frozen=True)
class AccessClaims:
    """What a valid access token says: whose it is and which login issued it."""

    user_id: int
    login_id: str


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

    @property
    def ttl_s(self) -> int:
        return self._ttl_s

    def issue(self, user: User, login_id: str) -> tuple[str, float]:
        """A token for `user` under login `login_id`, and its expiry time (unix seconds)."""
        if not isinstance(login_id, str) or not 0 < len(login_id) <= MAX_LOGIN_ID_LENGTH:
            raise ValueError(f"login id {login_id!r} is not a login id")
        now = int(self._clock())
        expires_at = now + self._ttl_s
        claims = {
            "sub": str(user.id),
            "sid": login_id,
            "name": user.name,
            "role": user.role.value,
            "iat": now,
            "exp": expires_at,
            "jti": uuid.uuid4().hex,
        }
        return jwt.encode(claims, self._secret, algorithm=ALGORITHM), float(expires_at)

    def verify(self, token: object) -> int:
        """The user id a valid token names (see `verify_claims`)."""
        return self.verify_claims(token).user_id

    def verify_claims(self, token: object) -> AccessClaims:
        """The claims of a valid token; TokenError("expired" | "invalid") otherwise.

        Signature, algorithm and times only: the caller still checks that the login is
        active (server.logins) and that the user exists, since a revoked login's or a
        removed user's token stays well-formed until it expires.
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
                    "require": ["sub", "sid", "iat", "exp"],
                    "verify_exp": False,
                    "verify_iat": False,
                    "verify_nbf": False,
                },
            )
        except jwt.InvalidTokenError as exc:
            raise TokenError("invalid", str(exc)) from None
        now = self._clock()
        exp, iat, sub, sid = claims["exp"], claims["iat"], claims["sub"], claims["sid"]
        if not _is_number(exp) or not _is_number(iat):
            raise TokenError("invalid", "exp or iat is not a number")
        if iat > now + IAT_LEEWAY_S:
            raise TokenError("invalid", "issued in the future")
        if now >= exp:
            raise TokenError("expired")
        if not isinstance(sub, str) or not sub.isascii() or not sub.isdigit():
            raise TokenError("invalid", f"subject {sub!r} is not a user id")
        if not isinstance(sid, str) or not 0 < len(sid) <= MAX_LOGIN_ID_LENGTH:
            raise TokenError("invalid", "sid is not a login id")
        return AccessClaims(user_id=int(sub), login_id=sid)


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
