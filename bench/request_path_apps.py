"""The two baseline apps of ``bench/request_path.py``, run under gunicorn like the services.

- :func:`bare_app`: a Flask app that answers ``GET /api/me`` with the JSON the auth service
  gave the bench user (``BENCH_ME_JSON``, the same bytes), and nothing else: no session, no
  logging, no metrics, no request id, no CSRF;
- :func:`session_app`: the same plus the shared session contract only: the Redis pool and
  :class:`webchat_common.sessions.RedisSessionInterface` (read, and the sliding-TTL refresh it
  does at the end of a request), the user and CSRF token taken from the session.  The cost
  between the two is what reading a session costs; between this and auth, the rest of the
  shared plumbing and the view's own work.
"""
import json
import os

from flask import Flask, jsonify, session

from webchat_common.config import Config, load_config
from webchat_common.redis_store import init_redis
from webchat_common.sessions import RedisSessionInterface


def _me():
    return json.loads(os.environ["BENCH_ME_JSON"])


def bare_app():
    app = Flask(__name__)
    me = _me()

    @app.get("/api/me")
    def api_me():
        return jsonify(**me)

    @app.get("/healthz")
    def healthz():
        return jsonify(status="ok")

    @app.get("/_bench/app")
    def which():  # the benchmark checks that gunicorn runs this app, not auth's
        return "bare_app"

    return app


def session_app():
    app = Flask(__name__)
    load_config(app, Config)
    init_redis(app)
    app.session_interface = RedisSessionInterface()
    me = _me()

    @app.get("/api/me")
    def api_me():
        user = session.get("user")
        if not isinstance(user, str):
            return jsonify(error="login required"), 401
        return jsonify(user=user, created=me["created"], login_at=session.get("login_at"),
                       csrf_token=session.get("csrf"))

    @app.get("/healthz")
    def healthz():
        return jsonify(status="ok")

    @app.get("/_bench/app")
    def which():
        return "session_app"

    return app
