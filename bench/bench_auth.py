"""Cost of authentication and rate limiting per request.

The same route (`GET /v1/predictions?limit=1`, a small database read) is called in process
through the whole ASGI stack, first with authentication replaced by a fixed caller (the
reference), then with a bearer JWT, an API key, and a JWT plus an in-memory (or Redis) rate
limit. The difference of the medians is what security costs each request; the functions
behind it are timed alone too (token check, API key check, a login's argon2 verification,
one limiter hit).

    python bench/bench_auth.py [--requests 2000] [--database-url URL] [--redis-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from fastapi.testclient import TestClient

from rakuten_mlops.config import Settings
from rakuten_mlops.serving.app import create_app
from rakuten_mlops.serving.auth import credentials, users
from rakuten_mlops.serving.auth.ratelimit import MemoryLimiter, Rate, RedisLimiter
from rakuten_mlops.serving.deps import Principal, get_current_principal

PASSWORD = "bench admin password"


def _timings(call: Callable[[], object], n: int) -> list[float]:
    for _ in range(min(50, n)):
        call()
    out = []
    for _ in range(n):
        start = time.perf_counter()
        call()
        out.append((time.perf_counter() - start) * 1000)
    return out


def _row(name: str, ms: list[float], reference: float | None) -> str:
    median = statistics.median(ms)
    p95 = statistics.quantiles(ms, n=20)[-1]
    extra = f"{median - reference:+8.3f}" if reference is not None else f"{'':>8}"
    return f"{name:<34} {median:8.3f} {p95:8.3f} {extra}"


def _settings(database_url: str, log_dir: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "env": "test",
        "database_url": database_url,
        "serve_model": str(log_dir / "no-model"),  # the route read needs no model
        "jwt_secret": "bench-" + "0123456789abcdef" * 4,
        "admin_password": PASSWORD,
        "log_file": None,
        "log_level": "WARNING",
        "rate_limit_predict": "off",
        "rate_limit_api": "off",
        "rate_limit_token": "off",
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


def _http_rows(settings: Settings, n: int, redis_url: str) -> None:
    """Every variant on the same app, interleaved request by request (load drifts cancel)."""
    app = create_app(settings)
    with TestClient(app) as client:
        with app.state.session_factory() as session:
            admin = users.require_user(session, "admin")
            token = credentials.create_access_token(app.state.settings, admin)
            _, key = credentials.create_api_key(session, "admin", "bench")
            session.commit()
        memory, redis = MemoryLimiter(), RedisLimiter(redis_url) if redis_url else None
        unlimited = Rate(10**9, 60)
        variants: dict[str, tuple[dict[str, str], object, bool]] = {
            "no auth (reference)": ({}, None, True),
            "bearer JWT": ({"Authorization": f"Bearer {token}"}, None, False),
            "X-API-Key": ({"X-API-Key": key}, None, False),
            "bearer JWT + memory rate limit": ({"Authorization": f"Bearer {token}"}, memory, False),
        }
        if redis is not None:
            variants["bearer JWT + Redis rate limit"] = (
                {"Authorization": f"Bearer {token}"},
                redis,
                False,
            )
        timings: dict[str, list[float]] = {name: [] for name in variants}
        for round_ in range(n + 50):
            for name, (headers, limiter, anonymous) in variants.items():
                app.state.rate_limits["api"] = unlimited if limiter is not None else None
                app.state.limiter = limiter or memory
                if anonymous:
                    app.dependency_overrides[get_current_principal] = lambda: Principal(
                        "bench", "admin"
                    )
                start = time.perf_counter()
                response = client.get("/v1/predictions", params={"limit": 1}, headers=headers)
                elapsed = (time.perf_counter() - start) * 1000
                app.dependency_overrides.clear()
                assert response.status_code == 200, response.text
                if round_ >= 50:  # warm-up rounds
                    timings[name].append(elapsed)
        reference = statistics.median(timings["no auth (reference)"])
        for name, ms in timings.items():
            print(_row(name, ms, None if name.startswith("no auth") else reference))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--database-url", default="")
    parser.add_argument("--redis-url", default="")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        url = args.database_url or f"sqlite:///{root}/bench.db"
        n = args.requests
        print(f"GET /v1/predictions?limit=1 in process, {n} requests each, {url.split(':')[0]}")
        print(f"{'':<34} {'p50 ms':>8} {'p95 ms':>8} {'vs ref':>8}")
        _http_rows(_settings(url, root), n, args.redis_url)

        print("\nfunctions alone")
        print(f"{'':<34} {'p50 ms':>8} {'p95 ms':>8}")
        settings = _settings(url, root)
        app = create_app(settings)
        with TestClient(app):
            factory = app.state.session_factory
            with factory() as session:
                admin = users.require_user(session, "admin")
                token = credentials.create_access_token(app.state.settings, admin)
                _, key = credentials.create_api_key(session, "admin", "bench-2")
                session.commit()

            def check_token() -> object:
                with factory() as session:
                    return credentials.principal_from_token(session, app.state.settings, token)

            def check_key() -> object:
                with factory() as session:
                    return credentials.principal_from_api_key(session, key)

            def login() -> object:
                with factory() as session:
                    return users.authenticate_user(session, "admin", PASSWORD)

            print(_row("principal_from_token (JWT + DB)", _timings(check_token, n), None))
            print(_row("principal_from_api_key (DB)", _timings(check_key, n), None))
            print(_row("authenticate_user (argon2, login)", _timings(login, 20), None))
        rate = Rate(10**9, 60)
        print(
            _row("memory limiter hit", asyncio.run(_limiter_hits(MemoryLimiter(), rate, n)), None)
        )
        if args.redis_url:
            redis_limiter = RedisLimiter(args.redis_url)
            print(
                _row("Redis limiter hit", asyncio.run(_limiter_hits(redis_limiter, rate, n)), None)
            )


async def _limiter_hits(limiter: MemoryLimiter | RedisLimiter, rate: Rate, n: int) -> list[float]:
    out = []
    for _ in range(n):
        start = time.perf_counter()
        await limiter.hit("bench", rate)
        out.append((time.perf_counter() - start) * 1000)
    await limiter.close()
    return out


if __name__ == "__main__":
    main()
