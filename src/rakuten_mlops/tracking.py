"""MLflow set-up and run metadata: tracking URI, experiment, params, fingerprints, git.

The default store is a local SQLite database (`sqlite:///mlflow/mlflow.db`) with artifacts
under `mlflow/artifacts`; `MLFLOW_TRACKING_URI` points everything at a server or another
database instead. Directories are created when a command configures tracking, never at
import time.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import mlflow
from mlflow.exceptions import MlflowException

from rakuten_mlops.config import Settings
from rakuten_mlops.data.manifest import sha256_file, sha256_named_files
from rakuten_mlops.errors import ModelError

_MAX_PARAM_LENGTH = 6000  # MLflow's limit on a param value


# How to point the commands at another store (appended to "store not found" errors).
TRACKING_URI_HINT = (
    "set MLFLOW_TRACKING_URI (or RAKUTEN_MLFLOW_TRACKING_URI) to the store's URI, e.g. "
    "sqlite:////absolute/path/to/mlflow/mlflow.db, or run the command from the project folder"
)


def set_tracking_uri(settings: Settings, *, create: bool = True) -> str:
    """Point MLflow (tracking and registry) at the store of the settings; returns the URI.

    Args:
        create: create the directory of a local SQLite database or file store (commands
            that write: `train`). False for read-only commands: a local store that does not
            exist is an error, so that running from another folder never leaves an empty
            `mlflow/mlflow.db` behind.

    Raises:
        ModelError: `create` is false and the local store does not exist (the message names
            the URI in force, the path it resolves to and how to set it).
    """
    uri = settings.tracking_uri()
    if create:
        _ensure_local_store(uri)
    else:
        path = local_store_path(uri)
        if path is not None and not path.exists():
            raise ModelError(
                f"no MLflow tracking store at {path.absolute()} (tracking URI in force: {uri}); "
                f"{TRACKING_URI_HINT}"
            )
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return uri


def uses_tracking_store(model: str) -> bool:
    """Whether loading `model` reads the tracking store (`models:/...`, `runs:/...` URIs)."""
    return str(model).startswith(("models:", "runs:"))


def describe_tracking_uri() -> str:
    """The tracking URI MLflow uses now and how to change it, for "not found" errors."""
    uri = mlflow.get_tracking_uri()
    path = local_store_path(uri)
    where = f" = {path.absolute()}" if path is not None else ""
    return f"tracking URI in force: {uri}{where}; to use another store, {TRACKING_URI_HINT}"


def local_store_path(uri: str) -> Path | None:
    """The local file or folder of a SQLite or file-store URI (None for servers, :memory:)."""
    parsed = urlparse(uri)
    if parsed.scheme == "sqlite":
        # sqlite:///relative/path.db -> "relative/path.db"; sqlite:////abs -> "/abs".
        raw = unquote(uri.split("sqlite:///", 1)[1]) if uri.startswith("sqlite:///") else ""
        return Path(raw).expanduser() if raw and raw != ":memory:" else None
    if parsed.scheme in ("", "file"):
        return Path(unquote(parsed.path)).expanduser()
    return None


def configure_tracking(settings: Settings, experiment: str | None = None) -> str:
    """Point MLflow at the tracking store of the settings and select the experiment.

    Creates the experiment when it does not exist yet: on a local store with
    `settings.mlflow_artifact_root` as its artifact location (so artifacts never land in the
    current directory); on a tracking server with the server's own (its artifact store, e.g.
    S3 through `--serve-artifacts`), where every client can read them, not one machine's disk.

    Returns:
        The experiment id.

    Raises:
        ModelError: the tracking store cannot be reached or the experiment is deleted.
    """
    uri = set_tracking_uri(settings)
    name = experiment or settings.mlflow_experiment
    try:
        found = mlflow.get_experiment_by_name(name)
        if found is None and urlparse(uri).scheme in ("http", "https"):
            experiment_id = mlflow.create_experiment(name)
        elif found is None:
            artifact_root = settings.mlflow_artifact_root.expanduser().resolve()
            artifact_root.mkdir(parents=True, exist_ok=True)
            experiment_id = mlflow.create_experiment(name, artifact_location=artifact_root.as_uri())
        elif found.lifecycle_stage == "deleted":
            raise ModelError(
                f"MLflow experiment {name!r} is deleted in {uri}; restore it or set "
                "RAKUTEN_MLFLOW_EXPERIMENT to another name"
            )
        else:
            experiment_id = found.experiment_id
        mlflow.set_experiment(experiment_id=experiment_id)
    except MlflowException as exc:
        raise ModelError(f"cannot use the MLflow tracking store {uri}: {exc.message}") from exc
    return str(experiment_id)


def _ensure_local_store(uri: str) -> None:
    """Create the parent directory of a SQLite database or a local file store."""
    path = local_store_path(uri)
    if path is None:
        return
    if urlparse(uri).scheme == "sqlite":
        path.parent.mkdir(parents=True, exist_ok=True)
    else:
        path.mkdir(parents=True, exist_ok=True)


def flatten_params(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Flatten nested parameters into dotted keys with string values (MLflow params).

    Lists become their JSON-like text; values longer than MLflow accepts are cut.
    """
    flat: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_params(value, prefix=f"{name}."))
        else:
            flat[name] = str(value)[:_MAX_PARAM_LENGTH]
    return flat


def fingerprint_files(paths: Iterable[Path]) -> str:
    """SHA-256 over the names and contents of files (the dataset fingerprint).

    Raises:
        FileNotFoundError: a file is missing.
    """
    return sha256_named_files((path.name, path) for path in sorted(Path(p) for p in paths))


def get_git_commit(directory: Path = Path()) -> str | None:
    """The commit checked out in `directory` (with `-dirty` when modified), None outside git."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=directory,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=directory,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{commit}-dirty" if status else commit or None


def hash_file(path: Path) -> str | None:
    """SHA-256 of a file, None when it does not exist (e.g. `dvc.lock`)."""
    return sha256_file(path) if path.is_file() else None
