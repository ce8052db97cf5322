"""The chat service's routes: the chat page (``GET /chat/``), the WebSocket
(``/chat/<username>``), and the conversations' JSON API (``/chat/api/history``,
``/chat/api/conversations``: see :mod:`.conversations`).

Rule: a WebSocket is refused before the upgrade unless its session is valid, the address is
the session's user's and the ``Origin`` is allowed.  That check is a ``before_request`` hook,
because flask-sock answers 101 inside the route, before the handler body runs: a visitor gets
401, someone else's address or a foreign ``Origin`` 403, a bad ``last_id`` or ``rooms`` 400, a process that
is shutting down 503, all before any upgrade.
"""
import json
import socket as pysocket
import threading

from flask import Blueprint, Response, current_app, g, jsonify, render_template, request, session
from flask_sock import Sock
from redis.exceptions import RedisError

from webchat_common import current_user, error_response, keys, login_required, origin_allowed, request_int

from . import metrics, migrate
from webchat_common.names import is_user_name

from .conversations import Refusal
from .wire import PRIVATE, parse_id, parse_rooms, poll_id

bp = Blueprint("chat", __name__, url_prefix="/chat", template_folder="templates", static_folder="static",
               static_url_path="/static")
sock = Sock()


@bp.get("/")
@login_required
def page():
    """The chat client: contacts with presence, private and room conversations."""
    return render_template("chat.html")


@bp.get("/api/history")
@login_required
def history():
    """A page of a conversation (``with=<user>`` or ``room=<room>``), oldest first:
    ``{"messages": [...], "more": bool, "read": {name: id}}``; ``before=<id>`` pages back,
    ``limit`` (CHAT_HISTORY_PAGE, at most CHAT_HISTORY_PAGE_MAX)."""
    cfg = current_app.config
    args = request.args
    before = None
    if "before" in args:
        before = parse_id(args["before"])
        if before is None:
            return error_response(400, "before must look like <ms>-<seq>")
    limit = cfg["CHAT_HISTORY_PAGE"]
    if "limit" in args:
        limit = request_int(args["limit"], 1, cfg["CHAT_HISTORY_PAGE_MAX"])
        if limit is None:
            return error_response(400, f"limit must be a whole number from 1 to {cfg['CHAT_HISTORY_PAGE_MAX']}")
    try:
        fields, frames = current_app.extensions["chat_conversations"].history(
            current_user(), args.get("with"), args.get("room"), before, limit)
    except Refusal as refused:
        return error_response(refused.status, refused.message)
    except RedisError:
        return error_response(503, "chat store unavailable: try again shortly")
    # The stored frames are JSON already: joined, not parsed and encoded again.
    body = '{"messages":[' + ",".join(frames) + "]," + json.dumps(fields, separators=(",", ":"))[1:]
    return Response(body, mimetype="application/json")


@bp.get("/api/conversations")
@login_required
def conversations():
    """The user's conversations, newest first: ``{"conversations": [{"with": name | "room":
    room, "last": message or null, "unread": n, "read_up_to": id or null}, ...]}``."""
    user = current_user()
    cfg = current_app.config
    try:
        rooms = {cfg["CHAT_DEFAULT_ROOM"], *current_app.extensions["redis"].smembers(keys.chat_rooms(user))}
        listing = current_app.extensions["chat_conversations"].listing(user, rooms)
    except RedisError:
        return error_response(503, "chat store unavailable: try again shortly")
    return jsonify(conversations=listing)


@bp.get("/api/members")
@login_required
def members():
    """Who is in a room (``room=<room>``): ``{"room": room, "members": [...], "more": bool}``;
    only for its members (403), the default room's members are everyone registered."""
    room = request.args.get("room")
    if room is None:
        return error_response(400, "give the room: ?room=<room>")
    try:
        names, more = current_app.extensions["chat_conversations"].members(current_user(), room)
    except Refusal as refused:
        return error_response(refused.status, refused.message)
    except RedisError:
        return error_response(503, "chat store unavailable: try again shortly")
    return jsonify(room=room, members=names, more=more)


@bp.get("/api/people")
@login_required
def people():
    """What the page shows of people (``name=<user>``, repeated, at most 100): ``{"people":
    {registered name: {"avatar": media name or null}}}``; names nobody registered are left out."""
    names = request.args.getlist("name")
    if len(names) > 100:
        return error_response(400, "at most 100 names")
    names = list(dict.fromkeys(n.lower() for n in names if is_user_name(n)))
    try:
        pipe = current_app.extensions["redis"].pipeline(transaction=False)
        for n in names:
            pipe.hmget(keys.user(n), "name", "avatar")
        found = pipe.execute() if names else []
    except RedisError:
        return error_response(503, "chat store unavailable: try again shortly")
    return jsonify(people={name: {"avatar": avatar} for name, avatar in found if name})


#: Held while the node is made: the first requests of a process come together, and one that
#: yields while making it (an import, a connection) must not let a second node be made.
_making = threading.Lock()


def _node():
    """This process's chat node, made by the first socket or poll (once)."""
    app = current_app._get_current_object()
    node = app.extensions.get("chat_node")
    if node is None:
        with _making:
            node = app.extensions.get("chat_node")
            if node is None:
                from .node import Node  # (gevent's world: imported by the first socket, not the app)

                node = app.extensions["chat_node"] = Node(app)
    return node


def _rooms(node, user):
    return {node.default_room, *node.redis.smembers(keys.chat_rooms(user))}


def _positions():
    """The positions a client resumes from (clock -> id: ``last_id`` for its private messages,
    ``rooms=<room>:<id>,...`` for rooms), None when it gave neither, or the sentence saying
    what is wrong with them."""
    args = request.args
    if not args.get("last_id") and "rooms" not in args:
        return None
    positions = {}
    if args.get("last_id"):
        positions[PRIVATE] = parse_id(args["last_id"])
        if positions[PRIVATE] is None:
            return "last_id must look like <ms>-<seq>"
    most = current_app.config["CHAT_MAX_ROOMS"] + 1
    rooms = parse_rooms(args.get("rooms", ""), most)
    if rooms is None:
        return f"rooms must look like <room>:<ms>-<seq>,... (each room once, at most {most})"
    positions.update(rooms)
    return positions


def _bad_poll():
    return error_response(400, "poll must be 8-64 letters, digits, - or _: an id the tab chose")


@bp.get("/api/events")
@login_required
def events():
    """Long-polling, for networks that block WebSockets: ``poll=<id>`` (one per tab, chosen by
    the client), ``last_id=<id>`` and ``rooms=<room>:<id>,...`` (its positions, as answered
    by the last poll: see :mod:`.client`).  Waits until there is something to send (at most
    CHAT_POLL_TIMEOUT), then ``{"frames": [...], "last_id": id, "rooms": {room: id}}``: the
    frames a socket would get; the first poll starts with ``hello`` (see :mod:`.poll`)."""
    pid = poll_id(request.args.get("poll"))
    if pid is None:
        return _bad_poll()
    since = _positions()
    if isinstance(since, str):
        return error_response(400, since)
    node = _node()
    if node.shutting_down:
        return error_response(503, "this chat process is restarting: poll again")
    user = current_user()
    if node.full() and not node.polls.holds(user, pid):
        return _full()
    try:
        status, body = node.polls.events(user, session.key_hash, pid, since, lambda: _rooms(node, user),
                                         request.environ.get("gunicorn.socket"))
    except RedisError:
        return error_response(503, "chat store unavailable: try again shortly")
    if isinstance(body, bytes):
        return Response(body, status, mimetype="application/json")
    return jsonify(body), status


@bp.post("/api/messages")
@login_required
def send():
    """One client frame over HTTP (the session's CSRF token in ``X-CSRF-Token``), the JSON body
    exactly as on a socket, ``poll=<id>`` naming the sending tab: ``{"frames": [answers]}``;
    refused: 4xx with the ``error`` frame among them (see :mod:`.poll`)."""
    pid = poll_id(request.args.get("poll"))
    if pid is None:
        return _bad_poll()
    limit = current_app.config["CHAT_MAX_FRAME"]
    raw = request.get_data(cache=False)
    if len(raw) > limit:
        return error_response(413, f"a frame is at most {limit} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return error_response(400, "the body must be UTF-8 JSON text")
    node = _node()
    user = current_user()
    try:
        status, body = node.polls.send(user, pid, text, lambda: _rooms(node, user))
    except RedisError:
        return error_response(503, "chat store unavailable: try again shortly")
    return jsonify(body), status


def _refuse(code, reason, message, headers=()):
    metrics.HANDSHAKES_REFUSED.labels(reason=reason).inc()
    return error_response(code, message, headers)


def _full():
    return _refuse(503, "full", "this chat process holds as many connections as its memory allows: try again",
                   [("Retry-After", "2")])


@bp.before_request
def data_layout():
    """No chat request is served from data in an older layout (see :mod:`.migrate`)."""
    if request.endpoint in ("chat.page", "chat.static"):
        return None
    try:
        migrate.ensure(current_app)
    except RedisError:
        return error_response(503, "chat store unavailable or being upgraded: try again shortly")
    return None


@bp.before_request
def check_handshake():
    """Refuse a WebSocket before flask-sock upgrades it."""
    if request.endpoint != "chat.socket":
        return None
    user = current_user()
    if user is None:
        return _refuse(401, "no_session", "login required")
    if request.view_args.get("username") != user:
        return _refuse(403, "not_yours", "this chat address belongs to another user")
    # (No Origin at all is refused too: browsers always send one, so only a script would omit it.)
    if not origin_allowed(request.headers.get("Origin"), request.host, current_app.config["CHAT_ORIGINS"]):
        return _refuse(403, "origin", "origin not allowed")
    node = current_app.extensions.get("chat_node")
    if node is not None and node.shutting_down:
        return _refuse(503, "shutting_down", "this chat process is restarting: reconnect")
    if node is not None and node.full():
        return _full()
    g.positions = _positions()  # (read once: the socket's route resumes from them)
    if isinstance(g.positions, str):
        return _refuse(400, "bad_last_id", g.positions)
    # No permessage-deflate: chat frames are small, and a zlib context per socket would cost
    # ~300 KiB of memory each (simple-websocket would otherwise accept the browser's offer).
    request.environ.pop("HTTP_SEC_WEBSOCKET_EXTENSIONS", None)
    sndbuf = current_app.config["CHAT_SOCKET_SNDBUF"]
    raw = request.environ.get("gunicorn.socket")
    if sndbuf and raw is not None:
        raw.setsockopt(pysocket.SOL_SOCKET, pysocket.SO_SNDBUF, sndbuf)
    return None


@sock.route("/<username>", bp=bp, endpoint="socket")
def socket(ws, username):
    """One chat WebSocket: hello, the replay of what was missed, then live frames."""
    from .conn import Connection  # (gevent's world: imported by the first socket, not the app)

    node = _node()
    try:
        rooms = _rooms(node, username)
    except RedisError:
        ws.close(reason=1011, message="chat store unavailable: try again shortly")
        return
    conn = Connection(node, ws, username, session.key_hash, rooms, g.positions)
    conn.run()
