"""The files service run alone: uploads, the read rule, and send_from_directory serving."""
import os
import time

import pytest

from webchat_common import keys
from webchat_testing.media import INLINE, SAMPLES


def stored_files(media_root):
    return sorted(p.name for p in media_root.iterdir() if p.is_file())


def incoming(media_root):
    return list((media_root / ".incoming").iterdir())


def test_upload_stores_under_a_generated_name_and_keeps_the_original(people, media_root, r):
    alice = people("alice")
    data, _ = SAMPLES["pic.png"]
    resp = alice.upload("../../My Picture.png", data)
    assert resp.status_code == 201, resp.json
    body = resp.json
    assert body["original_name"] == "My Picture.png" and body["owner"] == "alice"
    assert body["type"] == "image/png" and body["size"] == len(data) and body["url"] == f"/media/{body['name']}"
    assert resp.headers["Location"] == body["url"]
    assert stored_files(media_root) == [body["name"]]
    assert (media_root / body["name"]).read_bytes() == data
    assert incoming(media_root) == []
    assert r.hget(keys.media(body["name"]), "owner") == "alice"


def test_list_shows_own_media_newest_first(people):
    alice, bob = people("alice"), people("bob")
    first = alice.upload("a.txt", b"first").json["name"]
    second = alice.upload("b.png", SAMPLES["pic.png"][0]).json["name"]
    bob.upload("c.txt", b"bob's")
    items = alice.client.get("/media/").json["media"]
    assert [m["name"] for m in items] == [second, first]
    assert set(items[0]) >= {"name", "size", "type", "uploaded_at", "owner", "url", "original_name"}
    assert items[1]["type"] == "text/plain" and items[1]["size"] == 5


@pytest.mark.parametrize("filename", sorted(SAMPLES))
def test_each_type_is_served_with_its_content_type(people, filename):
    alice = people("alice")
    data, mimetype = SAMPLES[filename]
    name = alice.upload(filename, data).json["name"]
    resp = alice.client.get(f"/media/{name}")
    assert resp.status_code == 200
    assert resp.mimetype == mimetype and resp.data == data
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    disposition = resp.headers["Content-Disposition"]
    if filename in INLINE:
        assert disposition.startswith("inline")
    else:
        assert disposition.startswith("attachment"), "html, svg and unknown types are downloads"
    assert "private" in resp.headers["Cache-Control"] and "no-cache" in resp.headers["Cache-Control"]


def test_ranges_and_revalidation(people):
    alice = people("alice")
    data = SAMPLES["clip.mp4"][0]
    name = alice.upload("clip.mp4", data).json["name"]
    url = f"/media/{name}"
    probe = alice.client.get(url, headers={"Range": "bytes=0-1"})  # Safari's probe
    assert probe.status_code == 206 and probe.data == data[:2]
    assert probe.headers["Content-Range"] == f"bytes 0-1/{len(data)}"
    whole = alice.client.get(url, headers={"Range": "bytes=0-"})
    assert whole.status_code == 206 and whole.data == data
    assert whole.headers["Content-Range"] == f"bytes 0-{len(data) - 1}/{len(data)}"
    tail = alice.client.get(url, headers={"Range": "bytes=-10"})
    assert tail.status_code == 206 and tail.data == data[-10:]
    bad = alice.client.get(url, headers={"Range": f"bytes={len(data) + 5}-"})
    assert bad.status_code == 416 and bad.headers["Content-Range"] == f"bytes */{len(data)}"
    full = alice.client.get(url)
    etag, modified = full.headers["ETag"], full.headers["Last-Modified"]
    assert alice.client.get(url, headers={"If-None-Match": etag}).status_code == 304
    assert alice.client.get(url, headers={"If-Modified-Since": modified}).status_code == 304
    changed = alice.client.get(url, headers={"If-None-Match": '"something-else"'})
    assert changed.status_code == 200 and changed.data == data


TRAVERSAL = [
    "../secret.txt", "..%2fsecret.txt", "%2e%2e/secret.txt", "%2e%2e%2fsecret.txt", "..\\secret.txt",
    "..%5csecret.txt", "%00.png", "a%00.png", "/etc/passwd", "%2fetc%2fpasswd", "....//secret.txt",
    "x" * 300 + ".png", ".incoming", "..", ".", "AAAAAAAAAAAAAAAAAAAAAA.png/../../secret.txt",
]


@pytest.mark.parametrize("path", TRAVERSAL)
def test_names_outside_the_media_directory_are_refused(people, media_root, path):
    (media_root.parent / "secret.txt").write_text("TOP SECRET")
    alice = people("alice")
    resp = alice.client.get("/media/" + path)
    assert resp.status_code in (400, 404), resp.status_code
    assert b"TOP SECRET" not in resp.data and b"root:" not in resp.data
    if resp.is_json:
        assert "error" in resp.json


def test_a_symlink_pointing_out_is_not_followed_even_with_metadata(people, media_root, r):
    alice = people("alice")
    outside = media_root.parent / "outside.txt"
    outside.write_text("OUTSIDE")
    name = "A" * 22 + ".txt"
    os.symlink(outside, media_root / name)
    r.hset(keys.media(name), mapping={"name": name, "owner": "alice", "original_name": "x", "type": "text/plain",
                                      "size": 7, "uploaded_at": time.time(), "kind": "upload"})
    resp = alice.client.get(f"/media/{name}")
    assert resp.status_code == 404 and b"OUTSIDE" not in resp.data


def test_a_file_without_metadata_is_not_served(people, media_root):
    alice = people("alice")
    name = "B" * 22 + ".txt"
    (media_root / name).write_text("planted")
    assert alice.client.get(f"/media/{name}").status_code == 404


def test_visitors_are_refused(app, people):
    name = people("alice").upload("a.txt", b"hello").json["name"]
    visitor = app.test_client()
    resp = visitor.get(f"/media/{name}")
    assert resp.status_code == 401 and resp.json == {"error": "login required"}
    page = visitor.get(f"/media/{name}", headers={"Accept": "text/html"})
    assert page.status_code == 302 and page.headers["Location"] == f"/login?next=/media/{name}"
    assert visitor.get("/media/").status_code == 401
    assert visitor.post("/media/", data={}).status_code == 401


def test_read_rule_owner_readers_and_avatars(people, r):
    alice, bob, carol = people("alice"), people("bob"), people("carol")
    name = alice.upload("a.txt", b"for bob").json["name"]
    assert bob.client.get(f"/media/{name}").status_code == 404  # not yours: no such media
    resp = alice.client.post(f"/media/{name}/share", json={"users": ["Bob", "nobody-registered"]},
                             headers={"X-CSRF-Token": alice.csrf})
    assert resp.status_code == 200 and resp.json["added"] == ["bob"]
    assert bob.client.get(f"/media/{name}").data == b"for bob"
    assert carol.client.get(f"/media/{name}").status_code == 404
    # Chat grants the same way, straight in Redis:
    r.sadd(keys.media_readers(name), "carol")
    assert carol.client.get(f"/media/{name}").status_code == 200
    # Only the owner shares.
    resp = bob.client.post(f"/media/{name}/share", json={"users": ["carol"]}, headers={"X-CSRF-Token": bob.csrf})
    assert resp.status_code == 404
    bad = alice.client.post(f"/media/{name}/share", json={"users": "bob"}, headers={"X-CSRF-Token": alice.csrf})
    assert bad.status_code == 400 and "error" in bad.json


def test_over_the_limit_is_413_and_nothing_is_stored(app, people, media_root, r):
    alice = people("alice")
    limit = app.config["MEDIA_MAX_UPLOAD_BYTES"]
    for size in (limit + 1, limit + 100 * 1024):
        resp = alice.upload("big.txt", b"x" * size)
        assert resp.status_code == 413 and "limit" in resp.json["error"]
    assert alice.upload("ok.txt", b"x" * limit).status_code == 201
    assert len(stored_files(media_root)) == 1 and incoming(media_root) == []
    assert len(r.keys("media:*")) == 2  # the one file and its owner's list


def test_fake_image_is_refused_and_nothing_is_stored(people, media_root, r):
    alice = people("alice")
    resp = alice.upload("cat.png", b"<?php system($_GET['c']); ?> not a png")
    assert resp.status_code == 415 and "PNG" in resp.json["error"]
    assert stored_files(media_root) == [] and incoming(media_root) == [] and r.keys("media:*") == []


def test_missing_file_field_is_400(people):
    alice = people("alice")
    resp = alice.client.post("/media/", data={"other": "x"}, headers={"X-CSRF-Token": alice.csrf})
    assert resp.status_code == 400 and "file" in resp.json["error"]


def test_cross_site_uploads_are_refused(people, media_root):
    alice = people("alice")
    png = SAMPLES["pic.png"][0]
    no_token = alice.upload("a.png", png, headers={"X-CSRF-Token": ""})
    assert no_token.status_code == 400
    evil = alice.upload("a.png", png, headers={"Origin": "https://evil.example", "X-CSRF-Token": ""})
    assert evil.status_code == 403 and "Cross-site" in evil.json["error"]
    assert stored_files(media_root) == []
    own_origin = alice.upload("a.png", png, headers={"Origin": "http://localhost", "X-CSRF-Token": ""})
    assert own_origin.status_code == 201, "a script sending our own Origin with a session may upload"
    form_token = alice.upload("a.png", png, headers={"X-CSRF-Token": ""}, csrf_token=alice.csrf)
    assert form_token.status_code == 201


def test_avatar_is_an_image_readable_by_everyone_and_replaces_the_old_one(people, media_root, r):
    alice, bob = people("alice"), people("bob")
    refused = alice.upload("me.txt", b"hello", path="/media/avatar")
    assert refused.status_code == 415
    svg = alice.upload("me.svg", SAMPLES["logo.svg"][0], path="/media/avatar")
    assert svg.status_code == 415, "an SVG can carry script: not an avatar"
    first = alice.upload("me.png", SAMPLES["pic.png"][0], path="/media/avatar").json["name"]
    assert r.hget(keys.user("alice"), "avatar") == first
    assert bob.client.get(f"/media/{first}").status_code == 200
    second = alice.upload("me.gif", SAMPLES["anim.gif"][0], path="/media/avatar").json["name"]
    assert r.hget(keys.user("alice"), "avatar") == second
    assert alice.client.get(f"/media/{first}").status_code == 404
    assert stored_files(media_root) == [second]


def test_avatar_form_from_the_profile_page_goes_back_to_it(people):
    alice = people("alice")
    resp = alice.upload("me.png", SAMPLES["pic.png"][0], path="/media/avatar",
                        headers={"Accept": "text/html", "X-CSRF-Token": ""}, csrf_token=alice.csrf)
    assert resp.status_code == 303 and resp.headers["Location"] == "/profile"
    too_big = alice.upload("me.png", b"\x89PNG\r\n\x1a\n" + bytes(200 * 1024), path="/media/avatar",
                           headers={"Accept": "text/html"})
    assert too_big.status_code == 413 and b"limit" in too_big.data


def test_stale_incoming_files_are_cleaned_at_start(app, media_root, redis_url):
    from files_service import FilesTestConfig, create_app
    from webchat_common import as_mapping

    old = media_root / ".incoming" / "up-old"
    old.write_bytes(b"partial")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    fresh = media_root / ".incoming" / "up-fresh"
    fresh.write_bytes(b"in progress")
    create_app(as_mapping(FilesTestConfig, REDIS_URL=redis_url, MEDIA_ROOT=str(media_root)))
    assert not old.exists() and fresh.exists()


def test_gateway_mode_needs_a_secret(redis_url, media_root):
    from files_service import FilesTestConfig, create_app
    from webchat_common import as_mapping

    with pytest.raises(RuntimeError, match="MEDIA_URL_SECRET"):
        create_app(as_mapping(FilesTestConfig, REDIS_URL=redis_url, MEDIA_ROOT=str(media_root), MEDIA_GATEWAY=True))


def test_metrics_count_uploads_refusals_and_bytes_served(people):
    from prometheus_client import REGISTRY

    def value(name, **labels):
        return REGISTRY.get_sample_value(name, labels) or 0.0

    alice = people("alice")
    uploaded, served = value("webchat_files_bytes_uploaded_total"), value("webchat_files_bytes_served_total")
    fake, big = (value("webchat_files_uploads_refused_total", reason=r) for r in ("bad_type", "too_large"))
    name = alice.upload("a.txt", b"12345").json["name"]
    alice.upload("a.png", b"not a png")
    alice.upload("a.txt", b"x" * (300 * 1024))
    alice.client.get(f"/media/{name}")
    alice.client.get(f"/media/{name}", headers={"Range": "bytes=0-1"})
    assert value("webchat_files_bytes_uploaded_total") - uploaded == 5
    assert value("webchat_files_bytes_served_total") - served == 5 + 2
    assert value("webchat_files_uploads_refused_total", reason="bad_type") - fake == 1
    assert value("webchat_files_uploads_refused_total", reason="too_large") - big == 1
