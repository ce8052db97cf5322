"""Baseline: Flask-SocketIO doing the chat service's private messages.

gevent async mode, a Redis message queue so that a message reaches its receiver on any process,
one room per user.  Run as several ``gunicorn -k gevent -w 1`` processes behind nginx; the load
generator uses the websocket transport only, so no sticky routing is needed.

``FSIO_TRANSPORTS`` (comma separated, default ``websocket``) is the Engine.IO transports the server
allows: ``polling`` for the long-polling benchmark (``bench/longpoll_bench.py``), whose polling
sessions live in the process that made them, so it runs behind nginx with sticky routing
(``chat_servers.FsioPollingVariant``).

``FSIO_HISTORY=1`` ("durable history on") also appends each message to the receiver's Redis
stream ``inbox:<user>`` (XADD, MAXLEN ~ 1000) before it is emitted, as the chat service keeps a
durable inbox; ``FSIO_HISTORY=0`` only forwards.

    FSIO_HISTORY=1 REDIS_URL=redis://... gunicorn -k gevent -w 1 'bench.chat_baselines.fsio_app:create_app()'
"""
import json
import os

import socketio as socketio_module
from flask import Flask, request
from flask_socketio import SocketIO, emit, join_room

from .common import NODE, message, origin_ok, redis_client, session_user


def create_app():
    app = Flask(__name__)
    history = os.environ.get("FSIO_HISTORY", "0") == "1"
    transports = [t.strip() for t in os.environ.get("FSIO_TRANSPORTS", "websocket").split(",") if t.strip()]
    r = redis_client()
    # The message queue's Redis pool: redis-py caps a pool at 100 connections by default, and
    # under gevent every greenlet that emits holds one.  With 1,000 sockets publishes then fail
    # ("Too many connections"); python-socketio reconnects on that and *replaces the pub/sub
    # connection its listener reads*, so messages published in the next second are lost.  Give
    # the pool room, as anyone running this for real would.
    queue = socketio_module.RedisManager(os.environ["REDIS_URL"], channel="flask-socketio",
                                         redis_options={"max_connections": 20000})
    socketio = SocketIO(app, async_mode="gevent", client_manager=queue,
                        cors_allowed_origins=None, transports=transports, logger=False,
                        engineio_logger=False)
    users = {}  # sid -> username

    @app.get("/healthz")
    def healthz():
        return {"status": "ok"}

    @socketio.on("connect")
    def connect(auth=None):
        user = session_user(r, request.environ)
        if user is None or not origin_ok(request.environ):
            return False  # refused: the client gets a connect_error
        users[request.sid] = user
        join_room(user)
        emit("hello", {"type": "hello", "user": user, "node": NODE})

    @socketio.on("disconnect")
    def disconnect(*args):
        users.pop(request.sid, None)

    @socketio.on("message")
    def on_message(msg):
        sender = users.get(request.sid)
        try:
            receiver = msg["receiver"]
            data = msg["data"]
        except (KeyError, TypeError):
            emit("error", {"type": "error", "error": "bad frame"})
            return
        out = message(sender, receiver, data)
        if history:
            r.xadd(f"inbox:{receiver}", {"m": json.dumps(out)}, maxlen=1000, approximate=True)
        socketio.emit("message", out, to=receiver)

    app.extensions["bench_socketio"] = socketio
    return app
