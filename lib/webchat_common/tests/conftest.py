"""Fixtures of the shared library's tests: tiny apps that use the shared plumbing, and a Redis
client of the test's Redis."""
import pytest
import redis
from flask import Flask, jsonify, session

import webchat_common
from webchat_common import Config, TestConfig, as_mapping, lifecycle, new_login


def _tiny_app(redis_url, login_mark, config=Config, **settings):
    """An app with the shared plumbing (``init_app``) and the routes every library test app
    has: log in as anyone (``login_mark``: how the login route is exempt from CSRF), a CSRF
    token, a change that needs it."""
    app = Flask(__name__)
    webchat_common.load_config(app, config, as_mapping(TestConfig, REDIS_URL=redis_url, TRUSTED_PROXIES=0, **settings))
    webchat_common.init_app(app, "test", static_url_path="/static")

    @app.post("/login/<name>")
    @login_mark
    def login(name):
        new_login(name)
        return "ok"

    @app.get("/token")
    def token():
        return jsonify(token=webchat_common.csrf_token())

    @app.post("/change")
    def change():
        return "changed"

    return app


@pytest.fixture
def plumbed_app(redis_url):
    """A tiny app with the shared plumbing and one route of each routing kind that makes
    werkzeug redirect: a rule with ``defaults``, ``redirect_to=``, a trailing slash."""
    app = _tiny_app(redis_url, webchat_common.login_form)

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


def _session_app(redis_url, **settings):
    """The session tests' app: log in, who am I, log out, a CSRF token, a protected change."""
    app = _tiny_app(redis_url, webchat_common.csrf_exempt, **settings)

    @app.get("/whoami")
    def whoami():
        return jsonify(user=webchat_common.current_user())

    @app.post("/logout")
    @webchat_common.csrf_exempt
    def logout():
        session.destroy()
        return "bye"

    return app


@pytest.fixture
def make_app():
    """``make_app(redis_url, **settings)``: the session tests' app with settings of the test's."""
    return _session_app


@pytest.fixture
def app(redis_url):
    return _session_app(redis_url)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def r(redis_url):
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def _metrics_app(redis_url):
    """The metrics tests' app: one route that answers, one that raises."""
    app = _tiny_app(redis_url, webchat_common.csrf_exempt, config=TestConfig, PROPAGATE_EXCEPTIONS=False)

    @app.get("/hello")
    def hello():
        return "hi"

    @app.get("/boom")
    def boom():
        raise RuntimeError("boom")

    return app


@pytest.fixture
def make_metrics_app():
    """``make_metrics_app(redis_url)``: the metrics tests' app against any Redis address."""
    return _metrics_app


@pytest.fixture
def metrics_client(redis_url):
    """A test client of the metrics app, with the draining flag reset before and after."""
    lifecycle.reset()
    yield _metrics_app(redis_url).test_client()
    lifecycle.reset()
