"""Request plumbing every service installs with :func:`init_app`.

- the Redis session interface and the Redis pool;
- a request id (the gateway's ``X-Request-ID``, or a new one) logged and returned;
- one JSON access-log line per request;
- CSRF: every unsafe request needs the session's token (form field ``csrf_token`` or header
  ``X-CSRF-Token``); a form that logs in (:func:`login_form`) also takes the token the session
  had before its last login, so a login form shown before it (a second tab) still works;
- redirects never name a host: werkzeug's routing redirects (a missing slash, ``//a//b``,
  ``redirect_to=``, a URL equal to a rule's defaults) would build an absolute URL from the
  ``Host`` header the client chose; they are answered with a path on this site instead;
- integers taken from a request are parsed by :func:`request_int` (ASCII digits, bounded),
  so no out-of-range number reaches Redis or ``int()`` unchecked;
- error pages: HTML for browsers, JSON for everything else, never a stack trace; Redis
  unreachable is a 503, and the service recovers by itself when Redis is back;
- ``/healthz`` (liveness, no Redis), ``/readyz`` (Redis answers and the process is not shutting
  down, see :mod:`.lifecycle`) and ``/metrics`` (Prometheus, see :mod:`.metrics`);
- request count and latency metrics, and an ``X-User`` response header naming the logged-in
  user, which the gateway logs and strips;
- the shared Jinja2 layout, form macros and the ``csrf_token()``/``current_user()`` globals.
"""
import functools
import hmac
import logging
import re
import secrets
import time
import uuid
from urllib.parse import quote, urlsplit

from flask import Blueprint, abort, current_app, g, jsonify, make_response, redirect, render_template, request, session
from werkzeug.exceptions import HTTPException, InternalServerError, ServiceUnavailable
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.routing import RequestRedirect

from . import lifecycle, metrics
from .logs import setup_logging
from .redis_store import REDIS_ERRORS, init_redis, make_client
from .sessions import RedisSessionInterface, UnavailableSession

access_log = logging.getLogger("webchat.access")
log = logging.getLogger(__name__)

#: A client's X-Request-ID is kept only if it matches whole (``$`` would let "id\n" through).
_REQUEST_ID_RE = re.compile(r"[A-Za-z0-9._:-]{1,128}")
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
#: Endpoints that answer without a session: no Redis, no CSRF check.
_NO_SESSION_ENDPOINTS = frozenset({"common.healthz", "assets.static", "common.metrics"})
#: Seconds /readyz waits for Redis (to connect, and for the PING) before answering 503.
READY_TIMEOUT = 1.0
REDIS_DOWN = "The service is temporarily unavailable (its data store cannot be reached). Try again shortly."


def wants_json():
    """API paths (``/api/...``, ``/chat/api/...``) always get JSON; otherwise HTML only when the
    client names text/html."""
    if "/api/" in request.path:
        return True
    return "text/html" not in request.accept_mimetypes.values()


def current_user():
    """The logged-in user's name, from the shared session, or None."""
    user = session.get("user")
    return user if isinstance(user, str) else None


def csrf_token():
    """The session's CSRF token, made on first use (this starts a session for a visitor)."""
    token = session.get("csrf")
    if not isinstance(token, str):
        token = session["csrf"] = secrets.token_urlsafe(32)
    return token


def new_login(username):
    """Turn the current session into a fresh, logged-in one with a new id and CSRF token.  The
    previous token is kept as ``csrf_login``, accepted only by :func:`login_form` views."""
    previous = session.get("csrf")
    session.clear()
    session.regenerate()
    session["user"] = username
    session["login_at"] = int(time.time())
    session["csrf"] = secrets.token_urlsafe(32)
    if isinstance(previous, str):
        session["csrf_login"] = previous


def login_required(view):
    """Refuse a visitor: a browser page goes to ``/login?next=<here>``, anything else gets 401 JSON."""

    @functools.wraps(view)
    def wrapped(*args, **kwargs):
        if current_user() is None:
            if wants_json():
                return jsonify(error="login required"), 401
            here = request.full_path if request.query_string else request.path
            return redirect("/login?next=" + quote(here, safe="/"))
        return view(*args, **kwargs)

    return wrapped


def csrf_exempt(view):
    view.csrf_exempt = True
    return view


def login_form(view):
    """Mark a view whose form logs in (``/login``, ``/register``).  Logging in replaces the
    session's CSRF token, so a login form shown before the last login of this browser (another
    tab, the back button) carries the previous one; such a view accepts it too, so logging in
    again works (and rotates the session again) instead of answering "the form has expired".
    Every other unsafe request still needs the current token."""
    view.csrf_login_form = True
    return view


def request_int(text, minimum=0, maximum=2**53):
    """``text`` (a query argument, form field or path part) as an int within ``[minimum,
    maximum]``, or None.  Only ASCII digits count: ``str.isdigit`` accepts "²", which ``int``
    then refuses, and ``int`` refuses more than 4300 digits; both were 500s."""
    if not isinstance(text, str) or not 0 < len(text) <= len(str(maximum)) or not text.isascii() or not text.isdigit():
        return None
    value = int(text)
    return value if minimum <= value <= maximum else None


def relative_redirect(exc):
    """Werkzeug's routing redirect ``exc`` (:class:`RequestRedirect`) as a path on this site.
    Werkzeug builds ``exc.new_url`` from the request's ``Host`` header, which the client
    chooses (``Host: evil.example`` made ``Location: http://evil.example/``); only its path and
    query are kept, with one leading slash (never ``//`` or ``/\\``: another host to a browser)."""
    parts = urlsplit(exc.new_url)
    location = "/" + parts.path.lstrip("/\\")
    if parts.query:
        location += "?" + parts.query
    return redirect(location, code=exc.code)


def origin_allowed(origin, host, allowed=frozenset()):
    """Whether a browser's ``Origin`` header names this site: the origin the request was sent
    to (``http(s)://<Host>``, compared without case) or one listed in ``allowed`` (lower-cased,
    without a trailing slash).  No ``Origin``, ``null`` or another scheme is refused.  Chat
    checks WebSocket handshakes with it, files its uploads."""
    if not origin:
        return False
    origin = origin.strip().rstrip("/").lower()
    if origin in allowed:
        return True
    parts = urlsplit(origin)
    return parts.scheme in ("http", "https") and bool(host) and parts.netloc == host.lower()


def error_response(code, message, headers=()):
    if wants_json():
        resp = make_response(jsonify(error=message), code)
    else:
        resp = make_response(render_template("error.html", code=code, message=message), code)
    resp.headers.extend(headers)
    return resp


CSRF_REFUSED = "The form has expired or is missing its security token. Reload the page and try again."


def csrf_valid(for_login=False):
    """Whether the request carries the session's CSRF token (header ``X-CSRF-Token`` or form
    field ``csrf_token``); ``for_login``: the token from before the last login counts too
    (see :func:`login_form`)."""
    token = (request.headers.get("X-CSRF-Token") or request.form.get("csrf_token", "")).encode()
    fields = ("csrf", "csrf_login") if for_login else ("csrf",)
    expected = [session.get(f) for f in fields]
    return any(isinstance(e, str) and hmac.compare_digest(token, e.encode()) for e in expected)


def _check_csrf(view):
    if not csrf_valid(for_login=getattr(view, "csrf_login_form", False)):
        abort(400, description=CSRF_REFUSED)


def _wrap_errors(app):
    @app.errorhandler(HTTPException)
    def http_error(exc):
        headers = [(k, v) for k, v in exc.get_headers() if k.lower() != "content-type"]
        return error_response(exc.code, exc.description, headers)

    def redis_error(exc):
        log.warning("redis error: %s", exc.__class__.__name__)
        return error_response(503, REDIS_DOWN)

    for error in REDIS_ERRORS:
        app.register_error_handler(error, redis_error)

    @app.errorhandler(InternalServerError)
    def server_error(exc):
        if isinstance(exc.original_exception, REDIS_ERRORS):
            return redis_error(exc.original_exception)
        return error_response(500, "Something went wrong on our side. It has been logged.")


common = Blueprint("common", __name__, template_folder="templates")


@common.get("/healthz")
@csrf_exempt
def healthz():
    """Liveness: the process answers.  Never touches Redis."""
    return jsonify(status="ok")


@common.get("/readyz")
def readyz():
    """Readiness: the process is not shutting down, and Redis answers a PING within
    ``READY_TIMEOUT`` seconds.  Once the gunicorn master got SIGTERM this is 503 while
    requests are still served (see :mod:`.lifecycle`)."""
    if lifecycle.draining():
        return jsonify(status="shutting down"), 503
    app = current_app._get_current_object()
    try:
        client = app.extensions.get("redis_ready")
        if client is None:
            # Its own tiny pool: a probe must not queue behind a busy request pool, and must be
            # answered within READY_TIMEOUT whatever Redis does.  (A Cluster client reads the
            # slot map when it is made, so making it can fail too.)
            client = app.extensions["redis_ready"] = make_client(
                app.config["REDIS_URL"], max_connections=2, pool_timeout=READY_TIMEOUT, socket_timeout=READY_TIMEOUT)
        client.ping()
    except REDIS_ERRORS:
        return jsonify(status="unavailable", redis="down"), 503
    return jsonify(status="ok", redis="up")


common.add_url_rule("/metrics", "metrics", csrf_exempt(metrics.metrics_view))


def init_app(app, service, static_url_path):
    """Install the shared plumbing on ``app``; ``static_url_path`` is the service's static path
    under its gateway prefix (``/static``, ``/media/static``, ...): the shared files (the
    stylesheet) are served from ``<static_url_path>/common/``."""
    app.config.setdefault("SERVICE_NAME", service)
    setup_logging(service, app.config["LOG_LEVEL"])
    if app.config["TRUSTED_PROXIES"]:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=app.config["TRUSTED_PROXIES"])
    init_redis(app)
    app.session_interface = RedisSessionInterface()
    app.register_blueprint(common)
    assets = Blueprint("assets", __name__, static_folder="static", static_url_path=static_url_path + "/common")
    app.register_blueprint(assets)
    app.add_template_global(csrf_token)
    app.add_template_global(current_user)
    _wrap_errors(app)

    @app.before_request
    def begin():
        # The request, g and the session are each fetched from their context once: every
        # ``request.x`` is a context-variable lookup through werkzeug's LocalProxy.
        req = request._get_current_object()
        req_g = g._get_current_object()
        req_g.start = time.perf_counter()
        rid = req.headers.get("X-Request-ID", "")
        req_g.request_id = rid if _REQUEST_ID_RE.fullmatch(rid) else uuid.uuid4().hex
        routing_exception = req.routing_exception
        if isinstance(routing_exception, RequestRedirect):
            return relative_redirect(routing_exception)
        endpoint = req.endpoint
        if endpoint in _NO_SESSION_ENDPOINTS:
            return None
        if isinstance(session._get_current_object(), UnavailableSession):
            raise ServiceUnavailable(REDIS_DOWN)
        if req.method in UNSAFE_METHODS and routing_exception is None:  # 404/405 first
            view = app.view_functions.get(endpoint)
            if not getattr(view, "csrf_exempt", False):
                _check_csrf(view)
        return None

    @app.after_request
    def finish(response):
        req = request._get_current_object()
        req_g = g._get_current_object()
        response.headers["X-Request-ID"] = req_g.get("request_id", "")
        status = metrics.logged_status(response)
        metrics.record_request(response, status)
        user = current_user()
        if user:
            response.headers["X-User"] = user  # for the gateway's access log; it strips it
        level = logging.ERROR if status >= 500 else logging.WARNING if status >= 400 else logging.INFO
        if access_log.isEnabledFor(level):
            access_log.log(
                level,
                "request",
                extra={
                    "method": req.method,
                    "path": req.path,
                    "status": status,
                    "duration_ms": round((time.perf_counter() - req_g.get("start", time.perf_counter())) * 1000, 2),
                    "user": user,
                },
            )
        return response
