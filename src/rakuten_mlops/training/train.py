"""Train, evaluate, track, register and (maybe) promote the product classifier.

`train_model` is the one place where a model is made:

1. load the processed train / val / test splits;
2. fit `ProductClassifier(params["model"], seed=params["seed"])`;
3. evaluate it on the test split (metrics, slices, branches, calibration, latency);
4. evaluate the current champion on the SAME test split and both models on the reviewed
   products held out from training, then apply the promotion gate (`evaluation/gate.py`);
5. log everything to one MLflow run (params, curves, fingerprints, artifacts, the model);
6. register a new version with alias `challenger`, and move `champion` to it only when
   the gate passes;
7. optionally write the MLflow model directory and the DVC metrics file.
"""

from __future__ import annotations

import logging
import math
import random
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import torch
from mlflow import MlflowClient
from mlflow.data.pandas_dataset import from_pandas
from mlflow.entities import Metric
from mlflow.exceptions import MlflowException

from rakuten_mlops.config import Settings
from rakuten_mlops.errors import ModelError, RakutenError
from rakuten_mlops.evaluation.evaluate import (
    EvaluationResult,
    build_model_input,
    evaluate_model,
    evaluate_predictions,
    predict_frame,
    write_evaluation_reports,
    write_metrics_file,
)
from rakuten_mlops.evaluation.gate import (
    GateDecision,
    ReviewedComparison,
    compare_on_reviewed,
    decide_promotion,
)
from rakuten_mlops.evaluation.reports import plot_training_curves
from rakuten_mlops.params import EvaluationSettings, parse_params
from rakuten_mlops.registry.integrity import record_artifacts_digest
from rakuten_mlops.registry.registry import (
    CHAMPION,
    get_alias_version,
    promote_version,
    set_challenger,
)
from rakuten_mlops.schema import PRODUCT_CODES, TARGET_COL
from rakuten_mlops.tracking import (
    configure_tracking,
    fingerprint_files,
    flatten_params,
    get_git_commit,
    hash_file,
)

logger = logging.getLogger(__name__)

TRAINING_SPLITS = ("train", "val", "test")
EVAL_SPLIT = "test"
GATE_ARTIFACT = "gate_decision.json"
_MAX_TAG_LENGTH = 5000


@dataclass
class TrainResult:
    """What a training run produced and decided."""

    run_id: str
    experiment_id: str
    evaluation: EvaluationResult
    decision: GateDecision
    champion_metrics: dict[str, float] | None
    model_version: int | None = None
    aliases: dict[str, int] = field(default_factory=dict)
    model_out: Path | None = None
    metrics_out: Path | None = None
    durations: dict[str, float] = field(default_factory=dict)

    @property
    def metrics(self) -> dict[str, float]:
        """Headline test metrics of the new model."""
        return self.evaluation.metrics

    def summary(self) -> str:
        """Human-readable summary for the CLI."""
        m = self.metrics
        lines = [
            f"run {self.run_id} (experiment {self.experiment_id})",
            f"test ({int(m.get('n', 0))} rows): weighted F1 {m['weighted_f1']:.4f} | "
            f"macro F1 {m['macro_f1']:.4f} | accuracy {m['accuracy']:.4f} | ECE {m['ece']:.4f}",
        ]
        if self.evaluation.branches:
            branches = ", ".join(
                f"{k.removesuffix('_weighted_f1')} {v:.4f}"
                for k, v in self.evaluation.branches.items()
                if k.endswith("_weighted_f1")
            )
            lines.append(f"branches (weighted F1): {branches}")
        for name, values in self.evaluation.slices.items():
            lines.append(
                f"  slice {name:<20} n={int(values['n']):>6}  weighted F1 "
                f"{values['weighted_f1']:.4f}"
            )
        if self.evaluation.latency:
            lat = self.evaluation.latency
            lines.append(
                f"latency: p50 {lat['p50_ms']:.1f} ms, p99 {lat['p99_ms']:.1f} ms, "
                f"batch {lat['batch_items_per_s']:.0f} items/s"
            )
        if self.champion_metrics:
            lines.append(
                f"champion on the same split: weighted F1 "
                f"{self.champion_metrics.get('weighted_f1', float('nan')):.4f}"
            )
        verdict = "PROMOTE" if self.decision.promote else "KEEP CHAMPION"
        lines.append(f"gate: {verdict}")
        lines += [f"  {reason}" for reason in self.decision.reasons]
        if self.model_version is not None:
            lines.append(f"registered version {self.model_version}")
        if self.aliases:
            lines.append(
                "aliases: " + ", ".join(f"{k} -> v{v}" for k, v in sorted(self.aliases.items()))
            )
        elif self.model_version is None:
            lines.append("not registered (--no-register): the gate decision was not applied")
        if self.model_out is not None:
            lines.append(f"model directory: {self.model_out}")
        if self.metrics_out is not None:
            lines.append(f"metrics file: {self.metrics_out}")
        return "\n".join(lines)


def train_model(
    data_dir: Path,
    params: Mapping[str, Any],
    *,
    settings: Settings,
    model_out: Path | None = None,
    register: bool = True,
    metrics_out: Path | None = None,
    progress: bool = True,
    log_model: bool | None = None,
) -> TrainResult:
    """Train the classifier on a processed dataset and record it in MLflow.

    Args:
        data_dir: processed directory (`{train,val,test}.parquet`, `metadata.json`).
        params: the whole params.yaml (`seed`, `model`, `gate`, `evaluate`, `data`).
        settings: runtime settings (tracking URI, experiment, model name).
        model_out: where to write the MLflow model directory (replaced atomically).
        register: register a version, set `challenger` and apply the gate to `champion`.
        log_model: store the model in the run's artifacts (default: only when registering;
            a registered version needs it, an unregistered run would only pile up
            ~100 MB per training in the artifact store).
        metrics_out: DVC metrics JSON file to write.
        progress: show progress bars.

    Raises:
        DataError: a split is missing or malformed.
        ParamsError: a section of `params` is malformed.
        ModelError: training, logging or saving failed.
        RegistryError: the registry refused an operation.
    """
    try:
        return _run_training(
            Path(data_dir),
            params,
            settings=settings,
            model_out=model_out,
            register=register,
            metrics_out=metrics_out,
            progress=progress,
            log_model=register if log_model is None else log_model,
        )
    except MlflowException as exc:  # tracking store down, permissions, ...: one clear line
        raise ModelError(
            f"MLflow error with tracking store {settings.tracking_uri()}: {exc.message}"
        ) from exc


def _run_training(
    data_dir: Path,
    params: Mapping[str, Any],
    *,
    settings: Settings,
    model_out: Path | None,
    register: bool,
    metrics_out: Path | None,
    progress: bool,
    log_model: bool,
) -> TrainResult:
    from rakuten_mlops.data.prepare import load_feedback_holdout, load_split
    from rakuten_mlops.models.pipeline import ProductClassifier
    from rakuten_mlops.models.pyfunc import log_pyfunc_model

    started = time.perf_counter()
    parsed = parse_params(params)
    seed, policy, eval_settings = parsed.seed, parsed.gate, parsed.evaluate

    logger.info("loading the %s splits from %s", "/".join(TRAINING_SPLITS), data_dir)
    splits = {name: load_split(data_dir, name) for name in TRAINING_SPLITS}
    split_files = [data_dir / f"{name}.parquet" for name in TRAINING_SPLITS]
    data_fingerprint = fingerprint_files(split_files)

    experiment_id = configure_tracking(settings)
    seed_everything(seed)
    classifier = ProductClassifier(
        dict(params.get("model") or {}),
        seed=seed,
        target_precision=parsed.review.target_precision,
    )
    durations: dict[str, float] = {}

    with (
        tempfile.TemporaryDirectory(prefix="rakuten-train-") as tmp,
        mlflow.start_run(run_name=f"train-{datetime.now(UTC):%Y%m%d-%H%M%S}") as run,
    ):
        run_id = run.info.run_id
        client = MlflowClient()
        _log_run_context(params, classifier.params, seed, data_dir, data_fingerprint, splits)

        logger.info("fitting the classifier on %d products", len(splits["train"]))
        tick = time.perf_counter()
        try:
            classifier.fit(splits["train"], splits["val"], progress=progress)
        except RakutenError:
            raise
        except Exception as exc:  # a library failure deep in a branch: keep the message
            raise ModelError(f"training failed: {type(exc).__name__}: {exc}") from exc
        durations["fit"] = time.perf_counter() - tick
        _log_history(client, run_id, classifier.history)

        logger.info("evaluating on the %s split (%d rows)", EVAL_SPLIT, len(splits[EVAL_SPLIT]))
        tick = time.perf_counter()
        evaluation = evaluate_classifier(classifier, splits[EVAL_SPLIT], eval_settings)
        durations["evaluate"] = time.perf_counter() - tick

        reviewed = load_feedback_holdout(data_dir)
        champion = evaluate_champion(
            client, settings.model_name, splits[EVAL_SPLIT], eval_settings, reviewed=reviewed
        )
        champion_metrics = champion.metrics
        decision = decide_promotion(
            evaluation.metrics,
            champion_metrics,
            policy,
            champion_note=champion.note,
            reviewed=compare_reviewed(classifier, reviewed, champion),
        )
        for reason in decision.reasons:
            logger.info("gate %s", reason)

        _log_evaluation(
            evaluation,
            decision,
            champion_metrics,
            classifier.history,
            Path(tmp) / "evaluation",
            model_name=settings.model_name,
            data_facts={
                "processed data": str(data_dir),
                "dataset sha256": data_fingerprint,
                **{f"{name} rows": len(frame) for name, frame in splits.items()},
                "run id": run_id,
                "seed": seed,
            },
        )

        # Text only: local image paths mean nothing on the machine that serves the model.
        input_example = build_model_input(splits[EVAL_SPLIT].head(3)).assign(image_path="")
        model_info = None
        if log_model or register:
            logger.info("logging the MLflow model")
            tick = time.perf_counter()
            model_info = log_pyfunc_model(
                classifier,
                input_example,
                registered_model_name=settings.model_name if register else None,
            )
            durations["log_model"] = time.perf_counter() - tick
        else:
            logger.info("model not logged to MLflow (not registered; --log-model stores it)")

        version: int | None = None
        aliases: dict[str, int] = {}
        if register:
            version = _registered_version(model_info, settings.model_name)
            # Before any alias points at it: the service loads only files matching this tag.
            record_artifacts_digest(client, settings.model_name, version)
            aliases = _apply_gate(client, settings.model_name, version, decision, evaluation)

        saved_to: Path | None = None
        if model_out is not None:
            from rakuten_mlops.models.pyfunc import save_pyfunc_model

            saved_to = _save_model_atomically(
                lambda target: save_pyfunc_model(classifier, target, input_example),
                Path(model_out),
            )

        durations.update({f"classifier/{k}": v for k, v in classifier.timings.items()})
        durations["total"] = time.perf_counter() - started
        mlflow.log_metrics({f"duration/{k}": v for k, v in durations.items()})

    result = TrainResult(
        run_id=run_id,
        experiment_id=experiment_id,
        evaluation=evaluation,
        decision=decision,
        champion_metrics=champion_metrics,
        model_version=version,
        aliases=aliases,
        model_out=saved_to,
        durations=durations,
    )
    if metrics_out is not None:
        result.metrics_out = write_metrics_file(
            Path(metrics_out),
            {
                "run_id": run_id,
                "model_version": version,
                EVAL_SPLIT: evaluation.to_dict(),
                "champion": champion_metrics,
                "gate": decision.to_dict(),
                "durations_s": durations,
            },
        )
    return result


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (the classifier seeds its own generators too)."""
    random.seed(seed)
    np.random.seed(seed)  # for libraries that use the global state
    torch.manual_seed(seed)


def evaluate_classifier(
    classifier: Any, frame: pd.DataFrame, settings: EvaluationSettings
) -> EvaluationResult:
    """Full evaluation of a fitted `ProductClassifier`: metrics, branches, latency."""
    labels = sorted(set(np.asarray(classifier.classes_).tolist()) | set(frame[TARGET_COL].tolist()))
    return evaluate_model(
        classifier.predict, frame, settings, split=EVAL_SPLIT, classifier=classifier, labels=labels
    )


@dataclass(frozen=True)
class ChampionEvaluation:
    """The current champion measured beside the challenger.

    Attributes:
        metrics: its metrics on the test split (with `version`), None when unusable.
        note: why there are no metrics (no champion, unloadable...).
        version: its registry version, when there is one.
        reviewed_codes: its answers on the held-out reviewed products (None: not asked).
    """

    metrics: dict[str, float] | None
    note: str | None
    version: int | None = None
    reviewed_codes: np.ndarray | None = None


def evaluate_champion(
    client: MlflowClient,
    name: str,
    frame: pd.DataFrame,
    settings: EvaluationSettings,
    *,
    reviewed: pd.DataFrame | None = None,
) -> ChampionEvaluation:
    """The current champion on `frame` (and on the `reviewed` products), or why not.

    A champion that cannot be loaded or fails to predict is reported, never fatal: the
    challenger is then judged on the thresholds alone.
    """
    from rakuten_mlops.models.pyfunc import as_predict_fn, load_pyfunc_model

    try:
        version = get_alias_version(client, name, CHAMPION)
    except RakutenError:
        return ChampionEvaluation(None, "no registered model yet")
    if version is None:
        return ChampionEvaluation(None, "no champion yet")
    logger.info("evaluating champion v%d on the same split", version)
    try:
        predict = as_predict_fn(load_pyfunc_model(f"models:/{name}@{CHAMPION}"))
        predictions = predict_frame(predict, frame)
        reviewed_codes = None
        if reviewed is not None and not reviewed.empty:
            reviewed_codes = predict_frame(predict, reviewed)["prdtypecode"].to_numpy(np.int64)
    except RakutenError as exc:
        logger.warning("champion v%d unusable: %s", version, exc)
        note = f"champion v{version} could not be evaluated ({exc}); treated as absent"
        return ChampionEvaluation(None, note, version)
    result = evaluate_predictions(
        frame, predictions, split=EVAL_SPLIT, settings=settings, labels=list(PRODUCT_CODES)
    )
    return ChampionEvaluation(
        {**result.metrics, "version": float(version)}, None, version, reviewed_codes
    )


def compare_reviewed(
    classifier: Any, reviewed: pd.DataFrame, champion: ChampionEvaluation
) -> ReviewedComparison | None:
    """Champion vs challenger on the held-out reviewed products (None: nothing to pair)."""
    if reviewed.empty or champion.reviewed_codes is None:
        return None
    challenger_codes = predict_frame(classifier.predict, reviewed)["prdtypecode"]
    comparison = compare_on_reviewed(
        reviewed[TARGET_COL].to_numpy(np.int64),
        champion.reviewed_codes,
        challenger_codes.to_numpy(np.int64),
        champion_version=champion.version,
    )
    logger.info(
        "reviewed traffic: %d held-out products, challenger right on %d, champion v%s on %d",
        comparison.n,
        comparison.challenger_correct,
        champion.version,
        comparison.champion_correct,
    )
    return comparison


def _log_run_context(
    params: Mapping[str, Any],
    model_params: Mapping[str, Any],
    seed: int,
    data_dir: Path,
    fingerprint: str,
    splits: Mapping[str, pd.DataFrame],
) -> None:
    logged = {key: value for key, value in params.items() if key != "model"}
    logged["seed"] = seed
    logged["model"] = dict(model_params)  # resolved: the defaults actually used
    mlflow.log_params(flatten_params(logged))
    tags = {
        "data.dir": str(data_dir),
        "data.sha256": fingerprint,
        **{f"data.{name}.rows": str(len(frame)) for name, frame in splits.items()},
    }
    commit = get_git_commit()
    if commit:
        tags["git.commit"] = commit
    dvc_lock = hash_file(Path("dvc.lock"))
    if dvc_lock:
        tags["dvc.lock.sha256"] = dvc_lock
    mlflow.set_tags(tags)
    contexts = {"train": "training", "val": "validation", "test": "testing"}
    for name, frame in splits.items():
        try:
            with warnings.catch_warnings():
                # MLflow's hints about ambiguous local sources and integer columns are noise
                # here: the dataset is logged for lineage, never served from this schema.
                warnings.simplefilter("ignore", UserWarning)
                dataset = from_pandas(
                    frame,
                    source=str((data_dir / f"{name}.parquet").resolve()),
                    targets=TARGET_COL,
                    name=name,
                    digest=fingerprint[:16],
                )
                mlflow.log_input(dataset, context=contexts.get(name, name))
        except (MlflowException, ValueError, TypeError) as exc:  # nice to have, not essential
            logger.warning("could not log the %s dataset input: %s", name, exc)


def _log_evaluation(
    evaluation: EvaluationResult,
    decision: GateDecision,
    champion_metrics: Mapping[str, float] | None,
    history: Mapping[str, list[float]],
    reports_dir: Path,
    *,
    model_name: str,
    data_facts: Mapping[str, Any],
) -> None:
    """Log metrics, gate tags and the report files (artifact folder `evaluation/`)."""
    write_evaluation_reports(
        evaluation,
        reports_dir,
        model_name=model_name,
        data_facts=data_facts,
        gate_reasons=decision.reasons,
    )
    plot_training_curves(history, reports_dir / "training_curves.png")
    write_metrics_file(reports_dir / GATE_ARTIFACT, decision.to_dict())
    mlflow.log_artifacts(str(reports_dir), artifact_path="evaluation")
    mlflow.log_metrics(evaluation.flat_metrics())
    if champion_metrics:
        mlflow.log_metrics(
            {
                f"champion_{EVAL_SPLIT}_{k}": v
                for k, v in champion_metrics.items()
                if not math.isnan(v)
            }
        )
    reviewed = decision.comparisons.get("reviewed")
    if reviewed:
        mlflow.log_metrics(
            {
                f"reviewed_{k}": float(v)
                for k, v in reviewed.items()
                if k != "champion_version" and v is not None
            }
        )
    mlflow.set_tags(
        {
            "gate.promote": str(decision.promote).lower(),
            "gate.reasons": "\n".join(decision.reasons)[:_MAX_TAG_LENGTH],
        }
    )


def _log_history(client: MlflowClient, run_id: str, history: Mapping[str, list[float]]) -> None:
    now = int(time.time() * 1000)
    metrics = [
        Metric(key=key, value=float(value), timestamp=now, step=step)
        for key, values in history.items()
        for step, value in enumerate(values, start=1)
        if not math.isnan(value)  # NaN is not a metric value MLflow stores well
    ]
    for start in range(0, len(metrics), 1000):  # log_batch accepts 1000 metrics per call
        client.log_batch(run_id, metrics=metrics[start : start + 1000])


def _registered_version(model_info: Any, name: str) -> int:
    version = getattr(model_info, "registered_model_version", None)
    if version is None:
        raise ModelError(f"the model was logged but no version of {name!r} was registered")
    return int(version)


def _apply_gate(
    client: MlflowClient,
    name: str,
    version: int,
    decision: GateDecision,
    evaluation: EvaluationResult,
) -> dict[str, int]:
    """Tag the version, set `challenger`, move `champion` only when the gate passes."""
    tags = {
        "gate.promote": str(decision.promote).lower(),
        "gate.reasons": "\n".join(decision.reasons)[:_MAX_TAG_LENGTH],
        **{f"{EVAL_SPLIT}_{k}": f"{v:.6f}" for k, v in evaluation.metrics.items()},
    }
    try:
        for key, value in tags.items():
            client.set_model_version_tag(name, str(version), key, value)
    except MlflowException as exc:
        raise ModelError(f"cannot tag {name!r} version {version}: {exc.message}") from exc
    set_challenger(client, name, version)
    if decision.promote:
        promote_version(client, name, version, reason="promotion gate passed")
    aliases = {"challenger": version}
    champion = get_alias_version(client, name, CHAMPION)
    if champion is not None:
        aliases[CHAMPION] = champion
    return aliases


def _save_model_atomically(save: Callable[[Path], Path], target: Path) -> Path:
    """Write a model directory next to `target`, then swap it in (never half-written)."""
    target = target.resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    new_dir = staging / "model"
    old_dir = target.parent / f".{target.name}.old-{staging.name}"
    try:
        save(new_dir)
        if target.exists():
            target.replace(old_dir)
        new_dir.replace(target)
    except (OSError, RakutenError) as exc:
        if old_dir.exists() and not target.exists():
            old_dir.replace(target)
        raise ModelError(f"cannot write the model directory {target}: {exc}") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(old_dir, ignore_errors=True)
    return target
