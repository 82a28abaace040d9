"""Authentication and authorisation: 401 / 403 matrix, tokens, API keys, users, secrets."""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Callable
from datetime import timedelta

import jwt
import pytest
from fastapi.testclient import TestClient

from rakuten_mlops.config import Settings
from rakuten_mlops.serving.app import create_app
from rakuten_mlops.serving.auth import credentials, principals, users
from security_testing import (
    ADMIN_PASSWORD,
    ADMIN_USERNAME,
    ON_BOTH_DATABASES,
    TEST_JWT_SECRET,
    api_key_for,
    bearer,
    headers_for,
    login,
    make_user,
    token_for,
)
from service_testing import app_of

PROD_SECRET = "Zq3-" + "k9Vw2pLx7" * 5  # what an operator sets: not one of the repository's

# (method, path, body kwargs, lowest role allowed)
ROUTES: list[tuple[str, str, dict[str, object], str]] = [
    ("POST", "/v1/predict", {"data": {"designation": "Piscine gonflable"}}, "client"),
    ("POST", "/v1/predict/batch", {"json": {"items": [{"designation": "Roman"}]}}, "client"),
    ("GET", "/v1/model", {}, "client"),
    ("POST", "/v1/feedback", {"json": {"prediction_id": "f" * 32, "prdtypecode": 10}}, "reviewer"),
    ("GET", "/v1/predictions", {}, "reviewer"),
    ("GET", "/v1/admin/reload", {}, "admin"),
    ("GET", "/v1/admin/users", {}, "admin"),
    ("GET", "/v1/admin/api-keys", {}, "admin"),
]
RANK = {"client": 0, "reviewer": 1, "admin": 2}


@pytest.fixture
def anonymous(
    start_client: Callable[..., TestClient],
    make_settings: Callable[..., Settings],
    service_db: str,
) -> TestClient:
    """A ready client that sends no credential (SQLite, or PostgreSQL when parametrized)."""
    return start_client(make_settings(database_url=service_db), authenticated=False)


def _call(client: TestClient, method: str, path: str, **kwargs: object) -> int:
    return client.request(method, path, **kwargs).status_code  # type: ignore[arg-type]


def test_every_v1_route_refuses_anonymous_calls(anonymous: TestClient) -> None:
    paths = app_of(anonymous).openapi()["paths"]
    v1 = [(m.upper(), p) for p, ops in paths.items() if p.startswith("/v1/") for m in ops]
    assert len(v1) >= 12  # predict, batch, feedback, predictions, model, reload, users, keys
    for method, path in v1:
        response = anonymous.request(method, path.replace("{", "").replace("}", ""))
        assert response.status_code == 401, (method, path, response.text)
        assert response.headers["www-authenticate"] == "Bearer"
        assert "not authenticated" in response.json()["detail"]
    assert anonymous.get("/health").status_code == 200
    assert anonymous.get("/ready").status_code == 200


@ON_BOTH_DATABASES
def test_roles_matrix(anonymous: TestClient) -> None:
    users = {role: headers_for(anonymous, f"{role}-user", role) for role in RANK}
    for method, path, kwargs, lowest in ROUTES:
        for role, headers in users.items():
            status = _call(anonymous, method, path, headers=headers, **kwargs)
            if RANK[role] >= RANK[lowest]:
                assert status not in (401, 403), (role, method, path, status)
            else:
                assert status == 403, (role, method, path, status)
    # The acceptance sentences, spelled out.
    client_h, reviewer_h = users["client"], users["reviewer"]
    predicted = anonymous.post("/v1/predict", data={"designation": "Roman"}, headers=client_h)
    feedback = {"prediction_id": predicted.json()["prediction_id"], "prdtypecode": 10}
    refused = anonymous.post("/v1/feedback", json=feedback, headers=client_h)
    assert refused.status_code == 403 and "client" in refused.json()["detail"]
    assert anonymous.post("/v1/admin/reload", headers=client_h).status_code == 403
    stored = anonymous.post("/v1/feedback", json=feedback, headers=reviewer_h)
    assert stored.status_code == 201 and stored.json()["username"] == "reviewer-user"
    assert anonymous.post("/v1/admin/reload", headers=reviewer_h).status_code == 403


def _claims(settings: Settings, **overrides: object) -> dict[str, object]:
    from datetime import UTC, datetime

    now = datetime.now(UTC)
    claims: dict[str, object] = {
        "sub": ADMIN_USERNAME,
        "uid": 1,
        "role": "admin",
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "iat": now,
        "exp": now + timedelta(minutes=5),
    }
    claims.update(overrides)
    return claims


def _unsigned(claims: dict[str, object]) -> str:
    def part(data: dict[str, object]) -> str:
        raw = json.dumps(data, default=lambda d: int(d.timestamp())).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


@ON_BOTH_DATABASES
def test_bad_tokens_are_refused(anonymous: TestClient) -> None:
    settings: Settings = app_of(anonymous).state.settings
    good = token_for(anonymous, ADMIN_USERNAME)
    assert anonymous.get("/v1/model", headers=bearer(good)).status_code == 200
    with app_of(anonymous).state.session_factory() as session:
        admin = users.require_user(session, ADMIN_USERNAME)
        expired = credentials.create_access_token(settings, admin, expires_in=timedelta(seconds=-5))
    bad = {
        "expired": expired,
        "forged": jwt.encode(_claims(settings), "another-secret-" * 4, algorithm="HS256"),
        "alg none": _unsigned(_claims(settings)),
        "HS512": jwt.encode(_claims(settings), TEST_JWT_SECRET, algorithm="HS512"),
        "audience": jwt.encode(_claims(settings, aud="other"), TEST_JWT_SECRET, algorithm="HS256"),
        "issuer": jwt.encode(_claims(settings, iss="other"), TEST_JWT_SECRET, algorithm="HS256"),
        "no expiry": jwt.encode(
            {k: v for k, v in _claims(settings).items() if k != "exp"},
            TEST_JWT_SECRET,
            algorithm="HS256",
        ),
        "unknown user": jwt.encode(_claims(settings, sub="ghost"), TEST_JWT_SECRET, "HS256"),
        "other uid": jwt.encode(_claims(settings, uid=999), TEST_JWT_SECRET, algorithm="HS256"),
        "tampered": good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB"),
        "garbage": "not.a.token",
    }
    for name, token in bad.items():
        response = anonymous.get("/v1/model", headers=bearer(token))
        assert response.status_code == 401, (name, response.text)
        assert response.headers["www-authenticate"] == "Bearer"
        assert token not in response.text
    assert "expired" in anonymous.get("/v1/model", headers=bearer(expired)).json()["detail"]


@ON_BOTH_DATABASES
def test_disabled_user_and_role_change_take_effect_at_once(anonymous: TestClient) -> None:
    admin = bearer(token_for(anonymous, ADMIN_USERNAME))
    reviewer = headers_for(anonymous, "rita", "reviewer")
    assert anonymous.get("/v1/predictions", headers=reviewer).status_code == 200
    demoted = anonymous.patch("/v1/admin/users/rita", json={"role": "client"}, headers=admin)
    assert demoted.status_code == 200 and demoted.json()["role"] == "client"
    # A role change signs the user out: the reviewer's token is refused, a new one is a client's.
    response = anonymous.get("/v1/predictions", headers=reviewer)
    assert response.status_code == 401 and "revoked" in response.json()["detail"]
    client = bearer(token_for(anonymous, "rita"))
    assert anonymous.get("/v1/predictions", headers=client).status_code == 403
    disabled = anonymous.patch("/v1/admin/users/rita", json={"disabled": True}, headers=admin)
    assert disabled.json()["disabled"] is True
    response = anonymous.get("/v1/model", headers=client)
    assert response.status_code == 401 and response.json()["detail"] == "user disabled"
    refused = anonymous.post("/token", data={"username": "rita", "password": "rita password"})
    assert refused.status_code == 401


@ON_BOTH_DATABASES
def test_api_keys_shown_once_hashed_revocable(anonymous: TestClient) -> None:
    admin = bearer(token_for(anonymous, ADMIN_USERNAME))
    make_user(anonymous, "merchant", "client")
    created = anonymous.post(
        "/v1/admin/api-keys", json={"username": "merchant", "name": "sync"}, headers=admin
    )
    assert created.status_code == 201, created.text
    body = created.json()
    key = body["key"]
    assert key.startswith("rk_") and len(key) > 40 and body["prefix"] in key
    assert anonymous.get("/v1/model", headers={"X-API-Key": key}).status_code == 200
    # A client key: predict yes, the review queue no.
    assert anonymous.get("/v1/predictions", headers={"X-API-Key": key}).status_code == 403
    listed = anonymous.get("/v1/admin/api-keys", headers=admin).json()
    assert [k["prefix"] for k in listed] == [body["prefix"]]
    assert listed[0]["last_used_at"] is not None and "key" not in listed[0]
    assert key not in json.dumps(listed)
    with app_of(anonymous).state.session_factory() as session:
        ((row, _),) = credentials.list_api_keys(session)
        assert key not in (row.key_hash, row.prefix) and len(row.key_hash) == 64
    forged = key[:-6] + "AAAAAA"
    assert anonymous.get("/v1/model", headers={"X-API-Key": forged}).status_code == 401
    assert anonymous.get("/v1/model", headers={"X-API-Key": "rk_nope"}).status_code == 401
    revoked = anonymous.delete(f"/v1/admin/api-keys/{body['id']}", headers=admin)
    assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
    response = anonymous.get("/v1/model", headers={"X-API-Key": key})
    assert response.status_code == 401 and response.json()["detail"] == "API key revoked"
    assert anonymous.delete("/v1/admin/api-keys/999", headers=admin).status_code == 404


def test_api_key_of_a_disabled_user_is_refused(anonymous: TestClient) -> None:
    make_user(anonymous, "batchjob", "reviewer")
    key = api_key_for(anonymous, "batchjob")
    assert anonymous.get("/v1/predictions", headers={"X-API-Key": key}).status_code == 200
    with app_of(anonymous).state.session_factory() as session:
        users.set_user_disabled(session, "batchjob")
        session.commit()
    assert anonymous.get("/v1/predictions", headers={"X-API-Key": key}).status_code == 401


@ON_BOTH_DATABASES
def test_admin_manages_users(anonymous: TestClient) -> None:
    admin = bearer(token_for(anonymous, ADMIN_USERNAME))
    new = {"username": "carla", "password": "carla's passphrase", "role": "reviewer"}
    created = anonymous.post("/v1/admin/users", json=new, headers=admin)
    assert created.status_code == 201, created.text
    assert set(created.json()) == {"id", "username", "role", "disabled", "created_at"}
    assert anonymous.post("/v1/admin/users", json=new, headers=admin).status_code == 409
    weak = anonymous.post(
        "/v1/admin/users", json={**new, "username": "d", "password": "short"}, headers=admin
    )
    assert weak.status_code == 422 and weak.json()["errors"][0]["field"] == "password"
    bad_role = anonymous.post(
        "/v1/admin/users", json={**new, "username": "e", "role": "root"}, headers=admin
    )
    assert bad_role.status_code == 422 and bad_role.json()["errors"][0]["field"] == "role"
    names = [u["username"] for u in anonymous.get("/v1/admin/users", headers=admin).json()]
    assert names == ["admin", "carla"]
    carla = login(anonymous, "carla", "carla's passphrase")
    assert anonymous.get("/v1/predictions", headers=carla).status_code == 200
    # The last enabled admin can be neither disabled nor demoted.
    for change in ({"disabled": True}, {"role": "client"}):
        refused = anonymous.patch(f"/v1/admin/users/{ADMIN_USERNAME}", json=change, headers=admin)
        assert refused.status_code == 409, refused.text
    assert anonymous.patch("/v1/admin/users/ghost", json={}, headers=admin).status_code == 404


@ON_BOTH_DATABASES
def test_token_endpoint(anonymous: TestClient) -> None:
    response = anonymous.post(
        "/token", data={"username": ADMIN_USERNAME, "password": ADMIN_PASSWORD}
    )
    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "bearer" and body["role"] == "admin"
    assert body["expires_in"] == 1800 and response.headers["cache-control"] == "no-store"
    claims = jwt.decode(
        body["access_token"],
        TEST_JWT_SECRET,
        algorithms=["HS256"],
        audience="rakuten-mlops-api",
        issuer="rakuten-mlops",
    )
    assert claims["sub"] == ADMIN_USERNAME and claims["role"] == "admin"
    assert claims["exp"] - claims["iat"] == 1800
    for username, password in ((ADMIN_USERNAME, "wrong password"), ("ghost", ADMIN_PASSWORD)):
        refused = anonymous.post("/token", data={"username": username, "password": password})
        assert refused.status_code == 401
        assert refused.json()["detail"] == "incorrect user name or password"
    missing = anonymous.post("/token", data={"username": ADMIN_USERNAME})
    assert missing.status_code == 422 and missing.json()["errors"][0]["field"] == "password"


def test_passwords_and_tokens_never_returned_or_logged(
    anonymous: TestClient, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    admin = bearer(token_for(anonymous, ADMIN_USERNAME))
    secret_password = "Sup3r-Secret-Passw0rd"
    wrong_password = "Wr0ng-Guess-Passw0rd"
    texts = [
        anonymous.post(
            "/v1/admin/users",
            json={"username": "dora", "password": secret_password, "role": "client"},
            headers=admin,
        ).text,
        anonymous.patch(
            "/v1/admin/users/dora", json={"password": "x" + secret_password}, headers=admin
        ).text,
        anonymous.post(
            "/v1/admin/users", json={"username": "eve", "password": "tiny"}, headers=admin
        ).text,
        anonymous.post("/token", data={"username": "dora", "password": wrong_password}).text,
    ]
    token_response = anonymous.post(
        "/token", data={"username": "dora", "password": "x" + secret_password}
    )
    token = token_response.json()["access_token"]
    texts.append(anonymous.get("/v1/model", headers=bearer(token)).text)
    texts.append(anonymous.get("/v1/admin/users", headers=admin).text)
    key = api_key_for(anonymous, "dora")
    texts.append(anonymous.get("/v1/model", headers={"X-API-Key": key}).text)
    settings: Settings = app_of(anonymous).state.settings
    assert settings.log_file is not None
    # Log records are written by a listener thread, in order: wait for the last request's.
    anonymous.get("/v1/model", headers={**admin, "X-Request-ID": "last-request"})
    deadline = time.monotonic() + 10
    log_file = ""
    while '"request_id": "last-request"' not in log_file and time.monotonic() < deadline:
        time.sleep(0.05)
        log_file = settings.log_file.read_text(encoding="utf-8")
    stdout = capsys.readouterr().out
    assert '"route": "/token"' in log_file  # the JSON log did record these requests
    for secret in (
        secret_password,
        wrong_password,
        "tiny",
        ADMIN_PASSWORD,
        token,
        key,
        TEST_JWT_SECRET,
    ):
        for text in texts:
            assert secret not in text
        assert secret not in caplog.text
        assert secret not in log_file
        assert secret not in stdout
    assert "password_hash" not in "".join(texts)


def test_secrets_refused_outside_dev(make_settings: Callable[..., Settings]) -> None:
    for env in ("test", "prod"):
        for bad in (None, "changethis", "short-secret"):
            with pytest.raises(principals.SecurityConfigError, match="RAKUTEN_JWT_SECRET"):
                create_app(make_settings(env=env, jwt_secret=bad))
        with pytest.raises(principals.SecurityConfigError, match="RAKUTEN_ADMIN_PASSWORD"):
            create_app(make_settings(env=env, admin_password="changethis"))


def test_no_admin_and_no_password_refuses_to_start(make_settings: Callable[..., Settings]) -> None:
    app = create_app(make_settings(env="prod", admin_password=None, jwt_secret=PROD_SECRET))
    with pytest.raises(principals.SecurityConfigError, match="no admin exists"), TestClient(app):
        pass


def test_dev_generates_secrets_and_prints_a_one_time_password(
    make_settings: Callable[..., Settings],
    start_client: Callable[..., TestClient],
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = make_settings(env="dev", jwt_secret=None, admin_password="changethis")
    client = start_client(settings, authenticated=False)
    err = capsys.readouterr().err
    assert "RAKUTEN_JWT_SECRET not set, a random one was generated" in err
    line = next(line for line in err.splitlines() if "one-time password" in line)
    password = line.split("one-time password ")[1].split(" ")[0]
    assert len(password) >= 12 and password not in caplog.text
    headers = login(client, "admin", password)
    assert client.get("/v1/admin/users", headers=headers).status_code == 200


def test_security_headers_cors_off_by_default(anonymous: TestClient) -> None:
    response = anonymous.get("/health")
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["content-security-policy"].startswith("default-src 'none'")
    assert response.headers["referrer-policy"] == "no-referrer"
    # The docs page loads Swagger UI from its CDN: its policy allows exactly those files.
    policy = anonymous.get("/docs").headers["content-security-policy"]
    assert (
        "script-src https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui-bundle.js" in policy
    )
    assert "unsafe-inline" not in policy and "default-src 'none'" in policy
    preflight = anonymous.options(
        "/v1/predict",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert "access-control-allow-origin" not in preflight.headers


def test_cors_allows_only_configured_origins(
    start_client: Callable[..., TestClient], make_settings: Callable[..., Settings]
) -> None:
    client = start_client(make_settings(cors_origins="https://console.example"), ready=False)
    for origin, allowed in (("https://console.example", True), ("https://evil.example", False)):
        preflight = client.options(
            "/v1/predict",
            headers={"Origin": origin, "Access-Control-Request-Method": "POST"},
        )
        assert (preflight.headers.get("access-control-allow-origin") == origin) is allowed


def test_metrics_behind_a_token_or_on_another_port(
    start_client: Callable[..., TestClient], make_settings: Callable[..., Settings]
) -> None:
    import httpx

    from service_testing import free_port

    client = start_client(make_settings(metrics_token="metrics-token-123"), authenticated=False)
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers=bearer("wrong")).status_code == 401
    allowed = client.get("/metrics", headers=bearer("metrics-token-123"))
    assert allowed.status_code == 200 and "rakuten_rate_limited_total" in allowed.text
    port = free_port()
    other = start_client(make_settings(metrics_port=port), authenticated=False)
    assert other.get("/metrics").status_code == 404
    separate = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
    assert separate.status_code == 200 and "rakuten_http_requests_total" in separate.text
