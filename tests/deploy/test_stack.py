"""The stack without Docker (deploy/local/stack.py), end to end with real processes.

PostgreSQL 15 (service DB + MLflow backend), redis-server, moto's S3 server, the MLflow
tracking server, two `rakuten-mlops serve` replicas (RAKUTEN_ENV=prod) behind nginx, and
Prometheus: a small model trained on the sample is registered into that MLflow and served
through the load balancer to a logged-in user; the rate limits are shared by the two
replicas through Redis (per IP on `/token`, per user on predictions: N allowed in all, not
N per replica, while another caller is still served); Prometheus scrapes both replicas with
the metrics token; one replica is killed mid-traffic; `down` leaves no process, database or
file.
"""

from __future__ import annotations

import importlib.util
import itertools
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]
CONCURRENCY = 4
ADMIN = ("stack-admin", "stack-admin-password-for-tests")
TOKEN_LIMIT = 4
PREDICT_LIMIT = 5
SECURITY_ENV = {
    "RAKUTEN_JWT_SECRET": "stack-test-jwt-secret-0123456789abcdef0123456789",
    "RAKUTEN_ADMIN_USERNAME": ADMIN[0],
    "RAKUTEN_ADMIN_PASSWORD": ADMIN[1],
    "RAKUTEN_RATE_LIMIT_PREDICT": f"{PREDICT_LIMIT}/minute",
    "RAKUTEN_RATE_LIMIT_TOKEN": f"{TOKEN_LIMIT}/minute",
}
# The traffic of the test (~175 predictions in seconds) is spread over API keys of a client
# user, each used at most USES_PER_KEY times: under PREDICT_LIMIT even if nginx retries a
# request that the killed replica had counted already.
USES_PER_KEY = 3
TRAFFIC = 1 + 12 + 160 + 1


def load_stack_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("stack", REPO / "deploy" / "local" / "stack.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["stack"] = module
    spec.loader.exec_module(module)
    return module


def _processes_in_groups(pgids: set[int]) -> list[str]:
    out = subprocess.run(
        ["ps", "-eo", "pid=,pgid=,stat=,args="], capture_output=True, text=True, check=True
    ).stdout
    return [
        line
        for line in out.splitlines()
        if int(line.split()[1]) in pgids and not line.split()[2].startswith("Z")
    ]


def request_token(url: str) -> httpx.Response:
    return httpx.post(f"{url}/token", data={"username": ADMIN[0], "password": ADMIN[1]}, timeout=30)


def assert_token_limit_shared(replicas: list[str], used: int) -> None:
    """Token requests alternated between replicas hit one limit (Redis), not one each."""
    granted = used
    for i in range(2 * TOKEN_LIMIT):
        answer = request_token(replicas[i % len(replicas)])
        if answer.status_code == 429:
            assert "Retry-After" in answer.headers
            break
        assert answer.status_code == 200, answer.text
        granted += 1
    assert granted == TOKEN_LIMIT, f"{granted} tokens granted across the replicas"


def predict(url: str, title: str, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(f"{url}/v1/predict", data={"designation": title}, headers=headers, timeout=30)


class KeyRing:
    """API keys handed out USES_PER_KEY times each (thread-safe)."""

    def __init__(self, keys: list[str]) -> None:
        self._uses = itertools.count()
        self._keys = keys
        self._lock = threading.Lock()

    def headers(self) -> dict[str, str]:
        with self._lock:
            use = next(self._uses)
        return {"X-API-Key": self._keys[use // USES_PER_KEY]}


def make_keys(lb: str, admin: dict[str, str], count: int) -> KeyRing:
    """A client user (its own rate-limit windows) with `count` API keys."""
    user = {"username": "merchant", "password": "merchant-password-for-tests", "role": "client"}
    created = httpx.post(f"{lb}/v1/admin/users", json=user, headers=admin, timeout=30)
    assert created.status_code == 201, created.text
    keys = []
    for i in range(count):
        answer = httpx.post(
            f"{lb}/v1/admin/api-keys",
            json={"username": "merchant", "name": f"catalogue sync {i}"},
            headers=admin,
            timeout=30,
        )
        assert answer.status_code == 201, answer.text
        keys.append(answer.json()["key"])
    return KeyRing(keys)


def served_and_limited(metrics: str) -> tuple[float, float]:
    """Predictions served and predictions refused (429) by one replica, from /metrics."""
    served = limited = 0.0
    for line in metrics.splitlines():
        if line.startswith("rakuten_predictions_total{"):
            served += float(line.rsplit(" ", 1)[1])
        if line.startswith('rakuten_rate_limited_total{route="/v1/predict"}'):
            limited += float(line.rsplit(" ", 1)[1])
    return served, limited


@pytest.mark.slow
def test_stack_serves_through_the_load_balancer_survives_a_replica_and_stops_clean(
    sample_model_dir: Path, tmp_path: Path
) -> None:
    stack_module = load_stack_module()
    run_dir = tmp_path / "stack"
    stack = stack_module.up(
        run_dir, register=sample_model_dir, extra_env=SECURITY_ENV, timeout_s=420
    )
    pgids = {p.pid for p in stack.processes}
    names = {p.name for p in stack.processes}
    try:
        assert {p.name for p in stack.processes} == {
            "redis", "s3", "mlflow", "api-1", "api-2", "nginx", "prometheus",
        }  # fmt: skip
        assert len(stack_module.stack_database_objects(stack)) == 3  # 2 databases + role
        assert (stack.admin_username, stack.admin_password) == ADMIN
        lb = stack.urls["api"]
        replicas = [stack.urls["api-1"], stack.urls["api-2"]]
        anonymous = predict(lb, "Roman policier", {})
        assert anonymous.status_code == 401, anonymous.text

        # Log in through the load balancer; the /token limit (per client IP) is shared.
        login = request_token(lb)
        assert login.status_code == 200, login.text
        admin = {"Authorization": f"Bearer {login.json()['access_token']}"}
        assert_token_limit_shared(replicas, used=1)

        # The admin's predictions: PREDICT_LIMIT in all across the replicas, then 429 from
        # each of them, whichever answers.
        first = predict(lb, "Piscine tubulaire autoportante avec pompe de filtration", admin)
        assert first.status_code == 200, first.text
        body = first.json()
        assert body["model"]["version"] == "1" and body["model"]["alias"] == "champion"
        assert body["prdtypecode"] == 2583  # the pool class
        statuses = [
            predict(replicas[i % 2], f"Roman policier poche tome {i}", admin)
            for i in range(PREDICT_LIMIT + 1)
        ]
        assert [r.status_code for r in statuses] == [200] * (PREDICT_LIMIT - 1) + [429, 429]
        assert all("Retry-After" in r.headers for r in statuses[-2:])
        assert predict(lb, "Roman policier poche", admin).status_code == 429
        # Another caller has its own window.
        ring = make_keys(lb, admin, -(-TRAFFIC // USES_PER_KEY))
        other = predict(lb, "Roman policier poche", ring.headers())
        assert other.status_code == 200, other.text

        # Both replicas answer behind the balancer.
        for i in range(12):
            answer = predict(lb, f"Roman policier poche tome {i}", ring.headers())
            assert answer.status_code == 200, answer.text
        metrics_auth = {"Authorization": f"Bearer {stack.metrics_token}"}
        counts = {}
        for url in replicas:
            assert httpx.get(f"{url}/metrics", headers=admin).status_code == 401
            counts[url] = served_and_limited(httpx.get(f"{url}/metrics", headers=metrics_auth).text)
        assert all(served > 0 for served, _ in counts.values()), counts
        assert all(limited >= 1 for _, limited in counts.values()), counts

        # Prometheus scrapes both replicas (with the metrics token).
        deadline = time.monotonic() + 30
        up: list[dict[str, object]] = []
        while time.monotonic() < deadline:
            query = httpx.get(
                f"{stack.urls['prometheus']}/api/v1/query",
                params={"query": 'up{job="rakuten-service"} == 1'},
            ).json()
            up = query["data"]["result"]
            if len(up) == 2:
                break
            time.sleep(1)
        assert len(up) == 2, up

        # One replica killed (SIGKILL) mid-traffic: only requests in flight on it may fail.
        victim = stack.process("api-1")

        def send(i: int) -> int:
            if i == 40:
                stack_module.stop_process(victim, signal.SIGKILL, grace_s=0)
            try:
                title = f"Jeu de cartes pokemon booster {i}"
                return predict(lb, title, ring.headers()).status_code
            except httpx.HTTPError:
                return 0

        with ThreadPoolExecutor(CONCURRENCY) as pool:
            codes = list(pool.map(send, range(160)))
        failed = [i for i, code in enumerate(codes) if code != 200]
        assert len(failed) <= CONCURRENCY, (failed, [codes[i] for i in failed])
        assert all(code == 200 for code in codes[40 + 2 * CONCURRENCY :])
        assert not stack_module._alive(victim)
        after = predict(lb, "Housse de couette 240x220 coton", ring.headers())
        assert after.status_code == 200, after.text
    finally:
        stopped = stack_module.down(run_dir)
    assert set(stopped) == names
    assert _processes_in_groups(pgids) == []
    assert not run_dir.exists()
    assert stack_module.stack_database_objects(stack) == []
