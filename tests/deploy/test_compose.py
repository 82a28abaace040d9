"""compose.yaml started for real (`make compose-up`), smoke- and failover-tested through nginx.

The stack runs the project's images (built here, layers cached between runs) and, where no
image registry answers, the stand-ins of deploy/compose/standins.yaml. A model gets in the way
an operator's does: the `trainer` service trains on the sample (mounted read-only) with
lighter parameters than params.yaml (the same code path, a minute instead of three) and
registers the champion in the stack's MLflow, whose artifacts live in the S3 store.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import yaml

from docker_testing import DOCKER, REPO, run
from service_testing import free_port

pytestmark = pytest.mark.slow

PROJECT = "rakuten-smoke"
MODEL_NAME = "rakuten-product-classifier"


@dataclass
class Stack:
    env: dict[str, str]
    url: str
    mlflow_url: str
    prometheus_url: str
    admin_password: str
    images: list[Path] = field(default_factory=list)

    def compose(self, *args: str, timeout: float = 900) -> str:
        done = run(
            "bash", str(REPO / "scripts/compose.sh"), *args, timeout=timeout, env=self.env, cwd=REPO
        )
        assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
        return done.stdout

    def container(self, service: str) -> str:
        ids = run(DOCKER, "ps", "-aq", "--filter", f"label=com.docker.compose.project={PROJECT}",
                  "--filter", f"label=com.docker.compose.service={service}").stdout.split()  # fmt: skip
        assert len(ids) == 1, (service, ids)
        return ids[0]

    def token(self, http: httpx.Client) -> dict[str, str]:
        answer = http.post("/token", data={"username": "admin", "password": self.admin_password})
        assert answer.status_code == 200, answer.text
        return {"Authorization": f"Bearer {answer.json()['access_token']}"}


def _quick_params(path: Path) -> Path:
    """params.yaml with a lighter model (one linear model, 2 image epochs): same code path."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["model"]["sparse"].update(nb_svm=False, second_view=False)
    params["model"]["image"].update(epochs=2)
    path.write_text(yaml.safe_dump(params))
    return path


def _env_value(env_file: Path, key: str) -> str:
    for line in env_file.read_text().splitlines():
        if line.startswith(f"{key}="):
            return line.split("=", 1)[1].strip().strip("'\"")
    raise AssertionError(f"{key} missing from {env_file}")


@pytest.fixture(scope="module")
def stack(
    docker_engine: None, sample_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    work = tmp_path_factory.mktemp("compose")
    ports = {"API_PORT": free_port(), "MLFLOW_PORT": free_port(), "PROMETHEUS_PORT": free_port()}
    env = {
        **os.environ,
        "ENV_FILE": str(work / ".env"),
        "COMPOSE_PROJECT_NAME": PROJECT,
        "COMPOSE_IMAGE_TAG": "test",
        "IMAGE_TAG": "test",
        **{key: str(port) for key, port in ports.items()},
        # MLflow answers only the Host headers it knows (DNS-rebinding guard).
        "MLFLOW_ALLOWED_HOSTS": f"mlflow,mlflow:5000,127.0.0.1:{ports['MLFLOW_PORT']}",
        "COMPOSE_RELOAD_POLL_S": "3",
        # The failover load is one user's: the per-user limits would answer 429.
        "RAKUTEN_RATE_LIMIT_PREDICT": "100000/minute",
        "RAKUTEN_RATE_LIMIT_API": "100000/minute",
        "COMPOSE_TRAIN_PARAMS": str(_quick_params(work / "params.yaml")),
        "COMPOSE_TRAIN_SOURCE": str(sample_dir.resolve()),
    }
    roles = ["api", "mlflow", "trainer"]
    if run(
        "bash", str(REPO / "scripts/compose.sh"), "official-images-present", env=env, cwd=REPO
    ).returncode:
        roles.append("standins")
    built = run(
        "bash", str(REPO / "scripts/build-images.sh"), *roles, timeout=3000, env=env, cwd=REPO
    )
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    stack = Stack(
        env=env,
        url=f"http://127.0.0.1:{ports['API_PORT']}",
        mlflow_url=f"http://127.0.0.1:{ports['MLFLOW_PORT']}",
        prometheus_url=f"http://127.0.0.1:{ports['PROMETHEUS_PORT']}",
        admin_password="",
    )
    try:
        print(stack.compose("up"))
        stack.admin_password = _env_value(work / ".env", "RAKUTEN_ADMIN_PASSWORD")
        print(stack.compose("train", timeout=1200))
        _wait_for_the_champion(stack)
        yield stack
    finally:
        logs = run(
            "bash", str(REPO / "scripts/compose.sh"), "logs", "--tail", "40", env=env, cwd=REPO
        )
        print(logs.stdout[-20000:])
        stack.compose("down")
        label = f"label=com.docker.compose.project={PROJECT}"
        left = {
            kind: run(DOCKER, *command, "-q", "--filter", label).stdout.split()
            for kind, command in {
                "containers": ("ps", "-a"),
                "networks": ("network", "ls"),
                "volumes": ("volume", "ls"),
            }.items()
        }
        assert left == {"containers": [], "networks": [], "volumes": []}, left


def _wait_for_the_champion(stack: Stack, timeout: float = 180) -> None:
    """Both replicas' reload polls load the registered champion (nginx alternates them)."""
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=stack.url, timeout=10) as http:
        headers = stack.token(http)
        loaded = 0
        while loaded < 4:  # four answers in a row from the balanced pair
            answer = http.get("/v1/model", headers=headers)
            loaded = loaded + 1 if answer.status_code == 200 and answer.json()["version"] else 0
            assert time.monotonic() < deadline, (
                f"no champion served: {answer.status_code} {answer.text}"
            )
            time.sleep(0.5 if loaded else 2)


def test_the_stack_answers_through_nginx_with_the_registered_champion(
    stack: Stack, sample_dir: Path
) -> None:
    jpeg = next((sample_dir / "images" / "image_train").glob("*.jpg")).read_bytes()
    with httpx.Client(base_url=stack.url, timeout=30) as http:
        headers = stack.token(http)
        predicted = http.post(
            "/v1/predict",
            data={"designation": "Piscine tubulaire ronde 3,66 m x 76 cm"},
            files={"image": ("p.jpg", jpeg, "image/jpeg")},
            headers=headers,
        )
        assert predicted.status_code == 200, predicted.text
        prediction = predicted.json()
        assert prediction["has_image"] is True
        # The correction lands once the replica's recorder has written the prediction.
        deadline = time.monotonic() + 30
        while True:
            feedback = http.post(
                "/v1/feedback",
                json={"prediction_id": prediction["prediction_id"], "prdtypecode": 2583},
                headers=headers,
            )
            if feedback.status_code in (200, 201) or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert feedback.status_code in (200, 201), feedback.text
        assert feedback.json()["prdtypecode"] == 2583
        console = http.get("/console/login")
        assert console.status_code == 200 and "<form" in console.text
        served = http.get("/v1/model", headers=headers).json()

    registry = httpx.get(
        f"{stack.mlflow_url}/api/2.0/mlflow/registered-models/alias",
        params={"name": MODEL_NAME, "alias": "champion"},
        timeout=10,
    ).json()["model_version"]
    assert served["version"] == registry["version"]

    # Both replicas scraped by Prometheus (15 s interval).
    deadline = time.monotonic() + 60
    while True:
        targets = httpx.get(f"{stack.prometheus_url}/api/v1/targets", timeout=10).json()["data"][
            "activeTargets"
        ]
        api = {
            t["labels"]["instance"]: t["health"]
            for t in targets
            if t["labels"]["job"] == "rakuten-service"
        }
        if api == {"api-1:9100": "up", "api-2:9100": "up"} or time.monotonic() > deadline:
            break
        time.sleep(3)
    assert api == {"api-1:9100": "up", "api-2:9100": "up"}

    # The model's files are in the S3 bucket, not on the MLflow server's disk.
    listing = run(DOCKER, "exec", stack.container("minio"), "python", "-c",
                  "import boto3; s3 = boto3.client('s3', endpoint_url='http://127.0.0.1:9000', "
                  "region_name='us-east-1', aws_access_key_id='x', aws_secret_access_key='x'); "
                  "print('\\n'.join(o['Key'] for o in s3.list_objects_v2(Bucket='mlflow-artifacts', "
                  "MaxKeys=1000).get('Contents', [])))")  # fmt: skip
    assert listing.returncode == 0, listing.stderr
    keys = listing.stdout.split()
    assert any(key.endswith("/MLmodel") for key in keys), keys[:20]
    local = run(
        DOCKER,
        "exec",
        stack.container("mlflow"),
        "sh",
        "-c",
        "find / -xdev -name MLmodel 2>/dev/null | head -5",
    )
    assert local.stdout.strip() == ""


def test_a_replica_killed_under_load_costs_no_request_and_rejoins(stack: Stack) -> None:
    # 8 clients predict without pause from before the kill until the restarted replica has
    # served predictions again: the kill, the restart and the rejoin all happen under load.
    clients = 8
    results: list[int | str] = []
    lock = threading.Lock()
    stop = threading.Event()
    bodies: list[str] = []
    titles = ["Piscine tubulaire ronde", "Lot de 3 figurines Star Wars", "Jeu PS4 FIFA 19"]

    with httpx.Client(base_url=stack.url, timeout=30) as http:
        headers = stack.token(http)

    def client(n: int) -> None:
        with httpx.Client(base_url=stack.url, timeout=30, headers=headers) as http:
            while not stop.is_set():
                try:
                    data = {"designation": titles[n % len(titles)]}
                    answer = http.post("/v1/predict", data=data)
                    status: int | str = answer.status_code
                    if status != 200 and len(bodies) < 5:
                        bodies.append(f"{time.strftime('%H:%M:%S')} {status} {answer.text[:200]}")
                except httpx.HTTPError as exc:
                    status = type(exc).__name__
                with lock:
                    results.append(status)

    api_1 = stack.container("api-1")
    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    start = time.monotonic()
    for thread in threads:
        thread.start()
    try:
        _wait_until(lambda: len(results) >= 100)
        assert run(DOCKER, "kill", api_1).returncode == 0
        killed_at = len(results)
        print(f"{time.strftime('%H:%M:%S')} api-1 killed")
        _wait_until(lambda: len(results) >= killed_at + 1000)
        assert run(DOCKER, "start", api_1).returncode == 0
        started_at = len(results)
        print(f"{time.strftime('%H:%M:%S')} api-1 started")
        # Rejoined: healthy, and nginx sends it traffic again (its prediction counter, reset
        # by the restart, grows).
        _wait_until(lambda: _predictions_served(api_1) >= 20, timeout=240, every=1.0)
        rejoined_at = len(results)
        _wait_until(lambda: len(results) >= max(500, rejoined_at + 50))
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
    elapsed = time.monotonic() - start
    failures = [r for r in results if r != 200]
    print(
        f"failover: {len(results)} predictions by {clients} clients in {elapsed:.1f} s, "
        f"{len(failures)} failed; api-1 killed after {killed_at}, started after {started_at}, "
        f"serving again after {rejoined_at}"
    )
    assert len(results) >= 500
    if failures:
        logs = run(DOCKER, "logs", api_1)
        lines = (logs.stdout + logs.stderr).splitlines()
        loud = (
            '"level": "ERROR"',
            '"level": "WARNING"',
            "service started",
            "models loaded",
            "Uvicorn running",
            "Traceback",
            "Error",
        )
        print("\n".join(line[:600] for line in lines if any(w in line for w in loud))[-15000:])
    assert failures == [], bodies
    _wait_until(lambda: _health(api_1) == "healthy", timeout=120, every=1.0)


def _health(container: str) -> str:
    return run(DOCKER, "inspect", "-f", "{{.State.Health.Status}}", container).stdout.strip()


def _predictions_served(container: str) -> float:
    metrics = run(DOCKER, "exec", container, "python", "-c",
                  "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:9100/metrics').read().decode())")  # fmt: skip
    total = 0.0
    for line in metrics.stdout.splitlines():
        if line.startswith("rakuten_predictions_total{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _wait_until(condition: object, timeout: float = 300, every: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(every)
