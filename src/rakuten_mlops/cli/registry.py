"""`rakuten-mlops registry ...`: list versions, promote one, roll the champion back, record
the digest of a version's files."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from rakuten_mlops.cli._common import console, handle_errors
from rakuten_mlops.config import get_settings

if TYPE_CHECKING:
    from mlflow import MlflowClient

registry_app = typer.Typer(
    help="Model registry: versions and aliases (champion, challenger).", no_args_is_help=True
)

# Metrics shown by `registry list` (logged by `train`).
LIST_METRICS = ("test_weighted_f1", "test_macro_f1", "test_accuracy", "test_ece")


def _client() -> MlflowClient:
    from mlflow import MlflowClient

    from rakuten_mlops.tracking import set_tracking_uri

    # Registry commands need an existing store: never create an empty one here.
    set_tracking_uri(get_settings(), create=False)
    return MlflowClient()


@registry_app.command("list")
@handle_errors
def list_(
    name: Annotated[
        str | None,
        typer.Option(help="Registered model (default: RAKUTEN_MODEL_NAME)."),
    ] = None,
) -> None:
    """List the versions with their run, test metrics and aliases."""
    from rakuten_mlops.registry.registry import list_versions, read_champion_history

    model_name = name or get_settings().model_name
    client = _client()
    versions = list_versions(client, model_name, metric_keys=LIST_METRICS)
    console.print(f"{model_name}: {len(versions)} version(s)", highlight=False)
    short = [key.removeprefix("test_") for key in LIST_METRICS]
    header = f"{'version':>7}  {'aliases':<21} {'created (UTC)':<19}"
    header += "".join(f" {name:>11}" for name in short) + f" {'gate':>5}  run id"
    console.print(header, highlight=False, soft_wrap=True)
    for info in versions:
        scores = "".join(
            f" {info.metrics[k]:>11.4f}" if k in info.metrics else f" {'-':>11}"
            for k in LIST_METRICS
        )
        console.print(
            f"{info.version:>7}  {', '.join(info.aliases):<21} "
            f"{info.created_at[:19].replace('T', ' '):<19}{scores} "
            f"{info.tags.get('gate.promote', '-'):>5}  {info.run_id or '-'}",
            highlight=False,
            soft_wrap=True,
        )
    history = read_champion_history(client, model_name)
    if history:
        console.print("champion history (latest last):")
        for event in history[-10:]:
            console.print(f"  {event.at}  {event.action:<8} v{event.version}  {event.reason}")


@registry_app.command("promote")
@handle_errors
def promote(
    version: Annotated[int, typer.Argument(help="Version to point the alias at.", min=1)],
    alias: Annotated[str, typer.Option(help="Alias to move.")] = "champion",
    name: Annotated[
        str | None, typer.Option(help="Registered model (default: RAKUTEN_MODEL_NAME).")
    ] = None,
) -> None:
    """Point an alias (champion by default) at a version, bypassing the gate (recorded)."""
    from rakuten_mlops.registry.registry import promote_version

    model_name = name or get_settings().model_name
    previous = promote_version(_client(), model_name, version, alias, reason="manual promotion")
    before = f"v{previous}" if previous is not None else "unset"
    console.print(f"{model_name}: {alias} -> v{version} (was {before})")


@registry_app.command("rollback")
@handle_errors
def rollback(
    name: Annotated[
        str | None, typer.Option(help="Registered model (default: RAKUTEN_MODEL_NAME).")
    ] = None,
) -> None:
    """Put the previous champion back (one step of the recorded history)."""
    from rakuten_mlops.registry.registry import rollback_champion

    model_name = name or get_settings().model_name
    current, previous = rollback_champion(_client(), model_name)
    console.print(f"{model_name}: champion v{current} -> v{previous}")


@registry_app.command("record-digest")
@handle_errors
def record_digest(
    version: Annotated[int, typer.Argument(help="The model version whose files you checked.")],
    name: Annotated[
        str | None, typer.Option("--name", help="Registered model (default: RAKUTEN_MODEL_NAME).")
    ] = None,
) -> None:
    """Tag a version with the SHA-256 of its files (`artifacts_sha256`), as `train --register`
    does: the service then loads it only while its files match. For versions registered
    without it, once you trust their files."""
    from rakuten_mlops.registry.integrity import record_artifacts_digest

    model = name or get_settings().model_name
    digest = record_artifacts_digest(_client(), model, version)
    console.print(f"models:/{model}/{version}: artifacts_sha256 {digest}", highlight=False)
