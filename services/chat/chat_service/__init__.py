"""The chat service: the chat page and the WebSocket endpoint."""
from flask import Blueprint, Flask, render_template

import webchat_common
from webchat_common import Config, login_required

bp = Blueprint("chat", __name__, url_prefix="/chat")


class ChatConfig(Config):
    pass


@bp.get("/")
@login_required
def page():
    return render_template("chat.html")


def create_app(config=None):
    """App factory.  ``config`` (a mapping) replaces the environment, for tests."""
    app = Flask(__name__)
    webchat_common.load_config(app, ChatConfig, config)
    webchat_common.init_app(app, "chat", static_url_path="/chat/static")
    app.register_blueprint(bp)
    return app
