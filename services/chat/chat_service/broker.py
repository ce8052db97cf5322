"""The process's pub/sub: a connection per shard (one Redis, a Sentinel's primary, or each
primary of a Redis Cluster); subscribe, listen, hand every message to a callback.

Rule: a channel counts as heard only once Redis confirmed the subscription
(:meth:`Broker.subscribe` with ``wait``), so whoever reads history after that cannot miss a
message published in between.  Each connection is PINGed when idle; when one fails or stops
answering, its listener (and only its listener: see ``transport.PubSub``) makes a new one,
subscribes to every channel still wanted there, each with its own kind, and the owner hears it
through ``on_lost`` / ``on_back``, so it can catch its sockets up from history: a message
published while the connection was down was never heard.

Two kinds of channel.  Chat's own channels (``chat:u:``, ``chat:r:``, ``chat:p:``) are sharded
channels: published with SPUBLISH, heard with SSUBSCRIBE (confirmed by ``ssubscribe``,
delivered as ``smessage``).  On a Redis Cluster an SPUBLISH is handled only by the shard that
owns the channel's slot, where a PUBLISH is sent to every node of the Cluster: fan-out would
otherwise cost every shard for every message (docs/cluster.md, "Fan-out: sharded pub/sub").
The channels the owner names as ``classic`` (``sessions:ended``, published by every service)
are heard with SUBSCRIBE.  On one Redis or a Sentinel's primary there is one shard: both kinds
live on its one connection, in the order Redis ran the publishes.

On a Cluster (a ``redis+cluster://`` URL) there is a connection per primary:

- A sharded channel is subscribed on the connection of the primary that owns its slot, in the
  slot map of a :class:`redis.cluster.RedisCluster` (``keyslot``, ``get_node_from_key``); one
  SSUBSCRIBE or SUNSUBSCRIBE names the channels of one slot only (a Cluster answers
  ``CROSSSLOT`` otherwise).  A classic channel is subscribed on one connection only, the first
  live shard's: a PUBLISH reaches every node of a Cluster, so one subscription hears it once.
  It moves to another live shard when its shard's connection is lost.
- When a slot moves (a reshard, or a failover that demotes a primary), Redis sends
  ``sunsubscribe`` for its channels to their subscribers; when a primary dies, the connection
  drops.  Either way the broker calls ``on_lost``, re-reads the slot map
  (``nodes_manager.initialize()``, again after each failed reconnect while the map still names
  a dead primary, i.e. until the Cluster has promoted a replica), subscribes those channels on
  their new owner, and calls ``on_back`` once every wanted channel is confirmed again.  A
  shard's connection with no channel on it costs no ``on_lost``; a shard whose node serves no
  slot any more and holds no channel is closed.
- ``on_lost`` / ``on_back`` stay process-wide, not per shard: one ``on_lost`` at the first
  loss, one ``on_back`` when no channel of any shard is waiting for its confirmation.  The
  owner (``node.Node``) puts every socket on hold and catches every one up, which is correct
  for any shard's loss but conservative: a shard's loss holds the sockets of the others too,
  for as long as it lasts (a failover: ``cluster-node-timeout`` and an election).  A catch-up
  per shard would need the owner to hold and catch up per channel.

Why not redis-py's own ``RedisCluster.pubsub()`` (``ClusterPubSub``, redis-py 8): its per-node
connections are plain ``redis.client.PubSub`` (``_get_node_pubsub``), which reconnect and
resubscribe by themselves in whichever greenlet met the error, and tell nobody that messages
were missed; it reconciles moved channels on a worker thread, writing to connections another
greenlet reads, and only when its own client's slot map is refreshed (by a ``MOVED`` one of
its commands met: the broker runs none); ``get_sharded_message`` waits on each node in turn
with the whole timeout; and, as a plain PubSub, it keeps a channel whose ``sunsubscribe`` it
did not ask for among its subscriptions.  Nor are the Cluster client's node pools used for
pub/sub: re-reading the slot map marks the in-use connections of the node it asked for
reconnection (``update_active_connections_for_reconnect``), which would drop a pub/sub
connection.  So each shard has a connection pool of its own, to the primary's address, and
the Cluster client only keeps the slot map.

The broker knows nothing of sockets or users: its owner tells it which channels are wanted,
which of them are classic, and what to do with a message.
"""
import collections
import logging
import time

import gevent
import redis
from gevent.event import Event
from gevent.lock import Semaphore
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from webchat_common.redis_store import REDIS_ERRORS, is_cluster_url, open_client, parse_cluster_url

from . import metrics
from .transport import PubSub

log = logging.getLogger(__name__)

#: What redis-py calls a published message and a subscription's confirmation, of either kind.
_MESSAGE = ("smessage", "message")
_CONFIRMED = ("ssubscribe", "subscribe")


class _Shard:
    """One pub/sub connection and the channels it carries (confirmed or waiting)."""

    def __init__(self, name, pool):
        self.name, self.pool = name, pool
        self.ps = None           # the live PubSub, None while (re)connecting
        self.lock = Semaphore()  # one writer on the connection at a time
        self.chans = set()       # channels assigned here
        self.asked = collections.Counter()  # SUNSUBSCRIBE replies still expected, per channel
        self.retired = False
        self.listener = None


class Broker:
    """``wanted()``: every channel (bytes) wanted now; ``still_wanted(channel)``: whether one
    is; ``on_message(channel, data)``: a published message (bytes, undecoded); ``on_lost()``:
    a connection was lost (messages published from now until ``on_back`` may not be heard);
    ``on_back()``: every wanted channel is heard again; ``classic``: the channels heard with
    SUBSCRIBE (every other one is sharded: SSUBSCRIBE).  The callbacks run in a listener's
    greenlet and must not block (``on_back`` spawns its catch-up)."""

    def __init__(self, cfg, wanted, still_wanted, on_message, on_lost, on_back, classic=()):
        # Raw bytes (frames are forwarded without decoding) and no silent retries, so a
        # dropped connection surfaces here and the owner catches up.
        # With a Sentinel URL each new connection asks the Sentinels for the primary, so the
        # reconnect after a failover subscribes on the new primary (the Sentinels close the
        # pub/sub connections of a primary they demote).
        url = cfg["REDIS_URL"]
        timeout = cfg["REDIS_SOCKET_TIMEOUT"]
        options = {"decode_responses": False, "socket_connect_timeout": timeout, "socket_keepalive": True,
                   "retry": Retry(NoBackoff(), 0)}
        self.interval = cfg["CHAT_PUBSUB_HEALTH_INTERVAL"]
        self.wanted, self.still_wanted = wanted, still_wanted
        self.on_message, self.on_lost, self.on_back = on_message, on_lost, on_back
        self.classic = frozenset(classic)
        self.subscribed = set()  # channels the server confirmed
        self.pending = {}        # channel -> Event set on confirmation
        self.where = {}          # channel (subscribed or pending) -> its _Shard
        self.lost = False        # on_lost was called and on_back not yet
        self.shards = {}
        if is_cluster_url(url):
            parts = parse_cluster_url(url)
            # The slot map only: a socket timeout so that a node that hangs cannot hang a refresh.
            self.cluster = open_client(url, max_connections=2, socket_timeout=timeout, **options)
            self._node_options = {"username": parts.username, "password": parts.password, **options}
            for node in self.cluster.get_primaries():
                self._shard(node)
        else:
            self.cluster = None
            self.client = open_client(url, max_connections=4, **options)
            self._add(_Shard("redis", self.client.connection_pool))

    # ---- the owner's calls ----------------------------------------------------------------

    def hears(self, channel):
        return channel in self.subscribed

    def subscribe(self, chans, wait=False, timeout=5.0):
        """Subscribe to ``chans`` (bytes); with ``wait``, return once every one is confirmed
        (RedisError when that takes longer than ``timeout``, or when a Cluster serves the
        slot of one of them nowhere)."""
        waits, new, unserved = [], collections.defaultdict(list), []
        for ch in chans:
            if ch in self.subscribed:
                continue
            ev = self.pending.get(ch)
            if ev is None:
                shard = self._route(ch)
                if shard is None and self._refresh():
                    shard = self._route(ch)
                if shard is None:
                    unserved.append(ch)
                    continue
                ev = self.pending[ch] = Event()
                self._assign(ch, shard)
                new[shard].append(ch)
            waits.append(ev)
        self._send_live(new, subscribe=True)
        if wait:
            if unserved:
                raise RedisError(f"no Redis Cluster node serves the slot of {unserved[0]!r}")
            for ev in waits:
                if not ev.wait(timeout):
                    raise RedisError("pub/sub subscription not confirmed")

    def unsubscribe(self, chans):
        """Stop hearing ``chans`` (one still waiting for its confirmation is unsubscribed when
        the confirmation comes, if nobody wants it by then)."""
        gone = collections.defaultdict(list)
        for ch in chans:
            if ch in self.pending:
                continue
            self.subscribed.discard(ch)
            shard = self.where.pop(ch, None)
            if shard is not None:
                shard.chans.discard(ch)
                gone[shard].append(ch)
        self._send_live(gone, subscribe=False)

    # ---- shards and routing ---------------------------------------------------------------

    def _add(self, shard):
        self.shards[shard.name] = shard
        shard.listener = gevent.spawn(self._listen, shard)
        return shard

    def _shard(self, node):
        """The shard of a Cluster node (a primary), made on first use."""
        shard = self.shards.get(node.name)
        if shard is None:
            pool = redis.ConnectionPool(host=node.host, port=node.port, **self._node_options)
            shard = self._add(_Shard(node.name, pool))
        return shard

    def _route(self, ch):
        """The shard that should carry ``ch`` now (None when no primary serves its slot)."""
        if self.cluster is None:
            return self.shards["redis"]
        if ch in self.classic:
            return self._home()
        try:
            return self._shard(self.cluster.get_node_from_key(ch))
        except REDIS_ERRORS:  # SlotNotCoveredError is one
            return None

    def _home(self, avoid=None):
        """Where a classic channel goes: the first live shard (by name), else the first."""
        shards = [s for _, s in sorted(self.shards.items()) if s is not avoid]
        live = [s for s in shards if s.ps is not None]
        return (live or shards or [None])[0]

    def _assign(self, ch, shard):
        old = self.where.get(ch)
        if old is not None:
            old.chans.discard(ch)
        self.where[ch] = shard
        shard.chans.add(ch)

    def _forget(self, ch):
        shard = self.where.pop(ch, None)
        if shard is not None:
            shard.chans.discard(ch)
        self.subscribed.discard(ch)
        ev = self.pending.pop(ch, None)
        if ev is not None:
            ev.set()

    def _refresh(self):
        """Re-read a Cluster's slot map; False when no node answered."""
        if self.cluster is None:
            return False
        try:
            self.cluster.nodes_manager.initialize()
            return True
        except (*REDIS_ERRORS, OSError) as exc:
            log.warning("pub/sub: could not re-read the Cluster's slot map (%s: %s)", exc.__class__.__name__, exc)
            return False

    def _reroute(self):
        """After the slot map changed: every channel whose slot another primary serves now
        moves there (``on_lost`` first, if it was heard), a classic channel on a dead
        connection moves to a live one, and a shard whose node serves nothing and that holds
        no channel is closed."""
        moves = collections.defaultdict(list)
        for ch, shard in list(self.where.items()):
            if ch in self.classic:
                new = shard if shard.ps is not None else self._home(avoid=shard)
            else:
                new = self._route(ch)
            if new is None or new is shard:
                continue
            self._lose_channels([ch])
            self._assign(ch, new)
            moves[new].append(ch)
        self._send_live(moves, subscribe=True)
        primaries = {node.name for node in self.cluster.get_primaries()}
        for name, shard in list(self.shards.items()):
            if name not in primaries and not shard.chans:
                shard.retired = True
                del self.shards[name]
                if shard.listener is not gevent.getcurrent():
                    shard.listener.kill(block=False)

    def _lose_channels(self, chans):
        """``chans`` are not heard from now on: ``on_lost`` (once), and each waits for a new
        confirmation."""
        if chans and not self.lost:
            self.lost = True
            self.on_lost()
        for ch in chans:
            self.subscribed.discard(ch)
            self.pending.setdefault(ch, Event())

    def _check_back(self):
        if self.lost and not self.pending:
            self.lost = False
            self.on_back()

    # ---- one shard's connection -----------------------------------------------------------

    def _connect(self, shard):
        ps = PubSub(shard.pool)
        with shard.lock:
            # Published before subscribing: a channel subscribed from now on goes through
            # ``ps`` (after this SUBSCRIBE, thanks to the lock).
            shard.ps = ps
            shard.asked.clear()
            wanted = set(self.wanted())
            # Channels of this shard no longer wanted (their socket left while the connection
            # was down) are released and forgotten, or a later socket of that user would wait
            # for a SUBSCRIBE never sent; a greenlet already waiting for one keeps its event.
            for ch in shard.chans - wanted:
                self._forget(ch)
            for ch in wanted:
                if ch not in self.where and self._route(ch) is shard:
                    self._assign(ch, shard)
            chans = list(shard.chans)
            for ch in chans:
                self.subscribed.discard(ch)
                self.pending.setdefault(ch, Event())
            if chans:
                self._send(shard, chans, subscribe=True)
            else:
                ps.ping()  # a connection to watch, and one that fails now if Redis is down
        return ps

    def _send_live(self, groups, subscribe):
        """(UN)SUBSCRIBE each shard's channels of ``groups`` (shard -> channels) on its
        connection, if it has one now.  A shard that has none, or whose connection fails, is
        its listener's: it reconnects and subscribes every channel of its shard."""
        for shard, chans in groups.items():
            try:
                with shard.lock:
                    if shard.ps is not None:
                        self._send(shard, chans, subscribe)
            except (RedisError, OSError):
                pass

    def _send(self, shard, chans, subscribe):
        """(UN)SUBSCRIBE the classic channels of ``chans`` and S(UN)SUBSCRIBE the others, on
        the shard's connection (the caller holds its lock); on a Cluster, one command per
        slot."""
        ps = shard.ps
        classic = [c for c in chans if c in self.classic]
        sharded = [c for c in chans if c not in self.classic]
        if sharded:
            if self.cluster is None:
                groups = [sharded]
            else:
                by_slot = collections.defaultdict(list)
                for ch in sharded:
                    by_slot[self.cluster.keyslot(ch)].append(ch)
                groups = by_slot.values()
            for group in groups:
                if subscribe:
                    ps.ssubscribe(*group)
                else:
                    shard.asked.update(group)
                    ps.sunsubscribe(*group)
        if classic:
            (ps.subscribe if subscribe else ps.unsubscribe)(*classic)

    def _listen(self, shard):
        backoff = 0.1
        ps = None
        try:
            while not shard.retired:
                try:
                    ps = self._connect(shard)
                    self._check_back()  # nothing to wait for on this shard
                    for kind, channel, data in self._messages(shard, ps):
                        backoff = 0.1
                        if kind in _MESSAGE:
                            self.on_message(channel, data)
                        elif kind in _CONFIRMED:
                            self._confirmed(shard, channel)
                            self._check_back()
                        elif kind == "sunsubscribe":
                            self._sunsubscribed(shard, channel)
                except Exception as exc:  # noqa: BLE001 - any failure: reconnect, never die
                    log.warning("pub/sub connection lost (%s: %s; %s); reconnecting",
                                exc.__class__.__name__, exc, shard.name)
                    metrics.REDIS_RECONNECTS.inc()
                    with shard.lock:  # no other greenlet is using the old connection any more
                        shard.ps = None
                    self._reset(ps)
                    ps = None
                    self._recover(shard, backoff)
                    backoff = min(backoff * 2, 2.0)
        finally:
            self._reset(ps)

    def _recover(self, shard, backoff):
        """After ``shard``'s connection was lost: its channels wait for a new confirmation; on a
        Cluster a classic channel moves to a live shard at once, and after ``backoff`` the slot
        map is read again and every channel goes where it is served now."""
        try:
            self._lose_channels(list(shard.chans))
            if self.cluster is not None:
                self._reroute()
        except Exception:  # noqa: BLE001 - the listener must live on
            log.exception("pub/sub: recovering %s failed", shard.name)
        gevent.sleep(backoff)
        try:
            if self.cluster is not None and self._refresh():
                self._reroute()
        except Exception:  # noqa: BLE001
            log.exception("pub/sub: re-routing after %s's loss failed", shard.name)

    @staticmethod
    def _reset(ps):
        try:
            if ps is not None:
                ps.reset()
        except Exception:  # noqa: BLE001
            pass

    def _messages(self, shard, ps):
        """(type, channel, data) of each message on ``ps``; raises when the connection fails or
        a health PING goes unanswered.  Read with ``parse_response``, not ``get_message``,
        which reads nothing while the connection has no subscription (a shard of a Cluster
        often has none, and its PINGs must still be answered)."""
        interval = self.interval
        last_seen = time.monotonic()
        pinged = False
        while True:
            msg = ps.handle_message(ps.parse_response(block=False, timeout=interval))
            now = time.monotonic()
            if msg is None:
                if now - last_seen > 2 * interval + 1:
                    raise redis.ConnectionError("pub/sub health check unanswered")
                if not pinged or now - last_seen > interval:
                    with shard.lock:
                        ps.ping()
                    pinged = True
                continue
            last_seen = now
            pinged = False
            yield msg["type"], msg["channel"], msg["data"]

    def _confirmed(self, shard, channel):
        if self.where.get(channel) is not shard:
            return  # the confirmation of a shard the channel has left since
        self.subscribed.add(channel)
        ev = self.pending.pop(channel, None)
        if ev is not None:
            ev.set()
        if not self.still_wanted(channel):  # its last user left while it was pending
            self.unsubscribe([channel])

    def _sunsubscribed(self, shard, channel):
        """A ``sunsubscribe``: the reply to ours, or Redis dropping a channel whose slot this
        node no longer serves (a slot moved, or the node was demoted)."""
        if shard.asked[channel] > 0:
            shard.asked[channel] -= 1
            if not shard.asked[channel]:
                del shard.asked[channel]
            return
        if self.where.get(channel) is not shard:
            return  # moved already (with the other channels of its slot)
        log.info("pub/sub: Redis dropped %r on %s (its slot moved); resubscribing", channel, shard.name)
        self._lose_channels([channel])
        if self._route(channel) is shard:
            self._refresh()
        if self._route(channel) is shard:
            # The map still says this node: re-read it after a reconnect of the shard.
            raise redis.ConnectionError(f"slot of {channel!r} left {shard.name}, the slot map says otherwise")
        self._reroute()
