"""Images and the compose stack, checked offline: hadolint, the compose schema, `docker-compose
config` (the Debian package; no engine needed), and the rules the deployment relies on."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DOCKERFILES = sorted((REPO / "docker").glob("*.Dockerfile"))
# Every Dockerfile held to the same rules: the roles', and the Bento's (deploy/bentoml/).
ALL_DOCKERFILES = [*DOCKERFILES, REPO / "deploy/bentoml/Dockerfile"]
BIN = Path(sys.executable).parent
# The API's secrets: empty in .env.example (dev generates them), required by compose.
API_SECRETS = {
    "RAKUTEN_JWT_SECRET": "compose-check-jwt-secret-0123456789abcdef01234567",
    "RAKUTEN_ADMIN_PASSWORD": "compose-check-admin-password",
}


def _instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined, comments dropped."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text(encoding="utf-8"))
    rows = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            rows.append((keyword.upper(), rest.strip()))
    return rows


def test_every_role_has_an_image() -> None:
    assert [p.name for p in DOCKERFILES] == [
        "airflow.Dockerfile",
        "api.Dockerfile",
        "mlflow.Dockerfile",
        "trainer.Dockerfile",
    ]


@pytest.mark.parametrize("dockerfile", ALL_DOCKERFILES, ids=lambda p: p.parent.name + "/" + p.stem)
def test_dockerfile_passes_hadolint(dockerfile: Path) -> None:
    result = subprocess.run(
        [str(BIN / "hadolint"), "--config", str(REPO / ".hadolint.yaml"), str(dockerfile)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("dockerfile", ALL_DOCKERFILES, ids=lambda p: p.parent.name + "/" + p.stem)
def test_dockerfile_is_multi_stage_slim_non_root_with_healthcheck(dockerfile: Path) -> None:
    rows = _instructions(dockerfile)
    keywords = [k for k, _ in rows]
    assert keywords.count("FROM") >= 2, "multi-stage: a builder and a runtime stage"
    assert any(k == "ARG" and v.startswith("PYTHON_IMAGE=python:3.11-slim") for k, v in rows)
    last_stage = keywords[len(keywords) - 1 - keywords[::-1].index("FROM") :]
    users = [v for k, v in rows[len(rows) - len(last_stage) :] if k == "USER"]
    assert users and not users[-1].startswith(("0", "root")), "the runtime runs as non-root"
    assert "HEALTHCHECK" in last_stage
    for keyword, value in rows:
        # `--no-deps` installs the package alone, its dependencies pinned by an earlier layer.
        pinned_elsewhere = "-r " in value or "--no-deps" in value
        if keyword == "RUN" and "pip install" in value and not pinned_elsewhere:
            assert "-c " in value and "lock.txt" in value, f"unpinned pip install: {value}"
        if keyword in {"ENV", "ARG"}:
            assert not re.search(r"(PASSWORD|SECRET|TOKEN|ACCESS_KEY)\w*=\S", value), value


def test_dockerignore_sends_code_and_pins_but_no_data_models_or_secrets() -> None:
    lines = (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert patterns[0] == "**", "allow-list: everything is excluded first"
    allowed = [p[1:] for p in patterns if p.startswith("!")]
    for forbidden in ("data", "models", "mlflow", ".env", ".venv", "reports"):
        assert not any(a.split("/")[0] == forbidden for a in allowed), forbidden
    assert "**/.env" in patterns
    for dockerfile in DOCKERFILES:
        for keyword, value in _instructions(dockerfile):
            if keyword == "COPY" and "--from=" not in value:
                sources = [s for s in value.split()[:-1] if not s.startswith("--")]
                for source in sources:
                    assert any(
                        source in (a, a.removesuffix("/**"))
                        or source.startswith(a.removesuffix("**"))
                        for a in allowed
                    ), f"{dockerfile.name}: COPY {source} is excluded by .dockerignore"


def _compose_variables() -> set[str]:
    text = (REPO / "compose.yaml").read_text(encoding="utf-8")
    return set(re.findall(r"(?<!\$)\$\{([A-Z0-9_]+)", text))


def test_compose_file_matches_the_compose_specification() -> None:
    result = subprocess.run(
        [
            str(BIN / "check-jsonschema"),
            "--builtin-schema",
            "vendor.compose-spec",
            str(REPO / "compose.yaml"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_docker_compose_config_passes_with_the_documented_settings() -> None:
    docker_compose = shutil.which("docker-compose")
    assert docker_compose, "docker-compose missing: run scripts/install-system-deps.sh"
    env = {"PATH": "/usr/bin:/bin"}
    base = [docker_compose, "--env-file", str(REPO / ".env.example"), "-f", "compose.yaml"]
    profiles = ["--profile", "core", "--profile", "monitoring", "--profile", "orchestration"]
    result = subprocess.run(
        [*base, *profiles, "config", "-q"],
        cwd=REPO, env={**env, **API_SECRETS}, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    # The API's secrets are not in .env.example: without them compose refuses, naming them.
    for name in API_SECRETS:
        without = {**env, **{k: v for k, v in API_SECRETS.items() if k != name}}
        refused = subprocess.run(
            [*base, *profiles, "config", "-q"],
            cwd=REPO, env=without, capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert refused.returncode != 0 and name in refused.stderr, (name, refused.stderr)
    # Without the passwords of .env the stack refuses to start, naming the setting.
    empty = REPO / "tests" / "deploy" / "empty.env"
    missing = subprocess.run(
        [docker_compose, "--env-file", str(empty), "-f", "compose.yaml", "config", "-q"],
        cwd=REPO, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert missing.returncode != 0 and "POSTGRES_PASSWORD" in missing.stderr


def test_the_stand_ins_replace_every_third_party_image_but_grafana() -> None:
    # deploy/compose/standins.yaml: where no registry answers, every image compose would pull
    # is built from Debian's packages (docker/standins/Dockerfile, one target per service).
    linted = subprocess.run(
        [str(BIN / "hadolint"), "--config", str(REPO / ".hadolint.yaml"), str(REPO / "docker/standins/Dockerfile")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert linted.returncode == 0, linted.stdout + linted.stderr
    docker_compose = shutil.which("docker-compose")
    assert docker_compose
    merged = subprocess.run(
        [docker_compose, "--env-file", str(REPO / ".env.example"), "-f", "compose.yaml",
         "-f", "deploy/compose/standins.yaml", "--profile", "core", "--profile", "monitoring",
         "--profile", "train", "config"],
        cwd=REPO, env={"PATH": "/usr/bin:/bin", **API_SECRETS}, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert merged.returncode == 0, merged.stderr
    enabled = {"core", "monitoring", "train"}
    services = {
        name: service
        for name, service in yaml.safe_load(merged.stdout)["services"].items()
        if enabled & set(service.get("profiles", []))
    }
    assert "grafana" not in services  # profile `grafana`: no Debian package to stand in
    assert {
        "postgres",
        "redis",
        "minio",
        "minio-init",
        "nginx",
        "prometheus",
        "alertmanager",
    } <= set(services)
    targets = set(
        re.findall(r"^FROM \S+ AS (\S+)", (REPO / "docker/standins/Dockerfile").read_text(), re.M)
    )
    for name, service in services.items():
        image = service["image"]
        assert image.startswith("rakuten-mlops/"), f"{name} would pull {image}"
        role = image.split("/")[1].split(":")[0]
        if role.startswith("standin-"):
            assert role.removeprefix("standin-") in targets, image
        else:
            assert (REPO / "docker" / f"{role}.Dockerfile").is_file(), image


def test_compose_topology_profiles_health_checks_and_settings() -> None:
    compose = yaml.safe_load((REPO / "compose.yaml").read_text(encoding="utf-8"))
    services = compose["services"]
    profiles = {name: set(s.get("profiles", [])) for name, s in services.items()}
    core = {n for n, p in profiles.items() if "core" in p}
    assert {"api-1", "api-2", "nginx", "redis", "postgres", "mlflow", "minio"} <= core
    assert {n for n, p in profiles.items() if "monitoring" in p} == {
        "prometheus",
        "alertmanager",
        "secrets-check",  # every profile checks the secrets first
    }
    # Grafana has a profile of its own (make compose-up adds it where its image exists).
    assert {n for n, p in profiles.items() if "grafana" in p} == {
        "grafana", "prometheus", "alertmanager", "secrets-check"
    }  # fmt: skip
    assert "airflow" in {n for n, p in profiles.items() if "orchestration" in p}
    for name, service in services.items():
        if name not in {"minio-init", "secrets-check", "trainer"}:  # one-shot jobs
            assert "healthcheck" in service, name
        for dependency, condition in service.get("depends_on", {}).items():
            assert condition["condition"] in {
                "service_healthy",
                "service_completed_successfully",
            }, (name, dependency)
            # The one-shot trainer runs against a started stack (scripts/compose.sh train).
            alongside = {"core"} if name == "trainer" else set()
            assert profiles[dependency] & (profiles[name] | alongside), (name, dependency)
    for service in services.values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("${"):  # a path the operator sets (.env.example documents it)
                assert source[2:].split(":-")[0] in (REPO / ".env.example").read_text(), source
            elif source.startswith("./"):
                assert (REPO / source).exists() or source.startswith(("./monitoring",)), source
            else:
                assert source in compose["volumes"], f"named volume {source} not declared"
    documented = set(
        re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", (REPO / ".env.example").read_text(), re.M)
    )
    undocumented = _compose_variables() - documented
    assert not undocumented, f"compose settings missing from .env.example: {undocumented}"


def test_compose_api_runs_secured_behind_nginx() -> None:
    """prod, shared limits in Redis, metrics on a port Prometheus scrapes (not published,
    not behind nginx), and X-Forwarded-For trusted from nginx's fixed address only."""
    compose = yaml.safe_load((REPO / "compose.yaml").read_text(encoding="utf-8"))
    services = compose["services"]
    nginx_ip = services["nginx"]["networks"]["backend"]["ipv4_address"]
    prometheus = yaml.safe_load(
        (REPO / "deploy" / "compose" / "prometheus" / "prometheus.yml").read_text()
    )
    job = next(j for j in prometheus["scrape_configs"] if j["job_name"] == "rakuten-service")
    targets = [t for c in job["static_configs"] for t in c["targets"]]
    for name in ("api-1", "api-2"):
        api = services[name]
        env = api["environment"]
        assert env["RAKUTEN_ENV"] == "prod"
        assert env["RAKUTEN_REDIS_URL"].startswith("redis://redis:")
        assert env["RAKUTEN_JWT_SECRET"].startswith("${RAKUTEN_JWT_SECRET:?")
        assert env["RAKUTEN_ADMIN_PASSWORD"].startswith("${RAKUTEN_ADMIN_PASSWORD:?")
        assert env["RAKUTEN_FORWARDED_ALLOW_IPS"] == nginx_ip
        assert f"{name}:{env['RAKUTEN_METRICS_PORT']}" in targets
        assert "ports" not in api
    assert "ports" not in services["redis"]
    conf = (REPO / "deploy" / "compose" / "nginx" / "nginx.conf").read_text()
    assert "X-Forwarded-For $proxy_add_x_forwarded_for" in conf


def test_workflows_are_valid_and_build_every_image() -> None:
    workflows = sorted((REPO / ".github" / "workflows").glob("*.yml"))
    result = subprocess.run(
        [str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.github-workflows"]
        + [str(w) for w in workflows],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    deploy = yaml.safe_load((REPO / ".github" / "workflows" / "deploy.yml").read_text())
    roles = deploy["jobs"]["images"]["strategy"]["matrix"]["role"]
    assert sorted(roles) == sorted(p.name.removesuffix(".Dockerfile") for p in DOCKERFILES)
    build = next(s for s in deploy["jobs"]["images"]["steps"] if "build-push" in s.get("uses", ""))
    assert "github.sha" in build["with"]["tags"]
    assert "refs/heads/main" in build["with"]["push"]
