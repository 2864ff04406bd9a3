"""Access tokens: round trip, expiry, forgery, algorithm pinning, the secret file."""

from __future__ import annotations

import base64
import json
import os
import stat
import sys

import jwt
import pytest

from server.auth import AccessClaims, TokenError, TokenIssuer, load_or_create_secret
from server.directory import Role, User

SECRET = b"k" * 32
BOB = User(7, "bob", Role.DISPATCH)
LOGIN = "login-7a"


class Clock:
    """A settable clock (unix seconds)."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def test_issue_verify_round_trip():
    clock = Clock()
    issuer = TokenIssuer(SECRET, ttl_s=3600, clock=clock)
    token, expires_at = issuer.issue(BOB, LOGIN)
    assert isinstance(token, str) and isinstance(expires_at, float)
    assert expires_at == pytest.approx(clock.now + 3600, abs=1)
    assert issuer.verify(token) == 7
    assert issuer.verify_claims(token) == AccessClaims(user_id=7, login_id=LOGIN)

    claims = jwt.decode(
        token, SECRET, algorithms=["HS256"], options={"verify_exp": False, "verify_iat": False}
    )
    assert claims["sub"] == "7"
    assert claims["sid"] == LOGIN
    assert claims["name"] == "bob"
    assert claims["role"] == "dispatch"
    assert claims["exp"] == expires_at
    assert claims["iat"] <= clock.now
    assert jwt.get_unverified_header(token)["alg"] == "HS256"


def test_each_token_has_its_own_jti():
    issuer = TokenIssuer(SECRET, ttl_s=60, clock=Clock())
    first, _ = issuer.issue(BOB, LOGIN)
    second, _ = issuer.issue(BOB, LOGIN)
    jti = [jwt.decode(t, options={"verify_signature": False})["jti"] for t in (first, second)]
    assert jti[0] != jti[1]


def test_expired_token():
    clock = Clock()
    issuer = TokenIssuer(SECRET, ttl_s=60, clock=clock)
    token, expires_at = issuer.issue(BOB, LOGIN)
    clock.now = expires_at - 1
    assert issuer.verify(token) == 7
    clock.now = expires_at
    with pytest.raises(TokenError) as info:
        issuer.verify(token)
    assert info.value.reason == "expired"


def test_token_from_the_future_is_invalid():
    clock = Clock()
    token, _ = TokenIssuer(SECRET, ttl_s=60, clock=Clock(clock.now + 3600)).issue(BOB, LOGIN)
    with pytest.raises(TokenError) as info:
        TokenIssuer(SECRET, ttl_s=60, clock=clock).verify(token)
    assert info.value.reason == "invalid"


def test_forged_with_another_secret():
    clock = Clock()
    forged, _ = TokenIssuer(b"x" * 32, ttl_s=60, clock=clock).issue(BOB, LOGIN)
    with pytest.raises(TokenError) as info:
        TokenIssuer(SECRET, ttl_s=60, clock=clock).verify(forged)
    assert info.value.reason == "invalid"


def test_tampered_payload_rejected():
    issuer = TokenIssuer(SECRET, ttl_s=60, clock=Clock())
    token, _ = issuer.issue(BOB, LOGIN)
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["sub"] = "1"
    tampered = ".".join([header, _b64url(json.dumps(claims).encode()), signature])
    with pytest.raises(TokenError) as info:
        issuer.verify(tampered)
    assert info.value.reason == "invalid"


def test_alg_none_rejected():
    clock = Clock()
    issuer = TokenIssuer(SECRET, ttl_s=60, clock=clock)
    now = int(clock.now)
    claims = {"sub": "7", "sid": LOGIN, "name": "bob", "role": "admin", "iat": now, "exp": now + 60}
    unsigned = ".".join([
        _b64url(json.dumps({"alg": "none", "typ": "JWT"}).encode()),
        _b64url(json.dumps(claims).encode()),
        "",
    ])
    with pytest.raises(TokenError) as info:
        issuer.verify(unsigned)
    assert info.value.reason == "invalid"


def test_other_hmac_algorithm_rejected():
    # Signed with the right secret, but HS512: only HS256 is accepted.
    secret = b"s" * 64
    clock = Clock()
    issuer = TokenIssuer(secret, ttl_s=60, clock=clock)
    claims = {"sub": "7", "sid": LOGIN, "iat": int(clock.now), "exp": int(clock.now) + 60}
    token = jwt.encode(claims, secret, algorithm="HS512")
    with pytest.raises(TokenError) as info:
        issuer.verify(token)
    assert info.value.reason == "invalid"
    # The same claims under HS256 pass, so the refusal above is about the algorithm.
    assert issuer.verify(jwt.encode(claims, secret, algorithm="HS256")) == 7


def test_missing_or_bad_subject_rejected():
    clock = Clock()
    issuer = TokenIssuer(SECRET, ttl_s=60, clock=clock)
    now = int(clock.now)
    for claims in (
        {"sid": LOGIN, "iat": now, "exp": now + 60},  # no sub
        {"sub": "bob", "sid": LOGIN, "iat": now, "exp": now + 60},
        {"sub": "7", "sid": LOGIN, "exp": now + 60},  # no iat
        {"sub": "7", "sid": LOGIN, "iat": now},  # no exp
    ):
        with pytest.raises(TokenError) as info:
            issuer.verify(jwt.encode(claims, SECRET, algorithm="HS256"))
        assert info.value.reason == "invalid", claims


def test_token_without_a_login_is_refused():
    # A token from before logins existed (no sid) cannot be revoked: refused.
    clock = Clock()
    issuer = TokenIssuer(SECRET, ttl_s=60, clock=clock)
    now = int(clock.now)
    claims = {"sub": "7", "iat": now, "exp": now + 60}
    for sid in (..., None, 7, "", "x" * 65):
        if sid is not ...:
            claims["sid"] = sid
        with pytest.raises(TokenError) as info:
            issuer.verify_claims(jwt.encode(claims, SECRET, algorithm="HS256"))
        assert info.value.reason == "invalid", sid
    claims["sid"] = "x" * 64
    assert issuer.verify_claims(jwt.encode(claims, SECRET, algorithm="HS256")).login_id == "x" * 64


@pytest.mark.parametrize("login_id", ["", None, "y" * 65])
def test_issue_needs_a_login_id(login_id):
    with pytest.raises(ValueError):
        TokenIssuer(SECRET, ttl_s=60).issue(BOB, login_id)


@pytest.mark.parametrize(
    "garbage", ["", "abc", "a.b.c", "....", "eyJhbGciOiJIUzI1NiJ9.e30.", "🙂.🙂.🙂"]
)
def test_garbage_strings_rejected(garbage):
    with pytest.raises(TokenError) as info:
        TokenIssuer(SECRET, ttl_s=60).verify(garbage)
    assert info.value.reason == "invalid"


@pytest.mark.parametrize("value", [None, 7, b"abc", ["a"], {"token": "x"}])
def test_non_str_rejected(value):
    with pytest.raises(TokenError) as info:
        TokenIssuer(SECRET, ttl_s=60).verify(value)
    assert info.value.reason == "invalid"


def test_short_secret_refused():
    with pytest.raises(ValueError, match="at least 32"):
        TokenIssuer(b"short", ttl_s=60)


def test_secret_file_created_private_and_reused(tmp_path):
    data = tmp_path / "data"
    secret = load_or_create_secret(data)
    path = data / "token.key"
    assert len(secret) == 32
    assert path.read_bytes() == secret
    if sys.platform != "win32":
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert load_or_create_secret(data) == secret
    assert [p.name for p in data.iterdir()] == ["token.key"]  # no temp file left behind
    # A token issued before a "restart" verifies after it.
    token, _ = TokenIssuer(secret, ttl_s=60).issue(BOB, LOGIN)
    assert TokenIssuer(load_or_create_secret(data), ttl_s=60).verify(token) == 7
    assert load_or_create_secret(tmp_path / "other") != secret


def test_truncated_secret_file_refused(tmp_path):
    (tmp_path / "token.key").write_bytes(b"abc")
    with pytest.raises(ValueError, match="3 bytes"):
        load_or_create_secret(tmp_path)
