"""Rate limits: per user / API key on predictions, per client IP on /token, in memory and
shared by two real server processes through a real redis-server."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from rakuten_mlops.config import Settings
from rakuten_mlops.serving.auth.ratelimit import (
    MemoryLimiter,
    Rate,
    RateLimitConfigError,
    RedisLimiter,
    parse_rate,
)
from security_testing import (
    ADMIN_PASSWORD,
    ADMIN_USERNAME,
    ON_BOTH_DATABASES,
    api_key_for,
    headers_for,
)
from service_testing import ServerProcess, TinyModel, free_port


def test_parse_rate() -> None:
    assert parse_rate("10/minute") == Rate(10, 60)
    assert parse_rate("5 / 10 seconds") == Rate(5, 10)
    assert parse_rate("1000/day") == Rate(1000, 86400)
    assert parse_rate("100/Hour") == Rate(100, 3600)
    for disabled in ("off", "", "0"):
        assert parse_rate(disabled) is None
    for bad in ("10", "ten/minute", "10/fortnight", "-1/minute", "0/minute"):
        with pytest.raises(RateLimitConfigError):
            parse_rate(bad)


def test_memory_limiter_counts_per_key_and_says_when_to_retry() -> None:
    async def scenario() -> None:
        limiter = MemoryLimiter(max_keys=4)
        rate = Rate(3, 60)
        decisions = [await limiter.hit("a", rate) for _ in range(4)]
        assert [d.allowed for d in decisions] == [True, True, True, False]
        assert 55 <= decisions[-1].retry_after_s <= 60
        assert (await limiter.hit("b", rate)).allowed
        short = Rate(1, 1)
        assert (await limiter.hit("c", short)).allowed
        assert not (await limiter.hit("c", short)).allowed
        await asyncio.sleep(1.05)
        assert (await limiter.hit("c", short)).allowed  # a new window

    asyncio.run(scenario())


def test_memory_limiter_under_key_flooding_forgets_nobody_and_stays_bounded() -> None:
    async def scenario() -> None:
        limiter = MemoryLimiter(max_keys=4)
        rate = Rate(3, 60)
        for _ in range(3):
            await limiter.hit("attacker", rate)
        assert not (await limiter.hit("attacker", rate)).allowed
        # Flooding the table with new identities must not evict the attacker's window.
        flood = [await limiter.hit(f"ip-{i}", rate) for i in range(50)]
        assert not (await limiter.hit("attacker", rate)).allowed
        assert len(limiter) <= 4 + 1  # the windows, and one shared overflow window
        # New identities beyond the table share one window: the flood limits itself.
        assert sum(d.allowed for d in flood) <= 3 + 3
        # Once windows expire, their room is given to new identities again.
        short = MemoryLimiter(max_keys=2)
        await short.hit("x", Rate(1, 1))
        await short.hit("y", Rate(1, 1))
        await asyncio.sleep(1.05)
        assert (await short.hit("z", Rate(1, 1))).allowed
        assert (await short.hit("w", Rate(1, 1))).allowed

    asyncio.run(scenario())


@ON_BOTH_DATABASES
def test_sixth_prediction_in_a_minute_gets_429_while_another_user_is_served(
    start_client: Callable[..., TestClient], make_settings: Callable[..., Settings], service_db: str
) -> None:
    settings = make_settings(rate_limit_predict="5/minute", database_url=service_db)
    client = start_client(settings, authenticated=False)
    alice = headers_for(client, "alice", "client")
    bob = headers_for(client, "bob", "client")
    for i in range(5):
        response = client.post("/v1/predict", data={"designation": f"Roman {i}"}, headers=alice)
        assert response.status_code == 200, response.text
    refused = client.post("/v1/predict", data={"designation": "Roman 6"}, headers=alice)
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert refused.headers["content-type"] == "application/json"
    assert "rate limit exceeded: 5 per 60 s" in refused.json()["detail"]
    assert refused.json()["request_id"]
    batch = client.post("/v1/predict/batch", json={"items": [{"designation": "x"}]}, headers=alice)
    assert batch.status_code == 429  # one budget for both prediction routes
    served = client.post("/v1/predict", data={"designation": "Roman"}, headers=bob)
    assert served.status_code == 200
    # An API key of alice has a budget of its own.
    key = api_key_for(client, "alice")
    by_key = client.post("/v1/predict", data={"designation": "Roman"}, headers={"X-API-Key": key})
    assert by_key.status_code == 200
    admin = headers_for(client, ADMIN_USERNAME)
    metrics = client.get("/metrics", headers=admin).text
    assert 'rakuten_rate_limited_total{route="/v1/predict"} 1.0' in metrics
    assert 'rakuten_rate_limited_total{route="/v1/predict/batch"} 1.0' in metrics


def test_token_attempts_are_limited_per_client_ip(
    start_client: Callable[..., TestClient], make_settings: Callable[..., Settings]
) -> None:
    client = start_client(make_settings(rate_limit_token="3/minute"), ready=False)
    for _ in range(3):
        wrong = client.post("/token", data={"username": ADMIN_USERNAME, "password": "guess-1234"})
        assert wrong.status_code == 401
    blocked = client.post("/token", data={"username": ADMIN_USERNAME, "password": ADMIN_PASSWORD})
    assert blocked.status_code == 429 and int(blocked.headers["retry-after"]) >= 1
    assert "token" in blocked.json()["detail"]


def test_other_api_routes_have_their_own_limit(
    start_client: Callable[..., TestClient], make_settings: Callable[..., Settings]
) -> None:
    client = start_client(make_settings(rate_limit_api="2/minute"))
    assert [client.get("/v1/model").status_code for _ in range(3)] == [200, 200, 429]
    assert client.post("/v1/predict", data={"designation": "Roman"}).status_code == 200


def test_redis_limiter_is_shared_and_falls_back_to_memory(redis_url: str) -> None:
    async def scenario() -> None:
        first, second = RedisLimiter(redis_url), RedisLimiter(redis_url)
        rate = Rate(3, 60)
        hits = [await (first if i % 2 else second).hit("shared-key", rate) for i in range(4)]
        assert [h.allowed for h in hits] == [True, True, True, False]
        assert 55 <= hits[-1].retry_after_s <= 60
        assert (await first.hit("other-key", rate)).allowed
        await first.close()
        await second.close()
        # Unreachable: the limits hold in this process's memory (RAKUTEN_RATE_LIMIT_FAIL_OPEN
        # false, the default)...
        down = RedisLimiter(f"redis://127.0.0.1:{free_port()}/0")
        assert (await down.hit("k", Rate(1, 60))).allowed
        refused = await down.hit("k", Rate(1, 60))
        assert not refused.allowed and refused.retry_after_s >= 55
        await down.close()
        # ...or every request is let through when it is true.
        open_ = RedisLimiter(f"redis://127.0.0.1:{free_port()}/0", fail_open=True)
        assert (await open_.hit("k", Rate(1, 60))).allowed
        assert (await open_.hit("k", Rate(1, 60))).allowed
        await open_.close()

    asyncio.run(scenario())


@pytest.mark.slow
def test_limit_is_shared_by_two_server_processes_through_redis(
    start_server: Callable[..., ServerProcess],
    tiny_model: TinyModel,
    tmp_path: Path,
    redis_url: str,
) -> None:
    env = {
        "RAKUTEN_DATABASE_URL": f"sqlite:///{tmp_path}/service.db",
        "RAKUTEN_SERVE_MODEL": str(tiny_model.path),
        "RAKUTEN_LOG_FILE": "",
        "RAKUTEN_NUM_THREADS": "1",
        "RAKUTEN_REDIS_URL": redis_url,
        "RAKUTEN_RATE_LIMIT_PREDICT": "4/minute",
    }
    servers = [start_server(env), start_server(env)]
    assert servers[0].url != servers[1].url
    headers = servers[0].headers  # the same admin token is valid on both (same secret)
    statuses = []
    for i in range(6):
        server = servers[i % 2]
        response = httpx.post(
            f"{server.url}/v1/predict", data={"designation": f"Roman {i}"}, headers=headers
        )
        statuses.append(response.status_code)
    assert statuses == [200, 200, 200, 200, 429, 429]
    metrics = [httpx.get(f"{s.url}/metrics", headers=headers).text for s in servers]
    assert all('rakuten_rate_limited_total{route="/v1/predict"} 1.0' in m for m in metrics)


@pytest.mark.slow
def test_token_limit_behind_a_trusted_proxy_counts_the_forwarded_client_ip(
    start_server: Callable[..., ServerProcess], tiny_model: TinyModel, tmp_path: Path
) -> None:
    """`serve --forwarded-allow-ips`: X-Forwarded-For is the client IP when the peer is a
    trusted proxy (one limit per client behind nginx), ignored from any other peer."""
    env = {
        "RAKUTEN_DATABASE_URL": f"sqlite:///{tmp_path}/service.db",
        "RAKUTEN_SERVE_MODEL": str(tiny_model.path),
        "RAKUTEN_LOG_FILE": "",
        "RAKUTEN_NUM_THREADS": "1",
        "RAKUTEN_RATE_LIMIT_TOKEN": "3/minute",
        # The setting is overridden by the option below.
        "RAKUTEN_FORWARDED_ALLOW_IPS": "192.0.2.1",
    }
    wrong = {"username": ADMIN_USERNAME, "password": "not the password"}

    def attempts(server: ServerProcess, client_ip: str, n: int) -> list[int]:
        headers = {"X-Forwarded-For": client_ip}
        return [
            httpx.post(f"{server.url}/token", data=wrong, headers=headers).status_code
            for _ in range(n)
        ]

    # 127.0.0.1 (the test, standing for nginx) is trusted: one window per forwarded client.
    behind = start_server(env, "--forwarded-allow-ips", "127.0.0.1")  # its login used 1
    assert attempts(behind, "203.0.113.7", 4) == [401, 401, 401, 429]
    assert attempts(behind, "203.0.113.8", 1) == [401]
    # Not trusted (the setting alone): the header is ignored, every caller is 127.0.0.1.
    direct = start_server(env)
    assert attempts(direct, "203.0.113.9", 3) == [401, 401, 429]
