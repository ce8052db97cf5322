"""Login throttling per account and per client address, with counters in Redis.

Failures are counted in a fixed window (``LOGIN_THROTTLE_WINDOW``); once either counter reaches
its limit the login is refused with 429 until the window ends.  A success clears the
account's counter.  The gateway's ``limit_req`` is the coarse first line; this is the one
that knows accounts.

Each counter is its own key (the account's and the address's are in different slots of a
Redis Cluster), counted by its own atomic call: a counter never exists without its window's
expiry, whatever fails in between.
"""
from flask import current_app

from webchat_common import get_redis, keys


def _keys(name, ip):
    cfg = current_app.config
    return [
        (keys.login_throttle_user(name), cfg["LOGIN_MAX_FAILURES_PER_USER"]),
        (keys.login_throttle_ip(ip), cfg["LOGIN_MAX_FAILURES_PER_IP"]),
    ]


#: Count one failure in KEYS[1]; the first one starts the window (ARGV[1] s).
_COUNT = """
local n = redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], ARGV[1], 'NX')
return n
"""


def retry_after(name, ip):
    """Seconds until a login may be tried again, or 0 if it may be tried now."""
    pairs = _keys(name, ip)
    pipe = get_redis().pipeline(transaction=False)
    for key, _ in pairs:
        pipe.get(key)
        pipe.ttl(key)
    replies = pipe.execute()
    counts, ttls = replies[0::2], replies[1::2]
    waits = [max(ttl, 1) for (_, limit), n, ttl in zip(pairs, counts, ttls) if n is not None and int(n) >= limit]
    return max(waits, default=0)


def record_failure(name, ip):
    window = current_app.config["LOGIN_THROTTLE_WINDOW"]
    r = get_redis()
    for key, _ in _keys(name, ip):  # a call each: a Cluster's pipelines run no scripts
        r.eval(_COUNT, 1, key, window)


def record_success(name):
    get_redis().delete(keys.login_throttle_user(name))
