"""flaskr-style fixtures: the app on a fresh database, a client, a logged-in client."""

from __future__ import annotations

import re

import pytest
from flask import Flask
from flask.testing import FlaskClient

from models.accounts import add_user
from models.user import Role
from webui import create_app

PASSWORD = "agent-pass-1"


@pytest.fixture
def app(settings, db) -> Flask:
    add_user(db, "zhang", Role.AGENT, PASSWORD, realm=settings.sip.realm, display_name="张三")
    db.commit()
    app = create_app(settings)
    app.config["TESTING"] = True
    return app


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def csrf_token(page: str) -> str:
    return re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page).group(1)


@pytest.fixture
def logged_in(client: FlaskClient) -> FlaskClient:
    page = client.get("/auth/login").get_data(as_text=True)
    response = client.post("/auth/login", data={"username": "zhang", "password": PASSWORD, "csrf_token": csrf_token(page)})
    assert response.status_code == 302
    return client
