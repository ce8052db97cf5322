"""Fixtures of the shared library's tests."""
import pytest
from flask import Flask, jsonify

import webchat_common
from webchat_common import Config, TestConfig, as_mapping, new_login


@pytest.fixture
def plumbed_app(redis_url):
    """A tiny app with the shared plumbing (``init_app``) and one route of each routing kind
    that makes werkzeug redirect: a rule with ``defaults``, ``redirect_to=``, a trailing slash."""
    app = Flask(__name__)
    webchat_common.load_config(app, Config, as_mapping(TestConfig, REDIS_URL=redis_url, TRUSTED_PROXIES=0))
    webchat_common.init_app(app, "test", static_url_path="/static")

    @app.post("/login/<name>")
    @webchat_common.login_form
    def login(name):
        new_login(name)
        return "ok"

    @app.post("/change")
    def change():
        return "changed"

    @app.get("/token")
    def token():
        return jsonify(token=webchat_common.csrf_token())

    @app.get("/items", defaults={"page": 1})
    @app.get("/items/page/<int:page>")
    def items(page):
        return jsonify(page=page)

    @app.get("/folder/")
    def folder():
        return "folder"

    app.add_url_rule("/old", endpoint="old", redirect_to="/items")
    return app


@pytest.fixture
def plumbed_client(plumbed_app):
    return plumbed_app.test_client()
