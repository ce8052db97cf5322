"""Server-side sessions in Redis, shared by every service: the session contract.

The tutorial stores sessions server-side with Flask-Session.  We keep its idea and write the
small interface ourselves, because this contract needs things Flask-Session does not give
together: JSON only, with no pickle fallback on read; the Redis key derived from a hash of
the cookie (a Redis dump holds no usable cookies); an absolute timeout next to the sliding
one; and an id that is replaced on login even when the session is empty.

Contract (every service reads it; only auth writes identity into it)::

    cookie  SESSION_COOKIE_NAME = <43 url-safe chars, 256 random bits>
    key     session:<sha256(cookie value) hex>           STRING, JSON, TTL = idle timeout,
                                                           capped by the absolute timeout
    value   {"created": <unix s>, "data": {"user": <name>, "csrf": <token>, ...}}
    channel sessions:ended  <- the key's hash, published when a session is destroyed

A value that is not that JSON (for instance a planted pickle) is refused, logged and deleted;
it is never unpickled.
"""
import hashlib
import json
import math
import logging
import re
import secrets
import time

from flask.sessions import SessionInterface, SessionMixin
from werkzeug.datastructures import CallbackDict
from werkzeug.sansio.http import parse_cookie

from .redis_store import REDIS_ERRORS, get_redis

log = logging.getLogger(__name__)

KEY_PREFIX = "session:"
ENDED_CHANNEL = "sessions:ended"
#: A session id as :meth:`RedisSessionInterface.save_session` makes it, matched whole.
_SID_RE = re.compile(r"[A-Za-z0-9_-]{43}")


def session_key_hash(sid):
    return hashlib.sha256(sid.encode()).hexdigest()


def session_key(sid):
    return KEY_PREFIX + session_key_hash(sid)


def session_value(data, created):
    """The value stored under :func:`session_key`: the contract's JSON (``data`` a dict)."""
    return json.dumps({"created": created, "data": data})


def key_of_hash(key_hash):
    """The Redis key of the session whose key hash is ``key_hash`` (what ``sessions:ended``
    carries, and what a service keeps to check later that a session still exists)."""
    return KEY_PREFIX + key_hash


class RedisSession(CallbackDict, SessionMixin):
    """A dict that remembers whether it changed, plus the life-cycle flags auth sets."""

    def __init__(self, data=None, sid=None, created=None):
        def on_update(self):
            self.modified = True

        super().__init__(data, on_update)
        self.sid = sid
        self.created = created if created is not None else time.time()
        self.new = sid is None
        self.modified = False
        self.regenerate_requested = False
        self.destroy_requested = False
        #: ``time.monotonic()`` when :meth:`RedisSessionInterface.open_session` slid the key's
        #: TTL (in the same round trip as the read), or None.
        self.refreshed_at = None

    def regenerate(self):
        """Give this session a new id at the end of the request; the old id stops working."""
        self.regenerate_requested = True
        self.modified = True

    def destroy(self):
        """Delete this session in Redis at the end of the request and expire the cookie."""
        self.clear()
        self.destroy_requested = True

    @property
    def key_hash(self):
        return session_key_hash(self.sid) if self.sid else None


class UnavailableSession(RedisSession):
    """Stands in when Redis could not be asked; the app answers 503 before any view runs."""


class RedisSessionInterface(SessionInterface):
    """The sliding idle timeout costs no round trip of its own: the read is a ``GETEX`` that
    also sets the key's TTL to the idle timeout (Redis >= 6.2).  Only in the last idle window
    before the absolute timeout, where the TTL must be shorter, is an ``EXPIRE`` added; and a
    request that lasted a second or more (a WebSocket's life) slides it again when it ends, so
    the idle window still starts when the request ends, as it did when the refresh was an
    ``EXPIRE`` at the end of every request."""

    #: A request longer than this (seconds) slides the TTL again when it ends.
    REFRESH_AGAIN_AFTER = 1.0

    def open_session(self, app, request):
        # What ``request.cookies`` parses (one WSGI environ holds one Cookie header), without
        # its walk over every header of the environ to find it.
        sid = parse_cookie(request.environ.get("HTTP_COOKIE")).get(app.config["SESSION_COOKIE_NAME"])
        if not sid or not _SID_RE.fullmatch(sid):
            return RedisSession()
        idle = app.config["SESSION_IDLE_TIMEOUT"]
        try:
            raw = get_redis(app).getex(session_key(sid), ex=max(1, math.ceil(idle)))
            refreshed_at = time.monotonic()
        except REDIS_ERRORS:
            log.warning("session store unreachable")
            return UnavailableSession()
        except UnicodeDecodeError:
            return self._refuse(app, sid, "not UTF-8 text")
        if raw is None:
            return RedisSession()
        try:
            record = json.loads(raw)
            created = float(record["created"])
            data = record["data"]
            if not isinstance(data, dict):
                raise TypeError("data is not an object")
        except (ValueError, KeyError, TypeError) as exc:
            return self._refuse(app, sid, str(exc))
        if time.time() - created > app.config["SESSION_ABSOLUTE_TIMEOUT"]:
            self._delete(app, sid)
            return RedisSession()
        session = RedisSession(data, sid=sid, created=created)
        ttl = self._ttl(app, session)
        if ttl < idle:  # the absolute timeout is nearer than the idle one: cap the TTL
            try:
                get_redis(app).expire(session_key(sid), ttl)
            except REDIS_ERRORS:
                log.warning("session store unreachable")
                return UnavailableSession()
        session.refreshed_at = refreshed_at
        return session

    def _refuse(self, app, sid, why):
        log.error("refused a session value that is not the JSON contract (%s); deleted it", why)
        self._delete(app, sid)
        return RedisSession()

    @staticmethod
    def _delete(app, sid):
        try:
            r = get_redis(app)
            r.delete(session_key(sid))
            r.publish(ENDED_CHANNEL, session_key_hash(sid))
        except REDIS_ERRORS:
            log.warning("could not delete session; it will expire by its TTL")

    def _ttl(self, app, session):
        left = app.config["SESSION_ABSOLUTE_TIMEOUT"] - (time.time() - session.created)
        return max(1, math.ceil(min(app.config["SESSION_IDLE_TIMEOUT"], left)))

    def save_session(self, app, session, response):
        if isinstance(session, UnavailableSession):
            return
        name = app.config["SESSION_COOKIE_NAME"]
        cookie_args = dict(
            domain=self.get_cookie_domain(app),
            path=self.get_cookie_path(app),
            secure=self.get_cookie_secure(app),
            httponly=self.get_cookie_httponly(app),
            samesite=self.get_cookie_samesite(app),
        )
        if session.destroy_requested:
            if session.sid:
                self._delete(app, session.sid)
            response.delete_cookie(name, **cookie_args)
            return
        if session.sid is None and not session:
            return  # nothing to keep: no Redis write, no cookie
        r = get_redis(app)
        if session.regenerate_requested and session.sid:
            self._delete(app, session.sid)
            session.sid = None
        session.new_id = session.sid is None
        if session.new_id:
            session.sid = secrets.token_urlsafe(32)
            session.created = time.time()
            session.modified = True
        ttl = self._ttl(app, session)
        key = session_key(session.sid)
        if session.modified:
            value = session_value(dict(session), session.created)
            # A new id is created (nx); a known one only updated while it still exists (xx), so
            # a request that was in flight during logout cannot bring the session back.
            if r.set(key, value, ex=ttl, nx=session.new_id, xx=not session.new_id):
                response.set_cookie(name, session.sid, **cookie_args)
            elif not session.new_id:
                response.delete_cookie(name, **cookie_args)
        elif session.refreshed_at is None or time.monotonic() - session.refreshed_at >= self.REFRESH_AGAIN_AFTER:
            r.expire(key, ttl)  # sliding idle timeout (open_session's GETEX did it for a short request)
        response.vary.add("Cookie")
