"""Import the registered classifier into BentoML's model store (run in .venv-bento).

    python deploy/bentoml/import_model.py [MODEL]

MODEL is what `rakuten-mlops serve` takes: a registry URI (default
`models:/rakuten-product-classifier@champion`, the registry of MLFLOW_TRACKING_URI) or a model
directory. A registry version is downloaded and its files checked against the digest recorded
at registration, as the service does before it serves a model; the MLflow model (signature
included) is then stored as `rakuten-product-classifier:<tag>`, labelled with its registry
name, version and alias. Prints the BentoML model tag.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import bentoml

from rakuten_mlops.config import get_settings
from rakuten_mlops.errors import ModelError
from rakuten_mlops.serving.prediction.model_manager import local_model, resolve_source

BENTO_MODEL_NAME = "rakuten-product-classifier"
DEFAULT_MODEL = "models:/rakuten-product-classifier@champion"


def import_model(uri: str) -> bentoml.Model:
    """Store the model at `uri` in BentoML's model store (BENTOML_HOME) and return it.

    Raises:
        ModelError: the model cannot be resolved, fetched or its files do not match.
    """
    settings = get_settings()
    source = resolve_source(uri, settings)
    load_uri, workdir = local_model(source, settings)
    labels = {"source": uri}
    if source.version is not None:
        labels.update(registered_name=source.name, version=source.version)
    if source.alias is not None:
        labels["alias"] = source.alias
    try:
        if not (Path(load_uri) / "MLmodel").is_file():
            raise ModelError(f"no MLflow model at {load_uri}: MLmodel file not found")
        return bentoml.mlflow.import_model(
            BENTO_MODEL_NAME,
            load_uri,
            signatures={"predict": {"batchable": True}},
            labels=labels,
            metadata={"run_id": source.run_id or "", **source.metrics},
        )
    finally:
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", default=DEFAULT_MODEL, help="registry URI or folder")
    args = parser.parse_args(argv)
    try:
        model = import_model(args.model)
    except ModelError as exc:
        print(
            f"error: {exc} (train one with `make pipeline`, or set BENTO_MODEL to a model folder)",
            file=sys.stderr,
        )
        return 1
    print(model.tag)
    return 0


if __name__ == "__main__":
    sys.exit(main())
