"""Kubernetes manifests: rendered with kustomize (kubectl's), validated offline against the
Kubernetes schemas (kubernetes-validate, strict), and the properties the platform relies on."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
BIN = Path(sys.executable).parent


def render(overlay: str) -> str:
    result = subprocess.run(
        [str(BIN / "kubectl"), "kustomize", str(K8S / "overlays" / overlay)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture(scope="module", params=["dev", "prod"])
def rendered(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("k8s") / f"{request.param}.yaml"
    path.write_text(render(request.param), encoding="utf-8")
    return path


def by_kind(path: Path) -> dict[tuple[str, str], dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


def test_rendered_manifests_validate_against_the_kubernetes_schemas(rendered: Path) -> None:
    result = subprocess.run(
        [str(BIN / "kubernetes-validate"), "--strict", "--quiet", str(rendered)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    kinds = {kind for kind, _ in by_kind(rendered)}
    assert {
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "ConfigMap",
        "CronJob",
        "Namespace",
    } <= kinds


def test_a_broken_manifest_is_refused(rendered: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text(
        rendered.read_text().replace("maxUnavailable: 0", "maxUnavailble: 0"), encoding="utf-8"
    )
    result = subprocess.run(
        [str(BIN / "kubernetes-validate"), "--strict", "--quiet", str(broken)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0 and "maxUnavailble" in result.stdout + result.stderr


def test_api_deployment_probes_resources_security_and_rollout(rendered: Path) -> None:
    objects = by_kind(rendered)
    api = objects[("Deployment", "rakuten-api")]
    spec = api["spec"]
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    pod = spec["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    (container,) = pod["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert {"requests", "limits"} <= set(container["resources"])
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    env_from = {next(iter(e.values()))["name"] for e in container["envFrom"]}
    assert env_from == {"rakuten-config", "rakuten-secrets"}
    hpa = objects[("HorizontalPodAutoscaler", "rakuten-api")]
    assert hpa["spec"]["scaleTargetRef"]["name"] == "rakuten-api"
    pdb = objects[("PodDisruptionBudget", "rakuten-api")]
    assert pdb["spec"]["selector"]["matchLabels"] == spec["selector"]["matchLabels"]
    # The PDB never blocks every drain: it leaves room below the HPA's minimum.
    if "minAvailable" in pdb["spec"]:
        assert pdb["spec"]["minAvailable"] < hpa["spec"]["minReplicas"]
    cron = objects[("CronJob", "rakuten-drift-check")]
    job = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert job["args"][:2] == ["monitor", "drift"]
    assert objects[("Deployment", "rakuten-mlflow")]["spec"]["template"]["spec"]["containers"]


def test_api_runs_secured_with_metrics_on_their_own_port(rendered: Path) -> None:
    """prod (secrets refused when missing or placeholders), secrets and the Redis URL from
    the Secret, metrics scraped on RAKUTEN_METRICS_PORT, the ingress trusted as proxy."""
    objects = by_kind(rendered)
    config = objects[("ConfigMap", "rakuten-config")]["data"]
    if rendered.stem == "prod":
        assert config["RAKUTEN_ENV"] == "prod"
    else:  # dev: one generated Secret, the same signing key and admin for every replica
        secret = objects[("Secret", "rakuten-secrets")]["data"]
        assert {"RAKUTEN_JWT_SECRET", "RAKUTEN_ADMIN_PASSWORD", "RAKUTEN_REDIS_URL"} <= set(secret)
    assert config["RAKUTEN_FORWARDED_ALLOW_IPS"]
    assert not {"RAKUTEN_JWT_SECRET", "RAKUTEN_ADMIN_PASSWORD"} & set(config)
    template = yaml.safe_load((K8S / "base" / "secret.template.yaml").read_text())
    assert {"RAKUTEN_JWT_SECRET", "RAKUTEN_ADMIN_PASSWORD", "RAKUTEN_REDIS_URL"} <= set(
        template["stringData"]
    )
    pod = objects[("Deployment", "rakuten-api")]["spec"]["template"]
    port = pod["metadata"]["annotations"]["prometheus.io/port"]
    assert port == config["RAKUTEN_METRICS_PORT"] != "8000"
    (container,) = pod["spec"]["containers"]
    assert int(port) in {p["containerPort"] for p in container["ports"]}
    service = objects[("Service", "rakuten-api")]["spec"]
    exposed = {str(p.get("targetPort", p["port"])) for p in service["ports"]}
    assert not exposed & {port, "metrics"}, exposed


def test_no_real_secret_in_git() -> None:
    template = yaml.safe_load((K8S / "base" / "secret.template.yaml").read_text())
    assert all(
        "CHANGE_ME" in value or not any(w in key for w in ("SECRET", "PASSWORD", "TOKEN", "KEY"))
        for key, value in template["stringData"].items()
    )
    prod = by_kind_text(render("prod"))
    assert not [name for kind, name in prod if kind == "Secret"], "prod Secrets are not in git"


def by_kind_text(text: str) -> set[tuple[str, str]]:
    return {(d["kind"], d["metadata"]["name"]) for d in yaml.safe_load_all(text) if d}


def test_airflow_helm_values_use_the_project_image_and_settings() -> None:
    values = yaml.safe_load((K8S / "airflow" / "values.yaml").read_text())
    assert values["images"]["airflow"]["repository"].endswith("/airflow")
    assert values["postgresql"]["enabled"] is False
    assert "rakuten-secrets" in values["extraEnvFrom"]
    assert values["securityContexts"]["pod"]["runAsNonRoot"] is True
