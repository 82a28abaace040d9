"""The models in service: load champion (and challenger), reload in the background, swap.

A `LoadedModel` is immutable; a request takes the current one at its start and finishes on
it, so a swap (one attribute assignment under a lock) never disturbs in-flight requests. A
failed load leaves the models in service as they were and records why.
"""

from __future__ import annotations

import logging
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import pandas as pd

from rakuten_mlops.config import Settings
from rakuten_mlops.errors import ModelError, RakutenError
from rakuten_mlops.inference.model_io import (
    ItemPrediction,
    ItemsFn,
    build_model_input,
    items_from_output,
    load_items_predictor,
)
from rakuten_mlops.registry.integrity import fetch_verified_model
from rakuten_mlops.serving.prediction.model_process import ModelProcess

if TYPE_CHECKING:  # the model's libraries load in the model process, not here
    from rakuten_mlops.models.pyfunc import PredictFn

logger = logging.getLogger(__name__)

Variant = Literal["champion", "challenger"]
_ALIAS_URI = re.compile(r"^models:/(?P<name>[^/@]+)@(?P<alias>[\w-]+)$")
_VERSION_URI = re.compile(r"^models:/(?P<name>[^/@]+)/(?P<version>\d+)$")


class ModelNotReadyError(RakutenError):
    """No model is loaded yet (the service answers 503)."""


@dataclass(frozen=True)
class LoadedModel:
    """A model ready to predict, with what is known of where it comes from.

    It predicts in this process (`predict_items`, else `predict`'s output DataFrame) or in
    a model process of its own (`process`, see `serving.prediction.model_process`).
    """

    variant: Variant
    uri: str
    name: str
    version: str | None
    alias: str | None
    run_id: str | None
    loaded_at: datetime
    predict: PredictFn | None = field(default=None, repr=False, compare=False)
    metrics: dict[str, float] = field(default_factory=dict)
    # Why the promotion gate promoted or kept this version (its `gate.reasons` tag).
    gate_reasons: list[str] = field(default_factory=list)
    # (coverage, precision) of the auto-accepted test products per confidence threshold,
    # from the run's evaluation (the console's Model page draws it).
    coverage_curve: list[tuple[float, float]] = field(default_factory=list)
    # The same predictions read straight from the model (`model_io.items_predictor`); None:
    # through `predict`'s output DataFrame.
    predict_items: ItemsFn | None = field(default=None, repr=False, compare=False)
    process: ModelProcess | None = field(default=None, repr=False, compare=False)
    # The checked local copy of a registry version's files (removed when it is released).
    local_dir: Path | None = field(default=None, repr=False, compare=False)

    def release(self) -> None:
        """Stop the model's process and remove its local copy (once out of service)."""
        if self.process is not None:
            self.process.close()
        if self.local_dir is not None:
            shutil.rmtree(self.local_dir, ignore_errors=True)

    def predict_products(
        self,
        designations: Sequence[str],
        descriptions: Sequence[str],
        images: Sequence[bytes | None] | None = None,
    ) -> list[ItemPrediction]:
        """The predictions of products' fields (one per product, in order).

        Raises:
            ModelError: the model failed or did not answer one prediction per product.
        """
        if self.process is not None:
            return self.process.predict(designations, descriptions, images)
        frame, notes = build_model_input(designations, descriptions, image_bytes=images)
        return self.items(frame, notes)

    def items(self, frame: pd.DataFrame, notes: Sequence[str]) -> list[ItemPrediction]:
        """The predictions of the model input `frame` (one per row, in order), in process.

        Raises:
            ModelError: the model's output does not have one row per input row.
        """
        if self.predict_items is not None:
            return self.predict_items(frame, notes)
        if self.predict is None:
            raise ModelError(f"{self.uri} predicts in its model process only")
        return items_from_output(self.predict)(frame, notes)


@dataclass(frozen=True)
class ReloadStatus:
    """The state of the latest (or running) reload."""

    state: Literal["idle", "running", "succeeded", "failed"] = "idle"
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error: str | None = None
    champion_version: str | None = None
    challenger_version: str | None = None


@dataclass(frozen=True)
class ModelSource:
    """What a model URI points to, resolved against the registry when it is an alias."""

    uri: str
    load_uri: str
    name: str
    version: str | None
    alias: str | None
    run_id: str | None
    metrics: dict[str, float]
    tags: dict[str, str] = field(default_factory=dict)
    coverage_curve: list[tuple[float, float]] = field(default_factory=list)


def challenger_uri(settings: Settings) -> str | None:
    """The challenger's URI: the setting, else the `challenger` alias of a registry URI."""
    if settings.serve_challenger_model:
        return settings.serve_challenger_model
    match = _ALIAS_URI.match(settings.serve_model)
    return f"models:/{match['name']}@challenger" if match else None


def resolve_source(uri: str, settings: Settings) -> ModelSource:
    """Pin a model URI: an alias becomes the version it points to now.

    Raises:
        ModelError: the alias or version does not exist, the registry is unreachable.
    """
    alias_match, version_match = _ALIAS_URI.match(uri), _VERSION_URI.match(uri)
    if alias_match or version_match:
        from mlflow import MlflowClient
        from mlflow.exceptions import MlflowException

        from rakuten_mlops.tracking import set_tracking_uri

        set_tracking_uri(settings)
        client = MlflowClient()
        match = alias_match or version_match
        assert match is not None
        name = match["name"]
        try:
            if alias_match:
                mv = client.get_model_version_by_alias(name, alias_match["alias"])
            else:
                mv = client.get_model_version(name, match["version"])
        except MlflowException as exc:
            raise ModelError(f"cannot resolve {uri} in the registry: {exc.message}") from exc
        metrics: dict[str, float] = {}
        if mv.run_id:
            try:
                metrics = {k: float(v) for k, v in client.get_run(mv.run_id).data.metrics.items()}
            except MlflowException:
                metrics = {}
        return ModelSource(
            uri=uri,
            load_uri=f"models:/{name}/{mv.version}",
            name=name,
            version=str(mv.version),
            alias=alias_match["alias"] if alias_match else None,
            run_id=mv.run_id or None,
            metrics=metrics,
            tags=dict(mv.tags or {}),
            coverage_curve=_coverage_curve(mv.run_id) if mv.run_id else [],
        )
    local = Path(uri)
    run_id: str | None = None
    if (local / "MLmodel").is_file():
        from mlflow.models import Model

        run_id = Model.load(str(local)).run_id
        name = local.resolve().name
    else:
        name = uri
    return ModelSource(
        uri=uri, load_uri=uri, name=name, version=None, alias=None, run_id=run_id, metrics={}
    )


def _coverage_curve(run_id: str) -> list[tuple[float, float]]:
    """The run's precision-coverage points, or none when it has no evaluation artifact."""
    import mlflow
    import pandas as pd

    from rakuten_mlops.evaluation.evaluate import COVERAGE_CSV

    try:
        path = mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path=f"evaluation/{COVERAGE_CSV}"
        )
        frame = pd.read_csv(path).dropna(subset=["coverage", "accuracy"])
    except Exception as exc:  # a chart is not worth failing a model load for
        logger.info("no precision-coverage curve for run %s: %s", run_id, exc)
        return []
    return [(float(c), float(a)) for c, a in zip(frame["coverage"], frame["accuracy"], strict=True)]


def local_model(source: ModelSource, settings: Settings) -> tuple[str, Path | None]:
    """Where to load `source` from, and the folder to remove once it is out of service.

    A registry version is downloaded and its files checked against the digest recorded at
    registration (a digest is required with RAKUTEN_ENV=prod); anything else loads from its
    own URI and leaves nothing to remove.

    Raises:
        ModelError: the files cannot be fetched or do not match their digest.
    """
    if source.version is None:
        return source.load_uri, None
    local, local_dir = fetch_verified_model(
        source.name,
        source.version,
        source.tags,
        Path(tempfile.gettempdir()) / "rakuten-models",
        require_digest=settings.env == "prod",
    )
    return str(local), local_dir


def load_model(uri: str, variant: Variant, settings: Settings) -> LoadedModel:
    """Resolve, load and warm up one model (in a model process of its own when
    `RAKUTEN_MODEL_PROCESS` is on).

    Raises:
        ModelError: it cannot be found, loaded or does not predict.
    """
    source = resolve_source(uri, settings)
    predict_items: ItemsFn | None = None
    process: ModelProcess | None = None
    load_uri, local_dir = local_model(source, settings)
    try:
        if settings.model_process:
            process = ModelProcess(load_uri, tracking_uri=None, num_threads=settings.model_threads)
        else:
            predict_items = load_items_predictor(load_uri, name=uri)
    except BaseException:
        if local_dir is not None:
            shutil.rmtree(local_dir, ignore_errors=True)
        raise
    return LoadedModel(
        variant=variant,
        uri=uri,
        name=source.name,
        version=source.version,
        alias=source.alias,
        run_id=source.run_id,
        loaded_at=datetime.now(UTC),
        metrics=source.metrics,
        gate_reasons=(source.tags.get("gate.reasons") or "").splitlines(),
        coverage_curve=source.coverage_curve,
        predict_items=predict_items,
        process=process,
        local_dir=local_dir,
    )


class ModelManager:
    """Holds the champion and challenger in service and replaces them safely."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.champion: LoadedModel | None = None
        self.challenger: LoadedModel | None = None
        self.status = ReloadStatus()
        self._reload_lock = threading.Lock()
        self._swap_lock = threading.Lock()
        self._listeners: list[Callable[[ModelManager, bool], None]] = []

    @property
    def ready(self) -> bool:
        """Whether a champion is loaded."""
        return self.champion is not None

    @property
    def challenger_enabled(self) -> bool:
        """Whether the challenger mode asks for a challenger."""
        return self.settings.challenger_mode != "off"

    def add_listener(self, listener: Callable[[ModelManager, bool], None]) -> None:
        """Call `listener(manager, succeeded)` after every reload attempt."""
        self._listeners.append(listener)

    def reload(self) -> ReloadStatus:
        """Load the configured models and swap them in (blocking; one reload at a time).

        When a reload is already running this returns its status at once.
        """
        if not self._reload_lock.acquire(blocking=False):
            return self.status
        try:
            started = datetime.now(UTC)
            self.status = ReloadStatus(state="running", started_at=started)
            t0 = time.perf_counter()
            try:
                champion, challenger = self._load_all()
            except RakutenError as exc:
                self.status = ReloadStatus(
                    state="failed",
                    started_at=started,
                    finished_at=datetime.now(UTC),
                    error=str(exc),
                )
                logger.error(
                    "model reload failed; the models in service are kept", extra={"error": str(exc)}
                )
                self._notify(False)
                return self.status
            with self._swap_lock:
                replaced = (self.champion, self.challenger)
                self.champion, self.challenger = champion, challenger
            self._retire(replaced)
            self.status = ReloadStatus(
                state="succeeded",
                started_at=started,
                finished_at=datetime.now(UTC),
                champion_version=champion.version,
                challenger_version=challenger.version if challenger else None,
            )
            logger.info(
                "models loaded",
                extra={
                    "champion": champion.uri,
                    "champion_version": champion.version,
                    "challenger_version": challenger.version if challenger else None,
                    "seconds": round(time.perf_counter() - t0, 2),
                },
            )
            self._notify(True)
            return self.status
        finally:
            self._reload_lock.release()

    def _retire(self, replaced: tuple[LoadedModel | None, ...]) -> None:
        """Stop the processes of replaced models, `RAKUTEN_MODEL_RETIRE_S` later (requests
        that took them before the swap finish on them)."""
        current = [m for m in (self.champion, self.challenger) if m is not None]
        in_service: set[object] = {id(m.process) for m in current if m.process is not None}
        in_service |= {str(m.local_dir) for m in current if m.local_dir is not None}
        for model in {id(m): m for m in replaced if m is not None}.values():
            if id(model.process) in in_service or str(model.local_dir) in in_service:
                continue
            timer = threading.Timer(self.settings.model_retire_s, model.release)
            timer.daemon = True
            timer.start()

    def close(self) -> None:
        """Stop every model process (at shutdown, after the last prediction)."""
        with self._swap_lock:
            models = (self.champion, self.challenger)
        for model in {id(m): m for m in models if m is not None}.values():
            model.release()

    def _load_all(self) -> tuple[LoadedModel, LoadedModel | None]:
        champion = load_model(self.settings.serve_model, "champion", self.settings)
        challenger: LoadedModel | None = None
        uri = challenger_uri(self.settings) if self.challenger_enabled else None
        if uri is not None:
            try:
                source = resolve_source(uri, self.settings)
            except ModelError as exc:
                logger.warning("no challenger in service", extra={"reason": str(exc)})
                return champion, None
            if source.version is not None and source.version == champion.version:
                # The same version under both aliases: share the loaded model.
                challenger = replace(champion, variant="challenger", alias=source.alias, uri=uri)
            else:
                challenger = load_model(uri, "challenger", self.settings)
        return champion, challenger

    def alias_moved(self) -> bool:
        """Whether the registry aliases now point elsewhere than the loaded versions."""
        current = self.champion
        if current is None:
            return True
        if current.alias is None:
            return False
        try:
            if resolve_source(self.settings.serve_model, self.settings).version != current.version:
                return True
            uri = challenger_uri(self.settings) if self.challenger_enabled else None
            if uri is None:
                return False
            try:
                version = resolve_source(uri, self.settings).version
            except ModelError:
                version = None
            loaded = self.challenger.version if self.challenger else None
            return version != loaded
        except ModelError as exc:
            logger.warning("cannot check the registry aliases", extra={"reason": str(exc)})
            return False

    def _notify(self, succeeded: bool) -> None:
        for listener in self._listeners:
            try:
                listener(self, succeeded)
            except Exception:
                logger.exception("reload listener failed")
