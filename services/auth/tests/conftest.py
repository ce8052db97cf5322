import re

import pytest

from auth_service import create_app
from auth_service.config import AuthTestConfig
from webchat_common import as_mapping


@pytest.fixture
def app(redis_url):
    return create_app(as_mapping(AuthTestConfig, REDIS_URL=redis_url, TRUSTED_PROXIES=0))


@pytest.fixture
def client(app):
    return app.test_client()


class AuthActions:
    """flaskr's ``auth`` fixture: register, log in and out through the real views."""

    def __init__(self, client):
        self.client = client

    def _form_token(self):
        page = self.client.get("/login", headers={"Accept": "text/html"}).get_data(as_text=True)
        return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)

    def register(self, username="alice", password="correct horse"):
        return self.client.post("/register", data={"username": username, "password": password,
                                                   "csrf_token": self._form_token()})

    def login(self, username="alice", password="correct horse", **extra):
        return self.client.post("/login", data={"username": username, "password": password,
                                                "csrf_token": self._form_token(), **extra})

    def logout(self):
        return self.client.post("/logout", data={"csrf_token": self.client.get("/api/me").json["csrf_token"]})


@pytest.fixture
def auth(client):
    return AuthActions(client)


@pytest.fixture
def alice(client, auth):
    """``client`` logged in as alice, registered through the real form."""
    auth.register()
    return client
