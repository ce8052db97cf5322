"""Baseline: one in-memory flask-sock process (gunicorn -k gevent -w 1), the tutorial's
``socket_dict``: private messages are forwarded from socket to socket through a dict, with no
Redis on the message path (Redis is read once per socket, for the session, when it connects).

    gunicorn -k gevent -w 1 'bench.chat_baselines.sock_app:create_app()'
"""
import json

from flask import Flask, abort, request
from flask_sock import Sock

from .common import NODE, message, origin_ok, redis_client, session_user


def create_app():
    app = Flask(__name__)
    sock = Sock(app)
    r = redis_client()
    sockets = {}  # username -> ws (the tutorial's socket_dict)

    @app.get("/healthz")
    def healthz():
        return {"status": "ok"}

    @app.before_request
    def authenticate():
        if request.path.startswith("/chat/"):
            user = session_user(r, request.environ)
            if user is None:
                abort(401)
            if user != request.path[len("/chat/"):] or not origin_ok(request.environ):
                abort(403)

    @sock.route("/chat/<username>")
    def chat(ws, username):
        sockets[username] = ws
        try:
            ws.send(json.dumps({"type": "hello", "user": username, "node": NODE}))
            while True:
                frame = ws.receive()
                try:
                    msg = json.loads(frame)
                    receiver = msg["receiver"]
                    data = msg["data"]
                except (ValueError, KeyError, TypeError):
                    ws.send(json.dumps({"type": "error", "error": "bad frame"}))
                    continue
                peer = sockets.get(receiver)
                if peer is None:
                    ws.send(json.dumps({"type": "system", "data": "offline", "receiver": username}))
                    continue
                try:
                    peer.send(json.dumps(message(username, receiver, data)))
                except Exception:  # noqa: BLE001 - the receiver went away mid-send
                    sockets.pop(receiver, None)
        finally:
            if sockets.get(username) is ws:
                del sockets[username]

    return app
