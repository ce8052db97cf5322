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
"""
from dataclasses import dataclass
from urllib.parse import unquote

import redis
from flask import current_app
from redis.sentinel import Sentinel, SentinelConnectionPool

SENTINEL_SCHEME = "redis+sentinel://"
SENTINEL_PORT = 26379
#: Seconds a Sentinel query may take when the caller gave no timeout.
SENTINEL_TIMEOUT = 2.0
_HOST_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_")


@dataclass(frozen=True)
class SentinelURL:
    sentinels: tuple  # ((host, port), ...)
    service: str
    db: int = 0
    username: str = None
    password: str = None


def is_sentinel_url(url):
    return url.lower().startswith(SENTINEL_SCHEME)


def parse_sentinel_url(url):
    """The parts of a ``redis+sentinel://`` URL; ValueError saying what is wrong otherwise."""
    if not is_sentinel_url(url):
        raise ValueError(f"a Sentinel URL starts with {SENTINEL_SCHEME}")
    rest = url[len(SENTINEL_SCHEME):]
    if "?" in rest or "#" in rest:
        raise ValueError("a Sentinel URL takes no query or fragment")
    netloc, slash, path = rest.partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    sentinels = tuple(_host_port(h) for h in hosts.split(","))
    parts = path.split("/") if slash else []
    if not parts or not parts[0] or len(parts) > 2:
        raise ValueError("a Sentinel URL names the monitored service: redis+sentinel://HOST:PORT/SERVICE[/DB]")
    db = 0
    if len(parts) == 2 and parts[1] != "":
        if not parts[1].isascii() or not parts[1].isdigit():
            raise ValueError(f"the database must be a number, not {parts[1]!r}")
        db = int(parts[1])
    return SentinelURL(sentinels, unquote(parts[0]), db, username, password)


def _host_port(item):
    """``HOST[:PORT]`` or ``[IPV6][:PORT]``: a host name or address, a port in 1..65535."""
    if item.startswith("["):
        host, close, port = item[1:].partition("]")
        allowed = _HOST_CHARS | {":"}
        if not close or (port and port[0] != ":"):
            raise ValueError(f"bad Sentinel address {item!r}: [IPV6]:PORT")
        port = port[1:]
    else:
        host, _, port = item.partition(":")
        allowed = _HOST_CHARS
    if not host or not set(host) <= allowed:
        raise ValueError(f"bad Sentinel address {item!r}: HOST[:PORT]")
    if port == "":
        return host, SENTINEL_PORT
    if not port.isascii() or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"bad Sentinel port in {item!r}")
    return host, int(port)


class BlockingSentinelPool(SentinelConnectionPool, redis.BlockingConnectionPool):
    """redis-py's Sentinel pool (a connection asks the Sentinels for the primary when it
    connects; connections to a demoted primary are dropped) with the blocking pool's waiting
    for a free connection."""


def open_client(url, *, max_connections=50, pool_timeout=5.0, **connection):
    """A :class:`redis.Redis` on a blocking pool of ``max_connections`` for ``url`` (one Redis,
    or the primary named by a Sentinel URL); ``connection``: redis-py's connection options
    (``socket_timeout``, ``decode_responses``, ``retry``...)."""
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


def get_redis(app=None) -> redis.Redis:
    return (app or current_app).extensions["redis"]
