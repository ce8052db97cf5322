"""The one Redis connection pool of a process, as a Flask extension.

Shaped like flaskr's ``get_db()``: the client is made once per app and fetched with
:func:`get_redis`.  The pool is a *blocking* pool of a chosen size: under gevent, hundreds of
greenlets may want Redis at once, and they should wait their turn rather than fail with
"Too many connections".
"""
import redis
from flask import current_app


def make_client(url, max_connections=50, pool_timeout=5.0, socket_timeout=2.0):
    pool = redis.BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=pool_timeout,
        socket_timeout=socket_timeout,
        socket_connect_timeout=socket_timeout,
        health_check_interval=15,
        decode_responses=True,
    )
    return redis.Redis(connection_pool=pool)


def init_redis(app):
    app.extensions["redis"] = make_client(
        app.config["REDIS_URL"],
        max_connections=app.config["REDIS_MAX_CONNECTIONS"],
        pool_timeout=app.config["REDIS_POOL_TIMEOUT"],
        socket_timeout=app.config["REDIS_SOCKET_TIMEOUT"],
    )


def get_redis(app=None) -> redis.Redis:
    return (app or current_app).extensions["redis"]
