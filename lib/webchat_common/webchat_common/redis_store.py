"""The one Redis connection pool of a process, as a Flask extension, and the one way any part
of the system opens a Redis client from ``REDIS_URL``.

Shaped like flaskr's ``get_db()``: the client is made once per app and fetched with
:func:`get_redis`.  The pool is a *blocking* pool of a chosen size: under gevent, hundreds of
greenlets may want Redis at once, and they should wait their turn rather than fail with
"Too many connections".

``REDIS_URL`` takes redis-py's own forms (``redis://``, ``rediss://``, ``unix://``) for one
Redis, or the Sentinel form (docs/configuration.md)::

    redis+sentinel://[[USER]:PASSWORD@]HOST[:PORT][,HOST[:PORT]...]/SERVICE[/DB]

The hosts are Sentinels (port 26379 when none is given); SERVICE is the name they monitor the
primary under.  The one password authenticates to the Redis servers and to the Sentinels.
Every connection asks the Sentinels where the primary is when it connects, so after a
failover a new connection reaches the new primary (redis-py's :class:`redis.sentinel.Sentinel`
does this; :class:`BlockingSentinelPool` only makes its pool a blocking one, like ours).

Or the Cluster form (docs/cluster.md)::

    redis+cluster://[[USER]:PASSWORD@]HOST[:PORT][,HOST[:PORT]...][/]

The hosts are some of the Cluster's nodes (port 6379 when none is given): the client asks them
for the slot map and then talks to every primary itself (redis-py's
:class:`redis.cluster.RedisCluster`, which follows ``MOVED``/``ASK`` and a failover).  A Cluster
has only database 0, so the URL names none (``/0`` is accepted, any other is refused).
Unlike the other forms, a Cluster client reads the slot map when it is made: a process whose
startup nodes all refuse cannot make its client, and does not start.
"""
import functools
from dataclasses import dataclass
from urllib.parse import unquote

import redis
from flask import current_app
from redis.backoff import ExponentialWithJitterBackoff
from redis.cluster import REDIS_ALLOWED_KEYS, ClusterNode, RedisCluster
from redis.exceptions import RedisClusterException, RedisError
from redis.retry import Retry
from redis.sentinel import Sentinel, SentinelConnectionPool

SENTINEL_SCHEME = "redis+sentinel://"
SENTINEL_PORT = 26379
CLUSTER_SCHEME = "redis+cluster://"
CLUSTER_PORT = 6379
#: How often a Cluster client runs a command again after a connection error, a timeout or
#: ``CLUSTERDOWN`` (re-reading the slot map each time), and the pause before each try (doubling
#: from 0.1 s up to 1 s, with jitter): about 1.5 s in all, enough for a slot map that is a moment
#: old, not enough to hold a request through a whole failover (``cluster-node-timeout`` plus the
#: election; the request gets 503 like during a Sentinel failover, and the next ones reach the
#: promoted replica).  ``MOVED`` and ``ASK`` are followed apart from these (up to 16 hops).
CLUSTER_RETRIES = 3
CLUSTER_BACKOFF = (0.1, 1.0)
#: Seconds a Sentinel query may take when the caller gave no timeout.
SENTINEL_TIMEOUT = 2.0
#: What a Redis call raises when Redis cannot answer it: redis-py's errors, and a Cluster
#: client's own exception, which is not one of them (no node reachable, a slot not covered...).
REDIS_ERRORS = (RedisError, RedisClusterException)
_HOST_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_")


@dataclass(frozen=True)
class SentinelURL:
    sentinels: tuple  # ((host, port), ...)
    service: str
    db: int = 0
    username: str = None
    password: str = None


@dataclass(frozen=True)
class ClusterURL:
    nodes: tuple  # ((host, port), ...): where to ask for the slot map
    username: str = None
    password: str = None


def is_sentinel_url(url):
    return url.lower().startswith(SENTINEL_SCHEME)


def is_cluster_url(url):
    return url.lower().startswith(CLUSTER_SCHEME)


def _split(url, scheme, what):
    """``(username, password, hosts, slash, path)`` of a ``scheme`` URL (``what``: its name in
    messages): the authority's user info, its comma-separated hosts, and the path."""
    if not url.lower().startswith(scheme):
        raise ValueError(f"a {what} URL starts with {scheme}")
    rest = url[len(scheme):]
    if "?" in rest or "#" in rest:
        raise ValueError(f"a {what} URL takes no query or fragment")
    netloc, slash, path = rest.partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    return username, password, hosts, slash, path


def parse_sentinel_url(url):
    """The parts of a ``redis+sentinel://`` URL; ValueError saying what is wrong otherwise."""
    username, password, hosts, slash, path = _split(url, SENTINEL_SCHEME, "Sentinel")
    sentinels = tuple(_host_port(h, SENTINEL_PORT, "Sentinel") for h in hosts.split(","))
    parts = path.split("/") if slash else []
    if not parts or not parts[0] or len(parts) > 2:
        raise ValueError("a Sentinel URL names the monitored service: redis+sentinel://HOST:PORT/SERVICE[/DB]")
    db = 0
    if len(parts) == 2 and parts[1] != "":
        if not parts[1].isascii() or not parts[1].isdigit():
            raise ValueError(f"the database must be a number, not {parts[1]!r}")
        db = int(parts[1])
    return SentinelURL(sentinels, unquote(parts[0]), db, username, password)


def parse_cluster_url(url):
    """The parts of a ``redis+cluster://`` URL; ValueError saying what is wrong otherwise."""
    username, password, hosts, _, path = _split(url, CLUSTER_SCHEME, "Cluster")
    nodes = tuple(_host_port(h, CLUSTER_PORT, "Cluster node") for h in hosts.split(","))
    if path not in ("", "0"):
        raise ValueError(f"a Redis Cluster has only database 0: the URL names no other, not /{path}")
    return ClusterURL(nodes, username, password)


def _host_port(item, default_port, what):
    """``HOST[:PORT]`` or ``[IPV6][:PORT]`` (``what``'s address, for messages): a host name or
    address, a port in 1..65535 (``default_port`` when none is given)."""
    if item.startswith("["):
        host, close, port = item[1:].partition("]")
        allowed = _HOST_CHARS | {":"}
        if not close or (port and port[0] != ":"):
            raise ValueError(f"bad {what} address {item!r}: [IPV6]:PORT")
        port = port[1:]
    else:
        host, _, port = item.partition(":")
        allowed = _HOST_CHARS
    if not host or not set(host) <= allowed:
        raise ValueError(f"bad {what} address {item!r}: HOST[:PORT]")
    if port == "":
        return host, default_port
    if not port.isascii() or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"bad {what} port in {item!r}")
    return host, int(port)


class BlockingSentinelPool(SentinelConnectionPool, redis.BlockingConnectionPool):
    """redis-py's Sentinel pool (a connection asks the Sentinels for the primary when it
    connects; connections to a demoted primary are dropped) with the blocking pool's waiting
    for a free connection."""


def open_client(url, *, max_connections=50, pool_timeout=5.0, **connection):
    """A client on blocking pools of ``max_connections`` for ``url``: a :class:`redis.Redis`
    of one Redis or of the primary named by a Sentinel URL, or a :class:`RedisCluster` (a
    pool per node) for a Cluster URL; ``connection``: redis-py's connection options
    (``socket_timeout``, ``decode_responses``, ``health_check_interval``, ``retry``...)."""
    if is_cluster_url(url):
        return _open_cluster(parse_cluster_url(url), max_connections, pool_timeout, connection)
    if not is_sentinel_url(url):
        pool = redis.BlockingConnectionPool.from_url(
            url, max_connections=max_connections, timeout=pool_timeout, **connection)
        return redis.Redis(connection_pool=pool)
    parts = parse_sentinel_url(url)
    auth = {"username": parts.username, "password": parts.password}
    # A Sentinel that hangs must not hang the caller: its queries time out like a connect.
    timeout = connection.get("socket_connect_timeout") or connection.get("socket_timeout") or SENTINEL_TIMEOUT
    sentinel = Sentinel(list(parts.sentinels), sentinel_kwargs={
        **auth, "socket_timeout": timeout, "socket_connect_timeout": timeout})
    return sentinel.master_for(parts.service, connection_pool_class=BlockingSentinelPool,
                               max_connections=max_connections, timeout=pool_timeout,
                               db=parts.db, **auth, **connection)


def _open_cluster(parts, max_connections, pool_timeout, connection):
    """A :class:`RedisCluster` whose every node has a :class:`redis.BlockingConnectionPool` of
    ``max_connections`` (``pool_timeout``).

    redis-py builds a node's pool from ``connection_pool_class`` only for a client made from a
    URL, so the first node is given as one (``redis://host:port``, nothing else in it), the
    others as startup nodes.  It passes a node only the options it knows
    (``redis.cluster.REDIS_ALLOWED_KEYS``: not ``health_check_interval``), so the others are
    bound to the pool class here.  ``retry`` is the client's own (see
    :data:`CLUSTER_RETRIES`): redis-py keeps the node connections at no retry, and runs a
    failed command again itself, after re-reading the slot map.  When a primary dies, its
    commands fail to connect and the map still names it until the Cluster has promoted a
    replica (``cluster-node-timeout``, then an election): they fail after the retries (503),
    and the commands after the promotion reach the replica.

    ``require_full_coverage=False``: the client starts, and serves the slots that have a
    primary, while some slot has none; whether the Cluster then answers for the covered slots is
    the servers' ``cluster-require-full-coverage`` (docs/cluster.md says which we choose)."""
    retry = connection.pop("retry", None) or Retry(ExponentialWithJitterBackoff(*CLUSTER_BACKOFF), CLUSTER_RETRIES)
    passed = {k: v for k, v in connection.items() if k in REDIS_ALLOWED_KEYS}
    bound = {k: v for k, v in connection.items() if k not in REDIS_ALLOWED_KEYS}
    (host, port), *others = parts.nodes
    first = f"[{host}]" if ":" in host else host
    return RedisCluster(
        url=f"redis://{first}:{port}", startup_nodes=[ClusterNode(h, p) for h, p in others],
        connection_pool_class=functools.partial(redis.BlockingConnectionPool, **bound),
        max_connections=max_connections, timeout=pool_timeout, retry=retry, require_full_coverage=False,
        username=parts.username, password=parts.password, **passed)


def make_client(url, max_connections=50, pool_timeout=5.0, socket_timeout=2.0):
    """The app's client: text replies, a health check on connections idle 15 s."""
    return open_client(url, max_connections=max_connections, pool_timeout=pool_timeout,
                       socket_timeout=socket_timeout, socket_connect_timeout=socket_timeout,
                       health_check_interval=15, decode_responses=True)


def init_redis(app):
    app.extensions["redis"] = make_client(
        app.config["REDIS_URL"],
        max_connections=app.config["REDIS_MAX_CONNECTIONS"],
        pool_timeout=app.config["REDIS_POOL_TIMEOUT"],
        socket_timeout=app.config["REDIS_SOCKET_TIMEOUT"],
    )


def get_redis(app=None) -> redis.Redis | RedisCluster:
    return (app or current_app).extensions["redis"]
