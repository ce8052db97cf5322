"""Login throttling per account and per client address, with counters in Redis.

Failures are counted in a fixed window (``LOGIN_THROTTLE_WINDOW``); once either counter reaches
its limit the login is refused with 429 until the window ends.  A success clears the
account's counter.  The gateway's ``limit_req`` is the coarse first line; this is the one
that knows accounts.
"""
from flask import current_app

from webchat_common import get_redis, keys


def _keys(name, ip):
    cfg = current_app.config
    return [
        (keys.login_throttle_user(name), cfg["LOGIN_MAX_FAILURES_PER_USER"]),
        (keys.login_throttle_ip(ip), cfg["LOGIN_MAX_FAILURES_PER_IP"]),
    ]


def retry_after(name, ip):
    """Seconds until a login may be tried again, or 0 if it may be tried now."""
    r = get_redis()
    pairs = _keys(name, ip)
    counts = r.mget([k for k, _ in pairs])
    waits = [max(r.ttl(k), 1) for (k, limit), n in zip(pairs, counts) if n is not None and int(n) >= limit]
    return max(waits, default=0)


def record_failure(name, ip):
    window = current_app.config["LOGIN_THROTTLE_WINDOW"]
    pipe = get_redis().pipeline()
    for key, _ in _keys(name, ip):
        pipe.incr(key)
        pipe.expire(key, window, nx=True)
    pipe.execute()


def record_success(name):
    get_redis().delete(keys.login_throttle_user(name))
