"""Pages and API of the auth service: /login, /register, /logout, /, /profile, /api/...

Rules for what comes from the request: a redirect goes to a path on this site
(:func:`safe_next`, or a fixed path), never to a host the request names; a page number is a
bounded integer (beyond the bounds: 404, never a Redis error); the login and register forms
log in again from a stale tab (``webchat_common.login_form``)."""
from datetime import datetime, timezone
from urllib.parse import urlsplit

from flask import Blueprint, abort, current_app, jsonify, redirect, render_template, request, session
from flask.views import MethodView

from webchat_common import csrf_token, current_user, login_form, login_required, new_login

from . import metrics, throttle, users

bp = Blueprint("auth", __name__)

GENERIC_LOGIN_ERROR = "Wrong username or password."


def safe_next(target):
    """``target`` if it is a path on this site, else ``/``: never an open redirect.

    A path starts with one ``/`` followed by anything but ``/`` or ``\\`` (browsers read
    ``//host`` and ``/\\host`` as another host), and holds no backslash and no character a
    browser drops or that ends a header (C0 controls, DEL; a URL parser skips tabs and newlines,
    so ``/\t/evil`` is ``//evil``), nor any other non-printable character."""
    if not isinstance(target, str) or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    if not target.isprintable():
        return "/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return "/"
    return target


@bp.app_template_filter()
def datetimeformat(ts):
    """Unix seconds as a UTC date for pages."""
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d")


def _field_errors(username, password, check_rules):
    errors = {}
    if check_rules:
        errors["username"] = users.username_error(username)
        errors["password"] = users.password_error(password)
    else:  # login: only presence and size, the rest is "wrong username or password"
        if not username:
            errors["username"] = "Enter your username."
        elif len(username) > 32:
            errors["username"] = "A username has at most 32 characters."
        if not password:
            errors["password"] = "Enter your password."
        elif len(password) > users.PASSWORD_MAX:
            errors["password"] = f"A password has at most {users.PASSWORD_MAX} characters."
    return {k: v for k, v in errors.items() if v}


class LoginView(MethodView):
    """The tutorial's class-based login view."""

    def get(self):
        if current_user():
            return redirect(safe_next(request.args.get("next")))
        return render_template("login.html", next=safe_next(request.args.get("next")), errors={})

    def post(self):
        username = request.form.get("username", "").strip()
        password = request.form.get("password", "")
        nxt = safe_next(request.form.get("next"))
        errors = _field_errors(username, password, check_rules=False)
        if errors:
            return render_template("login.html", next=nxt, username=username[:32], errors=errors), 400
        ip = request.remote_addr or "unknown"
        wait = throttle.retry_after(username, ip)
        if wait:
            metrics.login_throttled()
            message = f"Too many failed logins. Try again in {(wait + 59) // 60} minute(s)."
            body = render_template("login.html", next=nxt, username=username, errors={}, message=message)
            return body, 429, {"Retry-After": str(wait)}
        name = users.authenticate(username, password)
        if name is None:
            metrics.login_failed()
            throttle.record_failure(username, ip)
            body = render_template("login.html", next=nxt, username=username, errors={}, message=GENERIC_LOGIN_ERROR)
            return body, 401
        throttle.record_success(name)
        metrics.login_succeeded(current_app._get_current_object())
        _log_in(name)
        return redirect(nxt)


bp.add_url_rule("/login", view_func=login_form(LoginView.as_view("login")))


@bp.route("/register", methods=["GET", "POST"])
@login_form
def register():
    if request.method == "GET":
        return render_template("register.html", errors={})
    username = request.form.get("username", "").strip()
    password = request.form.get("password", "")
    errors = _field_errors(username, password, check_rules=True)
    if errors:
        return render_template("register.html", username=username[:32], errors=errors), 400
    try:
        users.create_user(username, password)
    except users.UsernameTaken:
        errors = {"username": "That username is taken."}
        return render_template("register.html", username=username, errors=errors), 409
    metrics.track_new_session(current_app._get_current_object())
    _log_in(username)
    return redirect("/", code=303)


def _log_in(name):
    """A new logged-in session for ``name`` (see ``webchat_common.new_login``), which also
    keeps what ``/api/me`` answers with, so that answer needs no read besides the session."""
    new_login(name)
    user = users.get_user(name)
    if user is not None:
        session["created"] = int(user["created"])


@bp.post("/logout")
def logout():
    metrics.session_ended()
    session.destroy()
    return redirect("/login", code=303)


@bp.get("/", endpoint="home")
@login_required
def home():
    return render_template("index.html", user=users.get_user(current_user()))


@bp.get("/profile")
@login_required
def profile():
    return render_template("profile.html", user=users.get_user(current_user()))


@bp.get("/api/me")
@login_required
def me():
    """Who is logged in, from the session alone (one Redis read per request, the session's):
    the name and registration time were put in it at login.  A session from before that was
    kept there reads the user once and keeps it."""
    created = session.get("created")
    if not isinstance(created, int):
        user = users.get_user(current_user()) or abort(401)
        created = session["created"] = int(user["created"])
    return jsonify(
        user=current_user(),
        created=created,
        login_at=session.get("login_at"),
        csrf_token=csrf_token(),
    )


#: Users per page of ``/api/users``.
PER_PAGE = 50
#: The last page number routed: 50 million users.  Beyond it (and at 0) routing answers 404; an
#: unbounded ``<int:page>`` reached Redis with an offset past 2**63 (a Redis error: 503).
MAX_PAGE = 1_000_000


@bp.get("/api/users", defaults={"page": 1})
@bp.get(f"/api/users/page/<int(min=1, max={MAX_PAGE}):page>")
@login_required
def user_list(page):
    """Registered users, 50 a page (the tutorial's ``defaults`` and ``<int:...>`` routing); a
    page past the last user is empty."""
    return jsonify(page=page, users=users.list_users((page - 1) * PER_PAGE, PER_PAGE))


# The tutorial's redirect_to: old links to /index land on the home page.
bp.add_url_rule("/index", endpoint="index", redirect_to="/")
