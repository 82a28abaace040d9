"""The service keeps who a credential is for a few seconds, and forgets it when it changes."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine
from sqlalchemy.orm import sessionmaker

from rakuten_mlops.config import Settings
from rakuten_mlops.db.migrate import upgrade_database
from rakuten_mlops.serving.auth import credentials, users
from rakuten_mlops.serving.auth.cache import PrincipalCache
from rakuten_mlops.serving.auth.principals import Principal
from security_testing import ADMIN_USERNAME, api_key_for, bearer, make_user, token_for
from service_testing import app_of

ALICE = Principal("alice", "reviewer")


@pytest.fixture
def anonymous(
    start_client: Callable[..., TestClient], make_settings: Callable[..., Settings]
) -> TestClient:
    """A ready client that sends no credential, with the default cache of callers."""
    return start_client(make_settings(), authenticated=False)


def test_entries_expire_after_the_delay_and_never_outlive_their_token() -> None:
    cache = PrincipalCache(ttl_s=0.2)
    cache.put("bearer:t1", ALICE, "user:alice")
    cache.put("bearer:t2", ALICE, "user:alice", valid_until=time.time() + 0.05)
    cache.put("bearer:t3", ALICE, "user:alice", valid_until=time.time() - 1)  # expired
    hit = cache.get("bearer:t1")
    assert hit is not None and hit.principal == ALICE and hit.rate_key == "user:alice"
    assert cache.get("bearer:t3") is None and cache.get("bearer:other") is None
    time.sleep(0.1)
    assert cache.get("bearer:t2") is None  # past the token's expiry
    assert cache.get("bearer:t1") is not None
    time.sleep(0.15)
    assert cache.get("bearer:t1") is None


def test_zero_turns_it_off_and_it_stays_bounded() -> None:
    off = PrincipalCache(ttl_s=0)
    off.put("key:k", ALICE, "key:k")
    assert off.get("key:k") is None and len(off) == 0
    small = PrincipalCache(ttl_s=60, max_entries=3)
    for i in range(10):
        small.put(f"key:{i}", ALICE, f"key:{i}")
    assert 1 <= len(small) <= 3 and small.get("key:9") is not None


def test_committed_user_or_key_changes_clear_it_but_key_use_does_not(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/auth.db"
    upgrade_database(url)
    factory = sessionmaker(create_engine(url), expire_on_commit=False)
    cache = PrincipalCache(ttl_s=60)
    cache.watch(factory)
    with factory() as session:
        users.create_user(session, "alice", "alice password", "reviewer")
        _, key = credentials.create_api_key(session, "alice", "sync")
        session.commit()
    cache.put("key:k", ALICE, "key:k")
    with factory() as session:  # recording the key's use is not a change of who it is
        credentials.principal_from_api_key(session, key)
    assert cache.get("key:k") is not None
    with factory() as session:  # a change rolled back changes nothing
        users.set_user_role(session, "alice", "client")
        session.flush()
        session.rollback()
    assert cache.get("key:k") is not None
    with factory() as session:
        users.set_user_role(session, "alice", "client")
        session.commit()
    assert cache.get("key:k") is None


@pytest.mark.parametrize("credential", ["token", "api key"])
def test_a_change_through_the_service_is_in_force_at_the_next_request(
    anonymous: TestClient, credential: str
) -> None:
    make_user(anonymous, "rita", "reviewer")
    if credential == "token":
        headers = bearer(token_for(anonymous, "rita"))
    else:
        headers = {"X-API-Key": api_key_for(anonymous, "rita")}
    assert app_of(anonymous).state.principals.ttl_s >= 1  # the default cache is on
    for _ in range(3):
        assert anonymous.get("/v1/predictions", headers=headers).status_code == 200
    assert len(app_of(anonymous).state.principals) >= 1
    admin = bearer(token_for(anonymous, ADMIN_USERNAME))
    assert (
        anonymous.patch("/v1/admin/users/rita", json={"role": "client"}, headers=admin).status_code
        == 200
    )
    # A role change signs the user's tokens out (401); an API key keeps working, as a client.
    expected = 401 if credential == "token" else 403
    assert anonymous.get("/v1/predictions", headers=headers).status_code == expected


def test_an_expired_token_is_refused_even_when_cached(anonymous: TestClient) -> None:
    make_user(anonymous, "rita", "reviewer")
    app = app_of(anonymous)
    with app.state.session_factory() as session:
        user = users.get_user(session, "rita")
        assert user is not None
        token = credentials.create_access_token(
            app.state.settings, user, expires_in=timedelta(seconds=1)
        )
    assert anonymous.get("/v1/predictions", headers=bearer(token)).status_code == 200
    time.sleep(1.1)
    response = anonymous.get("/v1/predictions", headers=bearer(token))
    assert response.status_code == 401 and "expired" in response.json()["detail"]
