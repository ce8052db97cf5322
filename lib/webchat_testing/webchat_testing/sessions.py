"""A logged-in user without a browser login: a session planted straight in Redis.

The one way tests and benchmarks do this, built on the session contract of
:mod:`webchat_common.sessions` (its key and value functions), so a change of the contract
changes every planted session with it.  Use it where logging in through auth would cost too
much (scrypt, throttles: the chat benchmark plants 19,000) or where the test is about another
service; tests of login itself log in through the real views.
"""
import secrets
import time

from webchat_common.config import Config
from webchat_common.sessions import session_key, session_value

#: The session cookie's name (the one definition is ``webchat_common.config.Config``).
COOKIE = Config.SESSION_COOKIE_NAME


def new_sid():
    """A session id as auth makes it (256 random bits, 43 url-safe characters)."""
    return secrets.token_urlsafe(32)


def plant_session(r, user, sid=None, csrf=None, ttl=60, created=None, **data):
    """Store a session of ``user`` in Redis (``r``: a client, or a pipeline) and return its id.

    ``csrf`` defaults to a fresh token (read it back with :func:`session_data` or pass your
    own); ``data`` adds fields (``login_at=...``); ``created`` defaults to now."""
    sid = sid or new_sid()
    record = {"user": user, "csrf": csrf if csrf is not None else secrets.token_urlsafe(32), **data}
    r.set(session_key(sid), session_value(record, time.time() if created is None else created), ex=ttl)
    return sid


def sid_of(client):
    """The session id in a Flask test client's cookie jar, or None."""
    cookie = client.get_cookie(COOKIE)
    return cookie.value if cookie else None


def login_client(client, r, user, **kw):
    """Plant a session of ``user`` and give its cookie to the Flask test ``client``; the id."""
    sid = plant_session(r, user, **kw)
    client.set_cookie(COOKIE, sid)
    return sid
