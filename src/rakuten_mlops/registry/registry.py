"""Model registry operations on MLflow aliases (`champion`, `challenger`), never stages.

The serving side loads `models:/<name>@champion`. Every change of champion is appended to
a JSON history kept in the registered model's `champion_history` tag, so `rollback` can put
back the previous champion (and roll back again, one step at a time) and anyone can read
who was champion when. Versions also carry `champion_since` / `champion_until` tags.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from rakuten_mlops.errors import RegistryError

CHAMPION = "champion"
CHALLENGER = "challenger"
HISTORY_TAG = "champion_history"
_MAX_HISTORY = 50  # events kept in the tag (its value is limited in size)


@dataclass(frozen=True)
class VersionInfo:
    """One registered version, with what the registry and its training run know of it."""

    version: int
    run_id: str | None
    created_at: str
    aliases: list[str]
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    source: str = ""


@dataclass(frozen=True)
class ChampionEvent:
    """A change of champion recorded in the history tag."""

    version: int
    action: str  # "promote" or "rollback"
    at: str  # ISO 8601, UTC
    reason: str = ""


def list_versions(
    client: MlflowClient, name: str, metric_keys: tuple[str, ...] | None = None
) -> list[VersionInfo]:
    """All versions of a registered model, newest first, with aliases and run metrics.

    Args:
        metric_keys: run metrics to attach (default: every metric of the run).

    Raises:
        RegistryError: the model is not registered.
    """
    model = _get_registered_model(client, name)
    # search_model_versions leaves `aliases` empty on some stores: read them from the model.
    aliases_by_version: dict[int, list[str]] = {}
    for alias, aliased in (model.aliases or {}).items():
        aliases_by_version.setdefault(int(aliased), []).append(alias)
    try:
        versions = client.search_model_versions(f"name = '{_quote(name)}'")
    except MlflowException as exc:
        raise RegistryError(f"cannot list the versions of {name!r}: {exc.message}") from exc
    infos: list[VersionInfo] = []
    for mv in sorted(versions, key=lambda v: int(v.version), reverse=True):
        metrics: dict[str, float] = {}
        if mv.run_id:
            try:
                run_metrics = client.get_run(mv.run_id).data.metrics
            except MlflowException:
                run_metrics = {}  # the run was deleted; the version is still usable
            metrics = {
                k: float(v)
                for k, v in run_metrics.items()
                if metric_keys is None or k in metric_keys
            }
        infos.append(
            VersionInfo(
                version=int(mv.version),
                run_id=mv.run_id or None,
                created_at=_format_ms(mv.creation_timestamp),
                aliases=sorted(aliases_by_version.get(int(mv.version), [])),
                metrics=metrics,
                tags=dict(mv.tags or {}),
                source=mv.source or "",
            )
        )
    return infos


def get_alias_version(client: MlflowClient, name: str, alias: str) -> int | None:
    """The version an alias points to, None when the alias is not set.

    Raises:
        RegistryError: the model is not registered.
    """
    model = _get_registered_model(client, name)
    version = (model.aliases or {}).get(alias)
    return int(version) if version is not None else None


def promote_version(
    client: MlflowClient,
    name: str,
    version: int,
    alias: str = CHAMPION,
    *,
    reason: str = "manual promotion",
) -> int | None:
    """Point `alias` at `version`; for `champion`, record the change in the history.

    Returns:
        The version the alias pointed to before (None when it was not set).

    Raises:
        RegistryError: unknown model or version, or an invalid alias.
    """
    _check_version(client, name, version)
    previous = get_alias_version(client, name, alias)
    if alias == CHAMPION:
        if previous == version:
            return previous  # nothing changes; keep the history free of no-op entries
        _set_champion(client, name, version, previous, action="promote", reason=reason)
    else:
        _set_alias(client, name, alias, version)
    return previous


def set_challenger(client: MlflowClient, name: str, version: int) -> int | None:
    """Point the `challenger` alias at `version` (returns the previous challenger)."""
    return promote_version(client, name, version, alias=CHALLENGER)


def read_champion_history(client: MlflowClient, name: str) -> list[ChampionEvent]:
    """The recorded changes of champion, oldest first (unreadable entries are skipped)."""
    model = _get_registered_model(client, name)
    raw = (model.tags or {}).get(HISTORY_TAG)
    if not raw:
        return []
    try:
        items = json.loads(raw)
    except json.JSONDecodeError:
        return []
    events: list[ChampionEvent] = []
    for item in items if isinstance(items, list) else []:
        if isinstance(item, Mapping) and "version" in item and "action" in item:
            events.append(
                ChampionEvent(
                    version=int(item["version"]),
                    action=str(item["action"]),
                    at=str(item.get("at", "")),
                    reason=str(item.get("reason", "")),
                )
            )
    return events


def compute_champion_stack(events: list[ChampionEvent]) -> list[int]:
    """Replay the history: a promotion pushes a version, a rollback pops the current one.

    The result lists the successive champions still "in force", oldest first; its last
    element is the champion, the one before it is where a rollback goes.
    """
    stack: list[int] = []
    for event in events:
        if event.action == "rollback":
            if stack:
                stack.pop()
            if not stack or stack[-1] != event.version:
                stack.append(event.version)
        elif not stack or stack[-1] != event.version:
            stack.append(event.version)
    return stack


def rollback_champion(client: MlflowClient, name: str) -> tuple[int, int]:
    """Move `champion` back to the previous champion.

    Returns:
        `(from_version, to_version)`.

    Raises:
        RegistryError: unknown model, no champion, or no earlier champion that still exists.
    """
    current = get_alias_version(client, name, CHAMPION)
    if current is None:
        raise RegistryError(f"model {name!r} has no champion; nothing to roll back")
    stack = compute_champion_stack(read_champion_history(client, name))
    if not stack or stack[-1] != current:
        # The alias was moved outside this tool: treat the current alias as the top.
        stack.append(current)
    existing = {info.version for info in list_versions(client, name, metric_keys=())}
    previous = next(
        (v for v in reversed(stack[:-1]) if v != current and v in existing),
        None,
    )
    if previous is None:
        raise RegistryError(
            f"model {name!r}: version {current} is the first recorded champion; "
            "there is no previous champion to roll back to (use `registry promote VERSION`)"
        )
    _set_champion(
        client, name, previous, current, action="rollback", reason=f"rollback from {current}"
    )
    return current, previous


def _set_champion(
    client: MlflowClient,
    name: str,
    version: int,
    previous: int | None,
    *,
    action: str,
    reason: str,
) -> None:
    now = datetime.now(UTC).isoformat(timespec="seconds")
    _set_alias(client, name, CHAMPION, version)
    events = read_champion_history(client, name)
    events.append(ChampionEvent(version=version, action=action, at=now, reason=reason))
    payload = [event.__dict__ for event in events[-_MAX_HISTORY:]]
    try:
        client.set_registered_model_tag(name, HISTORY_TAG, json.dumps(payload))
        client.set_model_version_tag(name, str(version), "champion_since", now)
        if "champion_until" in (client.get_model_version(name, str(version)).tags or {}):
            client.delete_model_version_tag(name, str(version), "champion_until")
        if previous is not None and previous != version:
            client.set_model_version_tag(name, str(previous), "champion_until", now)
    except MlflowException as exc:
        raise RegistryError(
            f"cannot record the champion history of {name!r}: {exc.message}"
        ) from exc


def _set_alias(client: MlflowClient, name: str, alias: str, version: int) -> None:
    try:
        client.set_registered_model_alias(name, alias, str(version))
    except MlflowException as exc:
        raise RegistryError(
            f"cannot point alias {alias!r} of {name!r} at version {version}: {exc.message}"
        ) from exc


def _get_registered_model(client: MlflowClient, name: str) -> Any:
    try:
        return client.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            from rakuten_mlops.tracking import describe_tracking_uri

            raise RegistryError(
                f"no registered model named {name!r} in the registry; train and register one "
                f"first (`rakuten-mlops train --register`) ({describe_tracking_uri()})"
            ) from None
        raise RegistryError(f"cannot read registered model {name!r}: {exc.message}") from exc


def _check_version(client: MlflowClient, name: str, version: int) -> ModelVersion:
    _get_registered_model(client, name)
    try:
        return client.get_model_version(name, str(version))
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise RegistryError(f"cannot read {name!r} version {version}: {exc.message}") from exc
    known = sorted(info.version for info in list_versions(client, name, metric_keys=()))
    listed = ", ".join(map(str, known)) or "none"
    raise RegistryError(f"model {name!r} has no version {version} (versions: {listed})")


def _format_ms(timestamp_ms: int | None) -> str:
    if not timestamp_ms:
        return ""
    return datetime.fromtimestamp(timestamp_ms / 1000, tz=UTC).isoformat(timespec="seconds")


def _quote(name: str) -> str:
    return name.replace("'", "\\'")
