"""Media through the real gateway (issue 3): nginx checks signed links and streams the files,
the files service checks everything else.  See docs/media.md."""
import hashlib
import http.client
import threading
import time
import uuid
from urllib.parse import parse_qs, urlsplit

import redis
import requests

from support.web import Browser
from webchat_common import keys
from webchat_testing import wait_until
from webchat_testing.media import INLINE, SAMPLES
from webchat_testing.sessions import COOKIE

API = {"Accept": "application/json"}
TTL = 120  # the files service's default MEDIA_URL_TTL, which the local stack keeps


def person(gateway, name):
    b = Browser(gateway)
    assert b.register(name).status_code == 303
    return b


def upload(b, filename, data, path="/media/", headers=None):
    hdrs = {"X-CSRF-Token": b.me()["csrf_token"], **API, **(headers or {})}
    return b.post(path, files={"file": (filename, data)}, headers=hdrs)


def visible_media(stack):
    """What a reader could find in the media directory (the dot-directory holds partial uploads)."""
    return {p.name for p in stack.media_root.iterdir() if not p.name.startswith(".")}


def served_by_python(stack, rid):
    return rid in (stack.log_dir / "files-0.log").read_text()


def test_every_type_is_streamed_by_nginx_with_its_content_type(stack, gateway, username):
    alice = person(gateway, username)
    marks = {}
    for filename, (data, mimetype) in SAMPLES.items():
        resp = upload(alice, filename, data)
        assert resp.status_code == 201, (filename, resp.text)
        body = resp.json()
        plain = alice.get(f"/media/{body['name']}")
        assert plain.status_code == 302 and plain.headers["Location"] == body["url"]
        rid = f"media-{uuid.uuid4().hex}"
        got = alice.get(body["url"], headers={"X-Request-ID": rid})
        assert got.status_code == 200 and got.content == data, filename
        assert got.headers["Content-Type"].split(";")[0] == mimetype, filename
        assert got.headers["X-Content-Type-Options"] == "nosniff"
        assert got.headers["Cache-Control"] == "private, max-age=120"
        if filename in INLINE:
            assert "Content-Disposition" not in got.headers, filename
        else:
            assert got.headers["Content-Disposition"] == "attachment", f"{filename} must never render inline"
        marks[rid] = plain.headers["X-Request-ID"]
    # The redirects went through Python; the files themselves never did.
    last_redirect = list(marks.values())[-1]
    wait_until(lambda: served_by_python(stack, last_redirect), timeout=5, what="the redirect in the files log")
    assert not any(served_by_python(stack, rid) for rid in marks)


def test_ranges_and_revalidation_through_the_gateway(gateway, username):
    alice = person(gateway, username)
    data = SAMPLES["clip.mp4"][0]
    body = upload(alice, "clip.mp4", data).json()
    n = len(data)
    signed = body["url"]
    refused_sig = f"/media/{body['name']}?exp={int(time.time()) + 60}&sig=forged"  # Python, then X-Accel
    for url in (signed, refused_sig):
        probe = alice.get(url, headers={"Range": "bytes=0-1"})
        assert probe.status_code == 206 and probe.content == data[:2], url
        assert probe.headers["Content-Range"] == f"bytes 0-1/{n}"
        whole = alice.get(url, headers={"Range": "bytes=0-"})
        assert whole.status_code == 206 and whole.headers["Content-Range"] == f"bytes 0-{n - 1}/{n}"
        assert whole.content == data
        middle = alice.get(url, headers={"Range": "bytes=100-199"})
        assert middle.status_code == 206 and middle.content == data[100:200]
        beyond = alice.get(url, headers={"Range": f"bytes={n + 10}-"})
        assert beyond.status_code == 416 and beyond.headers["Content-Range"] == f"bytes */{n}"
        full = alice.get(url)
        assert full.status_code == 200 and full.headers["Accept-Ranges"] == "bytes"
        etag, modified = full.headers["ETag"], full.headers["Last-Modified"]
        assert alice.get(url, headers={"If-None-Match": etag}).status_code == 304
        assert alice.get(url, headers={"If-Modified-Since": modified}).status_code == 304
        assert alice.get(url, headers={"If-None-Match": '"other"'}).status_code == 200


TRAVERSAL = [
    "/media/../secret.txt", "/media/%2e%2e/secret.txt", "/media/%2E%2E%2Fsecret.txt", "/media/..%2fsecret.txt",
    "/media/..%2F..%2Fetc%2Fpasswd", "/media/%2fetc%2fpasswd", "/media//etc/passwd", "/media/..\\secret.txt",
    "/media/..%5c..%5cetc%5cpasswd", "/media/a%00.png", "/media/%00", "/media/" + "a" * 300 + ".png",
    "/media/.incoming/", "/media/.incoming/up-x", "/_media_internal/secret.txt", "/_media_internal/../secret.txt",
    "/media/" + "A" * 22 + ".png/../../secret.txt", "/media/....//secret.txt", "/media/%252e%252e/secret.txt",
]


def raw_get(gateway, path, cookie):
    """Send ``path`` exactly as written (requests would normalise it)."""
    u = urlsplit(gateway)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=5)
    try:
        conn.putrequest("GET", path, skip_accept_encoding=True)
        conn.putheader("Cookie", f"{COOKIE}={cookie}")
        conn.putheader("Accept", "application/json")
        conn.endheaders()
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def test_paths_outside_the_media_directory_are_refused(stack, gateway, username):
    (stack.state_dir / "secret.txt").write_text("TOP SECRET")
    (stack.media_root / ".incoming" / "up-x").write_text("PARTIAL")
    alice = person(gateway, username)
    for path in TRAVERSAL:
        status, body = raw_get(gateway, path, alice.sid)
        assert status in (400, 404), (path, status)
        assert b"TOP SECRET" not in body and b"PARTIAL" not in body and b"root:" not in body, path
    (stack.media_root / ".incoming" / "up-x").unlink()


def test_a_symlink_pointing_out_is_never_followed(stack, gateway, username):
    alice = person(gateway, username)
    outside = stack.state_dir / "outside.txt"
    outside.write_text("OUTSIDE")
    name = uuid.uuid4().hex[:22] + ".txt"
    (stack.media_root / name).symlink_to(outside)
    r = redis.Redis.from_url(stack.redis.url, decode_responses=True)
    r.hset(keys.media(name), mapping={"name": name, "owner": username, "original_name": "x.txt",
                                      "type": "text/plain", "size": 7, "uploaded_at": time.time(), "kind": "upload"})
    url = alice.get(f"/media/{name}")  # Python: lstat says not a regular file
    assert url.status_code == 404 and b"OUTSIDE" not in url.content
    # Even a valid signed link (nginx's disable_symlinks, then the service's own check) is refused.
    from files_service import signing

    signed = signing.signed_url(f"/media/{name}", alice.sid, stack.media_url_secret, 60)
    resp = alice.get(signed)
    assert resp.status_code == 404 and b"OUTSIDE" not in resp.content


def test_visitors_and_other_users_are_refused(gateway, username):
    alice = person(gateway, username)
    body = upload(alice, "a.txt", b"alice only").json()
    visitor = requests.get(gateway + f"/media/{body['name']}", allow_redirects=False, timeout=5)
    assert visitor.status_code == 401 and visitor.json() == {"error": "login required"}
    stolen_link = requests.get(gateway + body["url"], allow_redirects=False, timeout=5)
    assert stolen_link.status_code == 401, "a signed link is worthless without the session cookie"
    bob = person(gateway, username + "b")
    assert bob.get(body["url"], headers=API).status_code == 404, "nor with someone else's"
    assert bob.get(f"/media/{body['name']}", headers=API).status_code == 404


def test_logout_stops_media_within_the_link_lifetime(stack, gateway, username):
    from files_service import signing

    alice = person(gateway, username)
    body = upload(alice, "a.txt", b"private words").json()
    exp = int(parse_qs(urlsplit(body["url"]).query)["exp"][0])
    assert exp <= time.time() + TTL, "issued links live at most MEDIA_URL_TTL"
    copied = {COOKIE: alice.sid}
    # A link as the service would issue it with a 2-second TTL (same secret, same format).
    short = signing.signed_url(f"/media/{body['name']}", alice.sid, stack.media_url_secret, 2)
    assert requests.get(gateway + short, cookies=copied, timeout=5).content == b"private words"
    assert alice.logout().status_code == 303
    plain = requests.get(gateway + f"/media/{body['name']}", cookies=copied, allow_redirects=False, timeout=5)
    assert plain.status_code == 401, "anything Python answers is refused at once"
    assert requests.get(gateway + "/media/", cookies=copied, timeout=5).status_code == 401
    still = requests.get(gateway + body["url"], cookies=copied, timeout=5)
    assert still.status_code == 200, "an already issued link works until it expires (the stated bound)"
    short_exp = int(parse_qs(urlsplit(short).query)["exp"][0])
    time.sleep(max(0.0, short_exp - time.time()) + 1.1)
    expired = requests.get(gateway + short, cookies=copied, allow_redirects=False, timeout=5)
    assert expired.status_code == 401 and b"private words" not in expired.content


def test_over_the_limit_is_413_json_and_nothing_is_stored(stack, gateway, username):
    alice = person(gateway, username)
    before = visible_media(stack)
    incoming_before = set((stack.media_root / ".incoming").iterdir())
    limit = 20 * 1024 * 1024  # MEDIA_MAX_UPLOAD_BYTES default
    resp = upload(alice, "big.bin", b"\0" * (limit + 1))
    assert resp.status_code == 413 and "limit" in resp.json()["error"]

    def chunks():  # no Content-Length: the service stops reading at the limit
        yield b"--B\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.txt\"\r\n\r\n"
        for _ in range(21):
            yield b"x" * (1024 * 1024)
        yield b"\r\n--B--\r\n"

    resp = alice.post("/media/", data=chunks(), headers={"X-CSRF-Token": alice.me()["csrf_token"], **API,
                                                         "Content-Type": "multipart/form-data; boundary=B"})
    assert resp.status_code == 413 and "limit" in resp.json()["error"]
    assert visible_media(stack) == before
    wait_until(lambda: set((stack.media_root / ".incoming").iterdir()) == incoming_before, timeout=5,
               what="no partial upload left")
    assert alice.get("/media/", headers=API).json() == {"media": []}


def test_a_fake_image_is_refused(stack, gateway, username):
    alice = person(gateway, username)
    before = visible_media(stack)
    resp = upload(alice, "kitten.png", b"GET /admin HTTP/1.1\r\nthis is text, not a picture\n")
    assert resp.status_code == 415 and "PNG" in resp.json()["error"]
    assert visible_media(stack) == before and alice.get("/media/", headers=API).json() == {"media": []}


def test_a_concurrent_upload_and_read_never_see_a_half_written_file(stack, gateway, username):
    alice = person(gateway, username)
    other = SAMPLES["pic.png"][0]
    assert upload(alice, "other.png", other).status_code == 201
    data = bytes(range(256)) * 4096 * 2  # 2 MiB of binary
    token = alice.me()["csrf_token"]
    result = {}

    def slow_body():
        yield b"--B\r\nContent-Disposition: form-data; name=\"file\"; filename=\"slow.bin\"\r\n\r\n"
        for i in range(0, len(data), 128 * 1024):
            yield data[i:i + 128 * 1024]
            time.sleep(0.05)
        yield b"\r\n--B--\r\n"

    def send():
        result["resp"] = alice.http.post(gateway + "/media/", data=slow_body(), timeout=30, headers={
            "X-CSRF-Token": token, **API, "Content-Type": "multipart/form-data; boundary=B"})

    before = visible_media(stack)
    sender = threading.Thread(target=send)
    sender.start()
    reader = Browser(gateway)
    reader.http.cookies.set(COOKIE, alice.sid)
    polls_while_incomplete = 0
    while sender.is_alive():
        listed = reader.get("/media/", headers=API).json()["media"]
        for item in listed:  # whatever is listed is whole
            got = reader.http.get(gateway + item["url"], timeout=5)
            assert got.status_code == 200 and len(got.content) == item["size"]
        new = visible_media(stack) - before
        for name in new:  # whatever is in the directory under a media name is whole
            assert (stack.media_root / name).stat().st_size == len(data)
        if not new and len(listed) == 1:
            polls_while_incomplete += 1
    sender.join()
    assert polls_while_incomplete > 3, "the reads overlapped the upload"
    resp = result["resp"]
    assert resp.status_code == 201, resp.text
    got = reader.http.get(gateway + resp.json()["url"], timeout=5)
    assert hashlib.sha256(got.content).digest() == hashlib.sha256(data).digest()


def test_cross_site_upload_refused_but_our_origin_accepted(gateway, username):
    alice = person(gateway, username)
    png = SAMPLES["pic.png"][0]
    files = {"file": ("a.png", png)}
    evil = alice.post("/media/", files=files, headers={"Origin": "https://evil.example", **API})
    assert evil.status_code == 403
    neither = alice.post("/media/", files=files, headers=API)
    assert neither.status_code == 400
    ours = alice.post("/media/", files=files, headers={"Origin": gateway, **API})
    assert ours.status_code == 201, "a script sending the gateway's Origin with a valid session may upload"
    assert ours.json()["url"].startswith(f"/media/{ours.json()['name']}?exp=")


def test_listing_describes_each_file(gateway, username):
    alice = person(gateway, username)
    body = upload(alice, "notes.txt", b"hello").json()
    (item,) = alice.get("/media/", headers=API).json()["media"]
    assert item["name"] == body["name"] and item["owner"] == username and item["size"] == 5
    assert item["type"] == "text/plain" and item["original_name"] == "notes.txt"
    assert abs(item["uploaded_at"] - time.time()) < 60
    assert alice.get(item["url"]).content == b"hello"


def test_avatar_from_the_profile_page_is_shown_on_the_home_page(gateway, username):
    alice = person(gateway, username)
    profile = alice.get("/profile").text
    assert 'action="/media/avatar"' in profile and 'enctype="multipart/form-data"' in profile
    token = alice.token("/profile")
    resp = alice.post("/media/avatar", data={"csrf_token": token}, files={"file": ("me.png", SAMPLES["pic.png"][0])})
    assert resp.status_code == 303 and resp.headers["Location"] == "/profile"
    home = alice.get("/").text
    name = home.split('id="avatar" src="/media/', 1)[1].split('"', 1)[0]
    assert name.endswith(".png")
    assert f'src="/media/{name}"' in alice.get("/profile").text
    bob = person(gateway, username + "b")
    shown = bob.http.get(gateway + f"/media/{name}", timeout=5)  # follows the redirect to bob's own link
    assert shown.status_code == 200 and shown.content == SAMPLES["pic.png"][0]
    assert shown.headers["Content-Type"] == "image/png"


def test_chat_style_sharing_lets_the_other_person_read(gateway, username):
    alice, bob = person(gateway, username), person(gateway, username + "b")
    body = upload(alice, "a.txt", b"for bob").json()
    assert bob.get(f"/media/{body['name']}", headers=API).status_code == 404
    resp = alice.post(f"/media/{body['name']}/share", json={"users": [username + "b"]},
                      headers={"X-CSRF-Token": alice.me()["csrf_token"], **API})
    assert resp.status_code == 200 and resp.json()["added"] == [(username + "b").lower()]
    assert bob.http.get(gateway + f"/media/{body['name']}", timeout=5).content == b"for bob"


def test_an_aborted_upload_leaves_nothing(stack, gateway, username):
    import socket

    alice = person(gateway, username)
    token = alice.me()["csrf_token"]
    before = visible_media(stack)
    incoming_before = set((stack.media_root / ".incoming").iterdir())
    head = b'--B\r\nContent-Disposition: form-data; name="file"; filename="half.bin"\r\n\r\n'
    u = urlsplit(gateway)
    with socket.create_connection((u.hostname, u.port), timeout=5) as s:
        s.sendall(b"POST /media/ HTTP/1.1\r\nHost: " + u.netloc.encode()
                  + b"\r\nCookie: " + COOKIE.encode() + b"=" + alice.sid.encode()
                  + b"\r\nX-CSRF-Token: " + token.encode()
                  + b"\r\nContent-Type: multipart/form-data; boundary=B\r\nContent-Length: 2000000\r\n\r\n"
                  + head + b"x" * 500_000)
        wait_until(lambda: set((stack.media_root / ".incoming").iterdir()) - incoming_before, timeout=5,
                   what="the service writing the part into .incoming")
        assert visible_media(stack) == before
    wait_until(lambda: set((stack.media_root / ".incoming").iterdir()) == incoming_before, timeout=10,
               what="the partial upload removed")
    assert visible_media(stack) == before
    assert alice.get("/media/", headers=API).json() == {"media": []}
