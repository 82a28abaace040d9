"""Rate limits: N requests per period for one identity (a user, an API key, a client IP).

A window opens at an identity's first request and lasts one period; the (N+1)-th request
inside it is refused with the seconds left until it closes (`Retry-After`). Counters live
in process memory by default, or in Redis (`RAKUTEN_REDIS_URL`) so that every worker and
replica shares them (one atomic Lua script per request). When Redis cannot be reached the
request is counted in this process's memory instead (each replica then limits on its own,
so a caller gets at most replicas x N), or let through when RAKUTEN_RATE_LIMIT_FAIL_OPEN
is true; a warning is logged either way: the limiter must not take the service down.

The in-memory counters are bounded: once full, an identity seen for the first time is
counted in one shared overflow window instead of evicting anybody's, so flooding the table
with new keys cannot make the limiter forget an attacker's window.

`LoginThrottle` slows down password guessing per user name: after a few failures each
further attempt waits for a lock that doubles up to a short maximum, a success resets it,
and failures are forgotten after a quiet period, so nobody is locked out for good.
"""

from __future__ import annotations

import contextlib
import hashlib
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


OVERFLOW_KEY = "overflow"


class MemoryLimiter:
    """Counters in this process's memory (one worker); expired windows are swept.

    At most `max_keys` windows are kept; when full (after dropping the expired ones) a new
    identity is counted in a shared overflow window of its rate: nobody's window is evicted.
    """

    def __init__(self, max_keys: int = 100_000) -> None:
        self._windows: dict[str, tuple[int, float]] = {}
        self._lock = threading.Lock()
        self._max_keys = max_keys

    async def hit(self, key: str, rate: Rate) -> Decision:
        """Count one request of `key` (thread-safe)."""
        return self.hit_now(key, rate)

    def hit_now(self, key: str, rate: Rate) -> Decision:
        """`hit`, callable from synchronous code."""
        now = time.monotonic()
        with self._lock:
            if key not in self._windows and len(self._windows) >= self._max_keys:
                self._sweep(now)
                if len(self._windows) >= self._max_keys:
                    key = f"{OVERFLOW_KEY}:{rate.period_s}:{rate.limit}"
            count, closes_at = self._windows.get(key, (0, 0.0))
            if closes_at <= now:
                count, closes_at = 0, now + rate.period_s
            count += 1
            self._windows[key] = (count, closes_at)
        return _decision(count, rate, (closes_at - now) * 1000)

    def _sweep(self, now: float) -> None:
        for stale in [k for k, (_, closes_at) in self._windows.items() if closes_at <= now]:
            del self._windows[stale]

    def __len__(self) -> int:
        return len(self._windows)

    async def close(self) -> None:
        """Nothing to release."""


class RedisLimiter:
    """Counters in Redis, shared by every process that uses the same server."""

    def __init__(
        self, url: str, prefix: str = "rakuten:ratelimit:", fail_open: bool = False
    ) -> None:
        import redis.asyncio as redis_asyncio

        self._client = redis_asyncio.Redis.from_url(
            url, socket_timeout=0.5, socket_connect_timeout=0.5
        )
        self._script = self._client.register_script(_LUA_HIT)
        self._prefix = prefix
        self._warned_at = 0.0
        self.fail_open = fail_open
        # While Redis is down: this process's own counters (unless fail_open).
        self.fallback = MemoryLimiter()

    async def hit(self, key: str, rate: Rate) -> Decision:
        """Count one request of `key` atomically in Redis; while Redis is down, in this
        process's memory (or not at all with `fail_open`)."""
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
                    "rate limiter: Redis unavailable, %s: %s",
                    "not limiting" if self.fail_open else "limiting per process",
                    type(exc).__name__,
                )
            if self.fail_open:
                return Decision(True, rate.limit, 0)
            return self.fallback.hit_now(key, rate)
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


def make_limiter(redis_url: str, fail_open: bool = False) -> Limiter:
    """A Redis limiter when `redis_url` is set (`fail_open`: what it does while Redis is
    down), else an in-memory one."""
    return RedisLimiter(redis_url, fail_open=fail_open) if redis_url else MemoryLimiter()


# Login throttling -----------------------------------------------------------------------

# KEYS[1] hash {failures, locked_until_ms}; ARGV: now_ms, max_failures, lock_ms, lock_max_ms,
# forget_ms. Records one failure; returns {failures, locked_until_ms}.
_LUA_FAIL = """
local failures = redis.call('HINCRBY', KEYS[1], 'failures', 1)
local locked = 0
local over = failures - tonumber(ARGV[2])
if over >= 0 then
  local lock = math.min(tonumber(ARGV[3]) * (2 ^ math.min(over, 30)), tonumber(ARGV[4]))
  locked = tonumber(ARGV[1]) + lock
  redis.call('HSET', KEYS[1], 'locked_until', locked)
end
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return {failures, locked}
"""


@dataclass(frozen=True)
class LoginPolicy:
    """After `max_failures` failed sign-ins of one user name, each attempt must wait a lock
    of `lock_s` seconds, doubled at every further failure up to `lock_max_s`; failures are
    forgotten `forget_s` seconds after the last one, and a success resets them."""

    max_failures: int = 5
    lock_s: float = 1.0
    lock_max_s: float = 300.0
    forget_s: float = 900.0

    def lock_after(self, failures: int) -> float:
        """Seconds locked after the `failures`-th failure (0 below the threshold)."""
        over = failures - self.max_failures
        if over < 0:
            return 0.0
        return float(min(self.lock_s * 2 ** min(over, 30), self.lock_max_s))


def _username_key(username: str) -> str:
    # Never the submitted name itself in memory or Redis (it may be a mistyped password).
    return hashlib.sha256(username.strip().lower().encode("utf-8")).hexdigest()[:32]


class LoginThrottle:
    """Failed sign-ins per user name, in this process or in Redis (shared by replicas).

    While Redis is down the counters live in this process (as the rate limits do).
    """

    def __init__(self, policy: LoginPolicy, redis_url: str = "", max_keys: int = 100_000) -> None:
        self.policy = policy
        self._local: dict[str, tuple[int, float, float]] = {}  # failures, locked, forget_at
        self._lock = threading.Lock()
        self._max_keys = max_keys
        self._client = None
        self._script = None
        if redis_url:
            import redis.asyncio as redis_asyncio

            self._client = redis_asyncio.Redis.from_url(
                redis_url, socket_timeout=0.5, socket_connect_timeout=0.5
            )
            self._script = self._client.register_script(_LUA_FAIL)

    async def retry_after(self, username: str) -> int:
        """Seconds before `username` may try again (0: now)."""
        key = _username_key(username)
        now = time.time()
        if self._client is not None:
            from redis.exceptions import RedisError

            try:
                locked = await self._client.hget(f"rakuten:login:{key}", "locked_until")
            except (RedisError, OSError):
                return self._local_retry_after(key, now)
            return max(0, math.ceil(float(locked or 0) / 1000 - now))
        return self._local_retry_after(key, now)

    def _local_key(self, key: str, now: float) -> str:
        """`key`, or the shared overflow key when the table is full of live entries (new
        names then share one counter: nobody's failures are forgotten under a flood)."""
        if key in self._local or len(self._local) < self._max_keys:
            return key
        for stale in [k for k, v in self._local.items() if v[2] <= now]:
            del self._local[stale]
        return key if len(self._local) < self._max_keys else OVERFLOW_KEY

    def _local_retry_after(self, key: str, now: float) -> int:
        with self._lock:
            key = self._local_key(key, now)
            _, locked, forget_at = self._local.get(key, (0, 0.0, 0.0))
        if forget_at <= now:
            return 0
        return max(0, math.ceil(locked - now))

    async def failed(self, username: str) -> int:
        """Record a failed sign-in; the seconds `username` is now locked for."""
        key = _username_key(username)
        now = time.time()
        policy = self.policy
        if self._client is not None and self._script is not None:
            from redis.exceptions import RedisError

            try:
                _, locked_ms = await self._script(
                    keys=[f"rakuten:login:{key}"],
                    args=[
                        int(now * 1000),
                        policy.max_failures,
                        int(policy.lock_s * 1000),
                        int(policy.lock_max_s * 1000),
                        int(policy.forget_s * 1000),
                    ],
                )
                return max(0, math.ceil(float(locked_ms) / 1000 - now))
            except (RedisError, OSError):
                pass
        with self._lock:
            key = self._local_key(key, now)
            failures, locked, forget_at = self._local.get(key, (0, 0.0, 0.0))
            if forget_at <= now:
                failures, locked = 0, 0.0
            failures += 1
            lock = policy.lock_after(failures)
            if lock > 0:
                locked = now + lock
            self._local[key] = (failures, locked, now + policy.forget_s)
        return max(0, math.ceil(locked - now))

    async def succeeded(self, username: str) -> None:
        """A successful sign-in resets the failures of `username`."""
        key = _username_key(username)
        with self._lock:
            self._local.pop(key, None)
        if self._client is not None:
            from redis.exceptions import RedisError

            with contextlib.suppress(RedisError, OSError):
                await self._client.delete(f"rakuten:login:{key}")

    async def close(self) -> None:
        """Close the Redis connections."""
        if self._client is not None:
            await self._client.aclose()
