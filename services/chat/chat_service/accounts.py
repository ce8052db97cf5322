"""Registered names: who exists, and how they wrote their name.

Rule: chat looks accounts up here, never inside its Lua scripts, so that each script works on
chat's own keys only (on a Redis Cluster a script may touch one hash slot, and an account,
``user:<name>``, is in a slot of its own: docs/cluster.md).  An account, once registered, is
never renamed or deleted (auth has no such operation), so a name found is kept for the life of
the process; a name not found is asked again next time (it may be registered a moment later).
"""
from webchat_common import keys

#: Names kept at most; when full, the cache starts over (every entry is one HGET to refill).
CACHED = 100_000


class Accounts:
    def __init__(self, redis):
        self.redis = redis
        self.known = {}  # lower(name) -> the name as registered

    def name(self, user):
        """The registered spelling of ``user``, or None when nobody registered it."""
        return self.names([user])[user.lower()]

    def names(self, users):
        """{lower(user): registered name or None} for ``users``, asking Redis (one pipelined
        round trip) only for the names not known here."""
        lowered = {u.lower() for u in users}
        missing = [u for u in lowered if u not in self.known]
        if missing:
            pipe = self.redis.pipeline(transaction=False)
            for u in missing:
                pipe.hget(keys.user(u), "name")
            found = dict(zip(missing, pipe.execute()))
            if len(self.known) + len(missing) > CACHED:
                self.known.clear()
            for u, name in found.items():
                if name is not None:
                    self.known[u] = name
        return {u: self.known.get(u) for u in lowered}
