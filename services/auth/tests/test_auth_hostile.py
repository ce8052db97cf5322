"""Hostile input to auth (issue 9): whole-name matching, redirects that never leave the site,
logging in again from any login form, page numbers that never reach Redis out of range."""
import re
from urllib.parse import urljoin, urlsplit

import pytest
import redis
from hypothesis import example, given
from hypothesis import strategies as st

from auth_service import users
from webchat_common import keys
from webchat_common.sessions import session_key, session_key_hash
from webchat_testing.sessions import COOKIE

SITE = "http://site.example/login"


def browser_resolves(location):
    """Where a browser goes for ``Location: location`` on SITE (the WHATWG URL parser's steps
    that matter here: leading/trailing C0 controls and spaces dropped, tabs and newlines
    removed, ``\\`` read as ``/`` in http URLs)."""
    cleaned = location.strip("".join(map(chr, range(0x21))))
    cleaned = re.sub("[\t\n\r]", "", cleaned).replace("\\", "/")
    return urlsplit(urljoin(SITE, cleaned))


def assert_on_site(location):
    assert location.startswith("/") and location[1:2] not in ("/", "\\"), location
    target = browser_resolves(location)
    assert (target.scheme, target.netloc) == ("http", "site.example"), location


EVIL = ["//evil.example", "/\\evil.example", "\\\\evil.example", "https:evil.example", "\t//evil.example",
        "/\t/evil.example", "/\n/evil.example", " //evil.example", "http://evil.example", "%2F%2Fevil.example",
        "/%2F/evil.example", "//%65vil.example", "\x00//evil", "javascript:alert(1)", "/\u3000/evil", "/\u200b/evil",
        "///evil.example", "/.//evil.example", "\u2028//evil"]
FORM_TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)))
NEXT = st.one_of(FORM_TEXT, st.builds(lambda a, b: a + b, st.sampled_from(EVIL + ["/", "/chat/"]), FORM_TEXT),
                 st.sampled_from(EVIL))


@pytest.mark.parametrize("name", ["alice\n", "alice\r\n", "alice\x00", "\nalice"])
def test_names_with_a_newline_are_not_user_names(app, alice, name):
    assert users.username_error(name) == "Use only letters, digits, '_' and '-'."
    with app.app_context():
        assert users.authenticate(name, "correct horse") is None
        assert users.authenticate("alice", "correct horse") == "alice"


@pytest.mark.parametrize("path,location", [("/index", "/"), ("//api//me", "/api/me"), ("/api//me", "/api/me"),
                                           ("/api/users/page/1", "/api/users"), ("//index", "/")])
def test_routing_redirects_ignore_the_host_header(client, path, location):
    resp = client.get("/", headers={"Host": "evil.example"}, environ_overrides={"PATH_INFO": path})
    assert resp.status_code == 308 and resp.headers["Location"] == location


@given(NEXT)
@example("//evil.example")
def test_login_next_is_always_on_site(alice, nxt):
    token = alice.get("/api/me").json["csrf_token"]
    resp = alice.post("/login", data={"username": "alice", "password": "correct horse", "csrf_token": token,
                                      "next": nxt})
    assert resp.status_code == 302
    assert_on_site(resp.headers["Location"])
    # Logged in, GET /login?next= goes there at once: the same rule.
    again = alice.get("/login", query_string={"next": nxt})
    assert again.status_code == 302
    assert_on_site(again.headers["Location"])


def test_login_again_from_a_stale_form_rotates_the_session(client, auth, app):
    r = redis.Redis.from_url(app.config["REDIS_URL"], decode_responses=True)
    auth.register()
    auth.logout()
    stale = auth._form_token()           # a second tab's login form
    assert auth.login().status_code == 302
    first = client.get_cookie(COOKIE).value
    resp = client.post("/login", data={"username": "alice", "password": "correct horse", "csrf_token": stale})
    assert resp.status_code == 302 and resp.headers["Location"] == "/"
    second = client.get_cookie(COOKIE).value
    assert second != first
    assert app.test_client().get("/api/me", headers={"Cookie": f"{COOKIE}={first}"}).status_code == 401
    assert client.get("/api/me").json["user"] == "alice"
    assert not r.exists(session_key(first)) and r.exists(session_key(second))
    assert r.zrange(keys.ACTIVE_SESSIONS, 0, -1) == [session_key_hash(second)]
    # The token of /api/me logs in again too, and still leaves one session.
    resp = client.post("/login", data={"username": "alice", "password": "correct horse",
                                       "csrf_token": client.get("/api/me").json["csrf_token"]})
    third = client.get_cookie(COOKIE).value
    assert resp.status_code == 302 and third != second
    assert r.zrange(keys.ACTIVE_SESSIONS, 0, -1) == [session_key_hash(third)]
    assert len(list(r.scan_iter("session:*"))) == 1


def test_a_stale_token_does_nothing_but_log_in(client, auth):
    auth.register()
    auth.logout()
    stale = auth._form_token()
    auth.login()
    assert client.post("/logout", data={"csrf_token": stale}).status_code == 400
    assert client.get("/api/me").status_code == 200


@pytest.mark.parametrize("page", ["9" * 23, "9" * 19, str(2**63), "9" * 5000, "0", "1000001"])
def test_out_of_range_pages_are_404(client, auth, page):
    auth.register()
    resp = client.get(f"/api/users/page/{page}")
    assert resp.status_code == 404 and "error" in resp.json


def test_the_last_page_is_empty(client, auth):
    auth.register()
    assert client.get("/api/users/page/1000000").json == {"page": 1000000, "users": []}
    assert client.get("/api/users/page/2").json == {"page": 2, "users": []}


@given(st.text())
@example("9" * 23)
@example("١")
def test_any_page_text_is_200_or_404(alice, text):
    path = ("/api/users/page/" + text).encode("utf-8", "surrogatepass").decode("latin-1")  # WSGI's PATH_INFO
    resp = alice.get("/", environ_overrides={"PATH_INFO": path})
    assert resp.status_code in (200, 308, 404), resp.status_code
    if resp.status_code == 308:
        assert resp.headers["Location"] == "/api/users"

