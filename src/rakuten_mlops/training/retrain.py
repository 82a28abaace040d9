"""Continuous training: reviewers' corrections -> new model -> gate -> service reload.

`retrain` chains the steps below; each one is safe to re-run:

1. `export`: new feedback rows of the service database become a new batch of the feedback
   layer (`data/feedback_export.py`; nothing new, no batch);
2. guard: unless forced, stop ("skipped") when fewer than `data.feedback.min_new_labels`
   products arrived since the processed data was last prepared;
3. `prepare`: the processed splits again, feedback merged into train, test unchanged;
4. `train`: train, register (alias challenger) and apply the promotion gate: the fixed test
   split, and the reviewed products held out from training (a paired McNemar test), see
   `evaluation/gate.py`; when a version was already trained on exactly these processed
   files and parameters, that version and its decision are reused instead of training again;
5. both models (the champion before this run and the new version) scored on the held-out
   recent feedback products: accuracy and weighted F1, reported with the decision;
6. `reload`: when the new version was promoted, `POST /v1/admin/reload` on the service.

The decision is written as JSON (`RetrainDecision`), read by the Airflow DAG.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rakuten_mlops.config import Settings
from rakuten_mlops.errors import RakutenError
from rakuten_mlops.params import load_params, parse_params

logger = logging.getLogger(__name__)

STEPS = ("export", "prepare", "train", "reload")
DATA_SHA_TAG = "data.sha256"
PARAMS_SHA_TAG = "retrain.params_sha256"
RELOAD_PATH = "/v1/admin/reload"


@dataclass
class RetrainDecision:
    """What a `retrain` run decided (written as JSON for the DAG and the operators).

    `status`: "promoted" (a new champion), "kept" (trained, the champion stays),
    "skipped" (not enough new labels: nothing trained) or "failed".
    """

    status: str = "pending"
    started_at: str = ""
    finished_at: str = ""
    steps: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    new_labels: int | None = None
    export: dict[str, Any] | None = None
    prepare: dict[str, Any] | None = None
    model_name: str = ""
    version: int | None = None
    run_id: str | None = None
    reused_run: bool = False
    champion_before: int | None = None
    champion_after: int | None = None
    gate: dict[str, Any] | None = None
    test_metrics: dict[str, float] | None = None
    champion_test_metrics: dict[str, float] | None = None
    feedback_scores: dict[str, Any] | None = None
    reload: dict[str, Any] | None = None
    report: dict[str, str] = field(default_factory=dict)
    error: str | None = None

    @property
    def promoted(self) -> bool:
        """Whether this run moved `champion` to a new version."""
        return self.status == "promoted"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (NaN written as null)."""
        return _clean(asdict(self))

    def summary(self) -> str:
        """Human-readable summary for the CLI."""
        lines = [f"retrain: {self.status.upper()}"]
        if self.version is not None:
            reused = " (reused: already trained on this data)" if self.reused_run else ""
            lines.append(f"version {self.version}, run {self.run_id}{reused}")
        lines.append(f"champion: v{self.champion_before} -> v{self.champion_after}")
        lines += [f"  {reason}" for reason in self.reasons]
        if self.gate:
            lines += [f"  gate {reason}" for reason in self.gate.get("reasons", [])]
        if self.feedback_scores:
            lines.append(f"recent feedback: {self.feedback_scores.get('note', '')}".rstrip())
            for name in ("champion", "challenger"):
                score = self.feedback_scores.get(name)
                if score:
                    lines.append(
                        f"  {name:<10} v{score.get('version')}: accuracy "
                        f"{_fmt(score.get('accuracy'))}, weighted F1 "
                        f"{_fmt(score.get('weighted_f1'))} on {score.get('n')} products"
                    )
        if self.reload:
            lines.append(f"reload: {self.reload.get('status')} {self.reload.get('detail', '')}")
        if self.report:
            lines += [f"{k}: {v}" for k, v in sorted(self.report.items())]
        return "\n".join(lines)


def run_retrain(
    settings: Settings,
    *,
    params_file: Path,
    raw_dir: Path,
    processed_dir: Path,
    feedback_dir: Path | None = None,
    database_url: str | None = None,
    steps: Sequence[str] = STEPS,
    force: bool = False,
    decision_out: Path | None = None,
    service_url: str | None = None,
    api_key: str | None = None,
    metrics_out: Path | None = None,
    progress: bool = False,
) -> RetrainDecision:
    """Run the continuous-training steps and write the decision.

    Args:
        steps: a subset of `STEPS`. Without `train`, a `reload` step reads the decision
            already in `decision_out` and reloads the service if it says "promoted".
        database_url: the service database the `export` step reads (None: nothing to export).
        force: train even with fewer new labels than `data.feedback.min_new_labels`.
        decision_out: where the JSON decision goes (also `<dir>/history/<time>.json`).

    Raises:
        RakutenError: a step failed (the decision is written first, status "failed").
    """
    unknown = sorted(set(steps) - set(STEPS))
    if unknown:
        raise RakutenError(f"unknown retrain step(s) {unknown}; expected some of {list(STEPS)}")
    decision = RetrainDecision(
        started_at=_now(), steps=[s for s in STEPS if s in steps], model_name=settings.model_name
    )
    params = load_params(params_file)
    data_params = dict(params.get("data") or {})
    feedback_params = parse_params(params).data.feedback
    feedback_dir = Path(feedback_dir) if feedback_dir else Path(feedback_params.dir)
    try:
        if "train" not in steps and "reload" in steps and decision_out is not None:
            decision = _previous_decision(decision_out, decision)
        if "export" in steps:
            decision.export = _export(database_url, feedback_dir, decision)
        if ("prepare" in steps or "train" in steps) and not _enough_new_labels(
            decision, feedback_dir, processed_dir, feedback_params, force
        ):
            decision.status = "skipped"
            return _finish(decision, decision_out)
        if "prepare" in steps:
            from rakuten_mlops.data.prepare import prepare_dataset

            result = prepare_dataset(raw_dir, processed_dir, data_params, feedback_dir=feedback_dir)
            decision.prepare = {
                "processed_dir": str(processed_dir),
                "sizes": result.sizes,
                "feedback": result.feedback.to_dict() if result.feedback else None,
            }
        if "train" in steps:
            _train(settings, params, processed_dir, decision, metrics_out, progress)
            paired = ((decision.gate or {}).get("comparisons") or {}).get("reviewed")
            decision.feedback_scores = (
                feedback_scores_of_gate(paired, decision.version)
                if paired
                else score_recent_feedback(
                    settings, processed_dir, decision.champion_before, decision.version
                )
            )
        if "reload" in steps:
            decision.reload = _reload(decision, service_url, api_key)
    except RakutenError as exc:
        decision.status = "failed"
        decision.error = str(exc)
        _finish(decision, decision_out)
        raise
    return _finish(decision, decision_out)


def _export(
    database_url: str | None, feedback_dir: Path, decision: RetrainDecision
) -> dict[str, Any]:
    from rakuten_mlops.data.feedback_export import export_feedback

    if not database_url:
        decision.reasons.append("export: no service database configured")
        return {"batch": None, "rows": 0, "note": "no service database configured"}
    try:
        result = export_feedback(database_url, feedback_dir)
    except RakutenError as exc:
        if "not found" not in str(exc):
            raise
        # No service database yet (e.g. before the first deployment): nothing to export.
        decision.reasons.append(f"export: {exc}")
        return {"batch": None, "rows": 0, "note": str(exc)}
    decision.reasons.append(f"export: {result.summary().splitlines()[0]}")
    return result.to_dict()


def _enough_new_labels(
    decision: RetrainDecision,
    feedback_dir: Path,
    processed_dir: Path,
    params: Any,
    force: bool,
) -> bool:
    from rakuten_mlops.data.feedback import count_layer_products

    used = _merged_batches(processed_dir)
    decision.new_labels = count_layer_products(feedback_dir, exclude_batches=used)
    needed = params.min_new_labels
    if decision.new_labels >= needed:
        decision.reasons.append(
            f"{decision.new_labels} new reviewed product(s) since the last prepare "
            f"(>= data.feedback.min_new_labels {needed})"
        )
        return True
    if force:
        decision.reasons.append(
            f"only {decision.new_labels} new reviewed product(s) (< {needed}); forced"
        )
        return True
    decision.reasons.append(
        f"only {decision.new_labels} new reviewed product(s) since the last prepare, fewer "
        f"than data.feedback.min_new_labels ({needed}): nothing retrained (--force overrides)"
    )
    return False


def _merged_batches(processed_dir: Path) -> list[str]:
    """The feedback batches the current processed data was prepared with."""
    from rakuten_mlops.schema import PROCESSED_METADATA_FILE

    path = Path(processed_dir) / PROCESSED_METADATA_FILE
    if not path.is_file():
        return []
    try:
        metadata = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    batches = (metadata.get("feedback") or {}).get("batches") or []
    return [str(b) for b in batches]


def _train(
    settings: Settings,
    params: Mapping[str, Any],
    processed_dir: Path,
    decision: RetrainDecision,
    metrics_out: Path | None,
    progress: bool,
) -> None:
    from mlflow import MlflowClient

    from rakuten_mlops.registry.registry import CHAMPION
    from rakuten_mlops.tracking import configure_tracking, fingerprint_files
    from rakuten_mlops.training.train import TRAINING_SPLITS, train_model

    experiment_id = configure_tracking(settings)
    client = MlflowClient()
    decision.champion_before = _alias_or_none(client, settings.model_name, CHAMPION)
    data_sha = fingerprint_files([processed_dir / f"{s}.parquet" for s in TRAINING_SPLITS])
    params_sha = hashlib.sha256(
        json.dumps(params, sort_keys=True, default=str).encode()
    ).hexdigest()
    previous = _find_trained_version(
        client, experiment_id, settings.model_name, data_sha, params_sha
    )
    if previous is not None:
        version, run = previous
        decision.version, decision.run_id, decision.reused_run = version, run.info.run_id, True
        promote = (client.get_model_version(settings.model_name, str(version)).tags or {}).get(
            "gate.promote"
        ) == "true"
        decision.gate = {
            "promote": promote,
            "reasons": (run.data.tags.get("gate.reasons") or "").splitlines(),
        }
        decision.test_metrics = {
            k.removeprefix("test_"): v
            for k, v in run.data.metrics.items()
            if k.startswith("test_") and "/" not in k
        }
        decision.reasons.append(
            f"version {version} was already trained on these processed files and parameters "
            f"(run {run.info.run_id}): reused, not trained again"
        )
    else:
        result = train_model(
            processed_dir,
            params,
            settings=settings,
            register=True,
            metrics_out=metrics_out,
            progress=progress,
        )
        client.set_tag(result.run_id, PARAMS_SHA_TAG, params_sha)
        decision.version, decision.run_id = result.model_version, result.run_id
        decision.gate = result.decision.to_dict()
        decision.test_metrics = dict(result.metrics)
        decision.champion_test_metrics = (
            dict(result.champion_metrics) if result.champion_metrics else None
        )
        if metrics_out is not None:
            decision.report["metrics"] = str(metrics_out)
    decision.champion_after = _alias_or_none(client, settings.model_name, CHAMPION)
    promoted = decision.champion_after == decision.version and decision.version is not None
    was_champion = decision.champion_before == decision.version
    decision.status = "promoted" if promoted and not was_champion else "kept"
    if promoted and was_champion:
        decision.reasons.append(f"version {decision.version} is already the champion")
    decision.report["mlflow_run"] = (
        f"{settings.tracking_uri()} experiment {experiment_id} run {decision.run_id}"
    )
    decision.report["evaluation_artifacts"] = f"runs:/{decision.run_id}/evaluation"


def _find_trained_version(
    client: Any, experiment_id: str, name: str, data_sha: str, params_sha: str
) -> tuple[int, Any] | None:
    """The newest registered version trained on these files and parameters, if any."""
    runs = client.search_runs(
        [experiment_id],
        filter_string=(
            f"tags.`{DATA_SHA_TAG}` = '{data_sha}' and tags.`{PARAMS_SHA_TAG}` = '{params_sha}'"
        ),
        order_by=["attributes.start_time DESC"],
        max_results=20,
    )
    for run in runs:
        for mv in client.search_model_versions(f"run_id = '{run.info.run_id}'"):
            if mv.name == name:
                return int(mv.version), run
    return None


def _alias_or_none(client: Any, name: str, alias: str) -> int | None:
    from rakuten_mlops.registry.registry import get_alias_version

    try:
        return get_alias_version(client, name, alias)
    except RakutenError:
        return None  # no registered model yet


def feedback_scores_of_gate(paired: Mapping[str, Any], version: int | None) -> dict[str, Any]:
    """The recent-feedback scores from the gate's paired comparison (`comparisons.reviewed`):
    the gate has already run both models on the held-out products, no need to again."""
    n = int(paired["n"])
    return {
        "n": n,
        "note": "held-out recent feedback products",
        **{
            role: {
                "version": model_version,
                "n": n,
                "accuracy": paired[f"{role}_accuracy"],
                "weighted_f1": paired[f"{role}_weighted_f1"],
            }
            for role, model_version in (
                ("champion", paired.get("champion_version")),
                ("challenger", version),
            )
        },
    }


def score_recent_feedback(
    settings: Settings, processed_dir: Path, champion: int | None, challenger: int | None
) -> dict[str, Any]:
    """Accuracy and weighted F1 of both models on the held-out recent feedback products.

    These products were never trained on (see `merge_feedback`). Used when the gate did not
    pair the two models on them (`feedback_scores_of_gate`): a version reused from an earlier
    run, or no champion to compare with when it was trained.
    """
    from rakuten_mlops.data.prepare import load_feedback_holdout
    from rakuten_mlops.evaluation.evaluate import predict_frame
    from rakuten_mlops.evaluation.metrics import compute_classification_metrics
    from rakuten_mlops.models.pyfunc import as_predict_fn, load_pyfunc_model

    frame = load_feedback_holdout(processed_dir)
    if frame.empty:
        return {"n": 0, "note": "no held-out feedback products yet"}
    scores: dict[str, Any] = {"n": len(frame), "note": "held-out recent feedback products"}
    for role, version in (("champion", champion), ("challenger", challenger)):
        if version is None:
            continue
        try:
            model = load_pyfunc_model(f"models:/{settings.model_name}/{version}")
            predictions = predict_frame(as_predict_fn(model), frame)
        except RakutenError as exc:
            scores[role] = {"version": version, "error": str(exc)}
            continue
        metrics = compute_classification_metrics(
            frame["prdtypecode"].to_numpy(dtype="int64"),
            predictions["prdtypecode"].to_numpy(dtype="int64"),
        )
        scores[role] = {
            "version": version,
            "n": int(metrics["n"]),
            "accuracy": metrics["accuracy"],
            "weighted_f1": metrics["weighted_f1"],
        }
    return scores


def reload_service(
    service_url: str, api_key: str | None, timeout_s: float = 300.0
) -> dict[str, Any]:
    """`POST {service_url}/v1/admin/reload?wait=true`; never raises (the registry moved).

    Waits for the service to load the new champion, so the answer says which version it
    serves now (`champion_version`) or why the load failed (the old model stays).

    Returns:
        `{"status": "succeeded"|"failed", "url", "http_status", "detail", ...}`.
    """
    import httpx

    url = service_url.rstrip("/") + RELOAD_PATH
    headers = {"X-API-Key": api_key} if api_key else {}
    try:
        response = httpx.post(url, params={"wait": "true"}, headers=headers, timeout=timeout_s)
    except httpx.HTTPError as exc:
        return {"status": "failed", "url": url, "detail": f"{type(exc).__name__}: {exc}"}
    try:
        body = response.json()
    except ValueError:
        body = {}
    body = body if isinstance(body, dict) else {}
    state = str(body.get("state", ""))
    ok = response.status_code < 300 and state in ("", "succeeded", "running")
    detail = str(body.get("error") or body.get("detail") or "") if body else response.text[:500]
    if response.status_code in (401, 403):
        detail = (
            f"HTTP {response.status_code} {detail}: the reload needs an admin's API key in "
            "RAKUTEN_SERVICE_API_KEY (`rakuten-mlops users api-key create <admin>`)"
        )
    return {
        "status": ("succeeded" if state == "succeeded" else "requested") if ok else "failed",
        "url": url,
        "http_status": response.status_code,
        "champion_version": body.get("champion_version"),
        "detail": detail,
    }


def _reload(
    decision: RetrainDecision, service_url: str | None, api_key: str | None
) -> dict[str, Any]:
    if not decision.promoted:
        return {"status": "not needed", "detail": f"status is {decision.status}"}
    if not service_url:
        return {"status": "skipped", "detail": "no service URL configured"}
    result = reload_service(service_url, api_key)
    if result["status"] == "failed":
        decision.reasons.append(
            f"the service at {service_url} did not reload ({result['detail']}); the registry "
            "is promoted, the service picks it up on its next reload"
        )
    return result


def _previous_decision(path: Path, fresh: RetrainDecision) -> RetrainDecision:
    if not path.is_file():
        raise RakutenError(f"{path}: no decision to reload from; run the train step first")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        known = set(RetrainDecision.__dataclass_fields__)
        decision = RetrainDecision(**{k: v for k, v in data.items() if k in known})
    except (OSError, ValueError, TypeError) as exc:
        raise RakutenError(f"{path}: unreadable retrain decision: {exc}") from exc
    decision.steps = sorted(set(decision.steps) | set(fresh.steps), key=STEPS.index)
    return decision


def _finish(decision: RetrainDecision, decision_out: Path | None) -> RetrainDecision:
    decision.finished_at = _now()
    if decision.status == "pending":
        decision.status = "done"
    if decision_out is not None:
        decision.report.setdefault("decision", str(decision_out))
        payload = json.dumps(decision.to_dict(), indent=2, ensure_ascii=False) + "\n"
        decision_out.parent.mkdir(parents=True, exist_ok=True)
        tmp = decision_out.with_name(f".{decision_out.name}.part")
        tmp.write_text(payload, encoding="utf-8")
        tmp.replace(decision_out)
        history = decision_out.parent / "history"
        history.mkdir(exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        (history / f"{stamp}-{decision.status}.json").write_text(payload, encoding="utf-8")
    return decision


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) and not math.isnan(value) else "n/a"


def _clean(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value
