"""One chat process ("node"): its open sockets, its one pub/sub connection, its heartbeat.

Fan-out: a message is stored and published in one Lua call (see :mod:`.scripts`) to the
receiver's channel ``chat:u:<user>`` or the room's ``chat:r:<room>``.  A node subscribes only to
the channels of the users and rooms it has sockets for, over a single pub/sub connection, and a
dispatcher greenlet copies each published frame (encoded once, as WebSocket bytes) onto the send
queues of the local sockets that want it.  Presence goes the same way: a socket names the users
it watches, and the node subscribes to their presence channels ``chat:p:<user>`` (see
:meth:`Node.set_watch`).  Nothing is sent to every node except ``sessions:ended``.

Ordering and resume: ids are global and increase in the order Redis ran the sends, and one
pub/sub connection delivers in that order, so each socket sees ids in increasing order and
drops anything not above the last id it queued.  After the subscriber reconnects, every local
socket is caught up from the streams (a snapshot, see :meth:`Node.snapshot`) before the live
messages that arrived meanwhile.

Greenlets: per socket, only the request greenlet (reads, writes, pings; see :mod:`.conn`); per
node, the dispatcher, the heartbeat, the pinger, the sender and the presence loader.
"""
import gc
import json
import logging
import os
import re
import signal
import socket
import time
import uuid

import gevent
import redis
from gevent.event import AsyncResult, Event
from gevent.lock import Semaphore
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, RedisError
from redis.retry import Retry

from webchat_common import keys
from webchat_common.sessions import ENDED_CHANNEL, KEY_PREFIX

from . import metrics, scripts

log = logging.getLogger(__name__)

ID_RE = re.compile(r"([0-9]{1,16})-([0-9]{1,19})")
ZERO = (0, 0)


def parse_id(text):
    """``"<ms>-<seq>"`` as a comparable tuple, or None when it is not an id."""
    m = ID_RE.fullmatch(text) if isinstance(text, str) else None
    return (int(m.group(1)), int(m.group(2))) if m else None


def format_id(mid):
    return f"{mid[0]}-{mid[1]}"


def ws_frame(opcode, payload):
    """One unmasked, unfragmented server frame (RFC 6455 5.2): built here, once per message,
    instead of once per socket through wsproto."""
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, n))
    elif n < 65536:
        head = bytes((0x80 | opcode, 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 127)) + n.to_bytes(8, "big")
    return head + payload


def text_frame(obj):
    """A server frame (hello, ack, error, ...) as a WebSocket text frame.  ASCII JSON: whatever
    strings it carries (a client's ``cid``), the bytes are valid UTF-8 and encoding cannot fail."""
    return ws_frame(0x1, json.dumps(obj, separators=(",", ":")).encode())


PING_FRAME = ws_frame(0x9, b"")
_USER_PREFIX = b"chat:u:"
_ROOM_PREFIX = b"chat:r:"
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


class PubSub(redis.client.PubSub):
    """A pub/sub connection that never reconnects behind the dispatcher's back.

    redis-py's PubSub reconnects (and resubscribes, reading the socket) in whichever greenlet
    met the error: a socket greenlet's SUBSCRIBE on a dropped connection would then read the
    connection the dispatcher is reading (gevent's ConcurrentObjectUseError) or leave it half
    set up, and the dispatcher would go deaf.  Here an error only disconnects and raises; the
    dispatcher makes a new connection, resubscribes and catches every socket up.  (It replaces
    a private method of redis-py 8, hence the pin in pyproject.toml and a unit test.)"""

    def _reconnect(self, conn, error=None, *args, **kwargs):
        conn.disconnect()
        raise error or redis.ConnectionError("pub/sub connection lost")


class Node:
    """The per-process hub.  Made lazily by the first socket, so importing or unit-testing the
    app starts no greenlet."""

    def __init__(self, app):
        cfg = app.config
        self.id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.cfg = cfg
        self.redis = app.extensions["redis"]
        # The pub/sub client: raw bytes (frames are forwarded without decoding) and no silent
        # retries, so a dropped connection surfaces here and we resubscribe *and* catch up.
        self.sub_client = redis.Redis.from_url(
            cfg["REDIS_URL"], decode_responses=False, socket_connect_timeout=cfg["REDIS_SOCKET_TIMEOUT"],
            socket_keepalive=True, retry=Retry(NoBackoff(), 0), single_connection_client=False)
        self.default_room = cfg["CHAT_DEFAULT_ROOM"]
        self.maxlen = cfg["CHAT_HISTORY_LENGTH"]
        self.age_ms = int(cfg["CHAT_HISTORY_AGE"] * 1000)
        self.ttl_ms = int(cfg["CHAT_PRESENCE_TTL"] * 1000)
        self.send_queue = cfg["CHAT_SEND_QUEUE"]
        self.s_private = self.redis.register_script(scripts.SEND_PRIVATE)
        self.s_room = self.redis.register_script(scripts.SEND_ROOM)
        self.s_snapshot = self.redis.register_script(scripts.SNAPSHOT)
        self.s_up = self.redis.register_script(scripts.PRESENCE_UP)
        self.s_open = self.redis.register_script(scripts.SOCKET_OPEN)
        self.s_down = self.redis.register_script(scripts.PRESENCE_DOWN)
        self.s_sweep = self.redis.register_script(scripts.PRESENCE_SWEEP)
        self.s_cursor = self.redis.register_script(scripts.CURSOR_MAX)
        self.s_presence = self.redis.register_script(scripts.PRESENCE_READ)

        self.conns = set()
        self.by_user = {}      # lower(name) -> set of Connection
        self.by_room = {}      # room -> set of Connection
        self.by_session = {}   # session key hash -> set of Connection
        self.subscribed = set()  # channels (bytes) the server confirmed
        self.pending = {}        # channel -> Event set on confirmation
        self.ps = None
        self.ps_lock = Semaphore()
        self.holding = set()     # sockets on hold until the catch-up after a pub/sub reconnect
        self.watchers = {}       # lower(name) -> set of Connection watching that user's presence
        self.presence = {}       # lower(name) -> (name, online, seq) of each watched user, once known
        self.presence_seq = 0    # presence changes heard so far (orders them against reads)
        self.presence_pending = set()  # watched users whose change waits for the next batch
        self.presence_flush_scheduled = False
        self.shutting_down = False
        self._listener = gevent.spawn(self._listen)
        self._beat = gevent.spawn(self._heartbeat)
        self._pinger = gevent.spawn(self._ping_all)
        self.sends = []          # (script, keys, args, AsyncResult) waiting for the next batch
        self.sends_ready = Event()
        self._sender = gevent.spawn(self._send_loop)
        self.loads = []          # (Connection, {lower: name as sent}, cid) watches waiting for the loader
        self.loads_ready = Event()
        self._loader = gevent.spawn(self._presence_loader)
        self._install_sigterm()
        _tune_gc()

    # ---- registry -------------------------------------------------------------------------

    def wanted_channels(self):
        chans = {_ENDED}
        chans.update(keys.chat_user_channel(u).encode() for u in self.by_user)
        chans.update(keys.chat_room_channel(r).encode() for r in self.by_room)
        chans.update(keys.chat_presence_channel(u).encode() for u in self.watchers)
        return chans

    def add(self, conn):
        """Register a socket and wait until the node hears its channels (so a snapshot taken
        afterwards cannot miss a message published in between).  False, with nothing
        registered, when its user has CHAT_MAX_SOCKETS_PER_USER sockets open already, on
        this node and every other (see ``SOCKET_OPEN``)."""
        self.conns.add(conn)
        self.by_user.setdefault(conn.lower, set()).add(conn)
        self.by_session.setdefault(conn.session_hash, set()).add(conn)
        metrics.OPEN_SOCKETS.inc()
        mine = len(self.by_user[conn.lower])
        try:
            admitted = self.s_open(keys=[keys.chat_conn(conn.user), keys.chat_sockets(conn.user)],
                                   args=[self.id, mine, self.cfg["CHAT_MAX_SOCKETS_PER_USER"], self.ttl_ms])
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
        self.subscribe(chans, wait=True)
        # (for a user with another socket here: makes sure their presence did not lapse)
        self.s_up(keys=[keys.CHAT_ONLINE], args=[*self._up_args(), conn.user, len(self.by_user.get(conn.lower, ()))])
        return True

    def _up_args(self):
        return [self.id, self.ttl_ms, keys.CHAT_CONN_PREFIX, keys.CHAT_PRESENCE_PREFIX, keys.CHAT_SOCKETS_PREFIX]

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
        for room in list(conn.rooms):
            self._leave_local(conn, room, drop)
        self.unsubscribe(drop)
        self.drop_watches(conn, conn.watching)
        if not record:
            return
        try:
            pipe = self.redis.pipeline(transaction=False)
            if conn.sent_last > conn.cursor_saved:
                self.s_cursor(keys=[keys.chat_cursor(conn.user)],
                              args=[format_id(conn.sent_last), int(self.cfg["CHAT_HISTORY_AGE"])], client=pipe)
            if left:
                pipe.hset(keys.chat_sockets(conn.user), self.id, left)
            else:
                self.s_down(keys=[keys.chat_conn(conn.user), keys.CHAT_ONLINE, keys.chat_sockets(conn.user)],
                            args=[self.id, conn.user, keys.CHAT_PRESENCE_PREFIX], client=pipe)
            pipe.execute()
        except RedisError as exc:
            log.warning("could not record a closed socket (%s); presence expires by TTL", exc.__class__.__name__)

    def join_local(self, conn, room):
        """Start delivering ``room`` to ``conn``; returns the channel if it needs a subscription."""
        if room in conn.rooms:
            return None
        conn.rooms.add(room)
        members = self.by_room.setdefault(room, set())
        members.add(conn)
        return keys.chat_room_channel(room).encode() if len(members) == 1 else None

    def _leave_local(self, conn, room, drop):
        conn.rooms.discard(room)
        members = self.by_room.get(room)
        if members is not None:
            members.discard(conn)
            if not members:
                del self.by_room[room]
                drop.append(keys.chat_room_channel(room).encode())

    def leave_local(self, conn, room):
        drop = []
        self._leave_local(conn, room, drop)
        self.unsubscribe(drop)

    # ---- presence -------------------------------------------------------------------------

    def set_watch(self, conn, given, cid):
        """Make ``conn`` watch the presence of exactly the users of ``given`` (lower-cased
        name -> the name as the client sent it).  Never blocks: the ``watching`` answer is
        queued to the socket by :meth:`_presence_loader`, in the order the watches came.

        A user is watched once per node, whatever the number of local watchers: their state is
        loaded once and then kept by the changes heard, and every later watcher gets it at
        once."""
        self.drop_watches(conn, [u for u in conn.watching if u not in given])
        old = set(conn.watching)
        new = [u for u in given if u not in old]
        for u in new:
            self.watchers.setdefault(u, set()).add(conn)
        conn.watching += tuple(new)
        self.loads.append((conn, given, cid))
        self.loads_ready.set()

    def drop_watches(self, conn, users):
        """``conn`` stops watching ``users`` (and the node unsubscribes from those nobody here
        watches any more)."""
        if not users:
            return
        drop = []
        self._unwatch(conn, users, drop)
        self.unsubscribe(drop)
        gone = set(users)
        conn.watching = tuple(u for u in conn.watching if u not in gone)

    def _presence_loader(self):
        """Answers ``watch`` frames, loading the state of users newly watched here for every
        socket at once: whatever was asked while the previous load ran is one load (a node
        whose sockets all send ``watch`` at once makes a few big SUBSCRIBEs and reads, not one
        per socket, and no socket greenlet waits with its stack saved).  A load subscribes to
        the users' presence channels and waits for the confirmations *before* it reads, so no
        change can fall between the read and the subscription."""
        while True:
            self.loads_ready.wait()
            self.loads_ready.clear()
            while self.loads:
                batch, self.loads = self.loads, []
                users = list(dict.fromkeys(u for _, given, _ in batch for u in given
                                           if u in self.watchers and u not in self.presence))
                try:
                    self.subscribe([keys.chat_presence_channel(u).encode() for u in users], wait=True)
                    unknown, _ = self._read_presence(users)
                    failed = False
                except Exception as exc:  # noqa: BLE001 - every watcher in the batch is told
                    if not isinstance(exc, RedisError):
                        log.exception("presence load failed")
                    unknown, failed = (), True
                unknown = set(unknown)
                for conn, given, cid in batch:
                    try:
                        if failed:
                            self._watch_failed(conn, given, cid)
                        else:
                            self._watch_answer(conn, given, cid, unknown)
                    except Exception:  # noqa: BLE001 - one socket's answer never stops the loader
                        log.exception("could not answer a watch")

    def _watch_answer(self, conn, given, cid, unknown):
        if conn not in self.conns:
            return
        gone = [u for u in given if u in unknown]
        self.drop_watches(conn, gone)
        watching = set(conn.watching)
        frame = {"type": "watching", "online": [], "offline": [], "unknown": [given[u] for u in gone], "cid": cid}
        for u in given:
            state = self.presence.get(u)
            if state is not None and u in watching:  # (a later watch may have dropped it)
                frame["online" if state[1] else "offline"].append(state[0])
        conn.push(None, text_frame(frame))

    def _watch_failed(self, conn, given, cid):
        """Redis failed during the load: the socket stops watching what could not be loaded
        and is told; it may send its ``watch`` again."""
        if conn not in self.conns:
            return
        self.drop_watches(conn, [u for u in given if u not in self.presence])
        metrics.FRAMES_REFUSED.labels(reason="unavailable").inc()
        conn.push(None, text_frame({"type": "error", "code": "unavailable", "cid": cid,
                                    "error": "the chat store is unavailable: presence not loaded, send watch again"}))

    def _unwatch(self, conn, users, drop):
        """``conn`` stops watching ``users``; channels nobody here watches any more go into
        ``drop`` (to unsubscribe)."""
        for u in users:
            watchers = self.watchers.get(u)
            if watchers is None:
                continue
            watchers.discard(conn)
            if not watchers:
                del self.watchers[u]
                self.presence.pop(u, None)
                self.presence_pending.discard(u)
                drop.append(keys.chat_presence_channel(u).encode())

    def _read_presence(self, users):
        """Read the state of watched ``users`` from Redis into ``self.presence``, except where
        a change heard since the read began is newer.  Returns (names nobody registered,
        users whose known state the read changed)."""
        if not users:
            return [], []
        seq = self.presence_seq
        pipe = self.redis.pipeline(transaction=False)
        for i in range(0, len(users), 500):
            self.s_presence(keys=[keys.CHAT_ONLINE], args=[keys.USER_PREFIX, *users[i:i + 500]], client=pipe)
        res = [row for chunk in pipe.execute() for row in chunk]
        unknown, changed = [], []
        for u, row in zip(users, res):
            if not row or not row[0]:
                unknown.append(u)
                continue
            cur = self.presence.get(u)
            # Only users this node hears: a state nobody keeps up to date is never stored.
            heard = keys.chat_presence_channel(u).encode() in self.subscribed
            if u in self.watchers and heard and (cur is None or cur[2] <= seq):
                online = bool(int(row[1]))
                if cur is not None and cur[1] != online:
                    changed.append(u)
                self.presence[u] = (row[0], online, seq)
        return unknown, changed

    def refresh_presence(self):
        """Re-read every watched user's state and push what differs from the state known here:
        after a pub/sub reconnect (changes published meanwhile were not heard), and every
        CHAT_SESSION_CHECK_INTERVAL as a safety net for any change not heard."""
        _, changed = self._read_presence(list(self.presence))
        for u in changed:
            self._queue_presence(u)

    def _presence_change(self, channel, data):
        user = channel[len(_PRESENCE_PREFIX):].decode()
        if user not in self.watchers:
            return
        try:
            change = json.loads(data)
            name, online = change["user"], bool(change["online"])
        except (ValueError, KeyError, TypeError):
            return
        self.presence_seq += 1
        cur = self.presence.get(user)
        self.presence[user] = (name, online, self.presence_seq)
        # Unknown until now: the watchers still reading it take it with their answer.
        if cur is not None and cur[1] != online:
            self._queue_presence(user)

    def _queue_presence(self, user):
        """Changes are collected for CHAT_PRESENCE_BATCH seconds (the last state of a user
        wins) and each watcher gets its share as one write: a node filling up with sockets
        does not write to a socket per connect."""
        self.presence_pending.add(user)
        if not self.presence_flush_scheduled:
            self.presence_flush_scheduled = True
            gevent.spawn_later(self.cfg["CHAT_PRESENCE_BATCH"], self._flush_presence)

    def _flush_presence(self):
        self.presence_flush_scheduled = False
        changes, self.presence_pending = self.presence_pending, set()
        out = {}
        for user in changes:
            state = self.presence.get(user)
            if state is None:
                continue
            frame = text_frame({"type": "presence", "user": state[0], "online": state[1]})
            for conn in self.watchers.get(user, ()):
                out.setdefault(conn, []).append(frame)
        for i, (conn, frames) in enumerate(out.items()):
            conn.push(None, frames[0] if len(frames) == 1 else b"".join(frames))
            if i % 500 == 499:
                gevent.sleep(0)  # let sockets write between slices on a big node

    # ---- pub/sub --------------------------------------------------------------------------

    def subscribe(self, chans, wait=False, timeout=5.0):
        waits, new = [], []
        for ch in chans:
            if ch in self.subscribed:
                continue
            ev = self.pending.get(ch)
            if ev is None:
                ev = self.pending[ch] = Event()
                new.append(ch)
            waits.append(ev)
        if new and self.ps is not None:
            try:
                with self.ps_lock:
                    self.ps.subscribe(*new)
            except (RedisError, OSError):
                pass  # the listener reconnects, subscribes to every wanted channel and catches up
        if wait:
            for ev in waits:
                if not ev.wait(timeout):
                    raise RedisError("pub/sub subscription not confirmed")

    def _wanted(self, ch):
        for prefix, users in ((_USER_PREFIX, self.by_user), (_ROOM_PREFIX, self.by_room),
                              (_PRESENCE_PREFIX, self.watchers)):
            if ch.startswith(prefix):
                return ch[len(prefix):].decode() in users
        return True

    def unsubscribe(self, chans):
        chans = [c for c in chans if c not in self.pending]
        if not chans:
            return
        for ch in chans:
            self.subscribed.discard(ch)
        if self.ps is not None:
            try:
                with self.ps_lock:
                    self.ps.unsubscribe(*chans)
            except (RedisError, OSError):
                pass

    def _listen(self):
        """The dispatcher: one pub/sub connection, reconnected (then everyone caught up) when it
        fails or stops answering its health PING."""
        interval = self.cfg["CHAT_PUBSUB_HEALTH_INTERVAL"]
        first = True
        backoff = 0.1
        caught_up_pending = False
        while True:
            ps = None
            try:
                ps = PubSub(self.sub_client.connection_pool)
                with self.ps_lock:
                    # Published before subscribing: a socket added from now on sends its own
                    # SUBSCRIBE through ``ps`` (after this one, thanks to the lock).
                    self.ps = ps
                    wanted = self.wanted_channels()
                    self.subscribed.clear()
                    # Every wanted channel is (re)subscribed now; a socket already waiting for
                    # one keeps its event.  Pending channels no longer wanted (their socket
                    # left while the connection was down) are released and forgotten, or a
                    # later socket of that user would wait for a SUBSCRIBE never sent.
                    old, self.pending = self.pending, {}
                    for ch in wanted:
                        self.pending[ch] = old.pop(ch, None) or Event()
                    for ev in old.values():
                        ev.set()
                    ps.subscribe(*wanted)
                last_seen = time.monotonic()
                pinged = False
                caught_up = first
                while True:
                    msg = ps.get_message(timeout=interval)
                    now = time.monotonic()
                    if msg is None:
                        if now - last_seen > 2 * interval + 1:
                            raise redis.ConnectionError("pub/sub health check unanswered")
                        if not pinged or now - last_seen > interval:
                            with self.ps_lock:
                                ps.ping()
                            pinged = True
                        continue
                    last_seen = now
                    pinged = False
                    kind = msg["type"]
                    if kind == "message":
                        self._dispatch(msg["channel"], msg["data"])
                    elif kind == "subscribe":
                        ch = msg["channel"]
                        self.subscribed.add(ch)
                        ev = self.pending.pop(ch, None)
                        if ev is not None:
                            ev.set()
                        if not self._wanted(ch):  # its last user left while it was pending
                            self.unsubscribe([ch])
                        if not caught_up and not self.pending:
                            caught_up = True
                            caught_up_pending = False
                            backoff = 0.1
                            holding, self.holding = self.holding, set()
                            gevent.spawn(self._catch_up_all, holding)
            except Exception as exc:  # noqa: BLE001 - any failure: reconnect, never die
                log.warning("pub/sub connection lost (%s: %s); reconnecting", exc.__class__.__name__, exc)
                metrics.REDIS_RECONNECTS.inc()
                with self.ps_lock:  # no socket greenlet is using the old connection any more
                    self.ps = None
                if caught_up_pending is False:
                    # From now on live frames wait behind the catch-up of every local socket
                    # (released one by one by _catch_up_all), so none is skipped.
                    for conn in list(self.conns):
                        conn.hold()
                    self.holding = set(self.conns)
                    caught_up_pending = True
                first = False
                try:
                    if ps is not None:
                        ps.reset()
                except Exception:  # noqa: BLE001
                    pass
                gevent.sleep(backoff)
                backoff = min(backoff * 2, 2.0)

    def _dispatch(self, channel, data):
        if channel.startswith(_USER_PREFIX) or channel.startswith(_ROOM_PREFIX):
            if channel.startswith(_USER_PREFIX):
                conns = self.by_user.get(channel[len(_USER_PREFIX):].decode())
            else:
                conns = self.by_room.get(channel[len(_ROOM_PREFIX):].decode())
            if not conns:
                return
            head, _, body = data.partition(b" ")
            if head == b"-":  # a control frame for the user's sockets (room joined or left)
                self._control(conns, body)
                return
            mid = parse_id(head.decode())
            if mid is None:
                return
            frame = ws_frame(0x1, body)
            for conn in list(conns):
                conn.push(mid, frame)
        elif channel.startswith(_PRESENCE_PREFIX):
            self._presence_change(channel, data)
        elif channel == _ENDED:
            for conn in list(self.by_session.get(data.decode(), ())):
                conn.doom(1008, "session ended: log in again")

    def _control(self, conns, body):
        try:
            ctl = json.loads(body)
            room, action = ctl["room"], ctl["action"]
        except (ValueError, KeyError, TypeError):
            return
        frame = ws_frame(0x1, body)
        since = parse_id(ctl.get("since", "")) or ZERO
        for conn in list(conns):
            if action == "join" and room not in conn.rooms:
                # Hold its live frames now (in dispatch order); a greenlet of its own waits for
                # the subscription (we are the greenlet that reads the confirmation) and
                # replays the room from the join.
                conn.hold()
                gevent.spawn(conn.follow_elsewhere, room, since)
            elif action == "leave" and room in conn.rooms:
                self.leave_local(conn, room)
            conn.push(None, frame)

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
            self.refresh_presence()
        except RedisError as exc:
            log.warning("presence refresh failed (%s); the next heartbeat's check retries", exc)

    # ---- storage --------------------------------------------------------------------------

    def run_send(self, script, keys_, args):
        """Run a send script (store + publish) in the next batch and return its result.

        One greenlet per node runs the sends of all its sockets: whatever accumulated while
        the previous batch was in Redis goes out as one pipeline (one pool checkout, one write,
        one read for k messages).  Each socket still sends one message at a time, so its own
        messages are stored in order."""
        res = AsyncResult()
        # Encoded here, in the sender's greenlet: text that cannot be encoded fails this send
        # only, never the batch of other people's sends it would have joined.
        keys_ = [k.encode() if isinstance(k, str) else k for k in keys_]
        args = [a.encode() if isinstance(a, str) else a for a in args]
        self.sends.append((script, keys_, args, res))
        self.sends_ready.set()
        return res.get()

    def _send_loop(self):
        while True:
            self.sends_ready.wait()
            self.sends_ready.clear()
            while self.sends:
                batch, self.sends = self.sends[:256], self.sends[256:]
                try:
                    results = self._run_batch(batch)
                except Exception as exc:  # noqa: BLE001 - every waiter gets the error
                    for *_, res in batch:
                        res.set_exception(exc)
                    continue
                for (*_, res), result in zip(batch, results):
                    if isinstance(result, Exception):
                        res.set_exception(result)
                    else:
                        res.set(result)

    def _run_batch(self, batch):
        pipe = self.redis.pipeline(transaction=False)
        for script, keys_, args, _ in batch:
            pipe.evalsha(script.sha, len(keys_), *keys_, *args)
        results = pipe.execute(raise_on_error=False)
        missing = [i for i, r in enumerate(results) if isinstance(r, NoScriptError)]
        if missing:  # Redis restarted (or SCRIPT FLUSH): load and run just those again
            for script in {batch[i][0] for i in missing}:
                script.sha = self.redis.script_load(script.script)
            pipe = self.redis.pipeline(transaction=False)
            for i in missing:
                script, keys_, args, _ = batch[i]
                pipe.evalsha(script.sha, len(keys_), *keys_, *args)
            for i, r in zip(missing, pipe.execute(raise_on_error=False)):
                results[i] = r
        return results

    def snapshot(self, streams, starts):
        """Read ``streams`` after their start ids (``"-"``: skip) in one atomic script.
        Returns (entries sorted by id as (mid, frame json), gap?, Redis now ms)."""
        count = self.maxlen * 2 + 100
        res = self.s_snapshot(keys=streams, args=[*starts, count])
        now_ms = int(res[-1])
        entries, gap = [], False
        for (boundary, items), start in zip(res[:-1], starts):
            if start == "-":
                continue
            s = parse_id(start) or ZERO
            if (parse_id(boundary) or ZERO) > s:
                gap = True
            if len(items) >= count:
                gap = True
            for sid, fields in items:
                mid = parse_id(sid)
                frame = fields.get("f") if isinstance(fields, dict) else dict(zip(fields[::2], fields[1::2])).get("f")
                if mid and frame:
                    entries.append((mid, frame))
        entries.sort(key=lambda e: e[0])
        return entries, gap, now_ms

    @staticmethod
    def _now_ms():
        return int(time.time() * 1000)

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
        """Every TTL/3: refresh presence of local users, sweep users whose node died, save
        delivered cursors; every CHAT_SESSION_CHECK_INTERVAL: close sockets whose session is
        gone and re-read the presence of watched users (see :meth:`refresh_presence`)."""
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
                    self.refresh_presence()
            except RedisError as exc:
                log.warning("heartbeat failed (%s)", exc.__class__.__name__)
            except Exception:  # noqa: BLE001
                log.exception("heartbeat error")

    def _beat_once(self):
        """Refresh the presence of every local user (one PRESENCE_UP call per 500 users, not a
        few commands each), save the delivered cursors that moved, sweep the dead."""
        names = {}
        moved = {}   # user -> (highest id written to their sockets, those sockets), if not saved
        for conns in self.by_user.values():
            for c in conns:
                names[c.user] = None
                if c.sent_last > c.cursor_saved:
                    sent, cs = moved.get(c.user, (ZERO, []))
                    moved[c.user] = (max(sent, c.sent_last), cs + [c])
        names, moved = list(names), list(moved.items())
        age = int(self.cfg["CHAT_HISTORY_AGE"])
        for i in range(0, max(len(names), len(moved)), 500):  # in slices: Redis is never busy long for us
            pipe = self.redis.pipeline(transaction=False)
            held = [(n, len(self.by_user[n.lower()])) for n in names[i:i + 500]
                    if n.lower() in self.by_user]  # (some may have left)
            if held:
                self.s_up(keys=[keys.CHAT_ONLINE], args=[*self._up_args(), *(x for pair in held for x in pair)],
                          client=pipe)
            for user, (sent, _) in moved[i:i + 500]:
                self.s_cursor(keys=[keys.chat_cursor(user)], args=[format_id(sent), age], client=pipe)
            pipe.execute()
            for user, _ in held:
                if user.lower() not in self.by_user:
                    # Left while this slice was in Redis: its PRESENCE_DOWN may have run first
                    # and this refresh undone it; run it again.
                    self.s_down(keys=[keys.chat_conn(user), keys.CHAT_ONLINE, keys.chat_sockets(user)],
                                args=[self.id, user, keys.CHAT_PRESENCE_PREFIX])
            for _, (sent, cs) in moved[i:i + 500]:
                for c in cs:
                    c.cursor_saved = max(c.cursor_saved, sent)
        self.s_sweep(keys=[keys.CHAT_ONLINE], args=[keys.CHAT_CONN_PREFIX, keys.CHAT_PRESENCE_PREFIX, 500])

    def _check_sessions(self):
        hashes = list(self.by_session)
        for i in range(0, len(hashes), 500):  # in slices: no long stretch of packing and parsing
            pipe = self.redis.pipeline(transaction=False)
            for h in hashes[i:i + 500]:
                pipe.exists(KEY_PREFIX + h)
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
