"""Who is calling: the bearer access token of a REST request, checked all the way.

A token must verify (signature, algorithm, times), its login must still be active (not
logged out, not ended by a password change) and its user must still exist.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from ..app_keys import DIRECTORY, LOGINS, TOKENS
from ..auth import TokenError
from ..directory import User
from .errors import ApiError


@dataclass(frozen=True)
class Caller:
    """The signed-in user of a request, and the login its token belongs to."""

    user: User
    login_id: str


def bearer_token(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def unauthorized(message: str) -> ApiError:
    return ApiError(401, "unauthorized", message)


async def require_user(request: web.Request) -> Caller:
    """The caller of `request`, or ApiError(401 unauthorized) saying why not.

    Runs on the server's loop (two quick SQLite reads).
    """
    token = bearer_token(request)
    if token is None:
        raise unauthorized("token invalid")  # none sent: 'Authorization: Bearer TOKEN'

    return caller_of_token(request.app, token)


def caller_of_token(app: web.Application, token: object) -> Caller:
    """`require_user` for a token from elsewhere (e.g. a `?token=` query)."""
    try:
        claims = app[TOKENS].verify_claims(token)
    except TokenError as exc:
        raise unauthorized(f"token {exc.reason}") from None
    if not app[LOGINS].is_active(claims.login_id):
        raise unauthorized("token revoked")
    user = app[DIRECTORY].get_user(claims.user_id)
    if user is None:
        raise unauthorized("user no longer exists")
    return Caller(user=user, login_id=claims.login_id)
