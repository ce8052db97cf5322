"""One client of this process, whatever carries its frames (a WebSocket, :mod:`.conn`; a
long-poll, :mod:`.poll`): its queue and id order, its replay, its rooms, its rate limit and the
answers to what it sends.

Rule: frames with an id go out once each, in id order.  The client remembers the highest id it
queued and drops anything not above it; a replay from history (on connect, after a room join,
after the process's pub/sub reconnected) holds the live frames that arrive meanwhile and
releases them after it (:meth:`Client.hold`), so nothing is skipped or doubled.

Nobody else writes to a client's transport: they append to its bounded queue (:meth:`Client.push`)
and wake it (:meth:`Client.wake`, the transport's own); when the queue is full the client is
closed (1008) and resumes from its last id when it comes back.
"""
import logging
import time

from redis.exceptions import RedisError

from . import metrics
from .wire import ZERO, Refused, error_frame, format_id, parse_frame, text_frame, ws_frame

log = logging.getLogger(__name__)


class Client:
    """What every transport shares.  A subclass gives :attr:`token`, :meth:`wake` and the loop
    that writes :attr:`out` (pairs of id or None and a WebSocket text frame: built once per
    message for every socket, unwrapped by a long-poll)."""

    def __init__(self, node, user, session_hash, rooms, since):
        cfg = node.cfg
        self.node = node
        self.user = user
        self.lower = user.lower()
        self.session_hash = session_hash
        self.rooms = set(rooms)
        self.since = since                 # the client's last id (tuple) or None
        self.out = []                      # (mid or None, frame bytes); a list: 700 B less than a deque
        self.held = None                   # live frames arriving while a replay is read
        self.holds = 0                     # replays in progress (held is a list while > 0)
        self.enq_last = ZERO               # highest id queued
        self.sent_last = ZERO              # highest id written to the client
        self.cursor_saved = ZERO           # highest id saved as the user's delivered cursor
        self.closing = None                # (code, reason) once the client must close
        self.rate = cfg["CHAT_RATE_LIMIT"]
        self.burst = cfg["CHAT_RATE_BURST"]
        self.tokens = float(self.burst)
        self.t_last = time.monotonic()
        self.strikes = 0
        self.typing_at = 0.0               # when this client last sent a typing frame (monotonic)

    @property
    def token(self):
        """This client among all its user's: what a send names so that its copy for the
        sender's other clients skips this one (see ``scripts.SEND_PRIVATE``)."""
        raise NotImplementedError

    def wake(self):
        """Something was queued, or the client must close: its transport's greenlet acts."""
        raise NotImplementedError

    #: The token whose private messages a replay leaves out (see ``Store.replay``): a
    #: long-poll tab's, which has their acks.  A socket's token is new with every socket.
    replay_skips = None

    def ping(self):
        """Called by the process's pinger every CHAT_PING_INTERVAL (one timer for all)."""

    # ---- called by other greenlets (never block) -------------------------------------------

    def push(self, mid, frame):
        """Queue a frame.  Frames with an id go out once, in id order."""
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
        self.wake()

    def doom(self, code, reason):
        """Close the socket with ``code`` and ``reason`` as soon as its greenlet runs."""
        if self.closing is None:
            self.closing = (code, reason)
        self.wake()

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
            self.wake()

    def unsaved_cursor(self):
        """The highest id written to this socket if it is not yet saved as the delivered
        cursor, else None."""
        return self.sent_last if self.sent_last > self.cursor_saved else None

    def cursor_saved_up_to(self, mid):
        self.cursor_saved = max(self.cursor_saved, mid)

    def catch_up(self):
        """After the process's pub/sub reconnected (this socket was put on hold when it was
        lost): queue what was published meanwhile, then the live frames held since."""
        try:
            if self.closing is None:
                return self.resync(self.enq_last, announce=False)[0]
            return 0
        finally:
            self.release()

    # ---- replay -------------------------------------------------------------------------------

    def resync(self, since, announce, explicit=False, sync=True):
        """Queue the stored messages after ``since`` (None: the private conversations only,
        from the start of the history) before any live message that arrives meanwhile; with
        ``announce``, a ``system`` frame if some were older than the history kept, then (with
        ``sync``) the ``sync`` frame.  Returns (count, gap)."""
        store = self.node.store
        self.hold()
        try:
            floor = store.floor()
            gap_age = False
            if since is None:
                private, rooms = format_id(floor), "-"
            else:
                if explicit and ZERO < since < floor:
                    gap_age = True
                private = rooms = format_id(max(since, floor))
            entries, gap = store.replay(self.user, sorted(self.rooms), private, rooms, self.replay_skips)
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
                    self.reply({"type": "system", "sender": "system", "receiver": self.user, "code": "history_gap",
                                "data": "Some messages you missed are older than the history kept and could not be "
                                        "replayed."})
                if sync:
                    self.reply({"type": "sync", "replayed": n, "gap": gap,
                                "last_id": format_id(self.enq_last) if self.enq_last > ZERO else None})
        finally:
            self.release()
        return n, gap

    def join(self, room, record):
        """Join ``room`` here: ``record(user, room)`` stores the membership and returns the last
        id issued before it; then :meth:`follow` from that id.  Returns that id."""
        self.hold()
        try:
            since = record(self.user, room)
            self.follow(room, since)
        finally:
            self.release()
        return since

    def leave(self, room):
        if room in self.rooms:
            self.rooms.discard(room)
            self.node.left_room(self, room)

    def follow(self, room, since):
        """Start getting ``room``: wait until the process hears it, then replay what was
        published in any of this socket's streams after ``since`` (the last id issued before
        the join), so no room message is lost between the join and the subscription.  Live
        frames are held meanwhile and released in order."""
        self.hold()
        try:
            if room not in self.rooms:
                self.rooms.add(room)
                self.node.joined_room(self, room)
            self.resync(max(since, self.enq_last), announce=False)
        finally:
            self.release()

    def follow_elsewhere(self, room, since):
        """The user joined ``room`` from another socket (any process): this one follows too.
        Runs in its own short-lived greenlet (it waits for a subscription confirmation, which
        the greenlet that called it delivers); the caller put this socket on hold."""
        try:
            if self.closing is None and room not in self.rooms:
                self.follow(room, since)
        except RedisError:
            self.doom(1011, "could not join the room here: reconnect to resume")
        finally:
            self.release()

    # ---- opening -------------------------------------------------------------------------------

    def open(self):
        """Register with the process and queue ``hello``, then what was missed.  Returns False
        (nothing registered) when the user has CHAT_MAX_SOCKETS_PER_USER clients open already;
        raises RedisError (nothing registered) when Redis is unavailable."""
        node = self.node
        # Live frames wait from the moment the process can hear this client's channels until
        # the first replay has queued what was missed: one pushed live in between would raise
        # enq_last above older messages the replay must still send.
        self.hold()
        try:
            if not node.add(self):
                metrics.HANDSHAKES_REFUSED.labels(reason="too_many_sockets").inc()
                return False
            self._start()
        except RedisError:
            node.remove(self)
            raise
        finally:
            self.release()
        return True

    def hello(self):
        node = self.node
        return {
            "type": "hello", "user": self.user, "node": node.id,
            "rooms": sorted(self.rooms), "default_room": node.default_room,
            "limits": {"max_frame": node.cfg["CHAT_MAX_FRAME"], "rate": self.rate, "burst": self.burst,
                       "watch": node.cfg["CHAT_WATCH_MAX"], "edit_window": node.cfg["CHAT_EDIT_WINDOW"],
                       "typing_interval": node.cfg["CHAT_TYPING_INTERVAL"]},
        }

    def _start(self):
        """hello, then the replay.  A method of its own so that its temporaries are freed
        before the client's long wait, not kept for its life."""
        self.reply(self.hello())
        since, explicit = self.since, self.since is not None
        if since is None:
            since = self.node.store.cursor(self.user)
        self.resync(since, announce=True, explicit=explicit)

    # ---- incoming frames ----------------------------------------------------------------------

    def handle(self, raw):
        """One incoming frame: rate-limited, parsed, then run by the process's commands.
        Every frame gets its answer (or an ``error`` frame), and no frame, however it is made,
        closes this socket or disturbs another one."""
        if not self._allow():
            return
        msg = parse_frame(raw)
        if isinstance(msg, Refused):
            self.error(msg.code, msg.message, msg.cid)
            return
        self.node.commands.run(self, msg)

    def reply(self, frame):
        """Queue an answer to this socket's client (a dict: ack, error, pong, ...)."""
        self.out.append((None, text_frame(frame)))

    def error(self, code, message, cid=None):
        metrics.FRAMES_REFUSED.labels(reason=code).inc()
        self.out.append((None, error_frame(code, message, cid)))

    def watch(self, given, cid):
        """Watch exactly the users of ``given`` (lower-cased name -> name as sent): their
        presence comes in a ``watching`` answer, then as ``presence`` frames.  Starting to watch
        costs rate-limit tokens (one per 100 users new to this client), so swapping long lists
        cannot load Redis with subscriptions."""
        watch = self.node.watch
        old = set(watch.watched_by(self))
        self.spend(sum(1 for u in given if u not in old) / 100)
        watch.set(self, given, cid)

    def may_type(self, interval):
        """Whether a ``typing`` frame may go out now (at most one every ``interval`` s)."""
        now = time.monotonic()
        if now - self.typing_at < interval:
            return False
        self.typing_at = now
        return True

    def spend(self, tokens):
        """Take extra tokens from the rate limit (a command that costs more than a frame)."""
        self.tokens -= tokens

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
