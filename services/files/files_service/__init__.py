"""The files service: the media people share."""
from flask import Blueprint, Flask, jsonify

import webchat_common
from webchat_common import Config, login_required

bp = Blueprint("files", __name__, url_prefix="/media")


class FilesConfig(Config):
    pass


@bp.get("/")
@login_required
def media_list():
    return jsonify(media=[])


def create_app(config=None):
    """App factory.  ``config`` (a mapping) replaces the environment, for tests."""
    app = Flask(__name__)
    webchat_common.load_config(app, FilesConfig, config)
    webchat_common.init_app(app, "files", static_url_path="/media/static")
    app.register_blueprint(bp)
    return app
