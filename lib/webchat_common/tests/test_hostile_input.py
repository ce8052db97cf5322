"""Hostile input to the shared library (issue 9): names, session ids and request ids are matched
whole; routing redirects never name the request's Host; integers from a request are bounded;
a login form from before the last login still logs in."""
import string
from urllib.parse import urlsplit

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from webchat_common import names, request_int
from webchat_testing.sessions import COOKIE, plant_session

NAME_CHARS = set(string.ascii_letters + string.digits + "_-")
EXT_CHARS = set(string.ascii_lowercase + string.digits)
#: Whitespace a value could carry around a valid name: "alice\n" was accepted by ``^...$``.
PADDING = st.sampled_from(["\n", "\r\n", " ", "\t", "\x00", "\x0b", "\x0c", "\u2028", "\u00a0", "\r"])


def independent_user_name(value):
    return 1 <= len(value) <= 32 and set(value) <= NAME_CHARS


def independent_media_name(value):
    stem, dot, ext = value.rpartition(".")
    return (dot == "." and len(stem) == 22 and set(stem) <= NAME_CHARS
            and 2 <= len(ext) <= 4 and set(ext) <= EXT_CHARS)


valid_user = st.from_regex(names.USER_NAME, fullmatch=True)
valid_media = st.from_regex(names.MEDIA_NAME, fullmatch=True)


@given(st.one_of(st.text(), valid_user, valid_media))
@example("alice\n")
@example("A" * 22 + ".png\n")
def test_names_agree_with_an_independent_definition(value):
    assert names.is_user_name(value) == independent_user_name(value)
    assert names.is_room_name(value) == independent_user_name(value)
    assert names.is_media_name(value) == independent_media_name(value)


@given(st.one_of(valid_user, valid_media), PADDING, st.booleans())
def test_padded_names_are_never_accepted(value, pad, before):
    padded = pad + value if before else value + pad
    assert not names.is_user_name(padded) and not names.is_room_name(padded)
    assert not names.is_media_name(padded)


@pytest.mark.parametrize("value", [None, b"alice", 42, ["alice"]])
def test_only_text_is_a_name(value):
    assert not names.is_user_name(value) and not names.is_room_name(value) and not names.is_media_name(value)


def test_a_session_id_with_a_trailing_newline_is_not_a_session(plumbed_client, redis_url):
    import redis

    sid = "a" * 43
    client = redis.Redis.from_url(redis_url)
    plant_session(client, "mallory", sid=sid + "\n", csrf="t")
    client.close()
    plumbed_client.set_cookie(COOKIE, sid + "\n")
    assert plumbed_client.get("/token").headers.get("X-User") is None


def test_a_request_id_with_a_trailing_newline_is_replaced(plumbed_client):
    resp = plumbed_client.get("/healthz", environ_base={"HTTP_X_REQUEST_ID": "abc-1\n"})
    assert resp.headers["X-Request-ID"] not in ("abc-1\n", "abc-1") and len(resp.headers["X-Request-ID"]) == 32


# ---- routing redirects ----------------------------------------------------------------------

def raw_get(client, path, host):
    """GET ``path`` exactly as a client sent it (the test client would read ``//x`` as a host)."""
    target, _, query = path.partition("?")
    return client.get("/", headers={"Host": host}, environ_overrides={"PATH_INFO": target, "QUERY_STRING": query})


def assert_same_site(location):
    """A Location a browser resolves on this site: one leading slash, no host, no scheme."""
    assert location.startswith("/") and location[1:2] not in ("/", "\\"), location
    assert not urlsplit(location).netloc and not urlsplit(location).scheme, location


@pytest.mark.parametrize("path,expected", [
    ("/old", "/items"),                  # redirect_to=
    ("/items/page/1", "/items"),         # the rule's defaults
    ("/folder", "/folder/"),             # strict slashes
    ("//items//page//2", "/items/page/2"),  # merged slashes
    ("/folder?x=1", "/folder/?x=1"),
])
def test_routing_redirects_are_paths_whatever_the_host(plumbed_client, path, expected):
    resp = raw_get(plumbed_client, path, "evil.example")
    assert resp.status_code == 308
    assert resp.headers["Location"] == expected


HOSTS = st.one_of(st.sampled_from(["evil.example", "evil.example:443", "[::1]", "a@b", "x/y", "evil.example\\"]),
                  st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7e), min_size=1, max_size=40))


@given(HOSTS, st.sampled_from(["/old", "/items/page/1", "/folder", "//folder", "///items//page//1", "/\\/folder"]))
def test_no_host_header_ever_reaches_a_location(plumbed_app, host, path):
    resp = raw_get(plumbed_app.test_client(), path, host)
    assert resp.status_code < 500
    if "Location" in resp.headers:
        assert_same_site(resp.headers["Location"])


# ---- integers from a request -----------------------------------------------------------------

@given(st.one_of(st.text(), st.integers(min_value=-10, max_value=10**30).map(str)),
       st.integers(0, 10), st.integers(10, 10**20))
@example("²", 0, 10)
@example("9" * 5000, 0, 10**20)
@example("١٢", 0, 100)
def test_request_int_is_digits_within_bounds(text, lo, hi):
    got = request_int(text, lo, hi)
    ascii_digits = text != "" and all(c in "0123456789" for c in text)
    if ascii_digits and len(text) <= len(str(hi)) and lo <= int(text) <= hi:
        assert got == int(text)
    else:
        assert got is None


@given(st.text())
def test_integer_routes_never_fail(plumbed_app, text):
    from urllib.parse import quote

    resp = plumbed_app.test_client().get("/items/page/" + quote(text, safe=""))
    assert resp.status_code in (200, 308, 404)


# ---- login forms -----------------------------------------------------------------------------

def test_a_login_form_from_before_the_last_login_still_logs_in(plumbed_client):
    stale = plumbed_client.get("/token").json["token"]          # the visitor's form
    assert plumbed_client.post("/login/alice", data={"csrf_token": stale}).status_code == 200
    first = plumbed_client.get_cookie(COOKIE).value
    # A second tab still shows the form with the visitor's token: logging in again works...
    assert plumbed_client.post("/login/bob", data={"csrf_token": stale}).status_code == 200
    assert plumbed_client.get_cookie(COOKIE).value != first
    # ...but that token is good for logging in only.
    assert plumbed_client.post("/change", data={"csrf_token": stale}).status_code == 400
    current = plumbed_client.get("/token").json["token"]
    assert plumbed_client.post("/change", data={"csrf_token": current}).status_code == 200
    assert plumbed_client.post("/login/carol", data={"csrf_token": "forged"}).status_code == 400
    assert plumbed_client.post("/login/carol").status_code == 400
