"""Rate limits: N requests per period for one identity (a user, an API key, a client IP).

A window opens at an identity's first request and lasts one period; the (N+1)-th request
inside it is refused with the seconds left until it closes (`Retry-After`). Counters live
in process memory by default, or in Redis (`RAKUTEN_REDIS_URL`) so that every worker and
replica shares them (one atomic Lua script per request). When Redis cannot be reached the
request is let through and a warning logged: the limiter protects capacity, it must not
take the service down.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from dataclasses import dataclass
from typing import Protocol

logger = logging.getLogger(__name__)

_PERIODS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d*)\s*(second|minute|hour|day)s?\s*$", re.IGNORECASE)
_DISABLED = {"", "off", "none", "0", "unlimited"}

# KEYS[1] counter; ARGV[1] window in ms. Returns {count, ms left in the window}.
_LUA_HIT = """
local count = redis.call('INCR', KEYS[1])
if count == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[1]); ttl = tonumber(ARGV[1]) end
return {count, ttl}
"""


class RateLimitConfigError(ValueError):
    """A rate limit setting is not like `10/minute`."""


@dataclass(frozen=True)
class Rate:
    """`limit` requests per `period_s` seconds."""

    limit: int
    period_s: int

    def __str__(self) -> str:
        return f"{self.limit} per {self.period_s} s"


def parse_rate(text: str) -> Rate | None:
    """`"10/minute"`, `"100/hour"`, `"5/10 seconds"` -> Rate; `"off"` (or empty) -> None.

    Raises:
        RateLimitConfigError: anything else.
    """
    if text.strip().lower() in _DISABLED:
        return None
    match = _RATE.match(text)
    if match is None or int(match.group(1)) < 1:
        raise RateLimitConfigError(
            f"rate limit {text!r}: expected N/second|minute|hour|day (e.g. 10/minute) or off"
        )
    multiple = int(match.group(2) or 1)
    return Rate(int(match.group(1)), multiple * _PERIODS[match.group(3).lower()])


@dataclass(frozen=True)
class Decision:
    """The outcome of one hit: allowed or not, and the seconds until the window closes."""

    allowed: bool
    remaining: int
    retry_after_s: int


class Limiter(Protocol):
    """Counts hits of an identity against a rate."""

    async def hit(self, key: str, rate: Rate) -> Decision:
        """Count one request of `key`; whether it is within `rate`."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


def _decision(count: int, rate: Rate, ms_left: float) -> Decision:
    retry = max(1, math.ceil(ms_left / 1000))
    return Decision(count <= rate.limit, max(0, rate.limit - count), retry)


class MemoryLimiter:
    """Counters in this process's memory (one worker); expired windows are swept."""

    def __init__(self, max_keys: int = 100_000) -> None:
        self._windows: dict[str, tuple[int, float]] = {}
        self._lock = threading.Lock()
        self._max_keys = max_keys

    async def hit(self, key: str, rate: Rate) -> Decision:
        """Count one request of `key` (thread-safe)."""
        now = time.monotonic()
        with self._lock:
            count, closes_at = self._windows.get(key, (0, 0.0))
            if closes_at <= now:
                count, closes_at = 0, now + rate.period_s
                if len(self._windows) >= self._max_keys:
                    self._sweep(now)
            count += 1
            self._windows[key] = (count, closes_at)
        return _decision(count, rate, (closes_at - now) * 1000)

    def _sweep(self, now: float) -> None:
        for stale in [k for k, (_, closes_at) in self._windows.items() if closes_at <= now]:
            del self._windows[stale]
        if len(self._windows) >= self._max_keys:  # still full: forget the oldest half
            for stale in list(self._windows)[: self._max_keys // 2]:
                del self._windows[stale]

    async def close(self) -> None:
        """Nothing to release."""


class RedisLimiter:
    """Counters in Redis, shared by every process that uses the same server."""

    def __init__(self, url: str, prefix: str = "rakuten:ratelimit:") -> None:
        import redis.asyncio as redis_asyncio

        self._client = redis_asyncio.Redis.from_url(
            url, socket_timeout=0.5, socket_connect_timeout=0.5
        )
        self._script = self._client.register_script(_LUA_HIT)
        self._prefix = prefix
        self._warned_at = 0.0

    async def hit(self, key: str, rate: Rate) -> Decision:
        """Count one request of `key` atomically in Redis (allowed when Redis is down)."""
        from redis.exceptions import RedisError

        try:
            count, ms_left = await self._script(
                keys=[f"{self._prefix}{rate.period_s}:{key}"], args=[rate.period_s * 1000]
            )
        except (RedisError, OSError) as exc:
            now = time.monotonic()
            if now - self._warned_at > 30:
                self._warned_at = now
                logger.warning(
                    "rate limiter: Redis unavailable, not limiting: %s", type(exc).__name__
                )
            return Decision(True, rate.limit, 0)
        return _decision(int(count), rate, float(ms_left))

    async def ping(self) -> bool:
        """Whether Redis answers."""
        from redis.exceptions import RedisError

        try:
            return bool(await self._client.ping())
        except (RedisError, OSError):
            return False

    async def close(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()


def make_limiter(redis_url: str) -> Limiter:
    """A Redis limiter when `redis_url` is set, else an in-memory one."""
    return RedisLimiter(redis_url) if redis_url else MemoryLimiter()
