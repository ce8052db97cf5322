"""The process's one pub/sub connection: subscribe, listen, hand every message to a callback.

Rule: a channel counts as heard only once Redis confirmed the subscription
(:meth:`Broker.subscribe` with ``wait``), so whoever reads history after that cannot miss a
message published in between.  The connection is PINGed when idle; when it fails or stops
answering, the listener (and only the listener: see ``transport.PubSub``) makes a new one,
subscribes to every channel still wanted, each with its own kind, and says so through
``on_lost`` / ``on_back``, so the owner can catch its sockets up from history: a message
published while the connection was down was never heard.

Two kinds of channel share the connection.  Chat's own channels (``chat:u:``, ``chat:r:``,
``chat:p:``) are sharded channels: published with SPUBLISH, heard with SSUBSCRIBE (confirmed
by ``ssubscribe``, delivered as ``smessage``).  On a Redis Cluster an SPUBLISH is handled only
by the shard that owns the channel's slot, where a PUBLISH is sent to every node of the
Cluster: fan-out would otherwise cost every shard for every message (docs/cluster.md,
"Fan-out: sharded pub/sub").  The channels the owner names as ``classic`` (``sessions:ended``,
published by every service) are heard with SUBSCRIBE.  On one Redis or a Sentinel's primary
both kinds live on one connection, in the order Redis ran the publishes; on a Cluster the
sharded ones will need a connection per shard (not built).

The broker knows nothing of sockets or users: its owner tells it which channels are wanted,
which of them are classic, and what to do with a message.
"""
import logging
import time

import gevent
import redis
from gevent.event import Event
from gevent.lock import Semaphore
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from webchat_common.redis_store import open_client

from . import metrics
from .transport import PubSub

log = logging.getLogger(__name__)

#: What redis-py calls a published message and a subscription's confirmation, of either kind.
_MESSAGE = ("smessage", "message")
_CONFIRMED = ("ssubscribe", "subscribe")


class Broker:
    """``wanted()``: every channel (bytes) wanted now; ``still_wanted(channel)``: whether one
    is; ``on_message(channel, data)``: a published message (bytes, undecoded); ``on_lost()``:
    the connection was lost (messages published from now until ``on_back`` are not heard);
    ``on_back()``: every wanted channel is heard again; ``classic``: the channels heard with
    SUBSCRIBE (every other one is sharded: SSUBSCRIBE).  The callbacks run in the listener's
    greenlet and must not block (``on_back`` spawns its catch-up)."""

    def __init__(self, cfg, wanted, still_wanted, on_message, on_lost, on_back, classic=()):
        # Raw bytes (frames are forwarded without decoding) and no silent retries, so a
        # dropped connection surfaces here and the owner catches up.
        # With a Sentinel URL each new connection asks the Sentinels for the primary, so the
        # reconnect after a failover subscribes on the new primary (the Sentinels close the
        # pub/sub connections of a primary they demote).
        self.client = open_client(
            cfg["REDIS_URL"], max_connections=4, decode_responses=False,
            socket_connect_timeout=cfg["REDIS_SOCKET_TIMEOUT"], socket_keepalive=True, retry=Retry(NoBackoff(), 0))
        self.interval = cfg["CHAT_PUBSUB_HEALTH_INTERVAL"]
        self.wanted, self.still_wanted = wanted, still_wanted
        self.on_message, self.on_lost, self.on_back = on_message, on_lost, on_back
        self.classic = frozenset(classic)
        self.subscribed = set()  # channels the server confirmed
        self.pending = {}        # channel -> Event set on confirmation
        self.ps = None
        self.lock = Semaphore()  # one writer on the connection at a time
        self._listener = gevent.spawn(self._listen)

    def hears(self, channel):
        return channel in self.subscribed

    def subscribe(self, chans, wait=False, timeout=5.0):
        """Subscribe to ``chans`` (bytes); with ``wait``, return once every one is confirmed
        (RedisError when that takes longer than ``timeout``)."""
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
                with self.lock:
                    self._send(self.ps, new, subscribe=True)
            except (RedisError, OSError):
                pass  # the listener reconnects and subscribes to every wanted channel
        if wait:
            for ev in waits:
                if not ev.wait(timeout):
                    raise RedisError("pub/sub subscription not confirmed")

    def unsubscribe(self, chans):
        """Stop hearing ``chans`` (one still waiting for its confirmation is unsubscribed when
        the confirmation comes, if nobody wants it by then)."""
        chans = [c for c in chans if c not in self.pending]
        if not chans:
            return
        for ch in chans:
            self.subscribed.discard(ch)
        if self.ps is not None:
            try:
                with self.lock:
                    self._send(self.ps, chans, subscribe=False)
            except (RedisError, OSError):
                pass

    def _connect(self):
        ps = PubSub(self.client.connection_pool)
        with self.lock:
            # Published before subscribing: a channel subscribed from now on goes through
            # ``ps`` (after this SUBSCRIBE, thanks to the lock).
            self.ps = ps
            wanted = self.wanted()
            self.subscribed.clear()
            # Every wanted channel is (re)subscribed now; a greenlet already waiting for one
            # keeps its event.  Pending channels no longer wanted (their socket left while the
            # connection was down) are released and forgotten, or a later socket of that user
            # would wait for a SUBSCRIBE never sent.
            old, self.pending = self.pending, {}
            for ch in wanted:
                self.pending[ch] = old.pop(ch, None) or Event()
            for ev in old.values():
                ev.set()
            self._send(ps, wanted, subscribe=True)
        return ps

    def _send(self, ps, chans, subscribe):
        """(UN)SUBSCRIBE the classic channels of ``chans`` and S(UN)SUBSCRIBE the others, on
        ``ps`` (the caller holds the lock)."""
        classic = [c for c in chans if c in self.classic]
        sharded = [c for c in chans if c not in self.classic]
        if sharded:
            (ps.ssubscribe if subscribe else ps.sunsubscribe)(*sharded)
        if classic:
            (ps.subscribe if subscribe else ps.unsubscribe)(*classic)

    def _listen(self):
        first = True
        backoff = 0.1
        lost = False  # on_lost was called and on_back not yet
        while True:
            ps = None
            try:
                ps = self._connect()
                caught_up = first
                for kind, channel, data in self._messages(ps):
                    if kind in _MESSAGE:
                        self.on_message(channel, data)
                    elif kind in _CONFIRMED:
                        self._confirmed(channel)
                        if not caught_up and not self.pending:
                            caught_up, lost, backoff = True, False, 0.1
                            self.on_back()
            except Exception as exc:  # noqa: BLE001 - any failure: reconnect, never die
                log.warning("pub/sub connection lost (%s: %s); reconnecting", exc.__class__.__name__, exc)
                metrics.REDIS_RECONNECTS.inc()
                with self.lock:  # no other greenlet is using the old connection any more
                    self.ps = None
                if not lost:
                    lost = True
                    self.on_lost()
                first = False
                try:
                    if ps is not None:
                        ps.reset()
                except Exception:  # noqa: BLE001
                    pass
                gevent.sleep(backoff)
                backoff = min(backoff * 2, 2.0)

    def _messages(self, ps):
        """(type, channel, data) of each message on ``ps``; raises when the connection fails or
        a health PING goes unanswered."""
        interval = self.interval
        last_seen = time.monotonic()
        pinged = False
        while True:
            msg = ps.get_message(timeout=interval)
            now = time.monotonic()
            if msg is None:
                if now - last_seen > 2 * interval + 1:
                    raise redis.ConnectionError("pub/sub health check unanswered")
                if not pinged or now - last_seen > interval:
                    with self.lock:
                        ps.ping()
                    pinged = True
                continue
            last_seen = now
            pinged = False
            yield msg["type"], msg["channel"], msg["data"]

    def _confirmed(self, channel):
        self.subscribed.add(channel)
        ev = self.pending.pop(channel, None)
        if ev is not None:
            ev.set()
        if not self.still_wanted(channel):  # its last user left while it was pending
            self.unsubscribe([channel])
