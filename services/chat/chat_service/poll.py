"""Chat without WebSockets: a long-poll (``GET /chat/api/events``) waits until there is
something to send, and each client frame is one ``POST /chat/api/messages``.

Rule: a long-poll client is a client of the process like a socket (:class:`.client.Client`):
the same frames, ids, replay from ``last_id``, presence and per-user cap.  It is named by the
``poll`` id its tab chose and lives on the process that got its first poll; between two polls
it keeps collecting frames (bounded, as a socket's queue) for CHAT_POLL_GRACE seconds, so a
poll that comes back to the same process continues exactly.  A poll that lands on another
process (no sticky sessions) is picked up there: it replays from the poll's ``last_id``, so no
message is skipped or doubled, and loads the users the client watches from Redis
(``chat:poll:<user>:<poll>``), so it is told their presence again; the process that held the
tab's client before hands what it had queued without an id (typing, a read marker: what a
replay cannot give) to the new one, and lets it go.  A client that stops polling is gone
CHAT_POLL_GRACE seconds after its last poll ended (at once when its connection closes while
a poll waits): its presence then expires as a closed socket's.

A frame sent over HTTP (:class:`Sender`) runs the same commands as on a socket; its answers
(``ack``, ``error``, ...) are the response, and what goes to the sender's clients (a room
joined, the ``watching`` answer) comes through their polls.  Its rate limit is per user, in
Redis (``chat:rate:<user>``), since consecutive POSTs may reach different processes.
"""
import json
import logging

import gevent
from gevent.event import Event
from redis.exceptions import RedisError

from webchat_common import keys

from . import metrics, scripts, transport
from .client import Client
from .lua import Lua
from .wire import Refused, control_payload, error, http_status, parse_frame, payloads, positions_fields, text_frame

log = logging.getLogger(__name__)

#: How a control frame for one poll client starts (see :meth:`Polls.heard`).
CONTROL = b'{"type":"poll",'
#: Presence changes are not handed over: the new client is told every watched user's state
#: (``watching``) and hears the changes since; an old change passed on could undo a newer one.
_PRESENCE = b'{"type":"presence",'


class PollClient(Client):
    def __init__(self, node, user, session_hash, rooms, since, pid):
        super().__init__(node, user, session_hash, rooms, since)
        self.pid = pid
        self.record = keys.chat_poll(user, pid)
        self.waiter = None      # the Event of the poll waiting now, if one is
        self.expiry = None      # the timer that ends the client CHAT_POLL_GRACE after its last poll
        self.gen = 0            # which of its tab's clients this is (the newest serves the tab)

    @property
    def token(self):
        return "p." + self.pid

    @property
    def replay_skips(self):
        return self.token

    def wake(self):
        if self.waiter is not None:
            self.waiter.set()

    def _start(self):
        """New: ``hello`` and the replay, as a socket.  Picked up from another process: the
        replay from ``last_id`` and the users it watches, as if nothing had happened.  Either
        way the client gets the next generation of its tab (``gen``), and whoever held an older
        one lets it go and passes on what it had queued (:meth:`Polls.heard`)."""
        redis = self.node.redis
        pipe = redis.pipeline(transaction=False)
        pipe.hsetnx(self.record, "watch", "[]")
        pipe.hget(self.record, "watch")
        pipe.hincrby(self.record, "gen", 1)
        pipe.expire(self.record, self.node.cfg["CHAT_POLL_RECORD_TTL"])
        created, watched, self.gen, _ = pipe.execute()
        if created or self.since is None:
            # Its first answer names a position in every clock even when it holds no message:
            # the last id issued before the replay, so that a poll picked up elsewhere resumes
            # from there.
            self.sent = dict(super()._start())
        else:
            start, self.since = self.first_start(), None
            self.sent = {clock: mid for clock, mid in start.items() if mid is not None}
            self.resync(start, announce=True, explicit=True, sync=False)
            users = _names(watched)
            if users:
                self.node.watch.set(self, {u.lower(): u for u in users}, None)
        redis.spublish(keys.chat_user_channel(self.user),
                       control_payload({"type": "poll", "poll": self.pid, "taken": self.gen}))

    def wait(self, timeout, hangup):
        """Wait until something is queued, the client must close, ``timeout`` passes, or the
        poll's connection closes (``hangup(callback)`` arms a watcher, returns its stop).
        Returns the queued frames' JSON texts, or None when a newer poll took over."""
        if self.expiry is not None:
            self.expiry.kill(block=False)
            self.expiry = None
        old, me = self.waiter, Event()
        self.waiter = me
        if old is not None:
            old.set()  # one poll waits per client: the newer takes over, the older answers empty
        if not self.out and self.closing is None:
            stop = hangup(me.set)
            try:
                me.wait(timeout)
            finally:
                stop()
        if self.waiter is not me:
            return None
        self.waiter = None
        return self.take()

    def take(self):
        texts = []
        n = 0
        for mid, frame, clock in self.out:
            texts += payloads(frame)
            if mid is not None:
                self.written(mid, clock)
                n += 1
        self.out = []
        if n:
            metrics.MESSAGES_OUT.inc(n)
        return texts

    def answer(self, texts):
        """A poll's answer: the frames (JSON texts, joined as they are, not parsed and encoded
        again) and the positions to poll from next (never missing: a new client's are the last
        ids issued before its replay)."""
        return (b'{"frames":[' + b",".join(texts) + b"]," + _positions_json(self.sent)[1:])

    def expire_later(self, grace, end):
        self.expiry = gevent.spawn_later(grace, end, self)


class Polls:
    """This process's long-poll clients, by (user, poll id)."""

    def __init__(self, node):
        self.node = node
        self.cfg = node.cfg
        self.clients = {}
        self.s_rate = Lua(node.redis, scripts.RATE)

    def holds(self, user, pid):
        """Whether a client of this tab is here (its next poll is no new client)."""
        return (user.lower(), pid) in self.clients

    def events(self, user, session_hash, pid, since, rooms, sock):
        """One poll: ``(status, body)``.  ``since``: the positions the tab polls from (clock ->
        id), or None; ``rooms``: a function returning the user's rooms (read only for a client
        new here); ``sock``: the poll's connection, watched for hangup while it waits."""
        node = self.node
        key = (user.lower(), pid)
        c = self.clients.get(key)
        carried = []
        if c is not None and (c.closing is not None or c.session_hash != session_hash
                              or (since or {}) != c.sent):
            # Not where this tab is: its last answer was lost (it asks from further back), or it
            # was served elsewhere meanwhile (from further on): start again from its last_id,
            # with what was queued without an id (a replay cannot give that).
            if c.session_hash == session_hash:
                carried = [frame for mid, frame, _ in c.out if mid is None]  # (the same process: in order)
            self.end(c)
            c = None
        if c is None:
            c = PollClient(node, user, session_hash, rooms(), since, pid)
            self.clients[key] = c
            try:
                admitted = c.open()
            except RedisError:
                self._forget(c)
                raise
            if not admitted:
                self._forget(c)
                limit = self.cfg["CHAT_MAX_SOCKETS_PER_USER"]
                return 429, {"error": f"too many open connections: at most {limit} per user; close one",
                             "code": "too_many_sockets"}
            for frame in carried:
                c.push(None, frame)
        texts = c.wait(self.cfg["CHAT_POLL_TIMEOUT"], lambda cb: transport.on_hangup(sock, cb))
        if texts is None:
            return 200, b'{"frames":[],"superseded":true,' + _positions_json(since or {})[1:]
        if c.closing is not None:
            code, reason = c.closing
            texts.append(json.dumps({"type": "close", "code": code, "reason": reason}).encode())
            self.end(c)
        else:
            c.expire_later(self.cfg["CHAT_POLL_GRACE"], self._expired)
        return 200, c.answer(texts)

    def _expired(self, c):
        c.expiry = None  # (this greenlet: end() must not kill it halfway)
        if c.waiter is None:
            self.end(c)

    def end(self, c):
        """The client is gone: its poll (if one waits) answers, and it leaves the process."""
        self._forget(c)
        if c.expiry is not None:
            c.expiry.kill(block=False)
        if c.closing is None:
            c.closing = (1000, "this poll was taken over by a newer one")
        c.wake()
        self.node.remove(c)

    def _forget(self, c):
        if self.clients.get((c.lower, c.pid)) is c:
            del self.clients[(c.lower, c.pid)]

    def heard(self, conns, body):
        """A control frame for one tab's poll client: the users it watches (sent by a POST that
        may have reached another process); that a newer client of the tab exists (``taken``:
        an older one here passes on what it queued without an id, which a replay cannot give,
        and goes); or those frames, for the newer one (``to``)."""
        try:
            ctl = json.loads(body)
            pid = ctl["poll"]
        except (ValueError, KeyError, TypeError):
            return
        for conn in list(conns):
            if not isinstance(conn, PollClient) or conn.pid != pid:
                continue
            if isinstance(ctl.get("taken"), int):
                if conn.gen < ctl["taken"]:
                    gevent.spawn(self._hand_over, conn, ctl["taken"])  # (Redis calls: not in the listener)
            elif isinstance(ctl.get("to"), int):
                if conn.gen == ctl["to"]:
                    for frame in ctl.get("frames", ()):
                        conn.push(None, text_frame(frame))
            elif isinstance(ctl.get("watch"), list):
                self.node.watch.set(conn, {u.lower(): u for u in ctl["watch"]}, ctl.get("cid"))

    def _hand_over(self, c, gen):
        texts = [t for mid, frame, _ in c.out if mid is None for t in payloads(frame) if not t.startswith(_PRESENCE)]
        c.out = []
        self.end(c)
        if texts:
            body = b'{"type":"poll","poll":"' + c.pid.encode() + b'","to":' + str(gen).encode() + \
                b',"frames":[' + b",".join(texts) + b"]}"
            try:
                self.node.redis.spublish(keys.chat_user_channel(c.user), b"- " + body)
            except RedisError as exc:
                log.warning("could not pass a poll client's frames on (%s)", exc.__class__.__name__)

    # ---- frames sent over HTTP ----------------------------------------------------------------

    def send(self, user, pid, raw, rooms):
        """One client frame sent over HTTP: ``(status, {"frames": [answers]})``."""
        sender = Sender(self, user, pid, rooms)
        if not sender.allow(1):
            sender.error("rate_limited", f"too many frames: at most {self.cfg['CHAT_RATE_LIMIT']:g} a second "
                                         f"(burst {self.cfg['CHAT_RATE_BURST']})")
        else:
            msg = parse_frame(raw)
            if isinstance(msg, Refused):
                sender.error(msg.code, msg.message, msg.cid)
            else:
                self.node.commands.run(sender, msg)
        body = {"frames": sender.frames}
        refused = next((f for f in sender.frames if f["type"] == "error"), None)
        if refused is None:
            return 200, body
        return http_status(refused["code"]), {"error": refused["error"], "code": refused["code"], **body}


class Sender:
    """The commands' view of a client frame sent over HTTP (see :class:`.commands.Commands`):
    its answers are collected for the response."""

    def __init__(self, polls, user, pid, rooms):
        self.polls = polls
        self.redis = polls.node.redis
        self.user = user
        self.lower = user.lower()
        self.pid = pid
        self.token = "p." + pid
        self._rooms = rooms
        self.frames = []

    @property
    def rooms(self):
        if callable(self._rooms):
            self._rooms = set(self._rooms())
        return self._rooms

    def reply(self, frame):
        self.frames.append(frame)

    def error(self, code, message, cid=None):
        metrics.FRAMES_REFUSED.labels(reason=code).inc()
        self.frames.append(error(code, message, cid))

    def allow(self, cost):
        cfg = self.polls.cfg
        return bool(self.polls.s_rate(keys=[keys.chat_rate(self.user)],
                                      args=[cfg["CHAT_RATE_LIMIT"], cfg["CHAT_RATE_BURST"], cost]))

    def spend(self, tokens):
        if tokens:
            self.allow(tokens)

    def may_type(self, interval):
        return bool(self.redis.set(keys.chat_typing(self.user, self.pid), 1, px=int(interval * 1000), nx=True))

    def join(self, room, record):
        """The membership is recorded here; the user's clients (this tab's poll among them)
        follow the room when they hear of it."""
        return record(self.user, room)

    def leave(self, room):
        self.rooms.discard(room)

    def watch(self, given, cid):
        """Kept for the tab's poll client (wherever it is picked up next) and sent to the
        process that holds it now."""
        self.spend(len(given) / 100)
        names = list(given.values())
        pipe = self.redis.pipeline(transaction=False)
        record = keys.chat_poll(self.user, self.pid)
        pipe.hset(record, "watch", json.dumps(names))
        pipe.expire(record, self.polls.cfg["CHAT_POLL_RECORD_TTL"])
        pipe.spublish(keys.chat_user_channel(self.user),
                      control_payload({"type": "poll", "poll": self.pid, "watch": names, "cid": cid}))
        pipe.execute()


def _names(stored):
    try:
        names = json.loads(stored)
    except ValueError:
        return []
    return [n for n in names if isinstance(n, str)] if isinstance(names, list) else []


def _positions_json(positions):
    """:func:`.wire.positions_fields` as JSON bytes."""
    return json.dumps(positions_fields(positions), separators=(",", ":")).encode()
