"""Every router of the API, added to the app by `include_api`."""

from __future__ import annotations

from fastapi import Depends, FastAPI

from rakuten_mlops.serving.api.routes import (
    admin,
    auth,
    feedback,
    health,
    model,
    predict,
    predictions,
    users,
)
from rakuten_mlops.serving.deps import rate_limit
from rakuten_mlops.serving.schemas import ErrorResponse

# Every /v1 route authenticates (401), checks the role (403) and counts against its
# caller's rate limit (429).
PREDICT_LIMIT = [Depends(rate_limit("predict"))]
API_LIMIT = [Depends(rate_limit("api"))]
SECURED: dict[int | str, dict[str, object]] = {
    400: {"model": ErrorResponse, "description": "Body that cannot be parsed."},
    401: {"model": ErrorResponse, "description": "No valid bearer token or API key."},
    403: {"model": ErrorResponse, "description": "The caller's role may not do this."},
    413: {"model": ErrorResponse, "description": "Request body over RAKUTEN_MAX_BODY_BYTES."},
    422: {"model": ErrorResponse, "description": "Invalid input; `errors` names the fields."},
    429: {"model": ErrorResponse, "description": "Rate limit reached; see `Retry-After`."},
}


def include_api(app: FastAPI) -> None:
    """Add every router of the API to `app`, each directly (FastAPI checks every nested
    router's routes at each request: one level is cheaper), the prediction route first."""
    app.include_router(predict.router, dependencies=PREDICT_LIMIT, responses=SECURED)
    app.include_router(health.router)
    app.include_router(auth.router)
    for router in (feedback, predictions, model, admin, users):
        app.include_router(router.router, dependencies=API_LIMIT, responses=SECURED)
