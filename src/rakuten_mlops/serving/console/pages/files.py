"""Static files (versioned, immutable when current) and the stored images of predictions."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException, status
from fastapi.responses import FileResponse, RedirectResponse, Response

from rakuten_mlops.db import crud
from rakuten_mlops.db.models import Prediction
from rakuten_mlops.serving.console import assets
from rakuten_mlops.serving.console.access import ConsoleRoute, ReviewerDep
from rakuten_mlops.serving.deps import SessionDep, SettingsDep

router = APIRouter(prefix="/console", route_class=ConsoleRoute)


@router.get("/static/{version}/{name:path}", name="console_static")
def static_file(version: str, name: str) -> Response:
    """A static file; immutable caching when `version` is its current hash."""
    path = assets.asset_file(name)
    if path is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no static file {name!r}")
    current = assets.asset_versions()[name] == version
    return FileResponse(
        path,
        media_type=assets.media_type(path),
        headers={"Cache-Control": assets.IMMUTABLE if current else assets.REVALIDATE},
    )


@router.get("/images/{prediction_id}")
def prediction_image(
    prediction_id: str,
    session: SessionDep,
    settings: SettingsDep,
    principal: ReviewerDep,
) -> Response:
    """The stored image of a prediction (RAKUTEN_IMAGE_STORE_DIR), else a placeholder."""
    prediction = crud.get_prediction(session, prediction_id)
    stored = _stored_image(prediction, settings.image_store_dir)
    if stored is None:
        return RedirectResponse(
            assets.asset_url("placeholder.svg"), status_code=status.HTTP_307_TEMPORARY_REDIRECT
        )
    return FileResponse(
        stored, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=86400"}
    )


def _stored_image(prediction: Prediction | None, store: Path | None) -> Path | None:
    if prediction is None or store is None or not prediction.image_path:
        return None
    path = Path(prediction.image_path).resolve()
    if not path.is_file() or not path.is_relative_to(store.resolve()):
        return None  # never serve a file outside the store
    return path
