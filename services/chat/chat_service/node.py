"""One chat process ("node"): its open sockets, and the parts that serve them all.

Rule: a message reaches a socket only through this process's one pub/sub connection, and
only after Redis stored it.  Fan-out: a message is stored and published (SPUBLISH: chat's
channels are sharded channels, see :mod:`.broker`) in one Lua call to the receiver's channel
``chat:u:<user>`` or the room's ``chat:r:<room>`` (:mod:`.store`).  A node
subscribes only to the channels of the users and rooms it has sockets for, and of the users
its sockets watch (:mod:`.broker`, :mod:`.watch`); each frame heard is encoded once, as
WebSocket bytes, and queued on the local sockets that want it (:meth:`Node._dispatch`).
Nothing is sent to every node except ``sessions:ended`` (a classic channel).

Ordering and resume: each clock's ids (the user's private messages', a room's) increase in the
order Redis ran its sends, and its frames come over one pub/sub connection in that order, so
each socket sees each clock's ids in increasing order and drops anything not above its
position in that clock (the channel a frame came on names the clock: :mod:`.client`).  After
the subscriber reconnects, every local socket is caught up from the streams before the live
messages that arrived meanwhile.

Following one message: a client's frame is read by its socket's greenlet (:mod:`.conn`),
parsed (:func:`.wire.parse_frame`) and run (:mod:`.commands`), which stores and publishes it
(:mod:`.store`, :mod:`.scripts`); the receiver's node hears it (:mod:`.broker`) and
:meth:`Node._dispatch` queues it on the receiver's sockets, whose greenlets write it.

Greenlets: per socket, only the request greenlet; per node, the broker's listener, the
heartbeat, the pinger, the store's sender and the watch loader.
"""
import gc
import json
import logging
import os
import signal
import socket
import time
import uuid

import gevent
from redis.exceptions import RedisError

from webchat_common import keys
from webchat_common.sessions import ENDED_CHANNEL, key_of_hash

from . import capacity, metrics
from .broker import Broker
from .commands import Commands
from .lua import Pipeline
from .poll import CONTROL as POLL_CONTROL, Polls
from .presence import SLICE, Presence
from .store import Store
from .watch import Watch
from .wire import PRIVATE, ZERO, channel_owner, parse_id, split_published, ws_frame

log = logging.getLogger(__name__)

_USER_PREFIX = keys.CHAT_USER_CHANNEL_PREFIX.encode()
_ROOM_PREFIX = keys.CHAT_ROOM_CHANNEL_PREFIX.encode()
_PRESENCE_PREFIX = keys.CHAT_PRESENCE_PREFIX.encode()
_ENDED = ENDED_CHANNEL.encode()


def _tune_gc():
    """A chat process holds a big, long-lived heap (about a hundred tracked objects per open
    socket: two million at 19,000 sockets), and a full collection walks all of it.  With the
    default thresholds one came every 3-25 s at 19,000 sockets and stalled the process for
    1.1-1.6 s each (measured), because objects alive across a young collection (in a greenlet
    waiting on Redis, say) are promoted and counted, though most die soon after.  A
    generation-0 threshold of 50,000 (not 700) promotes far fewer of them: no full collection
    was seen in the measured windows since, at the price of young collections of up to
    0.3-0.5 s while thousands of sockets open.  What exists when the first socket opens
    (modules, the app) is frozen out of every collection."""
    gc.freeze()
    gc.set_threshold(50_000, 20)


class Node:
    """The per-process hub.  Made lazily by the first socket, so importing or unit-testing the
    app starts no greenlet."""

    def __init__(self, app):
        cfg = app.config
        self.id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.cfg = cfg
        self.redis = app.extensions["redis"]
        self.default_room = cfg["CHAT_DEFAULT_ROOM"]
        self.send_queue = cfg["CHAT_SEND_QUEUE"]
        self.max_clients = capacity.max_clients(cfg)
        self.conns = set()
        self.by_user = {}      # lower(name) -> set of Connection
        self.by_room = {}      # room -> set of Connection
        self.by_session = {}   # session key hash -> set of Connection
        self.holding = set()   # sockets on hold until the catch-up after a pub/sub reconnect
        self.shutting_down = False
        self.store = Store(self.redis, cfg)
        self.conversations = app.extensions["chat_conversations"]
        self.presence = Presence(self.redis, self.id, cfg)
        self.broker = Broker(cfg, self._wanted_channels, self._still_wanted, self._dispatch,
                             self._pubsub_lost, self._pubsub_back, classic=(_ENDED,))
        self.watch = Watch(self.redis, self.conversations.accounts, self.broker, cfg["CHAT_PRESENCE_BATCH"])
        self.commands = Commands(self)
        self.polls = Polls(self)
        self._beat = gevent.spawn(self._heartbeat)
        self._pinger = gevent.spawn(self._ping_all)
        self._install_sigterm()
        _tune_gc()

    # ---- registry -------------------------------------------------------------------------

    def full(self):
        """Whether this process holds as many clients as it may (see :mod:`.capacity`)."""
        return 0 < self.max_clients <= len(self.conns)

    def add(self, conn):
        """Register a socket and wait until the node hears its channels (so a snapshot taken
        afterwards cannot miss a message published in between).  False, with nothing
        registered, when its user has CHAT_MAX_SOCKETS_PER_USER sockets open already, on
        this node and every other."""
        self.conns.add(conn)
        self.by_user.setdefault(conn.lower, set()).add(conn)
        self.by_session.setdefault(conn.session_hash, set()).add(conn)
        metrics.OPEN_SOCKETS.inc()
        try:
            admitted = self.presence.admit(conn.user, len(self.by_user[conn.lower]))
        except RedisError:
            self.remove(conn, record=False)
            raise
        if not admitted:
            self.remove(conn, record=False)
            return False
        chans = [keys.chat_user_channel(conn.lower).encode()]
        for room in conn.rooms:
            self.by_room.setdefault(room, set()).add(conn)
            chans.append(keys.chat_room_channel(room).encode())
        self.broker.subscribe(chans, wait=True)
        return True

    def remove(self, conn, record=True):
        """Forget a closed socket; with ``record``, save its delivered cursor and its user's
        socket count (or, for their last socket here, their presence) in Redis."""
        if conn not in self.conns:
            return
        self.conns.discard(conn)
        metrics.OPEN_SOCKETS.dec()
        drop = []
        users = self.by_user.get(conn.lower)
        left = 0
        if users is not None:
            users.discard(conn)
            left = len(users)
            if not users:
                del self.by_user[conn.lower]
                drop.append(keys.chat_user_channel(conn.lower).encode())
        sess = self.by_session.get(conn.session_hash)
        if sess is not None:
            sess.discard(conn)
            if not sess:
                del self.by_session[conn.session_hash]
        for room in conn.rooms:
            self._unregister_room(conn, room, drop)
        self.broker.unsubscribe(drop)
        self.watch.forget(conn)
        if not record:
            return
        try:
            pipe = Pipeline(self.redis)
            unsaved = conn.unsaved_cursor()
            if unsaved is not None:
                self.store.save_cursor(conn.user, unsaved, client=pipe)
            self.presence.closed(conn.user, left, client=pipe)
            pipe.execute()
        except RedisError as exc:
            log.warning("could not record a closed socket (%s); presence expires by TTL", exc.__class__.__name__)

    def joined_room(self, conn, room):
        """``conn`` joined ``room``: deliver the room to it; returns once the node hears the
        room (at once if it did already; else when the subscription, this one's or another
        socket's still pending, is confirmed)."""
        self.by_room.setdefault(room, set()).add(conn)
        self.broker.subscribe([keys.chat_room_channel(room).encode()], wait=True)

    def left_room(self, conn, room):
        drop = []
        self._unregister_room(conn, room, drop)
        self.broker.unsubscribe(drop)

    def _unregister_room(self, conn, room, drop):
        members = self.by_room.get(room)
        if members is not None:
            members.discard(conn)
            if not members:
                del self.by_room[room]
                drop.append(keys.chat_room_channel(room).encode())

    # ---- what the broker hears ----------------------------------------------------------------

    def _wanted_channels(self):
        chans = {_ENDED}
        chans.update(keys.chat_user_channel(u).encode() for u in self.by_user)
        chans.update(keys.chat_room_channel(r).encode() for r in self.by_room)
        chans.update(self.watch.channels())
        return chans

    def _still_wanted(self, ch):
        if self.watch.is_presence(ch):
            return self.watch.wants(channel_owner(ch, _PRESENCE_PREFIX))
        for prefix, names in ((_USER_PREFIX, self.by_user), (_ROOM_PREFIX, self.by_room)):
            name = channel_owner(ch, prefix)
            if name is not None:
                return name in names
        return True

    def _dispatch(self, channel, data):
        user = channel_owner(channel, _USER_PREFIX)
        room = None if user is not None else channel_owner(channel, _ROOM_PREFIX)
        if user is not None or room is not None:
            if user is not None:
                clock = PRIVATE
                conns = self.by_user.get(user)
            else:
                clock = room
                conns = self.by_room.get(clock)
            if not conns:
                return
            published = split_published(data)
            if published is None:
                return
            mid, body, origin = published
            if mid is None:  # a frame without an id: a room joined or left, read, typing
                self._control(conns, body)
                return
            frame = ws_frame(0x1, body)
            for conn in list(conns):
                if origin is None or origin != conn.token:
                    conn.push(mid, frame, clock)
        elif self.watch.is_presence(channel):
            self.watch.heard(channel, data)
        elif channel == _ENDED:
            for conn in list(self.by_session.get(data.decode(), ())):
                conn.doom(1008, "session ended: log in again")

    def _control(self, conns, body):
        """A frame without an id for the sockets that hear a channel: a room joined or left by
        their user (which they follow), or a notice they pass on (read, typing)."""
        if body.startswith(POLL_CONTROL):
            self.polls.heard(conns, body)
            return
        frame = ws_frame(0x1, body)
        if not body.startswith(b'{"type":"room",'):
            for conn in list(conns):
                conn.push(None, frame)
            return
        try:
            ctl = json.loads(body)
            room, action = ctl["room"], ctl["action"]
        except (ValueError, KeyError, TypeError):
            return
        since = parse_id(ctl.get("since", "")) or ZERO
        for conn in list(conns):
            if action == "join" and room not in conn.rooms:
                # Hold its live frames now (in dispatch order); a greenlet of its own waits for
                # the subscription (the broker's listener, which called us, reads the
                # confirmation) and replays the room from the join.
                conn.hold()
                gevent.spawn(conn.follow_elsewhere, room, since)
            elif action == "leave" and room in conn.rooms:
                conn.leave(room)
            conn.push(None, frame)

    def _pubsub_lost(self):
        """From now on live frames wait behind the catch-up of every local socket (released
        one by one by :meth:`_catch_up_all`), so none is skipped."""
        for conn in list(self.conns):
            conn.hold()
        self.holding = set(self.conns)

    def _pubsub_back(self):
        holding, self.holding = self.holding, set()
        gevent.spawn(self._catch_up_all, holding)

    def _catch_up_all(self, conns):
        """After a pub/sub reconnect: every socket that was open when it was lost gets what
        was published meanwhile (sockets opened since did their own replay)."""
        total = 0
        for conn in conns:
            try:
                total += conn.catch_up()
            except RedisError as exc:
                log.warning("catch-up failed for a socket (%s); closing it so it resumes", exc)
                conn.doom(1011, "could not catch up: reconnect to resume")
        log.info("pub/sub back: caught up %d sockets with %d messages from history", len(conns), total)
        try:
            self.watch.refresh()
        except RedisError as exc:
            log.warning("presence refresh failed (%s); the next heartbeat's check retries", exc)

    # ---- heartbeat ------------------------------------------------------------------------

    def _ping_all(self):
        """One timer for every socket: each gets a ping every CHAT_PING_INTERVAL, and is
        closed when the previous ping got no pong."""
        interval = self.cfg["CHAT_PING_INTERVAL"]
        while True:
            gevent.sleep(interval)
            for i, conn in enumerate(list(self.conns)):
                conn.ping()
                if i % 200 == 199:
                    gevent.sleep(0)  # let the woken sockets write before waking more

    def _heartbeat(self):
        """Every TTL/3: this process's presence beat, the sweep of dead processes, the
        delivered cursors saved; every CHAT_SESSION_CHECK_INTERVAL: close sockets whose session is
        gone and re-read the presence of watched users (see :meth:`.watch.Watch.refresh`)."""
        beat = max(0.5, self.cfg["CHAT_PRESENCE_TTL"] / 3)
        check_every = self.cfg["CHAT_SESSION_CHECK_INTERVAL"]
        next_check = time.monotonic() + check_every
        while True:
            gevent.sleep(beat)
            try:
                self._beat_once()
                if time.monotonic() >= next_check:
                    next_check = time.monotonic() + check_every
                    self._check_sessions()
                    self.watch.refresh()
            except RedisError as exc:
                log.warning("heartbeat failed (%s)", exc.__class__.__name__)
            except Exception:  # noqa: BLE001
                log.exception("heartbeat error")

    def _beat_once(self):
        """Push this process's presence entry forward (one command, whatever its number of
        users), save the delivered cursors that moved, sweep the dead."""
        self.presence.beat(self._held, lambda user: user.lower() in self.by_user)
        moved = {}   # user -> (positions written to their sockets and not saved, those sockets)
        for conns in self.by_user.values():
            for c in conns:
                unsaved = c.unsaved_cursor()
                if unsaved is not None:
                    sent, cs = moved.setdefault(c.user, ({}, []))
                    for clock, mid in unsaved.items():
                        if mid > sent.get(clock, ZERO):
                            sent[clock] = mid
                    cs.append(c)
        moved = list(moved.items())
        for i in range(0, len(moved), SLICE):  # in slices: Redis is never busy long for us
            pipe = Pipeline(self.redis)
            for user, (sent, _) in moved[i:i + SLICE]:
                self.store.save_cursor(user, sent, client=pipe)
            pipe.execute()
            for _, (sent, cs) in moved[i:i + SLICE]:
                for c in cs:
                    c.cursor_saved_up_to(sent)
        self.presence.sweep()

    def _held(self):
        """(user, sockets here) of every user this process holds."""
        return [(next(iter(conns)).user, len(conns)) for conns in self.by_user.values() if conns]

    def _check_sessions(self):
        hashes = list(self.by_session)
        for i in range(0, len(hashes), 500):  # in slices: no long stretch of packing and parsing
            pipe = self.redis.pipeline(transaction=False)
            for h in hashes[i:i + 500]:
                pipe.exists(key_of_hash(h))
            for h, alive in zip(hashes[i:i + 500], pipe.execute()):
                if not alive:
                    for conn in list(self.by_session.get(h, ())):
                        conn.doom(1008, "session ended: log in again")

    # ---- shutdown -------------------------------------------------------------------------

    def _install_sigterm(self):
        """gunicorn sends the worker SIGTERM to stop it gracefully: close every socket with
        1012 at once (clients reconnect to another process and resume), then let gunicorn's
        own handler run.  Only installed in the main thread (always so under gevent)."""
        try:
            prev = signal.getsignal(signal.SIGTERM)
        except ValueError:
            return

        def on_term(signum, frame):
            gevent.spawn(self.shutdown)
            if callable(prev):
                prev(signum, frame)

        try:
            signal.signal(signal.SIGTERM, on_term)
        except ValueError:
            pass  # not the main thread (a test running the app oddly): no hook

    def shutdown(self):
        self.shutting_down = True
        for conn in list(self.conns):
            conn.doom(1012, "server restarting: reconnect and resume")
