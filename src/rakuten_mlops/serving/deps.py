"""Dependencies of the routes, as `Annotated` aliases (`SessionDep`, `CurrentPrincipal`...).

Authentication plugs in here: `get_current_principal` is the one place that says who calls
(issue 9 replaces its body with JWT bearer / API key checks; routes do not change), and
`require_role` turns a role into a dependency (admin passes every check).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Annotated, Literal

from fastapi import Depends, HTTPException, Request, status
from sqlalchemy.orm import Session

from rakuten_mlops.config import Settings
from rakuten_mlops.serving.metrics import ServiceMetrics
from rakuten_mlops.serving.model_manager import ModelManager
from rakuten_mlops.serving.predictor import PredictionService
from rakuten_mlops.serving.recorder import PredictionRecorder

Role = Literal["admin", "reviewer", "client"]


@dataclass(frozen=True)
class Principal:
    """Who calls the API: a user name and its role."""

    username: str
    role: Role


def get_current_principal(request: Request) -> Principal:
    """The caller (anonymous admin until authentication exists)."""
    return Principal("anonymous", "admin")


CurrentPrincipal = Annotated[Principal, Depends(get_current_principal)]


def require_role(*roles: Role) -> Callable[[Principal], Principal]:
    """A dependency that lets through the given roles (and admin), 403 for the others."""

    def check(principal: CurrentPrincipal) -> Principal:
        if principal.role != "admin" and principal.role not in roles:
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                detail=f"role {principal.role!r} may not do this (needs {' or '.join(roles) or 'admin'})",
            )
        return principal

    return check


def get_settings_dep(request: Request) -> Settings:
    """The settings the app was built with."""
    settings: Settings = request.app.state.settings
    return settings


def get_session(request: Request) -> Iterator[Session]:
    """A database session for one request (closed afterwards; routes commit)."""
    with request.app.state.session_factory() as session:
        yield session


def get_models(request: Request) -> ModelManager:
    """The models in service."""
    models: ModelManager = request.app.state.models
    return models


def get_predictor(request: Request) -> PredictionService:
    """The prediction service (variants, micro-batching, records, metrics)."""
    predictor: PredictionService = request.app.state.predictor
    return predictor


def get_recorder(request: Request) -> PredictionRecorder:
    """The prediction record writer."""
    recorder: PredictionRecorder = request.app.state.recorder
    return recorder


def get_metrics(request: Request) -> ServiceMetrics:
    """The app's Prometheus metrics."""
    metrics: ServiceMetrics = request.app.state.metrics
    return metrics


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
SessionDep = Annotated[Session, Depends(get_session)]
ModelsDep = Annotated[ModelManager, Depends(get_models)]
PredictorDep = Annotated[PredictionService, Depends(get_predictor)]
RecorderDep = Annotated[PredictionRecorder, Depends(get_recorder)]
MetricsDep = Annotated[ServiceMetrics, Depends(get_metrics)]
