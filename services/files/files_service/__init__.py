"""The files service: the media people share (``/media/``; see :mod:`.views`)."""
from flask import Flask
from flask.wrappers import Request

import webchat_common

from . import store
from .config import FilesConfig, FilesTestConfig

__all__ = ["FilesConfig", "FilesTestConfig", "create_app"]


class MediaRequest(Request):
    """Uploaded files are written straight into ``MEDIA_ROOT/.incoming`` (not a spool in
    /tmp), so storing one is a hard link, not a copy."""

    def _get_file_stream(self, total_content_length, content_type, filename=None, content_length=None):
        return store.incoming_file()


def create_app(config=None):
    """App factory.  ``config`` (a mapping) replaces the environment, for tests."""
    app = Flask(__name__)
    webchat_common.load_config(app, FilesConfig, config)
    if app.config["MEDIA_GATEWAY"] and not app.config["MEDIA_URL_SECRET"]:
        raise RuntimeError("MEDIA_GATEWAY needs MEDIA_URL_SECRET (the gateway's secure_link secret)")
    app.request_class = MediaRequest
    app.url_map.merge_slashes = False  # "/media//etc/passwd" is refused, not redirected
    webchat_common.init_app(app, "files", static_url_path="/media/static")
    store.prepare(app.config["MEDIA_ROOT"])

    from . import views

    app.register_blueprint(views.bp)
    return app
