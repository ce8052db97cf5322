"""Auth's own metrics (the shared HTTP metrics come from ``webchat_common.metrics``).

- ``webchat_auth_logins_total{result="ok"|"failed"}``: login attempts that reached the password
  check (a form with missing fields is not an attempt);
- ``webchat_auth_login_throttled_total``: logins refused with 429 by the per-account/per-address
  throttle (the gateway's own ``limit_req`` 429s never reach auth; see its access log);
- ``webchat_auth_active_sessions``: logged-in sessions that still exist in Redis.

How ``active sessions`` stays cheap.  Counting ``session:*`` keys means a SCAN of the whole
keyspace (conversations, users, ...) on every scrape.  Instead auth keeps a sorted set
``sessions:active``: member = the session key's hash (the ``<hash>`` of ``session:<hash>``,
never the cookie), score = when that session would expire if unused (ms since the epoch).
Login and registration add, logout and re-login remove.  A scrape looks only at the
members whose predicted expiry has passed (at most ``CHECK_LIMIT``; their keys are named by
the session contract): a member whose key is gone is removed; one still alive (it was used
since, which slides its TTL) gets its real expiry as the new score, if it is still a member
(``ZADD XX``: a logout meanwhile is not undone).  So each session is looked at about once per
idle timeout, and the count is exact to within one scrape interval; the cost is one ZCARD plus
the sessions that came due since the last scrape.  Sessions made by other paths than the login form (none
today) would not be counted.

The set and the sessions are in different slots of a Redis Cluster (docs/cluster.md), so
nothing here is a transaction across them: a session is stored first and joins the set after
(:func:`_after_save`), and a scrape reads the due sessions' TTLs, then updates the set.  A
failure in between only skews the count: a session missing from the set is not counted (it
works all the same), and a stale member is re-checked at the next scrape.
"""
import logging
import time

from flask import g, request_finished, session
from prometheus_client import Counter
from prometheus_client.core import GaugeMetricFamily

from webchat_common import get_redis, keys
from webchat_common.metrics import register_collector
from webchat_common.redis_store import REDIS_ERRORS
from webchat_common.sessions import key_of_hash

log = logging.getLogger(__name__)
LOGINS = Counter("webchat_auth_logins_total", "Login attempts that reached the password check, by result.",
                 ["result"])
LOGINS_THROTTLED = Counter("webchat_auth_login_throttled_total",
                           "Logins refused (429) by the per-account or per-address throttle.")
for _result in ("ok", "failed"):
    LOGINS.labels(_result)  # both series exist from the start, at 0

#: Sorted set of logged-in sessions: member = session key hash, score = predicted expiry (ms).
ACTIVE_SESSIONS_KEY = keys.ACTIVE_SESSIONS
#: Most members a scrape re-checks; the rest wait for the next scrape.
CHECK_LIMIT = 1000

def _prune(r):
    """Re-check the members whose predicted expiry has passed; returns the count."""
    now = _now_ms()
    due = r.zrangebyscore(ACTIVE_SESSIONS_KEY, "-inf", now, start=0, num=CHECK_LIMIT)
    pipe = r.pipeline(transaction=False)
    for h in due:
        pipe.pttl(key_of_hash(h))
    ttls = pipe.execute() if due else []
    gone = [h for h, ttl in zip(due, ttls) if ttl < 0]
    alive = {h: now + ttl for h, ttl in zip(due, ttls) if ttl >= 0}
    pipe = r.pipeline(transaction=False)
    if gone:
        pipe.zrem(ACTIVE_SESSIONS_KEY, *gone)
    if alive:
        pipe.zadd(ACTIVE_SESSIONS_KEY, alive, xx=True)
    pipe.zcard(ACTIVE_SESSIONS_KEY)
    return pipe.execute()[-1]


def _now_ms():
    return int(time.time() * 1000)


def login_succeeded(app):
    """Count a login and track the session it makes."""
    LOGINS.labels("ok").inc()
    track_new_session(app)


def track_new_session(app):
    """Call before ``new_login``: the new session joins the active set once it is stored."""
    g.auth_new_session = {"replaces": session.key_hash}


def _after_save(app, response, **_):
    """``request_finished`` comes after the session was saved: the new id exists now."""
    pending = g.pop("auth_new_session", None)
    if pending is None or not session.sid or response.status_code >= 400:
        return
    pipe = get_redis(app).pipeline(transaction=True)  # one key: one slot of a Cluster
    if pending["replaces"]:
        pipe.zrem(ACTIVE_SESSIONS_KEY, pending["replaces"])
    pipe.zadd(ACTIVE_SESSIONS_KEY, {session.key_hash: _now_ms() + app.config["SESSION_IDLE_TIMEOUT"] * 1000})
    try:
        pipe.execute()
    except REDIS_ERRORS:  # the login stands; only the gauge misses it (see the module docstring)
        log.warning("could not add a new session to %s; the active-sessions gauge misses it", ACTIVE_SESSIONS_KEY)


def init_app(app):
    """Track new sessions after they are saved, and count them at scrape time."""
    request_finished.connect(_after_save, app, weak=False)
    register_collector(app, ActiveSessions())


def login_failed():
    LOGINS.labels("failed").inc()


def login_throttled():
    LOGINS_THROTTLED.inc()


def session_ended():
    """Logout: the session leaves the active set at once."""
    if session.key_hash:
        get_redis().zrem(ACTIVE_SESSIONS_KEY, session.key_hash)


class ActiveSessions:
    """Scrape-time collector for ``webchat_auth_active_sessions`` (see the module docstring)."""

    def collect(self):
        count = _prune(get_redis())
        yield GaugeMetricFamily("webchat_auth_active_sessions",
                                "Logged-in sessions that exist in Redis (exact to within one scrape).",
                                value=int(count))
