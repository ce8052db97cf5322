"""The auth service: accounts, login and the shared session's identity."""
from flask import Flask

import webchat_common

from .config import AuthConfig


def create_app(config=None):
    """App factory.  ``config`` (a mapping) replaces the environment, for tests."""
    app = Flask(__name__)
    webchat_common.load_config(app, AuthConfig, config)
    webchat_common.init_app(app, "auth", static_url_path="/static")

    from . import cli, metrics, views

    metrics.init_app(app)
    app.register_blueprint(views.bp)
    app.register_blueprint(cli.cli)
    return app
