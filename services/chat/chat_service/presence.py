"""The presence of this process's own users in Redis: who is online, on which processes, with
how many sockets.

Rule: a user is online while some live process holds a socket of theirs.  Each process
records itself in ``chat:conn:<user>`` with an expiry it pushes forward every TTL/3 (the
heartbeat), so a process that dies without a word stops counting within CHAT_PRESENCE_TTL and
the next sweep announces its users offline.  Changes are published on the user's presence
channel by the scripts themselves (see :mod:`.scripts`); who hears them is :mod:`.watch`'s job.

The per-user socket cap (CHAT_MAX_SOCKETS_PER_USER) counts sockets the same way: each process
records how many sockets of a user it holds (``chat:sockets:<user>``), and a new socket fits
only if the counts of the live processes leave room (``scripts.SOCKET_OPEN``).
"""
from webchat_common import keys

from . import scripts

#: Users per heartbeat script call (Redis is never busy long for one process).
SLICE = 500


class Presence:
    def __init__(self, redis, node_id, cfg):
        self.redis = redis
        self.node_id = node_id
        self.ttl_ms = int(cfg["CHAT_PRESENCE_TTL"] * 1000)
        self.max_sockets = cfg["CHAT_MAX_SOCKETS_PER_USER"]
        self.s_open = redis.register_script(scripts.SOCKET_OPEN)
        self.s_up = redis.register_script(scripts.PRESENCE_UP)
        self.s_down = redis.register_script(scripts.PRESENCE_DOWN)
        self.s_sweep = redis.register_script(scripts.PRESENCE_SWEEP)

    def admit(self, user, mine):
        """Whether one more socket of ``user`` may open, ``mine`` being how many this process
        would then hold; if so, it is counted."""
        return bool(self.s_open(keys=[keys.chat_conn(user), keys.chat_sockets(user)],
                                args=[self.node_id, mine, self.max_sockets, self.ttl_ms]))

    def up(self, held, client=None):
        """``held``: (user, sockets here) pairs; their presence, node entry and counts are
        pushed forward, and whoever was offline is announced online."""
        args = [self.node_id, self.ttl_ms, keys.CHAT_CONN_PREFIX, keys.CHAT_PRESENCE_PREFIX, keys.CHAT_SOCKETS_PREFIX]
        for user, n in held:
            args += [user, n]
        return self.s_up(keys=[keys.CHAT_ONLINE], args=args, client=client)

    def closed(self, user, left, client=None):
        """A socket of ``user`` closed here, ``left`` of theirs remaining: their count, or (the
        last one) their node entry, and "offline" when no live process holds them any more."""
        if left:
            (client or self.redis).hset(keys.chat_sockets(user), self.node_id, left)
        else:
            self.s_down(keys=[keys.chat_conn(user), keys.CHAT_ONLINE, keys.chat_sockets(user)],
                        args=[self.node_id, user, keys.CHAT_PRESENCE_PREFIX], client=client)

    def sweep(self):
        """Announce offline (once) the users whose processes all died without a word."""
        self.s_sweep(keys=[keys.CHAT_ONLINE], args=[keys.CHAT_CONN_PREFIX, keys.CHAT_PRESENCE_PREFIX, SLICE])
