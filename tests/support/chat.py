"""A chat client for the integration tests: JSON frames in and out of a real WebSocket through
the gateway (websocket-client), close codes as exceptions, people who register and log in, and
a tab on the long-poll transport (:class:`Poller`); what the tests read of chat in Redis, on one
Redis or a Cluster."""
import json
import struct
import time
import uuid
from urllib.parse import urlencode

import pytest
import requests
import websocket
from redis.cluster import RedisCluster
from websocket import ABNF

from support.web import Browser
from webchat_common import keys
from webchat_testing.sessions import COOKIE


class Closed(Exception):
    def __init__(self, code, reason):
        super().__init__(f"closed {code} {reason!r}")
        self.code = code
        self.reason = reason


class ChatSock:
    """A chat WebSocket as a test sees it: JSON frames in, JSON frames out, close codes, and
    its positions as a client keeps them (:meth:`positions`)."""

    def __init__(self, ws):
        self.ws = ws
        self.pings = 0
        self.last_id = None
        self.rooms = {}
        self.hello = self.expect("hello")
        self.node = self.hello["node"]
        self.sync = None

    @property
    def pid(self):
        return int(self.node.split("-")[-2])

    def send(self, **frame):
        self.ws.send(json.dumps(frame))

    def watch(self, *names, cid=None):
        """Watch the presence of ``names`` (replacing the previous list): the ``watching`` answer."""
        self.send(type="watch", users=list(names), cid=cid)
        return self.expect("watching", cid=cid)

    def send_raw(self, data, opcode=ABNF.OPCODE_TEXT):
        self.ws.send(data, opcode)

    def recv(self, timeout=5.0):
        """The next text frame as a dict; Closed when the server closes."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no frame")
            self.ws.settimeout(left)
            try:
                op, frame = self.ws.recv_data_frame(control_frame=True)
            except websocket.WebSocketTimeoutException:
                raise TimeoutError("no frame") from None
            except (websocket.WebSocketConnectionClosedException, ConnectionError) as exc:
                raise Closed(1006, str(exc)) from None
            if op == ABNF.OPCODE_TEXT:
                f = json.loads(frame.data)
                self._saw(f)
                return f
            if op == ABNF.OPCODE_CLOSE:
                data = frame.data
                code = struct.unpack("!H", data[:2])[0] if len(data) >= 2 else 1005
                raise Closed(code, data[2:].decode("utf-8", "replace"))
            if op == ABNF.OPCODE_PING:
                self.pings += 1

    def _saw(self, f):
        """Follow the positions as the page does: a ``sync`` names them; a frame with an id
        moves its clock's (its room's, else the private one)."""
        if f.get("type") == "sync":
            self.last_id = f["last_id"] or self.last_id
            self.rooms.update(f["rooms"])
        elif f.get("type") in ("message", "edit", "delete") and "id" in f:
            room = f.get("room") or (f.get("message") or {}).get("room")
            if room:
                self.rooms[room] = f["id"]
            else:
                self.last_id = f["id"]

    def positions(self):
        """What a client resumes from: ``connect(**sock.positions())``."""
        return {"last_id": self.last_id, "rooms": dict(self.rooms)}

    def expect(self, kind, timeout=5.0, **match):
        """Skip other frames until one of type ``kind`` whose fields match."""
        deadline = time.monotonic() + timeout
        while True:
            f = self.recv(max(0.01, deadline - time.monotonic()))
            if f.get("type") == kind and all(f.get(k) == v for k, v in match.items()):
                return f

    def collect(self, seconds):
        """Every frame that arrives within ``seconds``."""
        out = []
        deadline = time.monotonic() + seconds
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return out
            try:
                out.append(self.recv(left))
            except TimeoutError:
                return out

    def expect_close(self, timeout=8.0):
        with pytest.raises(Closed) as info:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                self.recv(max(0.01, deadline - time.monotonic()))
        return info.value

    def close(self):
        try:
            self.ws.close()
        except Exception:  # noqa: BLE001
            pass


class Person:
    """Someone registered and logged in (own source address, own cookie jar)."""

    def __init__(self, stack, name=None):
        self.stack = stack
        self.name = name or "c" + uuid.uuid4().hex[:10]
        self.browser = Browser(stack.url)
        assert self.browser.register(self.name).status_code == 303

    @property
    def cookie(self):
        return f"{COOKIE}=" + self.browser.sid

    def url(self, who=None, last_id=None, rooms=None):
        u = f"ws://127.0.0.1:{self.stack.gateway_port}/chat/{who or self.name}"
        query = urlencode(resume(last_id, rooms))
        return u + ("?" + query if query else "")

    def open(self, who=None, last_id=None, origin="default", timeout=5, rooms=None):
        """The raw websocket (raises WebSocketBadStatusException when refused)."""
        kw = {"cookie": self.cookie, "timeout": timeout}
        if origin == "default":
            kw["origin"] = self.stack.url
        elif origin is None:
            kw["suppress_origin"] = True
        else:
            kw["origin"] = origin
        return websocket.create_connection(self.url(who, last_id, rooms), **kw)

    def connect(self, last_id=None, sync=True, rooms=None):
        """A socket resuming from ``last_id`` (its private messages) and ``rooms`` (room -> id)."""
        s = ChatSock(self.open(last_id=last_id, rooms=rooms))
        if sync:
            s.sync = s.expect("sync")
        return s

    def connect_not_on(self, node, tries=40):
        """Reconnect until the socket lands on a process other than ``node``."""
        for _ in range(tries):
            s = self.connect()
            if s.node != node:
                return s
            s.close()
        raise AssertionError("never landed on the other chat process")

    def connect_on(self, node, tries=40):
        for _ in range(tries):
            s = self.connect()
            if s.node == node:
                return s
            s.close()
        raise AssertionError("never landed on that chat process")


def resume(last_id=None, rooms=None):
    """The query that resumes from positions: ``last_id`` and ``rooms=<room>:<id>,...``."""
    params = {}
    if last_id:
        params["last_id"] = last_id
    if rooms:
        params["rooms"] = ",".join(f"{room}:{mid}" for room, mid in rooms.items())
    return params


def person(chat_stack):
    return Person(chat_stack)


def history(who, **params):
    """``GET /chat/api/history`` as ``who`` (``with=``/``room=``, ``before=``, ``limit=``)."""
    return who.browser.get("/chat/api/history", params=params, headers={"Accept": "application/json"})


def two_nodes(a, b):
    """a and b connected, on different chat processes."""
    sa = a.connect()
    sb = b.connect_not_on(sa.node)
    return sa, sb


def wait_online(sock, who, online=True, timeout=10):
    return sock.expect("presence", timeout=timeout, user=who, online=online)


class Poller:
    """One tab of ``who`` on the long-poll transport: ``poll()`` is ``GET /chat/api/events``
    (from the positions answered last: ``last_id`` and ``rooms``), ``send(...)`` one frame as
    ``POST /chat/api/messages``."""

    def __init__(self, who, pid=None, direct=None):
        self.who = who
        self.pid = pid or uuid.uuid4().hex[:16]
        self.direct = direct  # a chat service's own address: each poll on a new connection to it
        self.last_id = None
        self.rooms = {}
        self.csrf = who.browser.me()["csrf_token"]
        self.frames = []     # every frame polled so far, in order

    def positions(self):
        """The query of the positions answered last."""
        return resume(self.last_id, self.rooms)

    def poll(self, timeout=35, last_id="mine", ok=(200,)):
        """One poll (its frames), from the positions answered last (``last_id``: another
        private position); a status in ``ok`` other than 200 counts as an empty answer."""
        params = {"poll": self.pid, **resume(self.last_id if last_id == "mine" else last_id, self.rooms)}
        if self.direct:
            # The processes of a chat service share its port: the kernel gives each new
            # connection to one of them, so consecutive polls reach either.
            res = requests.get(self.direct + "/chat/api/events", params=params, timeout=timeout,
                               headers={"Accept": "application/json", "Connection": "close",
                                        "Cookie": self.who.cookie})
        else:
            res = self.who.browser.get("/chat/api/events", params=params, headers={"Accept": "application/json"},
                                       timeout=timeout)
        assert res.status_code in ok, res.text
        if res.status_code != 200:
            return []
        body = res.json()
        if body["last_id"]:
            self.last_id = body["last_id"]
        self.rooms = body["rooms"]
        self.frames += body["frames"]
        return body["frames"]

    def until(self, kind, timeout=10, **match):
        """Poll until a ``kind`` frame matching ``match`` came (searching what came already)."""
        deadline = time.monotonic() + timeout
        while True:
            for i, f in enumerate(self.frames):
                if f.get("type") == kind and all(f.get(k) == v for k, v in match.items()):
                    del self.frames[i]
                    return f
            if time.monotonic() > deadline:
                raise AssertionError(f"no {kind} {match} polled; got {self.frames}")
            self.poll()

    def post(self, frame, csrf="mine", pid="mine"):
        headers = {"Accept": "application/json", "Content-Type": "application/json"}
        if csrf:
            headers["X-CSRF-Token"] = self.csrf if csrf == "mine" else csrf
        params = {"poll": self.pid if pid == "mine" else pid}
        data = frame if isinstance(frame, (bytes, str)) else json.dumps(frame)
        return self.who.browser.post("/chat/api/messages", params=params, data=data, headers=headers)

    def send(self, **frame):
        """Send one frame; its answers (asserting it was accepted)."""
        res = self.post(frame)
        assert res.status_code == 200, res.text
        return res.json()["frames"]


def holders(r, name):
    """The chat processes (node ids, as in ``hello``) that hold sockets of ``name`` now, read
    from Redis (``chat:sockets``: one field per process's holder id, ``<node>/<n>``)."""
    return {h.rsplit("/", 1)[0] for h in r.hkeys(keys.chat_sockets(name))}


def _every_primary(r):
    """The options that send a command without a key to every primary of a Cluster client
    (redis-py sends it to one node, the same one every time), none on one Redis."""
    return {"target_nodes": RedisCluster.PRIMARIES} if isinstance(r, RedisCluster) else {}


def shard_subscribers(r, *channels):
    """``{channel: connections subscribed to it}`` (``SSUBSCRIBE``).  On a Cluster a sharded
    channel's subscribers are on the primary of its slot: every primary is asked, and the
    counts added up."""
    return dict(r.pubsub_shardnumsub(*channels, **_every_primary(r)))


def kill_subscribers(r):
    """Close every pub/sub connection (``CLIENT KILL TYPE pubsub``): a chat process's
    subscriber, or on a Cluster its subscriber on each primary.  Returns how many were closed."""
    killed = r.client_kill_filter(_type="pubsub", **_every_primary(r))
    return sum(killed.values()) if isinstance(killed, dict) else killed
