"""The chat service: the chat page and the WebSocket of each user, over Redis.

Modules, each with one job (its rule in its docstring):

- :mod:`.views`: the routes, and the handshake check before any upgrade;
- :mod:`.node`: one process's sockets and the parts that serve them (start here to follow a
  message from the socket to Redis and back);
- :mod:`.conn`: one socket: its queue and ordering, replay, rate limit, its greenlet's loop;
- :mod:`.commands`: what a client can ask (message, edit, delete, read, typing, join/leave,
  watch, share a file);
- :mod:`.wire`: ids and frames, in and out;
- :mod:`.store`: messages in Redis (store and publish, changes, replay, cursors);
- :mod:`.conversations`: history pages, the conversation list, read markers;
- :mod:`.scripts`: the Lua scripts;
- :mod:`.broker`: the one pub/sub connection;
- :mod:`.presence`: this process's users' presence and socket counts;
- :mod:`.watch`: who hears whose presence;
- :mod:`.transport`: every use of simple-websocket's, gevent's and redis-py's internals.

The frames and close codes are documented in docs/chat.md, the settings in
docs/configuration.md, the Redis keys in docs/redis-keys.md.
"""
from flask import Flask

import webchat_common

from . import transport
from .config import ChatConfig
from .conversations import Conversations
from .views import bp

__all__ = ["create_app"]


def create_app(config=None):
    """App factory.  ``config`` (a mapping) replaces the environment, for tests."""
    app = Flask(__name__)
    webchat_common.load_config(app, ChatConfig, config)
    app.config["CHAT_ORIGINS"] = {
        o.strip().rstrip("/").lower() for o in app.config["CHAT_ALLOWED_ORIGINS"].split(",") if o.strip()}
    transport.untrack_greenlets()
    app.config["SOCK_SERVER_OPTIONS"] = transport.server_options(app.config["CHAT_MAX_FRAME"])
    webchat_common.init_app(app, "chat", static_url_path="/chat/static")
    app.register_blueprint(bp)
    app.extensions["chat_conversations"] = Conversations(app.extensions["redis"], app.config)
    return app
