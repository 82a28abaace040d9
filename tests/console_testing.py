"""Helpers for tests of the review console (importable as `console_testing`)."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient

JWT_SECRET = "console-tests-signing-secret-0123456789abcdef"
PASSWORDS = {
    "admin": "console admin pass 7",
    "rita": "reviewer-password-1",
    "remi": "reviewer-password-2",
    "carl": "client-password-1",
}
ROLES = {"admin": "admin", "rita": "reviewer", "remi": "reviewer", "carl": "client"}
CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(html: str) -> str:
    """The CSRF token of the first form of a page."""
    match = CSRF_FIELD.search(html)
    assert match, "no csrf_token field in the page"
    return match.group(1)


def sign_in(client: TestClient, username: str, password: str | None = None) -> str:
    """Sign in through the form; returns the CSRF token of the session's forms."""
    client.cookies.clear()
    page = client.get("/console/login")
    response = client.post(
        "/console/login",
        data={
            "username": username,
            "password": password or PASSWORDS[username],
            "csrf_token": csrf_of(page.text),
            "next": "/console/queue",
        },
    )
    assert response.status_code == 303, response.text
    queue = client.get("/console/queue")
    assert queue.status_code == 200, queue.text
    return csrf_of(queue.text)
