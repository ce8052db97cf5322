"""Who hears whose presence: the ``watch`` frame, its ``watching`` answer and the ``presence``
frames that follow.

Rule: a socket is sent the presence of exactly the users it watches, and a process hears only
the presence channels (``chat:p:<user>``) of users its own sockets watch: nothing is sent to
every socket, so a process filling up with sockets does no O(sockets) work per connect.

A user is watched once per process, whatever the number of local watchers: their state is
loaded once (:meth:`Watch._loader`: every watch that arrived during a load is one SUBSCRIBE,
confirmed *before* one pipelined read, so no change falls between the read and the
subscription) and then kept up to date by the changes heard; a change heard while a read is in
flight wins over the read (a sequence number orders them).  Changes are collected for
CHAT_PRESENCE_BATCH seconds and each watcher gets its share as one write.  After a pub/sub
reconnect, and every CHAT_SESSION_CHECK_INTERVAL as a safety net, every watched user is read
again (:meth:`Watch.refresh`) and what differs is pushed.
"""
import json
import logging

import gevent
from gevent.event import Event
from redis.exceptions import RedisError

from webchat_common import keys

from . import metrics
from .wire import channel_owner, error_frame, text_frame

log = logging.getLogger(__name__)

_PRESENCE_PREFIX = keys.CHAT_PRESENCE_PREFIX.encode()


def _channel(user):
    return keys.chat_presence_channel(user).encode()


class Watch:
    def __init__(self, redis, accounts, broker, batch_seconds):
        self.redis = redis
        self.accounts = accounts
        self.broker = broker
        self.batch_seconds = batch_seconds
        self.watchers = {}       # lower(name) -> set of sockets watching that user
        self.watched = {}        # socket -> tuple of the lower-cased names it watches
        self.presence = {}       # lower(name) -> (name, online, seq) of each watched user, once known
        self.seq = 0             # presence changes heard so far (orders them against reads)
        self.pending = set()     # watched users whose change waits for the next batch
        self.flush_scheduled = False
        self.loads = []          # (socket, {lower: name as sent}, cid) watches waiting for the loader
        self.loads_ready = Event()
        self._loader_greenlet = gevent.spawn(self._loader)

    # ---- what the process hears ------------------------------------------------------------

    def channels(self):
        return [_channel(u) for u in self.watchers]

    def wants(self, user):
        return user in self.watchers

    def watched_by(self, conn):
        return self.watched.get(conn, ())

    # ---- a socket's list ---------------------------------------------------------------------

    def set(self, conn, given, cid):
        """Make ``conn`` watch exactly the users of ``given`` (lower-cased name -> the name as
        the client sent it).  Never blocks: the ``watching`` answer is queued to the socket by
        the loader, in the order the watches came."""
        old = self.watched_by(conn)
        self.drop(conn, [u for u in old if u not in given])
        keep = set(old)
        new = tuple(u for u in given if u not in keep)
        for u in new:
            self.watchers.setdefault(u, set()).add(conn)
        self.watched[conn] = self.watched_by(conn) + new
        self.loads.append((conn, given, cid))
        self.loads_ready.set()

    def drop(self, conn, users):
        """``conn`` stops watching ``users`` (and the process stops hearing those nobody here
        watches any more)."""
        if not users:
            return
        drop = []
        for u in users:
            watchers = self.watchers.get(u)
            if watchers is None:
                continue
            watchers.discard(conn)
            if not watchers:
                del self.watchers[u]
                self.presence.pop(u, None)
                self.pending.discard(u)
                drop.append(_channel(u))
        self.broker.unsubscribe(drop)
        gone = set(users)
        if conn in self.watched:
            self.watched[conn] = tuple(u for u in self.watched[conn] if u not in gone)

    def forget(self, conn):
        """A socket closed: it watches nobody any more."""
        self.drop(conn, self.watched_by(conn))
        self.watched.pop(conn, None)

    # ---- loading state -----------------------------------------------------------------------

    def _loader(self):
        while True:
            self.loads_ready.wait()
            self.loads_ready.clear()
            while self.loads:
                batch, self.loads = self.loads, []
                users = list(dict.fromkeys(u for _, given, _ in batch for u in given
                                           if u in self.watchers and u not in self.presence))
                try:
                    self.broker.subscribe([_channel(u) for u in users], wait=True)
                    unknown, _ = self._read(users)
                    failed = False
                except Exception as exc:  # noqa: BLE001 - every watcher in the batch is told
                    if not isinstance(exc, RedisError):
                        log.exception("presence load failed")
                    unknown, failed = (), True
                unknown = set(unknown)
                for conn, given, cid in batch:
                    try:
                        if failed:
                            self._failed(conn, given, cid)
                        else:
                            self._answer(conn, given, cid, unknown)
                    except Exception:  # noqa: BLE001 - one socket's answer never stops the loader
                        log.exception("could not answer a watch")

    def _answer(self, conn, given, cid, unknown):
        if conn not in self.watched:  # closed meanwhile
            return
        gone = [u for u in given if u in unknown]
        self.drop(conn, gone)
        watching = set(self.watched_by(conn))
        frame = {"type": "watching", "online": [], "offline": [], "unknown": [given[u] for u in gone], "cid": cid}
        for u in given:
            state = self.presence.get(u)
            if state is not None and u in watching:  # (a later watch may have dropped it)
                frame["online" if state[1] else "offline"].append(state[0])
        conn.push(None, text_frame(frame))

    def _failed(self, conn, given, cid):
        """Redis failed during the load: the socket stops watching what could not be loaded
        and is told; it may send its ``watch`` again."""
        if conn not in self.watched:
            return
        self.drop(conn, [u for u in given if u not in self.presence])
        metrics.FRAMES_REFUSED.labels(reason="unavailable").inc()
        conn.push(None, error_frame("unavailable", "the chat store is unavailable: presence not loaded, send watch again",
                                    cid))

    def _read(self, users):
        """Read the state of watched ``users`` from Redis into ``self.presence``, except where a
        change heard since the read began is newer.  Returns (names nobody registered, users
        whose known state the read changed)."""
        if not users:
            return [], []
        seq = self.seq
        names = self.accounts.names(users)
        unknown = [u for u in users if names[u] is None]
        known = [names[u] for u in users if names[u] is not None]
        states = []
        for i in range(0, len(known), 500):
            pipe = self.redis.pipeline(transaction=False)
            for name in known[i:i + 500]:
                pipe.exists(keys.chat_sockets(name))
            states += pipe.execute()
        changed = []
        for name, state in zip(known, states):
            u = name.lower()
            cur = self.presence.get(u)
            # Only users this process hears: a state nobody keeps up to date is never stored.
            if u in self.watchers and self.broker.hears(_channel(u)) and (cur is None or cur[2] <= seq):
                online = bool(int(state))
                if cur is not None and cur[1] != online:
                    changed.append(u)
                self.presence[u] = (name, online, seq)
        return unknown, changed

    def refresh(self):
        """Re-read every watched user's state and push what differs from the state known here."""
        _, changed = self._read(list(self.presence))
        for u in changed:
            self._queue(u)

    # ---- changes heard -----------------------------------------------------------------------

    def is_presence(self, channel):
        return channel.startswith(_PRESENCE_PREFIX)

    def heard(self, channel, data):
        """A presence change published on ``channel``."""
        user = channel_owner(channel, _PRESENCE_PREFIX)
        if user not in self.watchers:
            return
        try:
            change = json.loads(data)
            name, online = change["user"], bool(change["online"])
        except (ValueError, KeyError, TypeError):
            return
        self.seq += 1
        cur = self.presence.get(user)
        self.presence[user] = (name, online, self.seq)
        # Unknown until now: the watchers still reading it take it with their answer.
        if cur is not None and cur[1] != online:
            self._queue(user)

    def _queue(self, user):
        self.pending.add(user)
        if not self.flush_scheduled:
            self.flush_scheduled = True
            gevent.spawn_later(self.batch_seconds, self._flush)

    def _flush(self):
        self.flush_scheduled = False
        changes, self.pending = self.pending, set()
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
                gevent.sleep(0)  # let sockets write between slices on a big process
