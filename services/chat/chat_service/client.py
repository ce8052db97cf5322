"""One client of this process, whatever carries its frames (a WebSocket, :mod:`.conn`; a
long-poll, :mod:`.poll`): its queue and id order, its replay, its rooms, its rate limit and the
answers to what it sends.

Rule: frames with an id go out once each, in id order per clock.  A clock is what numbers a
stream of frames: the user's private messages have one (:data:`.wire.PRIVATE`), and each room
its own, named by the room.  The client remembers its *position* in each clock, the highest id
of it queued, and drops anything not above it; a replay from history (on connect, after a room
join, after the process's pub/sub reconnected) holds the live frames that arrive meanwhile and
releases them after it (:meth:`Client.hold`), so nothing is skipped or doubled.  A client
resumes from its positions: ``last_id`` for the private clock, ``rooms`` for the rooms
(docs/chat.md, "Resume and offline delivery").

Nobody else writes to a client's transport: they append to its bounded queue (:meth:`Client.push`)
and wake it (:meth:`Client.wake`, the transport's own); when the queue is full the client is
closed (1008) and resumes from its last id when it comes back.
"""
import logging
import time

from redis.exceptions import RedisError

from . import metrics
from .store import LIVE
from .wire import PRIVATE, ZERO, Refused, error_frame, parse_frame, positions_fields, text_frame, ws_frame

log = logging.getLogger(__name__)


class Client:
    """What every transport shares.  A subclass gives :attr:`token`, :meth:`wake` and the loop
    that writes :attr:`out` (triples of id or None, a WebSocket text frame: built once per
    message for every socket, unwrapped by a long-poll, and the id's clock)."""

    def __init__(self, node, user, session_hash, rooms, since):
        """``since``: the positions the client resumes from (clock -> id), or None (it gave
        none: a new client)."""
        cfg = node.cfg
        self.node = node
        self.user = user
        self.lower = user.lower()
        self.session_hash = session_hash
        self.rooms = set(rooms)
        self.since = since                 # the client's positions (clock -> id), or None
        self.out = []                      # (mid or None, frame bytes, clock); a list: 700 B less than a deque
        self.held = None                   # live frames arriving while a replay is read
        self.holds = 0                     # replays in progress (held is a list while > 0)
        self.enq = {}                      # clock -> highest id queued
        self.sent = {}                     # clock -> highest id written to the client
        self.saved = {}                    # clock -> highest id saved as the user's delivered cursor
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
        sender's other clients skips this one (see ``scripts.SEND_MINE``)."""
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

    def push(self, mid, frame, clock=PRIVATE):
        """Queue a frame.  Frames with an id go out once, in id order per ``clock``."""
        if self.closing is not None:
            return
        if mid is not None:
            if self.held is not None:
                self.held.append((mid, frame, clock))
                return
            if mid <= self.enq.get(clock, ZERO):
                return
            self.enq[clock] = mid
        if len(self.out) >= self.node.send_queue:
            metrics.SLOW_CONSUMER_CLOSES.inc()
            log.warning("closing slow consumer %s: send queue full (%d frames)", self.user, len(self.out))
            self.doom(1008, "too slow: send queue overflow; reconnect to resume")
            return
        self.out.append((mid, frame, clock))
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
            for mid, frame, clock in held:
                self.push(mid, frame, clock)
            self.wake()

    def written(self, mid, clock):
        """A frame with an id went out to the client."""
        if mid > self.sent.get(clock, ZERO):
            self.sent[clock] = mid

    def unsaved_cursor(self):
        """The positions written to this client and not yet saved as the delivered cursor
        (clock -> id), or None."""
        saved = self.saved
        moved = {c: mid for c, mid in self.sent.items() if mid > saved.get(c, ZERO)}
        return moved or None

    def cursor_saved_up_to(self, positions):
        for clock, mid in positions.items():
            if mid > self.saved.get(clock, ZERO):
                self.saved[clock] = mid

    def positions(self):
        """Where the client is in every clock it follows: queued up to (clock -> id)."""
        return {c: self.enq[c] for c in (PRIVATE, *self.rooms) if c in self.enq}

    def catch_up(self):
        """After the process's pub/sub reconnected (this socket was put on hold when it was
        lost): queue what was published meanwhile, then the live frames held since."""
        try:
            if self.closing is None:
                return self.resync({c: self.enq.get(c) for c in (PRIVATE, *self.rooms)}, announce=False)[0]
            return 0
        finally:
            self.release()

    # ---- replay -------------------------------------------------------------------------------

    def resync(self, start, announce, explicit=False, sync=True):
        """Queue the stored frames of the clocks in ``start`` (clock -> the id to start after;
        None: the start of the history; :data:`.store.LIVE`: none) before any live frame that
        arrives meanwhile.  A clock started at an id is positioned at least there (nothing up
        to it is queued again), one started at LIVE at its last id issued.  With ``explicit``
        (positions the client gave), a start older than the history is a gap if anything was
        issued after it.  With ``announce``, a ``system`` frame if some were older than the
        history kept, then (with ``sync``) the ``sync`` frame.  Returns (count, gap, the last
        id issued per clock read)."""
        store = self.node.store
        self.hold()
        try:
            floor = store.floor()
            given = {c: mid if mid is LIVE else max(mid or floor, floor) for c, mid in start.items()}
            entries, gap, issued = store.replay(self.user, given, self.replay_skips)
            enq = self.enq
            for clock, mid in start.items():
                if mid is LIVE:
                    mid = issued[clock]
                elif mid is None:
                    continue
                elif explicit and ZERO < mid < floor and mid < issued[clock]:
                    gap = True
                if clock not in enq or mid > enq[clock]:
                    enq[clock] = mid  # (0-0 too: a clock that never issued an id)
            n = 0
            for mid, frame, clock in entries:
                if mid > enq.get(clock, ZERO):
                    enq[clock] = mid
                    self.out.append((mid, ws_frame(0x1, frame.encode()), clock))
                    n += 1
            metrics.REPLAYED.inc(n)
            if announce:
                if gap:
                    self.reply({"type": "system", "sender": "system", "receiver": self.user, "code": "history_gap",
                                "data": "Some messages you missed are older than the history kept and could not be "
                                        "replayed."})
                if sync:
                    self.reply({"type": "sync", "replayed": n, "gap": gap, **positions_fields(self.positions())})
        finally:
            self.release()
        return n, gap, issued

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
            self.resync({room: max(since, self.enq.get(room, ZERO))}, announce=False)
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
        before the client's long wait, not kept for its life.  Returns the last id issued per
        clock before the replay."""
        self.reply(self.hello())
        start, explicit = self.first_start(), self.since is not None
        self.since = None  # (not kept for the client's life)
        return self.resync(start, announce=True, explicit=explicit)[2]

    def first_start(self):
        """Where the first replay starts, per clock (see :meth:`resync`).  Resuming: after the
        positions given; a room given no position starts at the beginning of the history (a
        gap would lose messages, a repeat only costs bytes: the page drops ids it has).  New
        (no positions): after the user's delivered cursor; a room never delivered to them,
        from now on."""
        if self.since is not None:
            return {c: self.since.get(c) for c in (PRIVATE, *self.rooms)}
        cursor = self.node.store.cursor(self.user, self.rooms)
        start = {room: cursor.get(room, LIVE) for room in self.rooms}
        start[PRIVATE] = cursor.get(PRIVATE)
        return start

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
        self.out.append((None, text_frame(frame), None))

    def error(self, code, message, cid=None):
        metrics.FRAMES_REFUSED.labels(reason=code).inc()
        self.out.append((None, error_frame(code, message, cid), None))

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
