"""The console's pages, one module per screen, each over the service layer (`serving/services`).

`router` holds them all (each page's router has the prefix `/console` and the console's route
class, so an error becomes a page: sign-in redirect, 403/404/422/429/503, never JSON).
"""

from __future__ import annotations

from fastapi import APIRouter

from rakuten_mlops.serving.console.pages import (
    agreement,
    classify,
    files,
    model,
    review,
    signin,
    users,
)

router = APIRouter()
for page in (files, signin, classify, review, agreement, model, users):
    router.include_router(page.router, include_in_schema=False)
