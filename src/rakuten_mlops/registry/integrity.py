"""The SHA-256 of a registered model's files: recorded at registration, checked at loading.

A pyfunc model runs code and unpickles objects when it loads, so the service must load
exactly what training registered. `record_artifacts_digest` tags a model version with the
digest of its files (`artifacts_sha256`); `fetch_verified_model` downloads a version and
refuses it when its files do not match that tag. A version without the tag (registered
before the tag existed, or by hand) is refused in `RAKUTEN_ENV=prod` and loaded with a
warning elsewhere; `rakuten-mlops registry record-digest` tags such a version once it has
been checked. MLflow itself must be reachable by the platform only (compose's backend
network, the Kubernetes NetworkPolicy): whoever can write to the registry can also move
this tag.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

from rakuten_mlops.data.manifest import sha256_named_files
from rakuten_mlops.errors import ModelError

logger = logging.getLogger(__name__)

DIGEST_TAG = "artifacts_sha256"


def artifacts_digest(directory: Path) -> str:
    """SHA-256 over the relative paths and contents of every file under `directory`."""
    files = sorted(p for p in Path(directory).rglob("*") if p.is_file())
    return sha256_named_files((p.relative_to(directory).as_posix(), p) for p in files)


def _download(name: str, version: str | int, destination: Path) -> Path:
    import mlflow

    try:
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{name}/{version}", dst_path=str(destination)
        )
    except Exception as exc:  # MLflow raises several types for a missing or unreachable store
        raise ModelError(f"cannot download models:/{name}/{version}: {exc}") from exc
    if not any(path.is_file() for path in Path(local).rglob("*")):
        # MLflow "downloads" nothing, without an error, from a location this machine cannot
        # see (e.g. a file: path on the disk of the machine that trained it).
        raise ModelError(
            f"models:/{name}/{version} has no files at its artifact location (MLflow found "
            "none to download): it was logged where this machine cannot read it, e.g. to the "
            "local disk of the machine that trained it; log models through the tracking "
            "server's artifact store (MLFLOW_TRACKING_URI=http://...)"
        )
    return Path(local)


def record_artifacts_digest(client: Any, name: str, version: str | int) -> str:
    """Tag a registered version with the digest of its files, as the registry serves them."""
    with tempfile.TemporaryDirectory(prefix="rakuten-digest-") as tmp:
        digest = artifacts_digest(_download(name, version, Path(tmp)))
    client.set_model_version_tag(name, str(version), DIGEST_TAG, digest)
    return digest


def fetch_verified_model(
    name: str, version: str, tags: dict[str, str], cache_dir: Path, require_digest: bool
) -> tuple[Path, Path]:
    """A local copy of `models:/name/version` whose files match its `artifacts_sha256` tag:
    (the model directory, the directory to remove once the model is out of service).

    Raises:
        ModelError: the files do not match the tag, or there is no tag and `require_digest`.
    """
    expected = tags.get(DIGEST_TAG)
    uri = f"models:/{name}/{version}"
    if not expected and require_digest:
        raise ModelError(
            f"{uri} has no `{DIGEST_TAG}` tag: refusing to load a model whose files cannot be "
            "checked (RAKUTEN_ENV=prod); register it with `rakuten-mlops train --register`, "
            "or tag it with `rakuten-mlops registry record-digest` once checked"
        )
    cache_dir.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix=f"{name}-{version}-", dir=cache_dir))
    try:
        local = _download(name, version, workdir)
    except ModelError:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    actual = artifacts_digest(local)
    if expected and actual != expected:
        shutil.rmtree(workdir, ignore_errors=True)
        raise ModelError(
            f"{uri}: its files do not match the digest recorded at registration "
            f"({DIGEST_TAG} {expected[:12]}..., files {actual[:12]}...): refusing to load it"
        )
    if not expected:
        logger.warning(
            "model files not checked: no digest tag", extra={"model": uri, "tag": DIGEST_TAG}
        )
    return local, workdir
