"""Review console routes through TestClient: sign-in, roles, CSRF, queue, history, model."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from console_testing import PASSWORDS, csrf_of, sign_in
from rakuten_mlops.config import Settings
from rakuten_mlops.serving.auth import users
from rakuten_mlops.serving.console import assets
from service_records import add_drift_run
from service_testing import app_of, stored_feedback, stored_predictions

Classify = Callable[..., dict[str, Any]]


def _ids_on(html: str) -> list[str]:
    return re.findall(r'data-prediction-id="([0-9a-f]{32})"', html)


# Sign-in, session cookie, roles ----------------------------------------------------------


def test_pages_need_a_session(console: TestClient) -> None:
    for path in ("/console/classify", "/console/queue?order=confidence", "/console/model"):
        response = console.get(path)
        assert response.status_code == 303
        assert response.headers["location"].startswith("/console/login?next=%2Fconsole%2F")
    assert console.get("/console").headers["location"] == "/console/classify"


def test_sign_in_sets_a_strict_httponly_cookie_and_sign_out_clears_it(console: TestClient) -> None:
    page = console.get("/console/login")
    assert page.status_code == 200
    assert 'for="username"' in page.text and 'for="password"' in page.text
    response = console.post(
        "/console/login",
        data={
            "username": "rita",
            "password": PASSWORDS["rita"],
            "csrf_token": csrf_of(page.text),
            "next": "/console/history",
        },
    )
    assert response.status_code == 303
    assert response.headers["location"] == "/console/history"
    cookie = next(
        c for c in response.headers.get_list("set-cookie") if c.startswith("rakuten_console=")
    )
    lowered = cookie.lower()
    assert "httponly" in lowered and "samesite=strict" in lowered and "path=/console" in lowered
    assert "secure" not in lowered.replace("samesite", "")
    # The cookie holds the API's own access token: it works as a bearer token too.
    token = cookie.split(";")[0].split("=", 1)[1]
    me = console.get("/v1/predictions", headers={"Authorization": f"Bearer {token}"})
    assert me.status_code == 200
    history = console.get("/console/history")
    assert history.status_code == 200 and "rita" in history.text
    signed_out = console.post("/console/logout", data={"csrf_token": csrf_of(history.text)})
    assert signed_out.status_code == 303
    assert console.get("/console/history").status_code == 303  # back to the sign-in page


def test_secure_cookie_and_lax_by_configuration(
    start_console: Callable[..., TestClient], console_settings: Callable[..., Settings]
) -> None:
    client = start_console(
        console_settings(console_cookie_secure=True, console_cookie_samesite="lax")
    )
    page = client.get("/console/login")
    nonce = next(
        c for c in page.headers.get_list("set-cookie") if c.startswith("rakuten_console_login=")
    )
    assert "; secure" in nonce.lower()
    # Over plain http the client keeps a Secure cookie to itself: send it by hand.
    client.cookies.set("rakuten_console_login", csrf_of(page.text), path="/console")
    response = client.post(
        "/console/login",
        data={"username": "rita", "password": PASSWORDS["rita"], "csrf_token": csrf_of(page.text)},
    )
    cookie = next(
        c for c in response.headers.get_list("set-cookie") if c.startswith("rakuten_console=")
    ).lower()
    assert "; secure" in cookie and "samesite=lax" in cookie


def test_wrong_password_unknown_user_and_forged_cookie_are_refused(console: TestClient) -> None:
    page = console.get("/console/login")
    for username, password in (("rita", "not-her-password"), ("nobody", "whatever-123")):
        response = console.post(
            "/console/login",
            data={"username": username, "password": password, "csrf_token": csrf_of(page.text)},
        )
        assert response.status_code == 401
        assert "Unknown user name or wrong password." in response.text
        assert "rakuten_console=" not in response.headers.get("set-cookie", "")
    console.cookies.set("rakuten_console", "forged.token.value", path="/console")
    assert console.get("/console/queue").status_code == 303


def test_sign_in_form_needs_its_csrf_nonce(console: TestClient) -> None:
    console.get("/console/login")
    response = console.post(
        "/console/login",
        data={"username": "rita", "password": PASSWORDS["rita"], "csrf_token": "guessed"},
    )
    assert response.status_code == 403
    assert "rakuten_console=" not in response.headers.get("set-cookie", "")


def test_sign_in_attempts_share_the_token_rate_limit(
    start_console: Callable[..., TestClient], console_settings: Callable[..., Settings]
) -> None:
    client = start_console(console_settings(rate_limit_token="2/minute"))
    page = client.get("/console/login")
    data = {"username": "rita", "password": "wrong-password-1", "csrf_token": csrf_of(page.text)}
    assert [client.post("/console/login", data=data).status_code for _ in range(2)] == [401, 401]
    limited = client.post("/console/login", data={**data, "password": PASSWORDS["rita"]})
    assert limited.status_code == 429
    assert int(limited.headers["retry-after"]) > 0
    assert "Too many requests" in limited.text
    assert "rakuten_console=" not in limited.headers.get("set-cookie", "")


def test_open_redirects_are_not_followed(console: TestClient) -> None:
    page = console.get("/console/login")
    response = console.post(
        "/console/login",
        data={
            "username": "rita",
            "password": PASSWORDS["rita"],
            "csrf_token": csrf_of(page.text),
            "next": "https://evil.example/steal",
        },
    )
    assert response.headers["location"] == "/console/classify"


def test_a_client_cannot_open_the_console(console: TestClient) -> None:
    page = console.get("/console/login")
    console.post(
        "/console/login",
        data={"username": "carl", "password": PASSWORDS["carl"], "csrf_token": csrf_of(page.text)},
    )
    for path in ("/console/classify", "/console/queue", "/console/history", "/console/model"):
        response = console.get(path)
        assert response.status_code == 403
        assert response.headers["content-type"].startswith("text/html")
        assert "Not allowed" in response.text and "client" in response.text


def test_a_disabled_user_is_signed_out_at_once(console: TestClient) -> None:
    sign_in(console, "rita")
    with app_of(console).state.session_factory() as session:
        users.set_user_disabled(session, "rita")
        session.commit()
    assert console.get("/console/queue").status_code == 303


def test_reviewers_cannot_reach_admin_pages(console: TestClient) -> None:
    csrf = sign_in(console, "rita")
    assert console.get("/console/admin/users").status_code == 403
    assert console.post("/console/model/reload", data={"csrf_token": csrf}).status_code == 403
    model = console.get("/console/model")
    assert model.status_code == 200 and 'id="reload-button"' not in model.text


# CSRF ------------------------------------------------------------------------------------


def test_forms_without_the_session_csrf_token_are_refused(
    console: TestClient, classify: Classify
) -> None:
    prediction = classify(console, "Piscine tubulaire ronde")
    csrf = sign_in(console, "rita")
    for token in (None, "0" * 64, csrf[:-1] + ("0" if csrf[-1] != "0" else "1")):
        data = {"prdtypecode": "2583"} | ({"csrf_token": token} if token else {})
        response = console.post(f"/console/queue/{prediction['prediction_id']}", data=data)
        assert response.status_code == 403
        assert "CSRF" in response.text
    assert stored_feedback(console) == []
    # Another session's token does not work either.
    other = sign_in(console, "remi")
    sign_in(console, "rita")
    response = console.post(
        f"/console/queue/{prediction['prediction_id']}",
        data={"prdtypecode": "2583", "csrf_token": other},
    )
    assert response.status_code == 403
    assert stored_feedback(console) == []


# Classify --------------------------------------------------------------------------------


def test_classify_uses_the_api_prediction_path(console: TestClient, product_jpeg: Path) -> None:
    csrf = sign_in(console, "rita")
    page = console.get("/console/classify")
    assert 'for="designation"' in page.text and 'for="image"' in page.text
    response = console.post(
        "/console/classify",
        data={
            "designation": "Piscine tubulaire ronde",
            "description": "Livrée avec pompe",
            "csrf_token": csrf,
        },
        files={"image": ("photo.jpg", product_jpeg.read_bytes(), "image/jpeg")},
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert "default-src 'self'" in response.headers["content-security-policy"]
    assert response.text.count("<meter") == 3
    assert re.search(r'class="image-used">yes<', response.text)
    (record,) = stored_predictions(console)
    assert record.username == "rita"
    assert record.has_image and record.image_sha256
    assert record.designation == "Piscine tubulaire ronde"
    assert f'data-prediction-id="{record.id}"' in response.text
    assert f"code {record.prdtypecode}" in response.text


def test_classify_fragment_and_clear_errors(console: TestClient) -> None:
    csrf = sign_in(console, "rita")
    fragment = console.post(
        "/console/classify",
        data={"designation": "Chaise de jardin", "csrf_token": csrf},
        files={"image": ("", b"", "application/octet-stream")},  # no file chosen
        headers={"X-Console-Fragment": "1"},
    )
    assert fragment.status_code == 200
    assert "<html" not in fragment.text and 'id="result-title"' in fragment.text
    assert re.search(r'class="image-used">no<', fragment.text)
    blank = console.post(
        "/console/classify",
        data={"designation": "   ", "csrf_token": csrf},
        headers={"X-Console-Fragment": "1"},
    )
    assert blank.status_code == 422
    assert "designation" in blank.text and "Traceback" not in blank.text
    not_an_image = console.post(
        "/console/classify",
        data={"designation": "Chaise", "csrf_token": csrf},
        files={"image": ("photo.jpg", b"this is text, not a JPEG", "image/jpeg")},
    )
    assert not_an_image.status_code == 422
    assert "image" in not_an_image.text


def test_classify_counts_against_the_users_prediction_limit(
    start_console: Callable[..., TestClient], console_settings: Callable[..., Settings]
) -> None:
    client = start_console(console_settings(rate_limit_predict="2/minute"))
    csrf = sign_in(client, "rita")
    data = {"designation": "Chaise de jardin", "csrf_token": csrf}
    assert [client.post("/console/classify", data=data).status_code for _ in range(2)] == [
        200,
        200,
    ]
    limited = client.post("/console/classify", data=data, headers={"X-Console-Fragment": "1"})
    assert limited.status_code == 429 and "Too many requests" in limited.text
    assert int(limited.headers["retry-after"]) > 0
    # The same budget as rita's API calls.
    token = client.post("/token", data={"username": "rita", "password": PASSWORDS["rita"]}).json()[
        "access_token"
    ]
    api = client.post(
        "/v1/predict",
        data={"designation": "Chaise"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert api.status_code == 429


# Review queue ----------------------------------------------------------------------------


def test_empty_queue(console: TestClient) -> None:
    sign_in(console, "rita")
    page = console.get("/console/queue")
    assert page.status_code == 200
    assert "Nothing to review" in page.text
    assert re.search(r'id="left-count">0<', page.text)
    assert re.search(r'id="done-today">0<', page.text)


def test_review_by_accept_and_correction_goes_to_feedback(
    console: TestClient, classify: Classify
) -> None:
    first = classify(console, "Piscine tubulaire ronde")
    second = classify(console, "Cartouche d'encre noire")
    csrf = sign_in(console, "rita")
    page = console.get("/console/queue?order=oldest")
    assert _ids_on(page.text)[0] == first["prediction_id"]  # oldest first
    assert re.search(r'id="left-count">2<', page.text)
    accepted = console.post(
        f"/console/queue/{first['prediction_id']}",
        data={"prdtypecode": str(first["prdtypecode"]), "csrf_token": csrf, "order": "oldest"},
        headers={"X-Console-Fragment": "1"},
    )
    assert accepted.status_code == 200
    assert _ids_on(accepted.text)[0] == second["prediction_id"]  # the next item at once
    assert re.search(r'id="done-today">1<', accepted.text)
    assert re.search(r'id="left-count">1<', accepted.text)
    corrected_code = 2522 if second["prdtypecode"] != 2522 else 2403
    redirect = console.post(
        f"/console/queue/{second['prediction_id']}",
        data={"prdtypecode": str(corrected_code), "csrf_token": csrf, "order": "confidence"},
    )
    assert redirect.status_code == 303
    assert redirect.headers["location"] == "/console/queue?order=confidence"
    rows = stored_feedback(console)
    assert [(r.prediction_id, r.prdtypecode, r.username) for r in rows] == [
        (first["prediction_id"], first["prdtypecode"], "rita"),
        (second["prediction_id"], corrected_code, "rita"),
    ]
    assert [r.previous_code for r in rows] == [first["prdtypecode"], second["prdtypecode"]]
    assert "Nothing to review" in console.get("/console/queue").text
    # The API sees the same corrections.
    metrics = console.get("/metrics").text
    assert 'rakuten_feedback_total{correct="true",variant="champion"} 1.0' in metrics


def test_review_refuses_unknown_codes_and_predictions(
    console: TestClient, classify: Classify
) -> None:
    prediction = classify(console, "Piscine")
    csrf = sign_in(console, "rita")
    bad_code = console.post(
        f"/console/queue/{prediction['prediction_id']}",
        data={"prdtypecode": "1234", "csrf_token": csrf},
    )
    assert bad_code.status_code == 422 and "prdtypecode" in bad_code.text
    unknown = console.post(
        "/console/queue/" + "f" * 32, data={"prdtypecode": "2583", "csrf_token": csrf}
    )
    assert unknown.status_code == 404
    assert stored_feedback(console) == []


def test_queue_filters_order_and_pagination(
    start_console: Callable[..., TestClient],
    console_settings: Callable[..., Settings],
    classify: Classify,
) -> None:
    client = start_console(console_settings(console_page_size=2))
    made = [classify(client, f"Produit numéro {i}") for i in range(5)]
    sign_in(client, "rita")
    first_page = client.get("/console/queue?order=oldest")
    assert re.search(r'id="left-count">5<', first_page.text)
    assert "Items 1–2 of 5" in first_page.text and 'rel="next"' in first_page.text
    second_page = client.get("/console/queue?order=oldest&offset=2")
    assert _ids_on(second_page.text)[0] == made[2]["prediction_id"]
    assert 'rel="prev"' in second_page.text and "Items 3–4 of 5" in second_page.text
    last_page = client.get("/console/queue?offset=4")
    assert 'rel="next"' not in last_page.text
    beyond = client.get("/console/queue?offset=9")
    assert "No more items" in beyond.text
    by_confidence = client.get("/console/queue?order=confidence")
    lowest = min(made, key=lambda p: (p["confidence"], 0))
    assert _ids_on(by_confidence.text)[0] == lowest["prediction_id"]
    code = made[0]["prdtypecode"]
    same_code = [p for p in made if p["prdtypecode"] == code]
    by_code = client.get(f"/console/queue?code={code}")
    assert re.search(rf'id="left-count">{len(same_code)}<', by_code.text)
    today = datetime.now(UTC).date().isoformat()
    assert re.search(r'id="left-count">5<', client.get(f"/console/queue?day={today}").text)
    assert re.search(r'id="left-count">0<', client.get("/console/queue?day=2001-01-01").text)
    bad = client.get("/console/queue?code=77")
    assert bad.status_code == 422 and "code" in bad.text
    assert client.get("/console/queue?offset=-1").status_code == 422


def test_stored_image_thumbnail_or_placeholder(
    start_console: Callable[..., TestClient],
    console_settings: Callable[..., Settings],
    classify: Classify,
    product_jpeg: Path,
    tmp_path: Path,
) -> None:
    client = start_console(console_settings(image_store_dir=tmp_path / "images"))
    data = product_jpeg.read_bytes()
    token = client.post(
        "/token", data={"username": "admin", "password": PASSWORDS["admin"]}
    ).json()["access_token"]
    with_image = client.post(
        "/v1/predict",
        data={"designation": "Piscine"},
        files={"image": ("p.jpg", data, "image/jpeg")},
        headers={"Authorization": f"Bearer {token}"},
    ).json()
    without = classify(client, "Chaise")
    stored_predictions(client)  # flushed: the file is written with the record
    sign_in(client, "rita")
    image = client.get(f"/console/images/{with_image['prediction_id']}")
    assert image.status_code == 200 and image.content == data
    placeholder = client.get(f"/console/images/{without['prediction_id']}")
    assert placeholder.status_code == 307
    assert placeholder.headers["location"] == assets.asset_url("placeholder.svg")


# History and undo ------------------------------------------------------------------------


def test_history_and_undo_of_ones_own_last_correction(
    console: TestClient, classify: Classify
) -> None:
    first = classify(console, "Piscine")
    second = classify(console, "Tabouret de bar")
    rita = sign_in(console, "rita")
    console.post(
        f"/console/queue/{first['prediction_id']}",
        data={"prdtypecode": "2583", "csrf_token": rita},
    )
    remi = sign_in(console, "remi")
    console.post(
        f"/console/queue/{second['prediction_id']}",
        data={"prdtypecode": "1560", "csrf_token": remi},
    )
    rita_row, remi_row = stored_feedback(console)
    # Rita cannot undo Remi's correction, nor an older one of her own once superseded.
    rita = sign_in(console, "rita")
    history = console.get("/console/history")
    assert "rita" in history.text and "remi" in history.text
    assert "Mobilier intérieur" in history.text  # French names, UTF-8
    assert history.text.count('id="undo-button"') == 1
    refused = console.post(
        "/console/history/undo", data={"feedback_id": str(remi_row.id), "csrf_token": rita}
    )
    assert refused.status_code == 409
    undone = console.post(
        "/console/history/undo", data={"feedback_id": str(rita_row.id), "csrf_token": rita}
    )
    assert undone.status_code == 303
    rows = {row.id: row for row in stored_feedback(console)}
    assert rows[rita_row.id].undone_at is not None and rows[remi_row.id].undone_at is None
    queue = console.get("/console/queue")
    assert _ids_on(queue.text) == [first["prediction_id"]]  # back in the queue
    again = console.post(
        "/console/history/undo", data={"feedback_id": str(rita_row.id), "csrf_token": rita}
    )
    assert again.status_code == 409
    assert "undone" in console.get("/console/history").text


def test_history_pagination_and_mine(
    start_console: Callable[..., TestClient],
    console_settings: Callable[..., Settings],
    classify: Classify,
) -> None:
    client = start_console(console_settings(console_page_size=2))
    made = [classify(client, f"Lot {i}") for i in range(3)]
    csrf = sign_in(client, "rita")
    for prediction in made:
        client.post(
            f"/console/queue/{prediction['prediction_id']}",
            data={"prdtypecode": "2583", "csrf_token": csrf},
        )
    page = client.get("/console/history")
    assert "1–2 of 3" in page.text and 'rel="next"' in page.text
    assert "3–3 of 3" in client.get("/console/history?offset=2").text
    sign_in(client, "remi")
    assert "No corrections yet." in client.get("/console/history?mine=true").text


# Model page, static files ----------------------------------------------------------------


def test_model_page_chart_drift_and_reload(console: TestClient, classify: Classify) -> None:
    prediction = classify(console, "Piscine")
    csrf = sign_in(console, "admin")
    empty = console.get("/console/model")
    assert empty.status_code == 200
    assert "local directory" in empty.text
    assert "No corrections yet" in empty.text and "No drift run recorded yet" in empty.text
    console.post(
        f"/console/queue/{prediction['prediction_id']}",
        data={"prdtypecode": str(prediction["prdtypecode"]), "csrf_token": csrf},
    )
    with app_of(console).state.session_factory() as session:
        for day, drift, share, columns in (
            (30, False, 0.1, []),
            (1, True, 0.625, ["designation", "image_brightness"]),
        ):
            at = (
                datetime(2026, 11, day, 10, tzinfo=UTC)
                if day == 30
                else datetime(2026, 12, day, 10, tzinfo=UTC)
            )
            add_drift_run(
                session,
                at=at,
                dataset_drift=drift,
                drift_share=share,
                drifted_columns=columns,
                current_rows=800,
                window=timedelta(days=7),
                summary={"explanation": f"drift in text (title_length) on day {day}"},
            )
        session.commit()
    page = console.get("/console/model")
    assert "drift in text (title_length) on day 1" in page.text  # the latest run's "why"
    assert '<svg class="chart"' in page.text and "100% right (1 of 1 reviewed)" in page.text
    assert "drift detected" in page.text and "drifted share 62.5 %" in page.text
    assert "designation, image_brightness" in page.text
    assert 'id="reload-button"' in page.text
    reload = console.post("/console/model/reload", data={"csrf_token": csrf})
    assert reload.status_code == 303
    assert reload.headers["location"] == "/console/model?notice=reload"


def test_static_files_are_versioned_and_cached(console: TestClient) -> None:
    url = assets.asset_url("console.css")
    version = url.split("/")[3]
    assert re.fullmatch(r"[0-9a-f]{12}", version)
    response = console.get(url)
    assert response.status_code == 200
    assert response.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert response.headers["content-type"].startswith("text/css")
    stale = console.get("/console/static/000000000000/console.css")
    assert stale.status_code == 200 and stale.headers["cache-control"] == "no-cache"
    assert console.get(f"/console/static/{version}/%2E%2E/auth.py").status_code == 404
    assert console.get(f"/console/static/{version}/nope.js").status_code == 404
    page = console.get("/console/login")
    assert url in page.text and assets.asset_url("console.js") in page.text


# Admin: users and API keys ---------------------------------------------------------------


def test_admin_manages_users_and_api_keys(console: TestClient) -> None:
    csrf = sign_in(console, "admin")
    created = console.post(
        "/console/admin/users",
        data={
            "username": "zoe",
            "password": "zoe-password-1",
            "role": "reviewer",
            "csrf_token": csrf,
        },
    )
    assert created.status_code == 303
    assert 'id="user-zoe"' in console.get("/console/admin/users").text
    duplicate = console.post(
        "/console/admin/users",
        data={
            "username": "zoe",
            "password": "zoe-password-1",
            "role": "reviewer",
            "csrf_token": csrf,
        },
    )
    assert duplicate.status_code == 409
    weak = console.post(
        "/console/admin/users",
        data={"username": "yan", "password": "short", "role": "reviewer", "csrf_token": csrf},
    )
    assert weak.status_code == 422 and "password" in weak.text
    console.post("/console/admin/users/zoe", data={"role": "client", "csrf_token": csrf})
    console.post("/console/admin/users/zoe", data={"disabled": "true", "csrf_token": csrf})
    with app_of(console).state.session_factory() as session:
        zoe = users.get_user(session, "zoe")
        assert zoe is not None and zoe.role == "client" and zoe.disabled
    last_admin = console.post(
        "/console/admin/users/admin", data={"disabled": "true", "csrf_token": csrf}
    )
    assert last_admin.status_code == 409
    key_page = console.post(
        "/console/admin/api-keys", data={"username": "rita", "name": "sync", "csrf_token": csrf}
    )
    assert key_page.status_code == 200
    key = re.search(r'id="new-key" readonly value="(rk_[^"]+)"', key_page.text)
    assert key is not None
    api = console.get("/v1/predictions", headers={"X-API-Key": key.group(1)})
    assert api.status_code == 200
    key_id = re.search(r"/console/admin/api-keys/(\d+)/revoke", key_page.text)
    assert key_id is not None
    console.post(f"/console/admin/api-keys/{key_id.group(1)}/revoke", data={"csrf_token": csrf})
    assert console.get("/v1/predictions", headers={"X-API-Key": key.group(1)}).status_code == 401
    assert key.group(1) not in console.get("/console/admin/users").text  # shown once


@pytest.mark.parametrize("path", ["/console/classify", "/console/queue", "/console/history"])
def test_every_input_of_a_page_is_labelled(console: TestClient, path: str) -> None:
    sign_in(console, "admin")
    html = console.get(path).text
    ids = re.findall(
        r"<(?:input|select|textarea)(?![^>]*type=\"hidden\")[^>]*id=\"([^\"]+)\"", html
    )
    unlabelled = [
        tag
        for tag in re.findall(r"<(?:input|select|textarea)\b[^>]*>", html)
        if 'type="hidden"' not in tag and "id=" not in tag
    ]
    assert not unlabelled
    for element_id in ids:
        assert f'for="{element_id}"' in html, element_id
