"""Hostile input through the real gateway (issue 9, auth and files): names matched whole by
nginx too, redirects that never name the request's Host, logging in again from any login
form, uploaders' file names, out-of-range numbers and Range headers; never a 5xx."""
import http.client
import re
from urllib.parse import quote, urlsplit

import redis
from hypothesis import example, given, settings
from hypothesis import strategies as st

from support.web import Browser
from webchat_common import keys
from webchat_common.sessions import session_key, session_key_hash
from webchat_testing.sessions import COOKIE

API = {"Accept": "application/json"}
#: Through the gateway each example is a few real requests: a small bounded sample.
GATEWAY_EXAMPLES = settings(max_examples=25)


def upload(b, filename, data):
    return b.post("/media/", files={"file": (filename, data)}, headers={"X-CSRF-Token": b.me()["csrf_token"], **API})


def raw_request(gateway, path, headers):
    """``GET path`` sent exactly as written, with exactly these headers (``Host`` included)."""
    u = urlsplit(gateway)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=5)
    try:
        conn.putrequest("GET", path, skip_host=True, skip_accept_encoding=True)
        for name, value in headers.items():
            conn.putheader(name, value)
        conn.endheaders()
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def assert_on_site(location):
    assert location.startswith("/") and location[1:2] not in ("/", "\\"), location


def test_a_media_name_with_an_encoded_newline_is_not_streamed(stack, gateway, member):
    """nginx's ``$`` matched before a final newline: ``/media/<name>%0A`` with a link signed for
    that URI was streamed from ``<name>``.  Anchored with ``\\z`` it is the files service's, a 404."""
    from files_service import signing

    alice = member
    name = upload(alice, "n.txt", b"only for the owner\n").json()["name"]
    exp = signing.expiry(60)
    sig = signing.signature(f"/media/{name}\n", alice.sid, exp, stack.media_url_secret)
    status, _, body = raw_request(gateway, f"/media/{name}%0A?exp={exp}&sig={sig}",
                                  {"Host": "gateway.test", "Cookie": f"{COOKIE}={alice.sid}", **API})
    assert status == 404 and b"only for the owner" not in body
    assert alice.get(f"/media/{name}").status_code == 302  # the name itself still works


def test_redirects_never_name_the_host_header(gateway, member):
    cookie = {"Cookie": f"{COOKIE}={member.sid}"}
    for path, location in [("/index", "/"), ("//api//me", "/api/me"), ("/api/users/page/1", "/api/users"),
                           ("/login?next=//evil.example", "/"), ("/login?next=/chat/", "/chat/")]:
        status, headers, _ = raw_request(gateway, path, {"Host": "evil.example", **cookie})
        assert status in (302, 308) and headers["Location"] == location, (path, headers.get("Location"))
    status, headers, _ = raw_request(gateway, "/profile", {"Host": "evil.example", "Accept": "text/html"})
    assert status == 302 and headers["Location"] == "/login?next=/profile"


NEXT = st.one_of(
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40),
    st.builds(lambda a, b: a + b, st.sampled_from(["//", "/\\", "\\\\", "https:", "\t//", "/\t/", " //", "%2F%2F",
                                                   "/%2F", "///", "/.//", "http://", "\u3000//"]),
              st.sampled_from(["evil.example", "evil.example/x?y=1", "@evil.example", ""])))


@GATEWAY_EXAMPLES
@given(nxt=NEXT)
@example(nxt="/\\evil.example")
def test_login_next_never_leaves_the_site(member, nxt):
    resp = member.get("/login?next=" + quote(nxt, safe=""))
    assert resp.status_code == 302
    assert_on_site(resp.headers["Location"])


def test_login_again_from_a_stale_form_rotates_the_session(stack, gateway, username):
    r = redis.Redis.from_url(stack.redis.url, decode_responses=True)
    b = Browser(gateway)
    b.register(username)
    b.logout()
    stale = b.token()                                  # a second tab's login form
    assert b.login(username).status_code == 302
    first = b.sid
    resp = b.post("/login", data={"username": username, "password": "correct horse", "csrf_token": stale})
    assert resp.status_code == 302 and resp.headers["Location"] == "/"
    second = b.sid
    assert second != first
    assert Browser(gateway).http.get(gateway + "/api/me", cookies={COOKIE: first},
                                     timeout=5).status_code == 401
    assert b.me()["user"] == username
    assert not r.exists(session_key(first)) and r.exists(session_key(second))
    assert r.zscore(keys.ACTIVE_SESSIONS, session_key_hash(first)) is None
    assert r.zscore(keys.ACTIVE_SESSIONS, session_key_hash(second)) is not None
    # The stale token logs in, nothing else.
    assert b.post("/logout", data={"csrf_token": stale}).status_code == 400


def test_an_uploaders_path_is_cut_to_its_last_part(member):
    alice = member
    for sent, kept in [("..\\..\\evil.txt", "evil.txt"), ("C:\\Users\\me\\notes.txt", "notes.txt"),
                       ("../../etc/passwd", "passwd"), ("\u202eevil\x01.txt", "evil.txt")]:
        resp = upload(alice, sent, b"some text\n")
        assert resp.status_code == 201 and resp.json()["original_name"] == kept, resp.json()
    listed = [m["original_name"] for m in alice.get("/media/", headers=API).json()["media"]]
    assert listed == ["evil.txt", "passwd", "notes.txt", "evil.txt"]
    page = alice.get("/media/").text
    assert ">notes.txt</a>" in page and "...." not in page


def test_numbers_out_of_range_are_404_not_5xx(member):
    alice = member
    for page in ("9" * 23, str(2**63), "9" * 3000, "0"):  # (gunicorn refuses request lines over 4094 bytes: 414)
        resp = alice.get(f"/api/users/page/{page}")
        assert resp.status_code == 404 and resp.json()["error"], page
    assert alice.get("/api/users/page/999999").json()["users"] == []
    name = upload(alice, "a.txt", b"x").json()["name"]
    for exp in ("\u00b2", "9" * 3000, "-1", ""):  # the link expiry nginx could not verify
        resp = alice.get(f"/media/{name}?exp={quote(exp)}&sig=x")
        assert resp.status_code == 302 and resp.headers["Location"].startswith(f"/media/{name}?exp="), exp


RANGE = st.one_of(
    st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40),
    st.builds(lambda a, b: f"bytes={a}-{b}", st.one_of(st.just(""), st.integers(0, 5000).map(str)),
              st.one_of(st.just(""), st.integers(0, 5000).map(str))),
    st.builds(lambda a: f"bytes={a}", st.text(alphabet="0123456789-, ", max_size=20)))


@GATEWAY_EXAMPLES
@given(header=RANGE)
@example(header="bytes=-99999")
@example(header="bytes=" + "9" * 60 + "-")
def test_any_range_header_through_the_gateway(member, header):
    data = bytes(range(256)) * 8
    url = upload(member, "data.bin", data).json()["url"]
    status, headers, body = raw_request(member.base, url, {"Host": "gateway.test", "Range": header,
                                                            "Cookie": f"{COOKIE}={member.sid}"})
    assert status in (200, 206, 416), (header, status)
    assert int(headers["Content-Length"]) == len(body)
    if status == 200:
        assert body == data
    elif status == 416:
        assert headers["Content-Range"] == f"bytes */{len(data)}"
    elif not headers["Content-Type"].startswith("multipart/byteranges"):
        start, end, total = map(int, re.fullmatch(r"bytes (\d+)-(\d+)/(\d+)", headers["Content-Range"]).groups())
        assert total == len(data) and body == data[start:end + 1]
