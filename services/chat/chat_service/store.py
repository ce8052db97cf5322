"""Messages in Redis: storing and publishing a message or a change to one, the replay of what
a socket missed, delivered cursors.

Rule: a message is stored (XADD to a stream: a person's copy of a private conversation, or
a room's) and published (on that person's channel, or the room's) by one Lua call per stream,
so whoever hears a channel and then reads its stream misses nothing and gets nothing twice;
ids increase per clock (each person's, each room's: see :mod:`.scripts`).  A private message
is two such calls, the sender's copy and then the receiver's, and is acknowledged once both
are done; the second is idempotent, so sending it again after a failure in between stores it
once in each copy.
An edit or a deletion is stored and published the same way, as an entry of its own after the
message.  A ``cid`` is stored once per sender and conversation within CHAT_DEDUP_WINDOW: the
same ``cid`` sent again is acknowledged with the first message's id.

With CHAT_ACK_REPLICAS, a batch ends with a Redis ``WAIT`` on its own connection: its
messages count as sent (and are acknowledged) only once that many replicas hold them, so a
failover to a replica loses none of them.  A batch the replicas do not confirm in time fails
with :class:`NotReplicated` (the messages are stored on the primary, published, and may be
lost in a failover): the sender is told ``unavailable`` and sends again with the same ``cid``,
which is acknowledged with the first id once the replicas confirm.

Sends are batched: one greenlet per process runs the sends of all its sockets, whatever
accumulated while the previous batch was in Redis, as one pipeline (one pool checkout, one
write, one read for k messages).  Each socket still sends one message at a time, so its own
messages are stored in order.  A send's arguments are encoded in its sender's greenlet, so
text that cannot be encoded fails that send alone, never the batch of other people's sends.
"""
import logging
import time
from collections import defaultdict

import gevent
from gevent.event import AsyncResult, Event
from redis.cluster import RedisCluster
from redis.exceptions import ClusterDownError, ConnectionError, MovedError, NoScriptError, RedisClusterException, \
    RedisError, TimeoutError, TryAgainError

from webchat_common import keys
from webchat_common.redis_store import REDIS_ERRORS

from . import scripts
from .lua import Lua, Pipeline
from .wire import PRIVATE, ZERO, format_id, message_tail, parse_id, stored_json

log = logging.getLogger(__name__)

#: What a send on a Cluster answers when the slot map it was routed by is out of date.
_MOVED = (MovedError, ClusterDownError, TryAgainError, ConnectionError, TimeoutError)

#: Sends one pipeline carries at most.
BATCH = 256

#: A replay's start for a clock that is not read: its position becomes the last id issued.
LIVE = "$"


class NotReplicated(RedisError):
    """Stored on the primary, but fewer than CHAT_ACK_REPLICAS replicas confirmed it in time."""


class Store:
    def __init__(self, redis, cfg):
        self.redis = redis
        self.cluster = isinstance(redis, RedisCluster)
        self.maxlen = cfg["CHAT_HISTORY_LENGTH"]
        self.age_ms = int(cfg["CHAT_HISTORY_AGE"] * 1000)
        self.dedup_window = cfg["CHAT_DEDUP_WINDOW"]
        self.ack_replicas = cfg["CHAT_ACK_REPLICAS"]
        self.ack_timeout_ms = int(cfg["CHAT_ACK_TIMEOUT"] * 1000)
        self.s_mine = Lua(redis, scripts.SEND_MINE)
        self.s_theirs = Lua(redis, scripts.SEND_THEIRS)
        self.s_find_sent = Lua(redis, scripts.FIND_SENT)
        self.s_room = Lua(redis, scripts.SEND_ROOM)
        self.s_replay_private = Lua(redis, scripts.REPLAY_PRIVATE)
        self.s_replay_room = Lua(redis, scripts.REPLAY_ROOM)
        self.s_change = Lua(redis, scripts.CHANGE)
        self.s_cursor = Lua(redis, scripts.CURSOR_MAX)
        self.s_mark = Lua(redis, scripts.MARK)
        self.sends = []          # (script, keys, args, AsyncResult) waiting for the next batch
        self.sends_ready = Event()
        self._sender = gevent.spawn(self._send_loop)

    # ---- sending ---------------------------------------------------------------------------

    def send_private(self, sender, receiver, fields, cid, origin):
        """Store and publish a private message (``fields``: sender, data, cid, media) sent
        from the socket whose token is ``origin`` to ``receiver`` (a registered name, as
        registered): in the sender's copy (SEND_MINE), then in the receiver's (SEND_THEIRS), so
        a message acknowledged is in both.  A ``cid`` stored before is answered with the first
        id, and its receiver's copy is made if the first send stopped before it (SEND_THEIRS
        looks for it there first, by its ``p``).  Returns (id in the sender's copy, ts, the
        receiver's name, online?, duplicate?)."""
        tail = message_tail(fields)
        channel = keys.chat_user_channel(receiver)
        alone = sender.lower() == receiver.lower()
        mid, ts, name, duplicate = self._run(
            self.s_mine,
            [keys.chat_user_clock(sender), keys.chat_pm(sender, receiver), keys.chat_convs(sender),
             keys.chat_read(sender), keys.chat_sockets(sender), *self._dedup_key(sender, cid, receiver=receiver)],
            [tail, self.maxlen, self.age_ms, keys.chat_user_channel(sender), self.dedup_window, origin, receiver,
             "self" if alone else ""])
        if alone:
            return mid, int(ts), name, True, bool(duplicate)
        _, online = self._run(
            self.s_theirs,
            [keys.chat_user_clock(receiver), keys.chat_pm(receiver, sender), keys.chat_convs(receiver),
             keys.chat_sockets(receiver)],
            [tail, self.maxlen, self.age_ms, channel, look_back(mid) if duplicate else "", mid, sender, name])
        return mid, int(ts), name, bool(int(online)), bool(duplicate)

    def find_sent(self, copy, sid):
        """The id, in ``copy`` (a person's copy of a private conversation), of the message
        whose id in its sender's copy is ``sid``, or None (looking back a minute before it)."""
        return self.s_find_sent(keys=[copy], args=[sid, look_back(sid)]) or None

    def send_room(self, sender, room, fields, cid):
        """Store and publish a message in ``room`` (SEND_ROOM), then move the sender's read
        marker of the room to it (one has read what one writes; in the sender's slot, so a
        second call: one that fails leaves the message unread for its sender only, and is
        not the send's failure).  Returns (id, ts, duplicate?)."""
        mid, ts, duplicate = self._run(self.s_room, [keys.chat_room_clock(room), keys.chat_room(room),
                                                     *self._dedup_key(sender, cid, room=room)],
                                       [message_tail({"room": room, **fields}), self.maxlen, self.age_ms,
                                        keys.chat_room_channel(room), self.dedup_window])
        try:
            self._run(self.s_mark, [keys.chat_read(sender)], ["#" + room, mid, self.age_ms])
        except RedisError as exc:  # the message is sent: its ack does not depend on the marker
            log.warning("could not move %s's read marker of a room (%s)", sender, exc.__class__.__name__)
        return mid, int(ts), bool(duplicate)

    def change(self, clock, stream, target, before, after, kind, window_ms, channels):
        """Store and publish an ``edit`` or ``delete`` of message ``target`` of ``stream``
        (whose ids ``clock`` makes):
        ``before`` is the message as read from chat:edits ("" if never changed), ``after`` the
        message as it is to be (a dict).  Returns (id, ts), or ``"changed"`` (it changed since
        it was read) or ``"too_late"`` (older than ``window_ms``)."""
        res = self.s_change(keys=[clock, stream, keys.chat_edits(stream)],
                            args=[format_id(target), before, stored_json(after),
                                  window_ms, kind, self.age_ms, self.maxlen, *channels])
        if len(res) == 1:
            return res[0].decode() if isinstance(res[0], bytes) else res[0]
        return res[0], int(res[1])

    def _dedup_key(self, sender, cid, **where):
        """The key that makes a re-sent ``cid`` count once (none without a cid, or with
        CHAT_DEDUP_WINDOW 0); see ``scripts._dedup``."""
        if cid is None or not self.dedup_window:
            return []
        return [keys.chat_cid(sender, cid, **where)]

    def _run(self, script, keys_, args):
        """Run a send script in the next batch and return its result."""
        res = AsyncResult()
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
                batch, self.sends = self.sends[:BATCH], self.sends[BATCH:]
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
        results = self._pipeline(batch)
        missing = [i for i, r in enumerate(results) if isinstance(r, NoScriptError)]
        if missing:  # Redis restarted, a replica was promoted (or SCRIPT FLUSH): load, run those again
            for script in {batch[i][0] for i in missing}:
                script.load()
            for i, r in zip(missing, self._pipeline([batch[i] for i in missing])):
                results[i] = r
        return results

    def _pipeline(self, batch):
        """Run ``batch``: on one Redis (or Sentinel's primary) as one pipeline; on a Redis
        Cluster as one pipeline per primary, on that primary's own connection, all at once (a
        send's keys are in one slot: its first key names it).  Each ends with its own WAIT, so
        a message counts as sent once the shard that took it has replicated it."""
        if not self.cluster:
            return self._on_node(self.redis, batch)
        groups = defaultdict(list)
        results = [None] * len(batch)
        for i, (_, keys_, _, _) in enumerate(batch):
            try:
                groups[self.redis.get_node_from_key(keys_[0]).name].append(i)
            except (RedisClusterException, AttributeError):  # a slot no primary serves now
                results[i] = ClusterDownError("no primary serves this message's slot now")
        jobs = [(gevent.spawn(self._on_node, self.redis.get_redis_connection(self.redis.get_node(node_name=name)),
                              [batch[i] for i in idx]), idx) for name, idx in groups.items()]
        gevent.joinall([job for job, _ in jobs])
        for job, idx in jobs:
            out = job.value if job.successful() else [job.exception] * len(idx)
            for i, r in zip(idx, out):
                results[i] = r
        if any(isinstance(r, _MOVED) for r in results):
            # A slot moved, or a primary died: read the slot map again for the next batch (the
            # senders of these are told "unavailable" and send again).
            try:
                self.redis.nodes_manager.initialize()
            except REDIS_ERRORS as exc:
                log.warning("could not read the Cluster's slot map again (%s)", exc.__class__.__name__)
        return results

    def _on_node(self, client, batch):
        """``batch`` as one pipeline on ``client`` (one connection), then WAIT for
        CHAT_ACK_REPLICAS on that connection: it covers every write the connection made, this
        batch's included."""
        pipe = client.pipeline(transaction=False)
        for script, keys_, args, _ in batch:
            pipe.execute_command("EVALSHA", script.sha, len(keys_), *keys_, *args)
        if self.ack_replicas:
            pipe.execute_command("WAIT", self.ack_replicas, self.ack_timeout_ms)
        results = pipe.execute(raise_on_error=False)
        if self.ack_replicas:
            copies = results.pop()
            if isinstance(copies, Exception) or copies < self.ack_replicas:
                short = NotReplicated(f"{copies} of {self.ack_replicas} replicas confirmed the message in time")
                results = [r if isinstance(r, Exception) else short for r in results]
        return results

    # ---- reading ---------------------------------------------------------------------------

    def floor(self):
        """The oldest id history may still hold (CHAT_HISTORY_AGE ago)."""
        return (int(time.time() * 1000) - self.age_ms, 0)

    def replay(self, user, start, origin=None):
        """Read what ``user`` missed: per clock of ``start`` (clock -> the id to start after, or
        for a room :data:`LIVE`: read nothing), their private conversations or a room, but not the private
        messages sent from ``origin`` (a long-poll tab's token: it has their acks).  One script
        per clock, each a snapshot atomic with its clock's sends, all in one round trip.
        Returns (entries sorted by id as (mid, frame json, clock), gap?, the last id issued per
        clock of ``start``)."""
        count = self.maxlen * 2 + 100
        rooms = [c for c in start if c != PRIVATE]
        pipe = Pipeline(self.redis)
        private = start.get(PRIVATE)  # (not LIVE: a socket's private messages are always read)
        if private is not None:
            self.s_replay_private(keys=[keys.chat_convs(user), keys.chat_user_clock(user)],
                                  args=[format_id(private), count, keys.chat_pm(user, "")], client=pipe)
        for room in rooms:
            self.s_replay_room(keys=[keys.chat_room(room), keys.chat_room_clock(room)],
                               args=["$" if start[room] is LIVE else format_id(start[room]), count], client=pipe)
        results = pipe.execute()
        reads, issued = [], {}
        if private is not None:
            *streams, last = results.pop(0)
            reads += [(PRIVATE, read) for read in streams]
            issued[PRIVATE] = parse_id(last) or ZERO
        for room, (*read, last) in zip(rooms, results):
            reads.append((room, read))
            issued[room] = parse_id(last) or ZERO
        entries, gap = [], False
        for clock, (boundary, items, begin) in reads:
            s = parse_id(begin) or ZERO
            if (parse_id(boundary) or ZERO) > s:
                gap = True
            if len(items) >= count:
                gap = True
            for sid, fields in items:
                mid = parse_id(sid)
                if not isinstance(fields, dict):
                    fields = dict(zip(fields[::2], fields[1::2]))
                frame = fields.get("f")
                if mid and frame and (origin is None or fields.get("o") != origin):
                    entries.append((mid, frame, clock))
        entries.sort(key=lambda e: e[0])
        return entries, gap, issued

    def room_issued(self, room):
        """The last id ``room``'s clock issued (ZERO: none)."""
        last = self.s_replay_room(keys=[keys.chat_room(room), keys.chat_room_clock(room)], args=["$", 1])[3]
        return parse_id(last) or ZERO

    # ---- delivered cursors -----------------------------------------------------------------

    def cursor(self, user, rooms):
        """Where ``user`` was delivered up to, per clock (their private one and ``rooms``):
        clock -> id, for the clocks they have a position in."""
        clocks = [PRIVATE, *rooms]
        pipe = self.redis.pipeline(transaction=False)
        pipe.hmget(keys.chat_cursors(user), [_cursor_field(c) for c in clocks])
        pipe.get(keys.chat_cursor_v1(user))
        stored, legacy = pipe.execute()
        legacy = parse_id(legacy) if legacy else None
        out = {}
        for clock, mid in zip(clocks, stored):
            mid = parse_id(mid) if mid else legacy
            if mid is not None:
                out[clock] = mid
        return out

    def save_cursor(self, user, positions, client=None):
        """Move ``user``'s delivered cursor up to ``positions`` (clock -> id; never back); on
        ``client`` (a pipeline) when given."""
        args = [self.age_ms // 1000]
        for clock, mid in positions.items():
            args += [_cursor_field(clock), format_id(mid)]
        self.s_cursor(keys=[keys.chat_cursors(user)], args=args, client=client)


def look_back(mid):
    """The lowest id a message ``mid`` of a sender's copy can have in the receiver's copy: its
    ms, less a minute (the two copies' clocks may be on two Redis servers, a little apart)."""
    return f"{max(0, parse_id(mid)[0] - 60_000)}-0"


def _cursor_field(clock):
    """A clock's field in chat:cursors: ``@`` for the private one, ``#<room>`` for a room."""
    return "#" + clock if clock != PRIVATE else "@"
