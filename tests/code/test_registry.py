"""Registry aliases on a temporary SQLite store: promote, challenger, rollback, history."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from rakuten_mlops.config import get_settings
from rakuten_mlops.errors import RegistryError
from rakuten_mlops.registry.registry import (
    CHALLENGER,
    CHAMPION,
    ChampionEvent,
    compute_champion_stack,
    get_alias_version,
    list_versions,
    promote_version,
    read_champion_history,
    rollback_champion,
    set_challenger,
)
from rakuten_mlops.tracking import configure_tracking

NAME = "test-classifier"


@pytest.fixture
def client() -> MlflowClient:
    configure_tracking(get_settings())
    return MlflowClient()


def _register(client: MlflowClient, count: int, tmp_path: Path) -> list[str]:
    """Register `count` versions, each from its own run with a distinct metric."""
    client.create_registered_model(NAME)
    run_ids = []
    for i in range(count):
        with mlflow.start_run() as run:
            mlflow.log_metric("test_weighted_f1", 0.5 + i / 10)
        source = tmp_path / f"model-{i}"
        source.mkdir()
        client.create_model_version(NAME, source=str(source), run_id=run.info.run_id)
        run_ids.append(run.info.run_id)
    return run_ids


def test_configure_tracking_creates_store_and_experiment_artifact_root(tmp_path: Path) -> None:
    settings = get_settings()
    experiment_id = configure_tracking(settings)
    experiment = mlflow.get_experiment(experiment_id)
    assert experiment.name == settings.mlflow_experiment
    assert experiment.artifact_location == (tmp_path / "mlartifacts").resolve().as_uri()
    assert (tmp_path / "mlflow.db").is_file()
    # Idempotent: the second call finds the same experiment.
    assert configure_tracking(settings) == experiment_id


def test_on_a_tracking_server_the_experiment_keeps_the_servers_artifact_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A trainer in one container and the API in another: artifacts written under the
    # trainer's own disk (a file: location) could never be loaded by the API.
    import subprocess
    import sys
    import time

    import httpx

    from service_testing import free_port

    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1", "--backend-store-uri", f"sqlite:///{tmp_path}/server.db",
         "--artifacts-destination", str(tmp_path / "server-artifacts"), "--serve-artifacts"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline and server.poll() is None, (
                "mlflow server did not start"
            )
            time.sleep(0.5)
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
        get_settings.cache_clear()
        experiment = mlflow.get_experiment(configure_tracking(get_settings()))
        assert experiment.artifact_location.startswith("mlflow-artifacts:"), (
            experiment.artifact_location
        )
        assert not (tmp_path / "mlartifacts").exists()
    finally:
        server.terminate()
        server.wait(timeout=30)
        get_settings.cache_clear()


def test_list_versions_newest_first_with_run_metrics_and_aliases(
    client: MlflowClient, tmp_path: Path
) -> None:
    run_ids = _register(client, 3, tmp_path)
    promote_version(client, NAME, 2)
    set_challenger(client, NAME, 3)
    versions = list_versions(client, NAME)
    assert [v.version for v in versions] == [3, 2, 1]
    assert [v.run_id for v in versions] == run_ids[::-1]
    assert versions[0].aliases == [CHALLENGER]
    assert versions[1].aliases == [CHAMPION]
    assert versions[1].metrics["test_weighted_f1"] == pytest.approx(0.6)
    assert "champion_since" in versions[1].tags


def test_promote_records_history_and_rollback_walks_back_step_by_step(
    client: MlflowClient, tmp_path: Path
) -> None:
    _register(client, 3, tmp_path)
    assert promote_version(client, NAME, 1) is None
    assert promote_version(client, NAME, 2) == 1
    assert promote_version(client, NAME, 2) == 2  # no-op, not recorded twice
    promote_version(client, NAME, 3)
    assert [e.version for e in read_champion_history(client, NAME)] == [1, 2, 3]
    assert "champion_until" in client.get_model_version(NAME, "2").tags

    assert rollback_champion(client, NAME) == (3, 2)
    assert get_alias_version(client, NAME, CHAMPION) == 2
    assert "champion_until" not in client.get_model_version(NAME, "2").tags
    assert rollback_champion(client, NAME) == (2, 1)
    assert get_alias_version(client, NAME, CHAMPION) == 1
    with pytest.raises(RegistryError, match="no previous champion"):
        rollback_champion(client, NAME)
    actions = [e.action for e in read_champion_history(client, NAME)]
    assert actions == ["promote", "promote", "promote", "rollback", "rollback"]


def test_rollback_after_alias_moved_outside_the_tool(client: MlflowClient, tmp_path: Path) -> None:
    _register(client, 3, tmp_path)
    promote_version(client, NAME, 1)
    client.set_registered_model_alias(NAME, CHAMPION, "3")  # e.g. by hand in the MLflow UI
    assert rollback_champion(client, NAME) == (3, 1)


def test_challenger_alias_does_not_touch_champion(client: MlflowClient, tmp_path: Path) -> None:
    _register(client, 2, tmp_path)
    promote_version(client, NAME, 1)
    assert set_challenger(client, NAME, 2) is None
    assert get_alias_version(client, NAME, CHAMPION) == 1
    assert get_alias_version(client, NAME, CHALLENGER) == 2
    assert [e.version for e in read_champion_history(client, NAME)] == [1]


def test_clear_errors_for_unknown_model_version_and_missing_champion(
    client: MlflowClient, tmp_path: Path
) -> None:
    with pytest.raises(RegistryError, match="no registered model named 'test-classifier'"):
        list_versions(client, NAME)
    _register(client, 2, tmp_path)
    with pytest.raises(RegistryError, match=r"has no version 7 \(versions: 1, 2\)"):
        promote_version(client, NAME, 7)
    with pytest.raises(RegistryError, match="has no champion"):
        rollback_champion(client, NAME)


@pytest.mark.parametrize(
    ("events", "stack"),
    [
        ([], []),
        ([("promote", 1), ("promote", 2)], [1, 2]),
        ([("promote", 1), ("promote", 2), ("rollback", 1)], [1]),
        ([("promote", 1), ("promote", 2), ("rollback", 1), ("promote", 3)], [1, 3]),
        ([("promote", 1), ("promote", 1)], [1]),
    ],
)
def test_champion_stack_replays_history(events: list[tuple[str, int]], stack: list[int]) -> None:
    history = [ChampionEvent(version=v, action=a, at="") for a, v in events]
    assert compute_champion_stack(history) == stack


@pytest.mark.parametrize(
    "command",
    [
        ["registry", "list"],
        ["registry", "promote", "1"],
        ["predict", "--model", "models:/rakuten-product-classifier@champion"],
        ["evaluate", "--model", "models:/rakuten-product-classifier@champion"],
    ],
    ids=["registry-list", "registry-promote", "predict", "evaluate"],
)
def test_read_only_commands_elsewhere_create_no_store_and_say_where_they_looked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: list[str]
) -> None:
    from typer.testing import CliRunner

    from rakuten_mlops.cli import app

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("RAKUTEN_MLFLOW_TRACKING_URI", raising=False)
    get_settings.cache_clear()
    if command[0] == "predict":
        (elsewhere / "x.csv").write_text(",designation\n0,piscine\n", encoding="utf-8")
        command = [*command, "--input", "x.csv", "--output", "p.csv"]
    if command[0] == "evaluate":
        processed = tmp_path / "processed"  # evaluate loads its split before the model
        _write_minimal_split(processed)
        command = [*command, "--data-dir", str(processed)]
    result = CliRunner().invoke(app, command)
    message = " ".join(result.output.split())
    assert result.exit_code == 1, result.output
    assert "no MLflow tracking store at" in message
    assert str(elsewhere / "mlflow" / "mlflow.db") in message
    assert "tracking URI in force: sqlite:///mlflow/mlflow.db" in message
    assert "MLFLOW_TRACKING_URI" in message
    assert "RAKUTEN_MLFLOW_TRACKING_URI" in message
    assert list(elsewhere.iterdir()) == ([elsewhere / "x.csv"] if command[0] == "predict" else [])


def test_model_not_found_in_an_existing_store_names_the_tracking_uri(
    client: MlflowClient, tmp_path: Path
) -> None:
    from rakuten_mlops.errors import ModelError
    from rakuten_mlops.models.pyfunc import load_pyfunc_model

    uri = get_settings().tracking_uri()
    with pytest.raises(ModelError) as error:
        load_pyfunc_model("models:/nothing-here@champion")
    assert f"tracking URI in force: {uri}" in str(error.value)
    assert "MLFLOW_TRACKING_URI" in str(error.value)
    with pytest.raises(RegistryError) as listing:
        list_versions(client, "nothing-here")
    assert f"tracking URI in force: {uri}" in str(listing.value)


def _write_minimal_split(processed: Path) -> None:
    """A one-class `test` split in the processed layout (enough to reach model loading)."""
    import json

    import pandas as pd

    from rakuten_mlops import schema

    processed.mkdir(parents=True)
    frame = pd.DataFrame({column: [] for column in schema.PROCESSED_COLUMNS})
    frame.to_parquet(processed / "test.parquet")
    (processed / schema.PROCESSED_METADATA_FILE).write_text(
        json.dumps({"raw_dir": str(processed)}), encoding="utf-8"
    )
