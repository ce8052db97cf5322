"""What both baselines share: reading the session behind a cookie, message ids."""
import itertools
import json
import os
import time

import redis

from webchat_common.config import Config
from webchat_common.sessions import session_key

COOKIE = Config.SESSION_COOKIE_NAME
_counter = itertools.count(1)
NODE = f"{os.uname().nodename}:{os.getpid()}"


def redis_client():
    url = os.environ.get("REDIS_URL")
    if not url:
        return None
    pool = redis.BlockingConnectionPool.from_url(url, max_connections=int(os.environ.get("REDIS_MAX_CONNECTIONS", "50")),
                                                 timeout=5, decode_responses=True)
    return redis.Redis(connection_pool=pool)


def session_user(r, environ):
    """The user of the session whose id is in the cookie, or None (the session contract of
    ``webchat_common.sessions``, read-only)."""
    cookie = environ.get("HTTP_COOKIE", "")
    sid = None
    for part in cookie.split(";"):
        name, _, value = part.strip().partition("=")
        if name == COOKIE:
            sid = value
    if not sid or r is None:
        return None
    raw = r.get(session_key(sid))
    if not raw:
        return None
    try:
        user = json.loads(raw)["data"]["user"]
    except (ValueError, KeyError, TypeError):
        return None
    return user if isinstance(user, str) else None


def origin_ok(environ):
    origin = environ.get("HTTP_ORIGIN")
    return origin is None or origin == "http://" + environ.get("HTTP_HOST", "")


def message(sender, receiver, data):
    return {"type": "message", "id": f"{NODE}-{next(_counter)}", "ts": time.time(),
            "sender": sender, "receiver": receiver, "data": data}
