"""Passwords: argon2 hashing (pwdlib), verification at a constant cost, strength rules.

A failed login costs as much as a good one (a dummy hash is verified for unknown users), so
user names cannot be probed by timing.
"""

from __future__ import annotations

import hashlib
import secrets

from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher

from rakuten_mlops import secret_rules
from rakuten_mlops.serving.auth.principals import UserError

MIN_PASSWORD_CHARS = 8

# argon2id with OWASP's recommended minimum (19 MiB, 2 passes, 1 lane): a login costs tens of
# milliseconds, not hundreds, on a small CPU; hashes keep their parameters, so raising them
# later still verifies older hashes.
_password_hash = PasswordHash((Argon2Hasher(time_cost=2, memory_cost=19 * 1024, parallelism=1),))
DUMMY_HASH = _password_hash.hash(secrets.token_urlsafe(16))


def hash_password(password: str) -> str:
    """The argon2 hash of `password` (with its own salt and parameters)."""
    return _password_hash.hash(password)


def verify_password(password: str, password_hash: str) -> bool:
    """Whether `password` matches `password_hash` (False for a malformed hash)."""
    try:
        return bool(_password_hash.verify(password, password_hash))
    except Exception:  # an unknown or damaged hash format is a failed login, not a 500
        return False


def check_password_strength(password: str) -> None:
    """Refuse passwords too short or a known placeholder.

    Raises:
        UserError: the password is not acceptable.
    """
    if len(password) < MIN_PASSWORD_CHARS:
        raise UserError(f"password: at least {MIN_PASSWORD_CHARS} characters")
    if secret_rules.looks_like_placeholder(password):
        raise UserError("password: a placeholder or a common password, choose a real one")


def digest_for_log(username: str) -> str:
    """What the logs say of a submitted user name: a short SHA-256 digest and its length (a
    name typed in the password field must not end up in the logs)."""
    digest = hashlib.sha256(username.encode("utf-8", "replace")).hexdigest()[:12]
    return f"sha256:{digest}/{len(username)}"
