"""``/media/``: list, upload, serve and share media; ``/media/avatar``: the profile picture.

Serving has two modes (``MEDIA_GATEWAY``):

- behind the gateway, the URLs this service hands out are signed links that nginx checks
  (``secure_link``) and streams without asking Python.  A ``GET /media/<name>`` that reaches
  Python is one nginx could not verify: a plain link (``<img src="/media/x.png">``) or an
  expired one gets a 302 to a fresh signed link; a link nginx refused although it has not
  expired (another browser's, or a forged one) is checked here and handed to nginx with
  ``X-Accel-Redirect`` — never a redirect loop.
- run alone, Flask sends the file (``send_from_directory``: Range, ETag, Last-Modified, 304).
"""
import os

from flask import Blueprint, Response, current_app, jsonify, redirect, render_template, request, send_from_directory
from werkzeug.exceptions import BadRequest, RequestEntityTooLarge
from werkzeug.http import parse_range_header

from webchat_common import (CSRF_REFUSED, csrf_exempt, csrf_valid, current_user, error_response, get_redis,
                            login_required, media, origin_allowed, request_int, wants_json)
from webchat_common.names import is_media_name

from . import detect, metrics, signing, store

bp = Blueprint("files", __name__, url_prefix="/media")

#: Room for the multipart framing and a csrf_token field on top of the file's own limit.
MULTIPART_OVERHEAD = 16 * 1024
NAME_MAX = 255


def media_url(name):
    """The URL a page should use for ``name``: a signed link behind the gateway."""
    uri = f"/media/{name}"
    cfg = current_app.config
    sid = request.cookies.get(cfg["SESSION_COOKIE_NAME"])
    if not cfg["MEDIA_GATEWAY"] or not sid:
        return uri
    return signing.signed_url(uri, sid, cfg["MEDIA_URL_SECRET"], cfg["MEDIA_URL_TTL"])


def _public(meta):
    return {
        "name": meta["name"],
        "url": media_url(meta["name"]),
        "original_name": meta["original_name"],
        "type": meta["type"],
        "size": meta["size"],
        "uploaded_at": meta["uploaded_at"],
        "owner": meta["owner"],
        "kind": meta.get("kind", "upload"),
    }


def _json_error(code, message, reason=None, headers=()):
    if reason:
        metrics.UPLOADS_REFUSED.labels(reason=reason).inc()
    resp = jsonify(error=message)
    resp.status_code = code
    resp.headers.extend(headers)
    return resp


@bp.get("/")
@login_required
def media_list():
    """The user's own media, newest first, with links to use in pages: JSON, or for a
    browser the media page (the list, previews and an upload form)."""
    items = [_public(m) for m in store.list_for(current_user(), current_app.config["MEDIA_LIST_LIMIT"])]
    if wants_json():
        resp = jsonify(media=items)
    else:
        resp = Response(render_template("media.html", items=items, limit=current_app.config["MEDIA_MAX_UPLOAD_BYTES"]))
    resp.headers["Cache-Control"] = "private, no-store"
    return resp


def _cross_site_refusal():
    """None if this unsafe request comes from our own pages or a script of the user: an
    ``Origin`` equal to our own (browsers cannot fake it; a cross-site form or fetch carries
    the other site's), or, without an ``Origin``, the session's CSRF token (header
    ``X-CSRF-Token`` or form field ``csrf_token``).  Otherwise the error response."""
    origin = request.headers.get("Origin")
    if origin is not None:
        if origin_allowed(origin, request.host):
            return None
        return _json_error(403, "Cross-site upload refused.", "cross_site")
    if csrf_valid():
        return None
    return _json_error(400, CSRF_REFUSED, "cross_site")


def _receive(limit):
    """The uploaded file (its stream an ``.incoming`` temp file), or an error response."""
    too_large = f"The file is larger than the limit of {limit} bytes."
    body_limit = limit + MULTIPART_OVERHEAD
    if request.content_length is not None and request.content_length > body_limit:
        return None, _json_error(413, too_large, "too_large")
    request.max_content_length = body_limit
    try:
        refusal = _cross_site_refusal()
        if refusal is not None:
            return None, refusal
        upload = request.files.get("file")
    except RequestEntityTooLarge:
        return None, _json_error(413, too_large, "too_large")
    except BadRequest:
        return None, _json_error(400, "The upload was incomplete or malformed.", "incomplete")
    if upload is None or not upload.filename:
        return None, _json_error(400, "Send the file in the multipart form field 'file' (with a file name).", "no_file")
    if os.fstat(upload.stream.fileno()).st_size > limit:
        return None, _json_error(413, too_large, "too_large")
    return upload, None


def _store(upload, kind, allowed=None):
    try:
        meta = store.save(upload, current_user(), kind=kind, allowed=allowed)
    except detect.Refused as exc:
        return None, _json_error(415, str(exc), "bad_type")
    metrics.BYTES_UPLOADED.inc(meta["size"])
    return meta, None


@bp.post("/")
@csrf_exempt  # checked by _cross_site_refusal: a token, or our own Origin
@login_required
def upload():
    """Store the multipart field ``file``; 201 with its metadata and ``url`` (a browser's
    form goes back to the media page, or gets an error page)."""
    received, error = _receive(current_app.config["MEDIA_MAX_UPLOAD_BYTES"])
    if error is None:
        meta, error = _store(received, "upload")
    if error is not None:
        return error if wants_json() else error_response(error.status_code, error.get_json()["error"])
    if not wants_json():
        return redirect("/media/", code=303)
    resp = jsonify(_public(meta))
    resp.status_code = 201
    resp.headers["Location"] = f"/media/{meta['name']}"
    return resp


@bp.post("/avatar")
@csrf_exempt  # checked by _cross_site_refusal
@login_required
def avatar():
    """Store an image (JPEG, PNG, GIF or WebP) as the user's avatar, readable by every
    logged-in user; the previous avatar is deleted.  A browser form goes back to /profile."""
    received, error = _receive(current_app.config["MEDIA_AVATAR_MAX_BYTES"])
    if error is None:
        meta, error = _store(received, "avatar", allowed=detect.IMAGE_KINDS)
    if error is not None:
        return error if wants_json() else error_response(error.status_code, error.get_json()["error"])
    store.set_avatar(current_user(), meta["name"])
    if not wants_json():
        return redirect("/profile", code=303)
    resp = jsonify(_public(meta))
    resp.status_code = 201
    return resp


def _check_name(name):
    """400 for names that try to leave the directory, 404 for anything else not a media name;
    nothing is opened before the name passed."""
    if len(name) > NAME_MAX or any(c in name for c in "/\\\x00") or ".." in name:
        return _json_error(400, "Not a media file name.")
    if not is_media_name(name):
        return _json_error(404, "No such media.")
    return None


@bp.get("/<path:name>")
@login_required
def serve(name):
    """A media file the user may read: see the module docstring for the two modes."""
    refusal = _check_name(name)
    if refusal is not None:
        return refusal
    try:
        meta = store.readable(name, current_user())
    except store.Unreadable:
        return _json_error(404, "No such media.")
    cfg = current_app.config
    kind_inline = name.rsplit(".", 1)[1] in detect.INLINE_EXTS
    if cfg["MEDIA_GATEWAY"]:
        return _via_gateway(name, meta, kind_inline)
    _clamp_suffix_range(meta["size"])
    resp = send_from_directory(cfg["MEDIA_ROOT"], name, mimetype=meta["type"], as_attachment=not kind_inline,
                               download_name=meta["original_name"], conditional=True, etag=True, max_age=None)
    resp.cache_control.no_cache = True
    resp.cache_control.private = True
    resp.headers["X-Content-Type-Options"] = "nosniff"
    metrics.SERVED.labels(via="flask").inc()
    if request.method == "GET":
        metrics.BYTES_SERVED.inc(resp.content_length or 0)
    return resp


def _clamp_suffix_range(size):
    """RFC 9110 (14.1.2): a suffix range longer than the file (``bytes=-5000`` of 1,000 bytes)
    means the whole file, a 206; werkzeug answers 416.  Such a request is rewritten to the
    file's own length before ``send_from_directory`` reads it (nginx, behind the gateway, already
    does this)."""
    rng = parse_range_header(request.headers.get("Range"))
    if rng is not None and rng.units == "bytes" and len(rng.ranges) == 1:
        start, _ = rng.ranges[0]
        if start < 0 and -start > size > 0:
            request.environ["HTTP_RANGE"] = f"bytes=-{size}"


def _via_gateway(name, meta, inline):
    exp = request_int(request.args.get("exp"))
    signed_and_current = "sig" in request.args and exp is not None and exp > signing.time.time()
    if not signed_and_current:
        metrics.SERVED.labels(via="redirect").inc()
        resp = redirect(media_url(name), code=302)
        resp.headers["Cache-Control"] = "private, no-store"
        return resp
    # nginx refused a link that has not expired: not this browser's.  The session was checked
    # above, so serve it, through nginx.
    metrics.SERVED.labels(via="x_accel").inc()
    resp = Response(status=200, mimetype=meta["type"])
    resp.headers["X-Accel-Redirect"] = current_app.config["MEDIA_ACCEL_PREFIX"] + name
    resp.headers["Cache-Control"] = "private, no-cache"
    if not inline:
        resp.headers["Content-Disposition"] = "attachment"
    return resp


@bp.post("/<name>/share")
@login_required
def share(name):
    """The owner lets other users read ``name``: JSON ``{"users": [...]}`` (header
    ``X-CSRF-Token``).  What chat does when a file is sent into a conversation."""
    refusal = _check_name(name)
    if refusal is not None:
        return refusal
    if not media.is_owner(get_redis(), name, current_user()):
        return _json_error(404, "No such media.")
    body = request.get_json(silent=True)
    users = body.get("users") if isinstance(body, dict) else None
    if not isinstance(users, list) or not all(isinstance(u, str) and 0 < len(u) <= 32 for u in users) or len(users) > 1000:
        return _json_error(400, 'Send JSON {"users": ["name", ...]}.')
    added = media.share(get_redis(), name, current_user(), users)
    if added is None:  # deleted meanwhile
        return _json_error(404, "No such media.")
    return jsonify(name=name, added=added)
