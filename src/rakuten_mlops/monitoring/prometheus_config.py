"""The project's Prometheus configuration, rendered for another target.

`monitoring/prometheus/prometheus.yml` scrapes the service at its production address
(127.0.0.1:8000) every 15 s. A demo or a test runs the service elsewhere and cannot wait
minutes for an alert: `render_prometheus_config` points the same scrape job at other
targets and may shorten the scrape and evaluation intervals. The alert rules are referenced,
never copied or edited: their expressions and `for:` durations keep their meaning.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rakuten_mlops.errors import RakutenError

# Prometheus' duration syntax (a single unit is enough here: 500ms, 2s, 1m).
_DURATION = re.compile(r"^[1-9][0-9]*(ms|s|m|h|d|w|y)$")
_TARGET = re.compile(r"^[A-Za-z0-9.\-\[\]:]+:[0-9]{1,5}$")


def render_prometheus_config(
    config: Mapping[str, Any],
    *,
    config_dir: Path,
    targets: Sequence[str],
    interval: str | None = None,
    bearer_token_file: Path | None = None,
    job_name: str = "rakuten-service",
) -> dict[str, Any]:
    """The parsed scrape config with the service job pointed at `targets`.

    Args:
        config: the parsed `prometheus.yml`.
        config_dir: its folder: relative `rule_files` become absolute paths there, so the
            rendered file can live anywhere.
        targets: `host:port` of the services to scrape (replace the job's targets).
        interval: a Prometheus duration (e.g. `2s`) for both the scrape and the rule
            evaluation intervals; None keeps the configured ones.
        bearer_token_file: a file holding the service's `RAKUTEN_METRICS_TOKEN`, sent as
            `Authorization: Bearer` on every scrape.
        job_name: the scrape job of the service.

    Raises:
        RakutenError: no target, a malformed target or interval, or no such job.
    """
    if not targets:
        raise RakutenError("give at least one target (host:port) to scrape")
    bad = [t for t in targets if not _TARGET.match(t)]
    if bad:
        raise RakutenError(f"target must be host:port, got {bad}")
    if interval is not None and not _DURATION.match(interval):
        raise RakutenError(f"interval must be a Prometheus duration such as 2s, got {interval!r}")
    rendered = copy.deepcopy(dict(config))
    jobs = [j for j in rendered.get("scrape_configs") or [] if j.get("job_name") == job_name]
    if not jobs:
        raise RakutenError(f"no scrape job {job_name!r} in the Prometheus configuration")
    job = jobs[0]
    labels: dict[str, Any] = {}
    for static in job.get("static_configs") or []:
        labels.update(static.get("labels") or {})
    job["static_configs"] = [{"targets": list(targets), **({"labels": labels} if labels else {})}]
    if bearer_token_file is not None:
        job["authorization"] = {"type": "Bearer", "credentials_file": str(bearer_token_file)}
    if interval is not None:
        rendered.setdefault("global", {}).update(
            scrape_interval=interval, evaluation_interval=interval
        )
        if "scrape_interval" in job:
            job["scrape_interval"] = interval
    rendered["rule_files"] = [
        str((config_dir / name).resolve()) if not Path(name).is_absolute() else name
        for name in rendered.get("rule_files") or []
    ]
    return rendered
