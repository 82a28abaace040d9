"""Every router of the API in one `api_router` (the app includes it)."""

from __future__ import annotations

from fastapi import APIRouter

from rakuten_mlops.serving.api.routes import admin, feedback, health, model, predict, predictions

api_router = APIRouter()
api_router.include_router(health.router)
api_router.include_router(predict.router)
api_router.include_router(feedback.router)
api_router.include_router(predictions.router)
api_router.include_router(model.router)
api_router.include_router(admin.router)
