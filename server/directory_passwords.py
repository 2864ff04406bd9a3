"""Password hashes for the directory: scrypt, memory-hard, self-describing.

Pure CPU (~50 ms, 16 MiB per hash): any thread may call these. `server.directory`
re-exports them.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import logging
import secrets

from server.directory_model import InvalidPassword

logger = logging.getLogger(__name__)

# scrypt parameters for new hashes. Stored hashes carry their own, so these may be raised
# later without invalidating existing passwords.
SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
SCRYPT_SALT_BYTES = 16
SCRYPT_KEY_BYTES = 32
# OpenSSL's default limit (32 MiB) would refuse parameters only slightly above today's.
SCRYPT_MAXMEM = 256 * 1024 * 1024


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hash_password(password: str) -> str:
    """A self-describing scrypt hash: `scrypt$n$r$p$salt_b64$hash_b64`."""
    if not isinstance(password, str) or not password:
        raise InvalidPassword("password must not be empty")
    salt = secrets.token_bytes(SCRYPT_SALT_BYTES)
    key = hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P,
        maxmem=SCRYPT_MAXMEM, dklen=SCRYPT_KEY_BYTES,
    )
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(key)}"


def verify_password(stored: str, password: str) -> bool:
    """True when `password` matches the stored hash; False for a malformed hash."""
    try:
        scheme, n, r, p, salt_b64, key_b64 = stored.split("$")
        if scheme != "scrypt":
            raise ValueError(f"unknown scheme {scheme!r}")
        salt = base64.b64decode(salt_b64, validate=True)
        expected = base64.b64decode(key_b64, validate=True)
        key = hashlib.scrypt(
            password.encode("utf-8"), salt=salt, n=int(n), r=int(r), p=int(p),
            maxmem=SCRYPT_MAXMEM, dklen=len(expected),
        )
    except (ValueError, TypeError) as exc:
        logger.warning("directory: unusable password hash: %s", exc)
        return False
    return hmac.compare_digest(key, expected)


@functools.cache
def dummy_hash() -> str:
    """A hash of a random password, verified against when the user does not exist, so
    that "no such user" takes as long as "wrong password" and login timing does not
    reveal which names exist."""
    return hash_password(secrets.token_urlsafe(16))
