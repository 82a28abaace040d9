"""What a secret must not look like: placeholders, committed development values, short ones.

One set of rules for every secret the platform runs with (the service's signing key, admin
password, metrics token and API key, the passwords inside database and Redis URLs, and the
PostgreSQL, S3 and Grafana passwords of the compose stack), used by the service at start-up
and by `rakuten-mlops secrets check` before `make compose-up`.

* A placeholder (`CHANGE_ME`, `changethis`, `<your-password>`, `example`, `Passw0rd!`,
  `admin123`...) is refused outside `RAKUTEN_ENV=dev`. Case, separators, digits around the
  word and the usual letter/digit swaps are ignored.
* A committed value, one that the repository holds for development and tests, starts with
  `dev-only-` or `tests-only-`: anyone reading the repository knows it, so it is refused in
  `RAKUTEN_ENV=prod`.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

# Words a template or a tutorial puts where a secret goes (compared without case, separators
# or digits; "contains" for the long ones, "equals" for the short ones).
_PLACEHOLDER_PARTS = (
    "changeme",
    "changethis",
    "changeit",
    "replaceme",
    "replacethis",
    "placeholder",
    "example",
    "yourpassword",
    "yoursecret",
    "yourtoken",
    "yourkey",
    "insertpassword",
    "putyour",
    "fixme",
    "notasecret",
    "redacted",
)
_PLACEHOLDER_WORDS = frozenset(
    {
        "admin",
        "administrator",
        "default",
        "dev",
        "guest",
        "letmein",
        "pass",
        "passwd",
        "password",
        "qwerty",
        "qwertyuiop",
        "azerty",
        "root",
        "secret",
        "test",
        "todo",
        "token",
        "user",
        "welcome",
        "abc",
        "abcdef",
        "none",
        "null",
        "empty",
        "mysecret",
        "mypassword",
        "supersecret",
        "secretkey",
        "adminpassword",
        "adminadmin",
        "passwordpassword",
    }
)
_LEET = str.maketrans(
    {"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s"}
)
COMMITTED_PREFIXES = ("dev-only-", "tests-only-")
MIN_ADMIN_PASSWORD_CHARS = 12
MIN_JWT_SECRET_CHARS = 32


def looks_like_placeholder(value: str) -> bool:
    """Whether `value` is a placeholder or a password-like word rather than a secret.

    `CHANGE_ME`, `change-me`, `ChangeThis!`, `<your-password>`, `example-secret`,
    `Passw0rd`, `admin123`, `xxxxxxxx` and `12345678` are; a random string is not.
    """
    text = value.strip().lower()
    if not text:
        return True
    letters = re.sub(r"[^a-z0-9@$]", "", text)
    plain = letters.translate(_LEET)
    words = re.sub(r"[^a-z]", "", plain)
    if len(set(letters)) <= 2:  # "xxxxxxxx", "********", "aaaa1111"
        return True
    if letters.isdigit() and letters in "01234567890123456789" + "98765432109876543210":
        return True
    if any(part in plain or part in words for part in _PLACEHOLDER_PARTS):
        return True
    stripped = re.sub(r"^[0-9]+|[0-9]+$", "", letters).translate(_LEET)
    return words in _PLACEHOLDER_WORDS or stripped in _PLACEHOLDER_WORDS


def is_committed(value: str) -> bool:
    """Whether `value` is one of the repository's own development or test secrets."""
    return value.strip().lower().startswith(COMMITTED_PREFIXES)


def url_password(url: str) -> str | None:
    """The password inside a URL (`scheme://user:PASSWORD@host/...`), None without one."""
    try:
        password = urlsplit(url).password
    except ValueError:
        return None
    return password or None


def secret_problem(name: str, value: str, env: str, *, min_chars: int = 0) -> str | None:
    """Why the secret `name` cannot be used in `env`, None when it can.

    Outside `dev`: no placeholder, at least `min_chars` characters. Outside `dev` and `test`
    (the test suite's own environment): no committed development or test value.
    """
    if env == "dev":
        return None
    if looks_like_placeholder(value):
        return f"{name} is a placeholder or a common password; set a real secret"
    if is_committed(value) and env != "test":
        return (
            f"{name} is a development value committed to the repository "
            f"({'/'.join(COMMITTED_PREFIXES)}...); set a secret of your own in RAKUTEN_ENV={env}"
        )
    if len(value) < min_chars:
        return f"{name} must have at least {min_chars} characters"
    return None


def check_secrets(
    values: dict[str, str], env: str, minimum: dict[str, int] | None = None
) -> list[str]:
    """The problems of several secrets (empty values are skipped: "not set" is the caller's
    rule). URLs (`*_URL`, `*_URI`) are checked for the password they hold."""
    problems: list[str] = []
    for name, value in values.items():
        if not value:
            continue
        if name.endswith(("_URL", "_URI")) or "://" in value:
            password = url_password(value)
            if password is None:
                continue
            problem = secret_problem(f"the password in {name}", password, env)
        else:
            problem = secret_problem(name, value, env, min_chars=(minimum or {}).get(name, 0))
        if problem:
            problems.append(problem)
    return problems
