"""Every router of the API in one `api_router` (the app includes it)."""

from __future__ import annotations

from fastapi import APIRouter, Depends

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

# Every /v1 route authenticates (401) and counts against its caller's rate limit (429).
PREDICT_LIMIT = [Depends(rate_limit("predict"))]
API_LIMIT = [Depends(rate_limit("api"))]

api_router = APIRouter()
api_router.include_router(health.router)
api_router.include_router(auth.router)
api_router.include_router(predict.router, dependencies=PREDICT_LIMIT)
api_router.include_router(feedback.router, dependencies=API_LIMIT)
api_router.include_router(predictions.router, dependencies=API_LIMIT)
api_router.include_router(model.router, dependencies=API_LIMIT)
api_router.include_router(admin.router, dependencies=API_LIMIT)
api_router.include_router(users.router, dependencies=API_LIMIT)
