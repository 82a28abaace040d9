"""Findings of the white-box security review, each reproduced (docs/security.md lists them)."""

from __future__ import annotations

import asyncio
import base64
import io
import logging
import random
import shutil
import string
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import jwt
import mlflow
import pytest
import yaml
from fastapi.testclient import TestClient
from mlflow import MlflowClient
from PIL import Image
from typer.testing import CliRunner

from rakuten_mlops import secret_rules
from rakuten_mlops.cli import app as cli_app
from rakuten_mlops.cli.secrets import read_env_file as secret_rules_values
from rakuten_mlops.config import Settings, get_settings
from rakuten_mlops.db.migrate import upgrade_database
from rakuten_mlops.db.session import make_engine, make_session_factory
from rakuten_mlops.errors import ModelError
from rakuten_mlops.models.pyfunc import log_pyfunc_model
from rakuten_mlops.registry.integrity import DIGEST_TAG, record_artifacts_digest
from rakuten_mlops.registry.registry import promote_version
from rakuten_mlops.serving.auth import principals, startup, users
from rakuten_mlops.serving.auth.ratelimit import LoginPolicy, LoginThrottle
from rakuten_mlops.serving.prediction.model_manager import load_model
from security_testing import (
    ADMIN_PASSWORD,
    ADMIN_USERNAME,
    TEST_JWT_SECRET,
    bearer,
    make_user,
    token_for,
)
from service_testing import TinyModel, app_of

ROOT = Path(__file__).resolve().parents[2]
OPERATOR_SECRET = "Zq3-" + "k9Vw2pLx7" * 5  # what an operator sets: none of the repository's
OPERATOR_PASSWORD = "tr0ubadour-Horse-Staple"


def _prod(make_settings: Callable[..., Settings], **overrides: Any) -> Settings:
    values = {"env": "prod", "jwt_secret": OPERATOR_SECRET, "admin_password": OPERATOR_PASSWORD}
    return make_settings(**{**values, **overrides})


# 1. Placeholders ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "CHANGE_ME",
        "change-me",
        "ChangeThis!",
        "changethis",
        "<your-password>",
        "your_secret_here",
        "example-secret-value",
        "Passw0rd!",
        "password123",
        "admin123",
        "secret",
        "xxxxxxxxxxxxxxxx",
        "1234567890123",
        "REPLACE_ME_WITH_A_KEY",
    ],
)
def test_placeholders_and_password_like_values_are_recognised(value: str) -> None:
    assert secret_rules.looks_like_placeholder(value)


def test_random_secrets_are_not_taken_for_placeholders() -> None:
    rng = random.Random(20261203)
    alphabet = string.ascii_letters + string.digits + "-_"
    for _ in range(2000):
        value = "".join(rng.choice(alphabet) for _ in range(rng.randint(16, 64)))
        assert not secret_rules.looks_like_placeholder(value), value
    assert not secret_rules.looks_like_placeholder(OPERATOR_PASSWORD)


def test_every_placeholder_of_the_kubernetes_secret_template_refuses_the_start(
    make_settings: Callable[..., Settings],
) -> None:
    template = yaml.safe_load((ROOT / "deploy/k8s/base/secret.template.yaml").read_text())
    values = {k.removeprefix("RAKUTEN_").lower(): v for k, v in template["stringData"].items()}
    service_keys = {"database_url", "redis_url", "jwt_secret", "admin_password", "service_api_key"}
    settings = make_settings(env="prod", **{k: values[k] for k in service_keys})
    with pytest.raises(principals.SecurityConfigError) as refused:
        startup.resolve_secrets(settings)
    message = str(refused.value)
    for name in (
        "RAKUTEN_JWT_SECRET",
        "RAKUTEN_ADMIN_PASSWORD",
        "RAKUTEN_SERVICE_API_KEY",
        "the password in RAKUTEN_DATABASE_URL",
        "the password in RAKUTEN_REDIS_URL",
    ):
        assert name in message, message
    for value in template["stringData"].values():  # what an operator must replace, all of it
        if value not in {"admin"} and "://" not in value:
            assert secret_rules.looks_like_placeholder(value) or value.startswith("s3://"), value


def test_admin_password_needs_twelve_characters_outside_dev(
    make_settings: Callable[..., Settings],
) -> None:
    with pytest.raises(principals.SecurityConfigError, match="at least 12 characters"):
        startup.resolve_secrets(_prod(make_settings, admin_password="Wq8-mnb4zz"))
    startup.resolve_secrets(_prod(make_settings))  # a real one passes


# 2. Committed secrets -------------------------------------------------------------------


def _dev_overlay_secrets() -> dict[str, str]:
    overlay = yaml.safe_load((ROOT / "deploy/k8s/overlays/dev/kustomization.yaml").read_text())
    literals = overlay["secretGenerator"][0]["literals"]
    return dict(literal.split("=", 1) for literal in literals)


def test_secrets_committed_to_the_repository_are_refused_in_prod(
    make_settings: Callable[..., Settings],
) -> None:
    committed = _dev_overlay_secrets()
    for name in ("RAKUTEN_JWT_SECRET", "RAKUTEN_ADMIN_PASSWORD"):
        assert committed[name].startswith("dev-only-")
    settings = _prod(
        make_settings,
        jwt_secret=committed["RAKUTEN_JWT_SECRET"],
        admin_password=committed["RAKUTEN_ADMIN_PASSWORD"],
    )
    with pytest.raises(principals.SecurityConfigError, match="committed to the repository"):
        startup.resolve_secrets(settings)
    with pytest.raises(principals.SecurityConfigError, match="committed to the repository"):
        startup.resolve_secrets(_prod(make_settings, jwt_secret=TEST_JWT_SECRET))
    # The test suite's own environment may use them; dev generates what it lacks.
    startup.resolve_secrets(make_settings(env="test", jwt_secret=TEST_JWT_SECRET))


def test_the_prod_overlay_holds_no_secret() -> None:
    prod = ROOT / "deploy/k8s/overlays/prod"
    for path in prod.glob("*.yaml"):
        for document in yaml.safe_load_all(path.read_text()):
            assert "secretGenerator" not in (document or {}), path
            assert (document or {}).get("kind") != "Secret", path


# 3. Revocation --------------------------------------------------------------------------


def test_logout_and_password_change_revoke_earlier_tokens(client: TestClient) -> None:
    make_user(client, "rita", "reviewer")
    first = client.post("/token", data={"username": "rita", "password": "rita password"})
    token = first.json()["access_token"]
    assert client.get("/v1/predictions", headers=bearer(token)).status_code == 200
    out = client.post("/v1/auth/logout", headers=bearer(token))
    assert out.status_code == 200 and out.json() == {"username": "rita", "signed_out": True}
    response = client.get("/v1/predictions", headers=bearer(token))
    assert response.status_code == 401 and "revoked" in response.json()["detail"]
    # Signing in again works; a password change then refuses that token too.
    token = client.post("/token", data={"username": "rita", "password": "rita password"})
    token = token.json()["access_token"]
    changed = client.patch("/v1/admin/users/rita", json={"password": "a new passphrase 42"})
    assert changed.status_code == 200
    assert client.get("/v1/predictions", headers=bearer(token)).status_code == 401
    # An admin signs a user out everywhere.
    token = client.post("/token", data={"username": "rita", "password": "a new passphrase 42"})
    token = token.json()["access_token"]
    assert client.post("/v1/admin/users/rita/sign-out").status_code == 200
    assert client.get("/v1/predictions", headers=bearer(token)).status_code == 401
    assert client.post("/v1/admin/users/nobody/sign-out").status_code == 404


def test_tokens_issued_before_revocation_were_valid_by_signature(client: TestClient) -> None:
    """The revoked token is still well signed and unexpired: only the version refuses it."""
    make_user(client, "rita", "reviewer")
    token = token_for(client, "rita")
    with app_of(client).state.session_factory() as session:
        users.sign_out_everywhere(session, "rita")
        session.commit()
    claims = jwt.decode(token, TEST_JWT_SECRET, algorithms=["HS256"], audience="rakuten-mlops-api")
    assert claims["ver"] == 0 and claims["exp"] > time.time()
    assert client.get("/v1/predictions", headers=bearer(token)).status_code == 401


def test_the_users_cli_signs_out_within_the_cache_delay(
    start_client: Callable[..., TestClient],
    make_settings: Callable[..., Settings],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = make_settings(auth_cache_s=0.5)
    client = start_client(settings)
    make_user(client, "rita", "reviewer")
    headers = bearer(token_for(client, "rita"))
    assert client.get("/v1/predictions", headers=headers).status_code == 200
    monkeypatch.setenv("RAKUTEN_DATABASE_URL", settings.database_url)
    get_settings.cache_clear()
    result = CliRunner().invoke(cli_app, ["users", "sign-out", "rita"])
    get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    time.sleep(0.6)
    assert client.get("/v1/predictions", headers=headers).status_code == 401


def test_default_token_life_is_a_working_stretch() -> None:
    assert Settings().access_token_expire_minutes == 30


# 4. Login throttling --------------------------------------------------------------------


def test_failed_sign_ins_lock_the_user_name_briefly_then_a_success_resets(
    start_client: Callable[..., TestClient],
    make_settings: Callable[..., Settings],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    settings = make_settings(login_max_failures=3, login_lock_s=0.5, login_lock_max_s=2)
    client = start_client(settings, authenticated=False)
    make_user(client, "rita", "reviewer")
    wrong = {"username": "rita", "password": "Secr3t-typed-in-the-wrong-field"}
    good = {"username": "rita", "password": "rita password"}
    assert [client.post("/token", data=wrong).status_code for _ in range(3)] == [401] * 3
    locked = client.post("/token", data=good)  # even the right password waits
    assert locked.status_code == 429 and int(locked.headers["retry-after"]) >= 1
    assert "this user" in locked.json()["detail"]
    other = client.post("/token", data={"username": ADMIN_USERNAME, "password": ADMIN_PASSWORD})
    assert other.status_code == 200  # another user name is not affected
    time.sleep(0.6)
    assert client.post("/token", data=good).status_code == 200  # the lock was short
    # The success reset the count: three more failures before the next lock.
    assert [client.post("/token", data=wrong).status_code for _ in range(3)] == [401] * 3
    assert client.post("/token", data=wrong).status_code == 429
    # The logs carry a digest of the submitted name, never the name.
    refusals = [r for r in caplog.records if r.getMessage() == "login refused"]
    assert refusals and all(r.username_digest.startswith("sha256:") for r in refusals)
    for record in caplog.records:
        assert "rita" not in str(record.__dict__), record.__dict__


def test_the_console_sign_in_shares_the_user_name_lock(
    start_client: Callable[..., TestClient], make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(login_max_failures=2, login_lock_s=30)
    client = start_client(settings, authenticated=False)
    make_user(client, "rita", "reviewer")
    for _ in range(2):
        client.post("/token", data={"username": "rita", "password": "wrong password 1"})
    page = client.get("/console/login")
    nonce = page.text.split('name="csrf_token" value="')[1].split('"')[0]
    response = client.post(
        "/console/login",
        data={"username": "rita", "password": "rita password", "csrf_token": nonce},
    )
    assert response.status_code == 429 and "rakuten_console=" not in str(response.headers)


def test_login_lock_is_short_and_failures_are_forgotten() -> None:
    policy = LoginPolicy(max_failures=5, lock_s=1, lock_max_s=300)
    assert [policy.lock_after(n) for n in (4, 5, 6, 7)] == [0, 1, 2, 4]
    assert policy.lock_after(40) == 300  # never longer than the maximum

    async def scenario() -> None:
        throttle = LoginThrottle(LoginPolicy(max_failures=1, lock_s=60, forget_s=0.3))
        assert await throttle.failed("rita") == 60
        assert await throttle.retry_after("rita") > 0
        await asyncio.sleep(0.35)
        assert await throttle.retry_after("rita") == 0  # forgotten after the quiet period

    asyncio.run(scenario())


def test_login_throttle_under_name_flooding_keeps_the_attackers_count() -> None:
    async def scenario() -> None:
        throttle = LoginThrottle(LoginPolicy(max_failures=3, lock_s=60), max_keys=4)
        for _ in range(2):
            await throttle.failed("victim")
        for i in range(100):
            await throttle.failed(f"noise-{i}")
        assert await throttle.failed("victim") > 0  # its third failure still locks it

    asyncio.run(scenario())


def test_login_throttle_is_shared_through_redis(redis_url: str) -> None:
    async def scenario() -> None:
        policy = LoginPolicy(max_failures=2, lock_s=30)
        first, second = LoginThrottle(policy, redis_url), LoginThrottle(policy, redis_url)
        name = f"user-{time.time_ns()}"
        await first.failed(name)
        assert await second.failed(name) == 30
        assert await first.retry_after(name) > 0
        await second.succeeded(name)
        assert await first.retry_after(name) == 0
        await first.close()
        await second.close()

    asyncio.run(scenario())


def test_kubernetes_trusts_only_the_ingress_and_only_it_reaches_the_api() -> None:
    config = yaml.safe_load((ROOT / "deploy/k8s/base/configmap.yaml").read_text())
    allowed = config["data"]["RAKUTEN_FORWARDED_ALLOW_IPS"]
    assert "*" not in allowed and "," not in allowed and int(allowed.split("/")[1]) >= 16
    policies = [
        d
        for path in (ROOT / "deploy/k8s/base").glob("*.yaml")
        for d in yaml.safe_load_all(path.read_text())
        if d and d.get("kind") == "NetworkPolicy"
    ]
    api = next(p for p in policies if p["metadata"]["name"] == "rakuten-api")
    sources = [peer for rule in api["spec"]["ingress"] for peer in rule["from"]]
    assert any("ingress" in str(peer.get("namespaceSelector", "")) for peer in sources)
    assert all("ipBlock" not in peer for peer in sources)


# 5. Authentication before the body ------------------------------------------------------


def test_an_anonymous_body_is_never_read(client: TestClient) -> None:
    app = app_of(client)
    read: list[int] = []

    async def receive() -> dict[str, Any]:
        read.append(1)
        return {"type": "http.request", "body": b"x" * 65536, "more_body": True}

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    for path, headers in (
        ("/v1/predict", [(b"content-type", b"multipart/form-data; boundary=x")]),
        ("/v1/predict/batch", [(b"authorization", b"Bearer not-a-token")]),
        ("/console/classify", [(b"cookie", b"rakuten_console=forged")]),
    ):
        read.clear()
        sent.clear()
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [(b"host", b"testserver"), (b"content-length", b"16000000"), *headers],
            "client": ("127.0.0.1", 5000),
            "server": ("testserver", 80),
            "state": {},
        }
        asyncio.run(app(scope, receive, send))
        assert read == [], path  # not one chunk of the body was read
        status = sent[0]["status"]
        assert status == (303 if path.startswith("/console") else 401), (path, status)


# 6. Image checks off the event loop -----------------------------------------------------


def _large_lossless_webp(seed: int) -> bytes:
    image = Image.new("RGB", (2400, 2400), (seed % 255, 90, 160))
    Image.Image.paste(image, (250, 20, 20), (0, 0, 1200, 1200))
    buffer = io.BytesIO()
    image.save(buffer, "WEBP", lossless=True, quality=0, method=0)
    return buffer.getvalue()


def test_a_batch_of_large_webps_does_not_stall_the_event_loop(
    start_client: Callable[..., TestClient], make_settings: Callable[..., Settings]
) -> None:
    client = start_client(make_settings(batch_max_items=64))
    images = [base64.b64encode(_large_lossless_webp(i)).decode() for i in range(64)]
    items = [{"designation": f"Affiche {i}", "image_base64": b} for i, b in enumerate(images)]
    results: list[httpx.Response] = []
    worker = threading.Thread(
        target=lambda: results.append(
            client.post("/v1/predict/batch", json={"items": items}, timeout=300)
        )
    )
    worker.start()
    slowest = 0.0
    while worker.is_alive():
        tick = time.perf_counter()
        assert client.get("/health").status_code == 200
        slowest = max(slowest, time.perf_counter() - tick)
        time.sleep(0.02)
    worker.join()
    assert results[0].status_code == 200, results[0].text[:500]
    assert results[0].json()["succeeded"] == 64
    assert slowest < 1.0, f"/health waited {slowest:.2f} s"


# 7. Integers too large for the database ------------------------------------------------


def test_integers_too_large_for_the_database_are_422(client: TestClient) -> None:
    huge = str(2**70)
    for path in (
        f"/v1/predictions?offset={huge}",
        f"/v1/predictions?prdtypecode={huge}",
        f"/v1/predictions?prdtypecode=-{huge}",
    ):
        response = client.get(path)
        assert response.status_code == 422, (path, response.status_code)
    assert client.delete(f"/v1/admin/api-keys/{huge}").status_code == 422


# 8. What anonymous callers and the logs learn -------------------------------------------


def test_ready_tells_the_load_error_to_admins_only(
    start_client: Callable[..., TestClient], make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    missing = tmp_path / "internal-registry-name"
    client = start_client(make_settings(serve_model=str(missing)), ready=False)
    for _ in range(200):
        if client.get("/ready").json()["status"] == "failed":
            break
        time.sleep(0.05)
    admin = client.get("/ready")
    assert admin.status_code == 503 and "internal-registry-name" in admin.json()["detail"]
    answer = client.get("/ready", headers={"Authorization": ""}).json()  # anonymous
    assert answer["status"] == "failed" and "internal-registry-name" not in str(answer)


def test_docs_are_off_in_prod_unless_asked(
    start_client: Callable[..., TestClient], make_settings: Callable[..., Settings]
) -> None:
    prod = start_client(_prod(make_settings), ready=False, authenticated=False)
    assert prod.get("/docs").status_code == 404
    assert prod.get("/openapi.json").status_code == 404
    asked = start_client(_prod(make_settings, api_docs=True), ready=False, authenticated=False)
    assert asked.get("/openapi.json").status_code == 200
    assert "swagger-ui-bundle.js" in asked.get("/docs").headers["content-security-policy"]


# 9. The last admin ------------------------------------------------------------------------


def test_the_last_admin_guard_holds_under_concurrent_demotions(postgres_url: str) -> None:
    upgrade_database(postgres_url)
    engine = make_engine(postgres_url)
    factory = make_session_factory(engine)
    try:
        with factory() as session:
            for name in ("ada", "bob"):
                users.create_user(session, name, f"{name} password 1", "admin")
            session.commit()
        first = factory()
        users.set_user_role(first, "ada", "reviewer")  # not committed yet
        outcome: list[object] = []

        def demote_bob() -> None:
            with factory() as second:
                try:
                    users.set_user_role(second, "bob", "reviewer")
                    second.commit()
                    outcome.append("demoted")
                except principals.UserError as exc:
                    outcome.append(exc)

        thread = threading.Thread(target=demote_bob)
        thread.start()
        time.sleep(0.5)
        assert thread.is_alive()  # waits on the first transaction's row locks
        first.commit()
        first.close()
        thread.join(timeout=30)
        assert len(outcome) == 1 and isinstance(outcome[0], principals.UserError), outcome
        with factory() as session:
            assert users.count_enabled_admins(session) == 1
    finally:
        engine.dispose()


def test_the_users_cli_keeps_the_last_admin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path}/users.db"
    monkeypatch.setenv("RAKUTEN_DATABASE_URL", url)
    get_settings.cache_clear()
    try:
        runner = CliRunner()
        created = runner.invoke(
            cli_app,
            ["users", "create", "ada", "--role", "admin", "--password-stdin"],
            input="ada's long password\n",
        )
        assert created.exit_code == 0, created.output
        for command in (["users", "set-role", "ada", "reviewer"], ["users", "disable", "ada"]):
            result = runner.invoke(cli_app, command)
            assert result.exit_code != 0 and "last enabled admin" in result.output, result.output
    finally:
        get_settings.cache_clear()


# 10. Compose passwords -------------------------------------------------------------------


def test_compose_refuses_changethis_and_compose_up_generates_random_ones(
    tmp_path: Path,
) -> None:
    runner = CliRunner()
    refused = runner.invoke(cli_app, ["secrets", "check", "--env-file", str(ROOT / ".env.example")])
    assert refused.exit_code != 0
    for name in ("POSTGRES_PASSWORD", "MINIO_ROOT_PASSWORD", "GRAFANA_ADMIN_PASSWORD"):
        assert name in " ".join(refused.output.split())
    env_file = tmp_path / ".env"
    generated = runner.invoke(
        cli_app,
        [
            "secrets",
            "generate-env",
            "--env-file",
            str(env_file),
            "--template",
            str(ROOT / ".env.example"),
        ],
    )
    assert generated.exit_code == 0, generated.output
    values = secret_rules_values(env_file)
    assert all(values[name] != "changethis" for name in ("POSTGRES_PASSWORD", "RAKUTEN_JWT_SECRET"))
    assert env_file.stat().st_mode & 0o077 == 0
    checked = runner.invoke(cli_app, ["secrets", "check", "--env-file", str(env_file)])
    assert checked.exit_code == 0, checked.output
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = compose["services"]
    assert services["secrets-check"]["command"][:3] == ["rakuten-mlops", "secrets", "check"]
    for name in ("postgres", "minio", "grafana"):
        condition = services[name]["depends_on"]["secrets-check"]["condition"]
        assert condition == "service_completed_successfully", name


# 11. Cookie and HSTS ---------------------------------------------------------------------


def test_prod_cookie_is_secure_and_https_answers_carry_hsts(
    start_client: Callable[..., TestClient], make_settings: Callable[..., Settings]
) -> None:
    assert _prod(make_settings).cookie_secure() is True
    assert make_settings().cookie_secure() is False
    client = start_client(_prod(make_settings), ready=False, authenticated=False)
    page = client.get("/console/login")
    nonce = next(c for c in page.headers.get_list("set-cookie") if "rakuten_console_login" in c)
    assert "; secure" in nonce.lower()
    assert "strict-transport-security" not in page.headers  # plain http
    secure = TestClient(client.app, base_url="https://testserver")
    answer = secure.get("/health")
    assert answer.headers["strict-transport-security"].startswith("max-age=31536000")


# 12. User names -------------------------------------------------------------------------


@pytest.mark.parametrize("username", [".", "..", "...", "a/b", "é"])
def test_user_names_that_break_a_url_path_are_refused(client: TestClient, username: str) -> None:
    with pytest.raises(principals.UserError):
        users.validate_username(username)
    body = {"username": username, "password": "a long passphrase", "role": "client"}
    assert client.post("/v1/admin/users", json=body).status_code == 422


# 13. Model files checked against the registry ------------------------------------------


def test_a_registered_model_whose_files_changed_is_refused(
    tiny_model: TinyModel, tmp_path: Path, make_settings: Callable[..., Settings]
) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    name = "integrity-check"
    experiment = mlflow.create_experiment("integrity", artifact_location=str(tmp_path / "art"))
    example = tiny_model.test[["designation", "description"]]
    for _ in range(2):
        with mlflow.start_run(experiment_id=experiment):
            log_pyfunc_model(tiny_model.classifier, example, registered_model_name=name)
    client = MlflowClient()
    digest = record_artifacts_digest(client, name, 1)
    assert client.get_model_version(name, "1").tags[DIGEST_TAG] == digest
    promote_version(client, name, 1)
    settings = make_settings(mlflow_tracking_uri=uri, model_process=False)
    loaded = load_model(f"models:/{name}@champion", "champion", settings)
    assert loaded.version == "1"
    loaded.release()
    # Someone with write access to the artifact store swaps a file of version 1.
    model_id = client.get_model_version(name, "1").source.rsplit("/", 1)[-1]  # models:/m-...
    stored = next(p for p in (tmp_path / "art").rglob(model_id) if p.is_dir())
    mlmodel = next(stored.rglob("MLmodel"))
    mlmodel.write_text(mlmodel.read_text() + "\n# tampered\n")
    with pytest.raises(ModelError, match="do not match the digest"):
        load_model(f"models:/{name}/1", "champion", settings)
    # Version 2 has no digest: refused in prod, loaded with a warning elsewhere.
    with pytest.raises(ModelError, match="no `artifacts_sha256` tag"):
        load_model(f"models:/{name}/2", "champion", _prod(make_settings, mlflow_tracking_uri=uri))
    load_model(f"models:/{name}/2", "champion", settings).release()
    # Files this machine cannot see (logged to another machine's disk): a clear refusal.
    shutil.rmtree(stored)
    with pytest.raises(ModelError, match="has no files at its artifact location"):
        load_model(f"models:/{name}/1", "champion", settings)
    mlflow.set_tracking_uri("")
