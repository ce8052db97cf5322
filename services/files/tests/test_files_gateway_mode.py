"""The service configured for the gateway: signed links out, redirects and X-Accel-Redirect in."""
import time
from urllib.parse import parse_qs, urlsplit

from files_service import signing
from webchat_testing.media import SAMPLES, Person


def test_links_are_signed_for_the_session_and_expire_within_the_ttl(gateway_app, r):
    alice = Person(gateway_app, r, "alice")
    body = alice.upload("a.png", SAMPLES["pic.png"][0]).json
    url = urlsplit(body["url"])
    q = parse_qs(url.query)
    exp = int(q["exp"][0])
    assert url.path == f"/media/{body['name']}"
    assert time.time() < exp <= time.time() + 60 + 1
    assert q["sig"][0] == signing.signature(url.path, alice.sid, exp, "test-secret")
    listed = alice.client.get("/media/").json["media"][0]["url"]
    assert listed.startswith(url.path + "?exp=")


def test_a_plain_or_expired_link_is_redirected_to_a_fresh_one(gateway_app, r):
    alice = Person(gateway_app, r, "alice")
    name = alice.upload("a.png", SAMPLES["pic.png"][0]).json["name"]
    for query in ("", "?exp=1&sig=whatever", "?exp=junk&sig=x"):
        resp = alice.client.get(f"/media/{name}{query}")
        assert resp.status_code == 302, query
        assert resp.headers["Location"].startswith(f"/media/{name}?exp=")
        assert resp.headers["Cache-Control"] == "private, no-store"


def test_a_current_link_nginx_refused_is_checked_and_handed_to_nginx(gateway_app, r):
    alice, bob = Person(gateway_app, r, "alice"), Person(gateway_app, r, "bob")
    name = alice.upload("page.html", SAMPLES["page.html"][0]).json["name"]
    future = int(time.time()) + 30
    resp = alice.client.get(f"/media/{name}?exp={future}&sig=not-for-this-cookie")
    assert resp.status_code == 200 and resp.data == b""
    assert resp.headers["X-Accel-Redirect"] == f"/_media_internal/{name}"
    assert resp.headers["Content-Disposition"] == "attachment" and resp.mimetype == "text/html"
    assert bob.client.get(f"/media/{name}?exp={future}&sig=x").status_code == 404  # not bob's
