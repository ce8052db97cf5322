"""The presence of this process's own users in Redis: who is online, on which processes, with
how many sockets.

Rule: a user is online while some live process holds a socket of theirs.  Each process
records itself in ``chat:conn:<user>`` with an expiry it pushes forward every TTL/3 (the
heartbeat), and itself in ``chat:nodes`` with the names of its users in ``chat:node:<id>``.
A process that dies without a word stops counting within CHAT_PRESENCE_TTL; the next process
to sweep claims it from ``chat:nodes`` (one sweeper per dead process) and goes through its
users, announcing offline those no live process holds.  Every script works on one user's keys
(or on ``chat:nodes`` alone), so presence needs no global list of who is online.  Changes are
published on the user's presence channel by the scripts themselves (see :mod:`.scripts`); who
hears them is :mod:`.watch`'s job.

The per-user socket cap (CHAT_MAX_SOCKETS_PER_USER) counts sockets the same way: each process
records how many sockets of a user it holds (``chat:sockets:<user>``), and a new socket fits
only if the counts of the live processes leave room (``scripts.SOCKET_OPEN``).
"""
from webchat_common import keys

from . import scripts

#: Users per pipeline (Redis is never busy long for one process); dead processes claimed per sweep.
SLICE = 500
DEAD_PER_SWEEP = 10


class Presence:
    def __init__(self, redis, node_id, cfg):
        self.redis = redis
        self.node_id = node_id
        self.ttl_ms = int(cfg["CHAT_PRESENCE_TTL"] * 1000)
        self.max_sockets = cfg["CHAT_MAX_SOCKETS_PER_USER"]
        self.s_open = redis.register_script(scripts.SOCKET_OPEN)
        self.s_up = redis.register_script(scripts.PRESENCE_UP)
        self.s_beat = redis.register_script(scripts.NODE_BEAT)
        self.s_dead = redis.register_script(scripts.NODES_DEAD)
        self.s_down = redis.register_script(scripts.PRESENCE_DOWN)
        self.s_sweep = redis.register_script(scripts.PRESENCE_SWEEP)

    def admit(self, user, mine):
        """Whether one more socket of ``user`` may open, ``mine`` being how many this process
        would then hold; if so, it is counted."""
        return bool(self.s_open(keys=[keys.chat_conn(user), keys.chat_sockets(user)],
                                args=[self.node_id, mine, self.max_sockets, self.ttl_ms,
                                      keys.chat_presence_channel(user), user]))

    def up(self, held, client=None):
        """``held``: (user, sockets here) pairs; their presence, node entry and counts are
        pushed forward, and whoever was offline is announced online.  On ``client`` (a
        pipeline) when given; else run now, returning how many were announced."""
        pipe = client if client is not None else self.redis.pipeline(transaction=False)
        node_users = keys.chat_node(self.node_id)
        for user, n in held:
            self.s_up(keys=[keys.chat_conn(user), keys.chat_sockets(user)],
                      args=[self.node_id, self.ttl_ms, keys.chat_presence_channel(user), user, n], client=pipe)
        if held:
            pipe.sadd(node_users, *(user for user, _ in held))
        # Longer than the node's own entry, so a sweeper finds the names of a dead node's users.
        pipe.pexpire(node_users, 3 * self.ttl_ms)
        self.s_beat(keys=[keys.CHAT_NODES], args=[self.node_id, self.ttl_ms], client=pipe)
        if client is None:
            return sum(pipe.execute()[:len(held)])

    def closed(self, user, left, client=None):
        """A socket of ``user`` closed here, ``left`` of theirs remaining: their count, or (the
        last one) their node entry, and "offline" when no live process holds them any more."""
        r = client or self.redis
        if left:
            r.hset(keys.chat_sockets(user), self.node_id, left)
        else:
            self.s_down(keys=[keys.chat_conn(user), keys.chat_sockets(user)],
                        args=[self.node_id, user, keys.chat_presence_channel(user)], client=client)
            r.srem(keys.chat_node(self.node_id), user)

    def sweep(self):
        """Claim the processes that died without a word and announce offline (once) those of
        their users no live process holds.  Returns how many were announced."""
        announced = 0
        for node in self.s_dead(keys=[keys.CHAT_NODES], args=[DEAD_PER_SWEEP]):
            node_users = keys.chat_node(node.decode() if isinstance(node, bytes) else node)
            users = list(self.redis.sscan_iter(node_users, count=SLICE))
            for i in range(0, len(users), SLICE):
                pipe = self.redis.pipeline(transaction=False)
                for user in users[i:i + SLICE]:
                    self.s_sweep(keys=[keys.chat_conn(user)], args=[user, keys.chat_presence_channel(user)], client=pipe)
                announced += sum(pipe.execute())
            self.redis.delete(node_users)
        return announced
