"""One open WebSocket: its send queue, rate limit, and the loop of its request greenlet.

The request greenlet does everything for its socket: it reads the socket (simple-websocket's
parser turns the bytes into ``ws.input_buffer`` messages and answers pings), handles the
frames, writes what the dispatcher queued in ``out``, and pings.  It sleeps on ``ws.event``,
which the dispatcher sets when it queues something and the socket's read watcher sets when
bytes arrive.  So each socket costs one greenlet: simple-websocket's reader greenlet is not
started (see ``NoReader``), there is no writer greenlet and no timer or polling per socket.

A slow reader only ever blocks its own greenlet: the dispatcher never writes to a socket, it
appends to a bounded deque; when the deque is full the socket is closed (1008) and the client
resumes from its last id when it reconnects.
"""
import json
import logging
import re
import time

import gevent
from redis.exceptions import RedisError
from wsproto.utilities import LocalProtocolError

from webchat_common import keys
from webchat_common.names import is_media_name, is_room_name, is_user_name

from . import metrics
from .node import PING_FRAME, ZERO, format_id, parse_id, text_frame, ws_frame

log = logging.getLogger(__name__)

#: A JSON escape of a UTF-16 surrogate (``\ud800``-``\udfff``): the frame may decode to a string
#: that is not valid Unicode (a lone surrogate), which could be neither stored nor sent on.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
#: Socket closed because its user has CHAT_MAX_SOCKETS_PER_USER sockets open already.
CLOSE_TOO_MANY_SOCKETS = 4029
BATCH = 64
RECV_BYTES = 16384  # one read; more waiting is read on the next turn of the loop


class _Gone(Exception):
    """The socket is dead (write failed or timed out): stop, nothing more can be sent."""


class NoReader:
    """Given to simple-websocket as its ``thread_class``: the reader "thread" it starts does
    nothing, because the request greenlet reads the socket itself (:meth:`Connection._read`).
    A greenlet less per socket: about 3 KiB of memory and two greenlet switches per incoming
    frame."""

    __slots__ = ("name",)

    def __init__(self, target):
        self.name = "chat-no-reader"

    def start(self):
        pass


class Socket:
    """The client socket as the connection and simple-websocket (pongs, close frames) write
    to it.  Only the request greenlet writes, so no lock; each write is complete (gevent's
    ``send`` may write only part) and blocks at most ``timeout`` seconds (gevent.Timeout).
    The first attempt is one plain non-blocking send: most writes fit in the kernel buffer,
    and then no timer is armed at all."""

    __slots__ = ("raw", "timeout")

    def __init__(self, raw, timeout):
        self.raw = raw
        self.timeout = timeout

    def send(self, data):
        try:
            n = self.raw._sock.send(data)  # the OS socket under gevent's is non-blocking
        except BlockingIOError:
            n = 0
        if n < len(data):
            with gevent.Timeout(self.timeout):
                self.raw.sendall(memoryview(data)[n:])
        return len(data)


class Connection:
    def __init__(self, node, ws, user, session_hash, rooms, since):
        cfg = node.cfg
        self.node = node
        self.ws = ws
        self.raw = ws.sock
        ws.sock = Socket(ws.sock, cfg["CHAT_SEND_TIMEOUT"])
        self.readable = False              # set by the read watcher: bytes are waiting
        self.user = user
        self.lower = user.lower()
        self.session_hash = session_hash
        self.rooms = set(rooms)
        self.watching = ()                 # lower-cased names whose presence this socket gets
        self.since = since                 # the client's last id (tuple) or None
        self.out = []                      # (mid or None, frame bytes); a list: 700 B less than a deque
        self.held = None                   # live frames arriving while a replay is read
        self.holds = 0                     # replays in progress (held is a list while > 0)
        self.enq_last = ZERO               # highest id queued
        self.sent_last = ZERO              # highest id written to the socket
        self.cursor_saved = ZERO           # highest id saved as the user's delivered cursor
        self.closing = None                # (code, reason) once the socket must close
        self.rate = cfg["CHAT_RATE_LIMIT"]
        self.burst = cfg["CHAT_RATE_BURST"]
        self.tokens = float(self.burst)
        self.t_last = time.monotonic()
        self.strikes = 0
        self.ping_due = False

    # ---- called by the dispatcher and other greenlets -----------------------------------

    def push(self, mid, frame):
        """Queue a frame (never blocks).  Frames with an id go out once, in id order."""
        if self.closing is not None:
            return
        if mid is not None:
            if self.held is not None:
                self.held.append((mid, frame))
                return
            if mid <= self.enq_last:
                return
            self.enq_last = mid
        if len(self.out) >= self.node.send_queue:
            metrics.SLOW_CONSUMER_CLOSES.inc()
            log.warning("closing slow consumer %s: send queue full (%d frames)", self.user, len(self.out))
            self.doom(1008, "too slow: send queue overflow; reconnect to resume")
            return
        self.out.append((mid, frame))
        self.ws.event.set()

    def doom(self, code, reason):
        if self.closing is None:
            self.closing = (code, reason)
        self.ws.event.set()

    def hold(self):
        """Keep live frames aside (in order) until :meth:`release`: a replay goes first."""
        if self.holds == 0:
            self.held = []
        self.holds += 1

    def release(self):
        self.holds -= 1
        if self.holds == 0:
            held, self.held = self.held, None
            for mid, frame in held:
                self.push(mid, frame)
            self.ws.event.set()

    def catch_up(self):
        """After the node's pub/sub reconnected (this socket was put on hold when it was lost):
        queue what was published meanwhile, then the live frames held since."""
        try:
            if self.closing is None:
                return self.resync(self.enq_last, announce=False)[0]
            return 0
        finally:
            self.release()

    # ---- replay -------------------------------------------------------------------------

    def streams(self):
        rooms = sorted(self.rooms)
        return [keys.chat_inbox(self.user)] + [keys.chat_room(r) for r in rooms]

    def resync(self, since, announce, explicit=False):
        """Queue the stored messages after ``since`` (None: inbox only, from the start of the
        history) before any live message that arrives meanwhile.  Returns (count, gap)."""
        node = self.node
        self.hold()
        try:
            streams = self.streams()
            floor = (node._now_ms() - node.age_ms, 0)
            gap_age = False
            if since is None:
                starts = [format_id(floor)] + ["-"] * (len(streams) - 1)
            else:
                if explicit and ZERO < since < floor:
                    gap_age = True
                starts = [format_id(max(since, floor))] * len(streams)
            entries, gap, _ = node.snapshot(streams, starts)
            n = 0
            for mid, frame in entries:
                if mid > self.enq_last:
                    self.enq_last = mid
                    self.out.append((mid, ws_frame(0x1, frame.encode())))
                    n += 1
            metrics.REPLAYED.inc(n)
            gap = gap or gap_age
            if announce:
                if gap:
                    self.out.append((None, text_frame({
                        "type": "system", "sender": "system", "receiver": self.user, "code": "history_gap",
                        "data": "Some messages you missed are older than the history kept and could not be replayed."})))
                self.out.append((None, text_frame({
                    "type": "sync", "replayed": n, "gap": gap,
                    "last_id": format_id(self.enq_last) if self.enq_last > ZERO else None})))
        finally:
            self.release()
        return n, gap

    def follow(self, room, since):
        """Start getting ``room``: subscribe (waiting for the confirmation), then replay what
        was published in any of this socket's streams after ``since`` (the last id issued
        before the join), so no room message is lost between the join and the subscription.
        Live frames are held meanwhile and released in order."""
        self.hold()
        try:
            ch = self.node.join_local(self, room)
            if ch:
                self.node.subscribe([ch], wait=True)
            self.resync(max(since, self.enq_last), announce=False)
        finally:
            self.release()

    def follow_elsewhere(self, room, since):
        """The user joined ``room`` from another socket (any node): this one follows too.
        Runs in its own short-lived greenlet (it waits for a subscription confirmation, which
        the dispatcher that called it delivers)."""
        try:
            if self.closing is None and room not in self.rooms:
                self.follow(room, since)
        except RedisError:
            self.doom(1011, "could not join the room here: reconnect to resume")
        finally:
            self.release()  # the hold taken by the dispatcher

    # ---- the request greenlet -----------------------------------------------------------

    def run(self):
        node = self.node
        # Live frames wait from the moment the node can hear this socket's channels until
        # the first replay has queued what was missed: one pushed live in between would
        # raise enq_last above older messages the replay must still send.
        self.hold()
        try:
            admitted = node.add(self)
        except RedisError:
            node.remove(self)
            self._close(1011, "chat store unavailable: try again shortly")
            return
        if not admitted:
            metrics.HANDSHAKES_REFUSED.labels(reason="too_many_sockets").inc()
            limit = node.cfg["CHAT_MAX_SOCKETS_PER_USER"]
            self._close(CLOSE_TOO_MANY_SOCKETS, f"too many open sockets: at most {limit} per user; close one")
            return
        try:
            self._start()
            self.loop()
        except RedisError:
            self._close(1011, "chat store unavailable: reconnect to resume")
        except _Gone:
            pass
        finally:
            self._abort()
            self.ws.sock = self.raw  # no cycle left through simple-websocket's socket
            node.remove(self)

    def _start(self):
        """hello, then the replay.  A method of its own so that its temporaries are freed
        before the socket's long wait, not kept for its life."""
        node = self.node
        self.send_raw(text_frame({
            "type": "hello", "user": self.user, "node": node.id,
            "rooms": sorted(self.rooms), "default_room": node.default_room,
            "limits": {"max_frame": node.cfg["CHAT_MAX_FRAME"], "rate": self.rate, "burst": self.burst,
                       "watch": node.cfg["CHAT_WATCH_MAX"]},
        }))
        since, explicit = self.since, self.since is not None
        if since is None:
            stored = node.redis.get(keys.chat_cursor(self.user))
            since = parse_id(stored) if stored else None
        self.resync(since, announce=True, explicit=explicit)
        self.release()  # the hold taken in run()

    def ping(self):
        """Called by the node's pinger every CHAT_PING_INTERVAL (one timer for all sockets)."""
        self.ping_due = True
        self.ws.event.set()

    def loop(self):
        ws = self.ws
        event = ws.event
        watcher = self.raw._read_event  # gevent's own read watcher of this socket, idle here
        while True:
            if self.closing is not None:
                if self.closing[0] == 1012 and ws.connected:
                    # A restart is not the client's fault: what it sent before it heard of
                    # the restart (read or still in the kernel buffer) is handled and acked.
                    for _ in range(8):
                        if not self._read():
                            break
                    while ws.input_buffer:
                        self.handle(ws.input_buffer.pop(0))
                    if self.out:
                        self.flush()
                self._close(*self.closing)
                return
            if self.readable:
                self.readable = self._read()
                continue
            if not ws.connected:
                # Frames that arrived just before the client's close are still handled (a
                # script may send and close at once): stored and published, replies dropped.
                while ws.input_buffer:
                    self.handle(ws.input_buffer.pop(0))
                return
            if ws.input_buffer:
                self.handle(ws.input_buffer.pop(0))
                if self.out:
                    self.flush()
                continue
            if self.out:
                self.flush()
                continue
            if self.ping_due:
                self.ping_due = False
                if not ws.pong_received:
                    log.info("closing %s's socket: no pong within %ss", self.user, self.node.cfg["CHAT_PING_INTERVAL"])
                    self.doom(1001, "ping timeout")
                    continue
                ws.pong_received = False
                self.send_raw(PING_FRAME)
                continue
            event.clear()
            if self.out or self.closing is not None or self.ping_due:
                continue
            # Level-triggered: bytes that arrived while this greenlet was busy wake it at once.
            watcher.start(self._on_readable)
            try:
                event.wait()  # no timeout: no timer per socket
            finally:
                watcher.stop()

    def _on_readable(self):
        self.readable = True
        self.ws.event.set()

    def _read(self):
        """One non-blocking read, handed to simple-websocket's parser (what its reader greenlet
        would do): messages land in ``ws.input_buffer``, pings are answered, a close frame,
        EOF or a protocol error mark the socket disconnected, a frame over CHAT_MAX_FRAME is
        answered with 1009.  True when a full read suggests more is waiting."""
        ws = self.ws
        try:
            data = self.raw._sock.recv(RECV_BYTES)
        except BlockingIOError:
            return False
        except OSError:
            ws.connected = False
            return False
        if not data:
            ws.connected = False
            return False
        try:
            ws.ws.receive_data(data)
            ws.connected = ws._handle_events()
        except LocalProtocolError:
            ws.connected = False
        except (gevent.Timeout, OSError):  # its pong or close reply could not be written
            self._abort()
            raise _Gone() from None
        return len(data) == RECV_BYTES

    def flush(self):
        out = self.out
        batch = []
        last = None
        first = None
        n = 0
        taken = out[:BATCH]
        del out[:BATCH]
        for mid, frame in taken:
            batch.append(frame)
            if mid is not None:
                last = mid
                n += 1
                if first is None:
                    first = mid
        self.send_raw(batch[0] if len(batch) == 1 else b"".join(batch))
        if last is not None:
            self.sent_last = last
            metrics.MESSAGES_OUT.inc(n)
            metrics.DELIVERY.observe(max(0.0, time.time() - first[0] / 1000.0))

    def send_raw(self, data):
        try:
            self.ws.sock.send(data)
        except gevent.Timeout:
            metrics.SLOW_CONSUMER_CLOSES.inc()
            log.warning("dropping slow consumer %s: a write blocked for %ss", self.user,
                        self.node.cfg["CHAT_SEND_TIMEOUT"])
            self._abort()
            raise _Gone() from None
        except OSError:
            self._abort()
            raise _Gone() from None

    def _abort(self):
        self.ws.connected = False
        try:
            self.raw.close()
        except OSError:
            pass

    def _close(self, code, reason):
        """Send a close frame with ``code`` and ``reason`` and give the peer a moment to
        answer (one read: its close reply or EOF), so the frame is read before the TCP
        connection goes."""
        ws = self.ws
        with gevent.Timeout(2, False):  # False: a silent timeout, no exception
            try:
                if ws.connected:
                    ws.close(reason=code, message=reason)
                    self.raw.recv(RECV_BYTES)
            except Exception:  # noqa: BLE001 - the peer is gone; nothing more to do
                pass
        ws.connected = False

    # ---- incoming frames ----------------------------------------------------------------

    def error(self, code, message, cid=None):
        frame = {"type": "error", "code": code, "error": message}
        if cid is not None:
            frame["cid"] = cid
        metrics.FRAMES_REFUSED.labels(reason=code).inc()
        self.out.append((None, text_frame(frame)))

    def _allow(self):
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.t_last) * self.rate)
        self.t_last = now
        if self.tokens >= 1:
            self.tokens -= 1
            if self.strikes and self.tokens >= self.burst / 2:
                self.strikes = 0
            return True
        self.strikes += 1
        if self.strikes >= self.node.cfg["CHAT_RATE_STRIKES"]:
            metrics.FRAMES_REFUSED.labels(reason="rate_limited").inc()
            self.doom(1008, "rate limit exceeded")
        else:
            self.error("rate_limited", f"too many frames: at most {self.rate:g} a second (burst {self.burst})")
        return False

    def handle(self, raw):
        """One incoming frame: every frame gets its answer (or an ``error`` frame), and no
        frame, however it is made, closes this socket or disturbs another one."""
        if not self._allow():
            return
        msg = parse_frame(raw)
        if isinstance(msg, Refused):
            self.error(msg.code, msg.message, msg.cid)
            return
        cid = msg.get("cid")
        kind = msg.get("type", "message")
        try:
            if kind == "message":
                self._message(msg, cid)
            elif kind in ("join", "leave"):
                self._membership(kind, msg.get("room"), cid)
            elif kind == "watch":
                self._watch(msg.get("users"), cid)
            elif kind == "ping":
                self.out.append((None, text_frame({"type": "pong", "cid": cid})))
            else:
                self.error("bad_frame", "unknown type: use message, join, leave, watch or ping", cid)
        except RedisError:
            # Not "nothing was stored": Redis may have run the send and gone before it
            # answered (a graceful Redis stop does that).  Sending again with the same cid is
            # always safe: a cid already stored is acknowledged, not stored twice.
            self.error("unavailable", "the chat store did not answer: the message may or may not be stored; "
                       "send it again with the same cid", cid)
        except Exception:  # noqa: BLE001 - a bug met by one frame costs that frame, not the socket
            log.exception("could not handle a frame from %s", self.user)
            self.error("server_error", "the server could not handle this frame: nothing was sent", cid)

    def _message(self, msg, cid):
        metrics.MESSAGES_IN.inc()
        data = msg.get("data")
        if not isinstance(data, str):
            self.error("bad_frame", "data must be a string", cid)
            return
        if not data.strip():
            self.error("empty_data", "data is empty", cid)
            return
        receiver, room = msg.get("receiver"), msg.get("room")
        if (receiver is None) == (room is None):
            self.error("bad_frame", "give exactly one of receiver (a user name) or room", cid)
            return
        node = self.node
        fields = {"sender": self.user, "data": data}
        if cid is not None:
            fields["cid"] = cid
        if receiver is not None and not is_user_name(receiver):
            self.error("unknown_receiver", "no such user", cid)
            return
        media = msg.get("media")
        if media is not None:
            if not self._share_media(media, receiver, room, cid):
                return
            fields["media"] = media
        window = node.cfg["CHAT_DEDUP_WINDOW"]
        if receiver is not None:
            tail = json.dumps(fields, ensure_ascii=False, separators=(",", ":"))[1:]
            channel = keys.chat_user_channel(receiver)
            res = node.run_send(
                node.s_private,
                [keys.CHAT_CLOCK, keys.user(receiver), keys.chat_inbox(receiver), keys.CHAT_ONLINE,
                 *self._dedup_key(channel, cid)],
                [tail, node.maxlen, node.age_ms, channel, window])
            if not res or not res[0]:
                self.error("unknown_receiver", f"no such user: {receiver}", cid)
                return
            mid, ts, name, online, duplicate = res
            ack = {"type": "ack", "id": mid, "ts": int(ts), "cid": cid, "receiver": name}
            if duplicate:
                ack["duplicate"] = True
            self.out.append((None, text_frame(ack)))
            if not int(online) and not duplicate:
                # The tutorial's notice; the message is stored and delivered when they connect.
                self.out.append((None, text_frame({
                    "type": "system", "sender": "system", "receiver": self.user, "code": "offline",
                    "about": name, "id": mid, "data": "receiver is offline"})))
            return
        if not isinstance(room, str) or room not in self.rooms:
            self.error("not_member", "join the room first", cid)
            return
        tail = json.dumps({"room": room, **fields}, ensure_ascii=False, separators=(",", ":"))[1:]
        channel = keys.chat_room_channel(room)
        mid, ts, duplicate = node.run_send(node.s_room, [keys.CHAT_CLOCK, keys.chat_room(room),
                                                         *self._dedup_key(channel, cid)],
                                           [tail, node.maxlen, node.age_ms, channel, window])
        ack = {"type": "ack", "id": mid, "ts": int(ts), "cid": cid, "room": room}
        if duplicate:
            ack["duplicate"] = True
        self.out.append((None, text_frame(ack)))

    def _dedup_key(self, channel, cid):
        """The key that makes a re-sent ``cid`` count once (none without a cid, or with
        CHAT_DEDUP_WINDOW 0); see ``scripts._dedup``."""
        if cid is None or not self.node.cfg["CHAT_DEDUP_WINDOW"]:
            return []
        return [keys.chat_cid(self.user, channel, cid)]

    def _share_media(self, name, receiver, room, cid):
        """A message may carry one of the sender's uploads (``media``: its name in the files
        service).  The people of the conversation are added to its readers (the files
        service's ``media:<name>:readers``, see docs/media.md) before the message goes out,
        so their browsers can open ``/media/<name>``.  Only the owner can share a file."""
        node = self.node
        if not is_media_name(name):
            self.error("bad_media", "media must be the name of a file you uploaded", cid)
            return False
        if room is not None and room == node.default_room:
            self.error("bad_media", "files are shared in private conversations and named rooms", cid)
            return False
        if room is not None and (not isinstance(room, str) or room not in self.rooms):
            self.error("not_member", "join the room first", cid)
            return False
        r = node.redis
        pipe = r.pipeline(transaction=False)
        pipe.hget(keys.media(name), "owner")
        if receiver is not None:
            pipe.hget(keys.user(receiver), "name")
        else:
            pipe.smembers(keys.chat_members(room))
        owner, who = pipe.execute()
        if not owner or owner.lower() != self.lower:
            self.error("bad_media", "no such file of yours", cid)
            return False
        if not who:
            self.error("unknown_receiver", f"no such user: {receiver}", cid)
            return False
        readers = [who.lower()] if receiver is not None else [m.lower() for m in who]
        r.sadd(keys.media_readers(name), *readers)
        return True

    def _watch(self, users, cid):
        """The users whose presence this socket is sent: the list replaces the previous one,
        and the answer (``watching``, queued by the node once their state is known) gives the
        state of each; later changes come as ``presence`` frames.  Starting to watch costs
        rate-limit tokens (one per 100 users new to this socket), so swapping long lists
        cannot load Redis with subscriptions."""
        limit = self.node.cfg["CHAT_WATCH_MAX"]
        if not isinstance(users, list) or not all(is_user_name(u) for u in users):
            self.error("bad_watch", "users must be a list of user names", cid)
            return
        given = {}
        for u in users:
            if u.lower() != self.lower:
                given.setdefault(u.lower(), u)
        if len(given) > limit:
            self.error("bad_watch", f"at most {limit} users can be watched", cid)
            return
        old = set(self.watching)
        self.tokens -= sum(1 for u in given if u not in old) / 100
        self.node.set_watch(self, given, cid)

    def _membership(self, kind, room, cid):
        node = self.node
        if not is_room_name(room):
            self.error("bad_room", "a room name is 1-32 letters, digits, - or _", cid)
            return
        if room == node.default_room:
            self.error("bad_room", "everyone is in the default room", cid)
            return
        r = node.redis
        if kind == "join":
            if room not in self.rooms and r.scard(keys.chat_rooms(self.user)) >= node.cfg["CHAT_MAX_ROOMS"]:
                self.error("too_many_rooms", f"at most {node.cfg['CHAT_MAX_ROOMS']} rooms", cid)
                return
            since = None
            self.hold()
            try:
                pipe = r.pipeline(transaction=False)
                pipe.hmget(keys.CHAT_CLOCK, "ms", "seq")  # the last id issued before the join
                pipe.sadd(keys.chat_rooms(self.user), room)
                pipe.sadd(keys.chat_members(room), self.user)
                (ms, seq), _, _ = pipe.execute()
                since = (int(ms or 0), int(seq or 0))
                self.follow(room, since)
            finally:
                self.release()
        else:
            pipe = r.pipeline(transaction=False)
            pipe.srem(keys.chat_rooms(self.user), room)
            pipe.srem(keys.chat_members(room), self.user)
            pipe.execute()
            if room in self.rooms:
                node.leave_local(self, room)
        # Every socket of this user, on every node, follows (this one included: it gets the
        # frame below as its confirmation).
        frame = {"type": "room", "action": kind, "room": room, "cid": cid}
        if kind == "join":
            frame["since"] = format_id(since)  # for the user's other sockets: see follow()
        body = json.dumps(frame, separators=(",", ":"))
        r.publish(keys.chat_user_channel(self.user), "- " + body)


class Refused:
    """Why a frame was refused: an ``error`` frame's ``code``, its sentence and the frame's
    ``cid`` (when it has a valid one)."""

    __slots__ = ("code", "message", "cid")

    def __init__(self, code, message, cid=None):
        self.code, self.message, self.cid = code, message, cid


def parse_frame(raw):
    """An incoming WebSocket message as a frame (a dict with a valid ``cid`` or none), or the
    :class:`Refused` answer.  Total: any ``str`` or ``bytes`` gives one or the other, never an
    exception.  Refused: binary frames, anything that is not JSON, JSON nested deeper than the
    parser's recursion limit, JSON that is not an object, text that is not valid Unicode (a
    lone surrogate escape such as ``"\\ud800"``, which could be neither stored nor sent on), and a
    ``cid`` that is not a string or number of at most 64 characters."""
    if not isinstance(raw, str):
        return Refused("binary", "binary frames are not supported: send JSON text")
    try:
        msg = json.loads(raw)
    except ValueError:
        return Refused("bad_json", "not JSON: send a JSON object such as {\"receiver\": \"bob\", \"data\": \"hi\"}")
    except RecursionError:
        return Refused("bad_json", "JSON nested too deeply")
    if not isinstance(msg, dict):
        return Refused("bad_frame", "a frame must be a JSON object")
    if _SURROGATE_ESCAPE.search(raw):
        try:
            json.dumps(msg, ensure_ascii=False).encode()
        except (UnicodeEncodeError, RecursionError):
            return Refused("bad_unicode", "text must be valid Unicode: a lone surrogate escape (\\ud800-\\udfff) is not")
    cid = msg.get("cid")
    if cid is not None and not (isinstance(cid, (str, int)) and not isinstance(cid, bool) and len(str(cid)) <= 64):
        return Refused("bad_frame", "cid must be a string or number of at most 64 characters")
    return msg
