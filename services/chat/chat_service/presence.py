"""The presence of this process's own users in Redis: who is online, on which processes, with
how many sockets.

Rule: a user is online while a chat process holds a socket of theirs: ``chat:sockets:<user>``
has a field per process (its count of the user's sockets), written when a socket opens or
closes, never by the heartbeat.  Each process beats in ``chat:nodes`` alone (one command per
beat, whatever its number of users) and lists its users in ``chat:node:<holder>``.  A process
that dies without a word stops beating; once its entry is CHAT_PRESENCE_TTL old, one live
process claims it (a lease: :data:`scripts.NODES_DEAD`) and removes its field from each of its
users, announcing offline those nobody else holds.  Every script works on one user's keys (or
on ``chat:nodes`` alone), so presence needs no global list of who is online (docs/cluster.md).

A process that was only late finds, on its next beat, that it was claimed (its entry is gone;
so it is when Redis restarted empty): it takes a new holder id and holds its users again under
it (:meth:`Presence.renew`), so a sweeper still removing the old id cannot undo that.  Writes
made under the old id while the renewal ran are removed by a second pass on the next beat.

The per-user socket cap (CHAT_MAX_SOCKETS_PER_USER) counts the same fields: a new socket fits
only if the counts of every process leave room (``scripts.SOCKET_OPEN``).
"""
import logging

from webchat_common import keys

from . import metrics, scripts
from .lua import Lua, Pipeline

log = logging.getLogger(__name__)

#: Users per pipeline (Redis is never busy long for one process); dead processes claimed per sweep.
SLICE = 500
DEAD_PER_SWEEP = 10


class Presence:
    def __init__(self, redis, node_id, cfg):
        self.redis = redis
        self.node_id = node_id
        self.generation = 0
        self.holder = f"{node_id}/0"  # this process's id in chat:nodes and chat:sockets
        self.registered = False       # the holder has an entry in chat:nodes
        self.retired = []             # holder ids this process used before the current one
        self.left_since_renewal = set()
        self.ttl_ms = int(cfg["CHAT_PRESENCE_TTL"] * 1000)
        self.max_sockets = cfg["CHAT_MAX_SOCKETS_PER_USER"]
        self.s_beat = Lua(redis, scripts.NODE_BEAT)
        self.s_dead = Lua(redis, scripts.NODES_DEAD)
        self.s_open = Lua(redis, scripts.SOCKET_OPEN)
        self.s_up = Lua(redis, scripts.PRESENCE_UP)
        self.s_down = Lua(redis, scripts.PRESENCE_DOWN)

    def admit(self, user, mine):
        """Whether one more socket of ``user`` may open, ``mine`` being how many this process
        would then hold; if so, it is counted."""
        if not self.registered:
            self.s_beat(keys=[keys.CHAT_NODES], args=[self.holder, self.ttl_ms, "new"])
            self.registered = True
        pipe = Pipeline(self.redis)
        self.s_open(keys=[keys.chat_sockets(user)],
                    args=[self.holder, mine, self.max_sockets, keys.chat_presence_channel(user), user], client=pipe)
        pipe.sadd(keys.chat_node(self.holder), user)  # (listed with the check: one round trip)
        admitted = bool(pipe.execute()[0])
        if not admitted and mine == 1:  # refused, and no other socket of theirs here: unlisted
            self.redis.srem(keys.chat_node(self.holder), user)
        return admitted

    def closed(self, user, left, client=None):
        """A socket of ``user`` closed here, ``left`` of theirs remaining: their count, or (the
        last one) this process's field, and "offline" when nobody holds them any more."""
        r = client or self.redis
        if left:
            r.hset(keys.chat_sockets(user), self.holder, left)
        else:
            self.s_down(keys=[keys.chat_sockets(user)], args=[self.holder, user, keys.chat_presence_channel(user)],
                        client=client)
            r.srem(keys.chat_node(self.holder), user)
            if self.retired:
                self.left_since_renewal.add(user)

    def beat(self, held, holds):
        """Push this process's entry forward.  ``held()``: (user, sockets here) of every user
        this process holds now, read only when they must be held again (this process was
        claimed as dead, or Redis forgot it) and for the pass after that; ``holds(user)``:
        whether it still holds ``user``."""
        if not self.registered:
            return
        if self.retired:  # the pass after a renewal: writes made under an old id meanwhile
            self.renew(held(), holds, again=True)
        if not self.s_beat(keys=[keys.CHAT_NODES], args=[self.holder, self.ttl_ms, "known"]):
            log.warning("presence: this process was taken for dead (late, or Redis restarted empty); holding its "
                        "users again under a new id")
            metrics.PRESENCE_RENEWED.inc()
            self.retired = (self.retired + [self.holder])[-3:]
            self.generation += 1
            self.holder = f"{self.node_id}/{self.generation}"
            self.s_beat(keys=[keys.CHAT_NODES], args=[self.holder, self.ttl_ms, "new"])
            self.renew(held(), holds)

    def renew(self, held, holds, again=False):
        """Hold ``held`` ((user, sockets here) pairs) under the current holder id, removing the
        retired ones; with ``again``, also remove them from the users who left since, and then
        forget the retired ids.  Returns how many were announced online."""
        announced = 0
        retired = list(self.retired)
        for i in range(0, len(held), SLICE):
            pipe = Pipeline(self.redis)
            part = held[i:i + SLICE]
            for user, n in part:
                self.s_up(keys=[keys.chat_sockets(user)],
                          args=[self.holder, n, keys.chat_presence_channel(user), user, *retired], client=pipe)
            pipe.sadd(keys.chat_node(self.holder), *(user for user, _ in part))
            announced += sum(pipe.execute()[:len(part)])
            for user, _ in part:
                if not holds(user):  # left while this slice was in Redis: its close may have run first
                    self.closed(user, 0)
        if again:
            gone, self.left_since_renewal = self.left_since_renewal, set()
            for old in retired:
                self._sweep(old, list(gone))
                # (an admit made under the old id after its sweep wrote its list again)
                self.redis.delete(keys.chat_node(old))
            self.retired = []
        return announced

    def sweep(self):
        """Claim the processes that died without a word and announce offline (once) those of
        their users nobody else holds.  Returns how many were announced."""
        announced = 0
        for holder in self.s_dead(keys=[keys.CHAT_NODES], args=[DEAD_PER_SWEEP, self.ttl_ms]):
            metrics.PRESENCE_SWEPT.inc()
            users = list(self.redis.sscan_iter(keys.chat_node(holder), count=SLICE))
            announced += self._sweep(holder, users)
            self.redis.delete(keys.chat_node(holder))
            self.redis.zrem(keys.CHAT_NODES, "~" + holder)
        return announced

    def _sweep(self, holder, users):
        announced = 0
        for i in range(0, len(users), SLICE):
            pipe = Pipeline(self.redis)
            for user in users[i:i + SLICE]:
                self.s_down(keys=[keys.chat_sockets(user)], args=[holder, user, keys.chat_presence_channel(user)],
                            client=pipe)
            announced += sum(pipe.execute())
        return announced
