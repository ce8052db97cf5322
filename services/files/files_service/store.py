"""Media on disk and their metadata in Redis (keys in ``webchat_common.keys``).

Files live flat in ``MEDIA_ROOT`` under generated names ``<22 url-safe chars>.<ext>`` (128
random bits; the extension is the detected type's): ``webchat_common.names.MEDIA_NAME``, matched
whole, is the only name this module ever opens or deletes.  An upload is written to
``MEDIA_ROOT/.incoming/`` while it arrives, checked, then hard-linked to its final name in one
atomic step, so no reader ever sees a partial file under a media name; the metadata is written
after the link, and a file without metadata is never served (the metadata is the permission).

A file's metadata, its readers and its owner's list are in different slots of a Redis Cluster
(docs/cluster.md), so they are written one after the other, never in one transaction, in the
order that makes a partial failure harmless: an upload adds the name to its owner's list
first and writes the metadata last (a name in the list without metadata is skipped by
:func:`list_for`); a deletion removes the metadata first (the file stops being served at
once), then the readers and the list entry.

Who may read a file (:func:`may_read`):

- its owner (the uploader);
- every logged-in user, for an avatar;
- the users in its readers set ``media:<name>:readers``: chat (or the owner through
  ``POST /media/<name>/share``) adds the people of the conversation the file was shared in.

The uploader's own file name is kept only as metadata (``original_name``: shown in lists, the
download name), cleaned by :func:`clean_original`: its last path part for both ``/`` and ``\\``,
printable characters only, no leading or trailing dots or spaces, at most ``ORIGINAL_MAX``
characters with its extension kept, never empty (``file``).
"""
import os
import re
import secrets
import stat
import tempfile
import time
from pathlib import Path

from flask import current_app
from werkzeug.http import parse_options_header

from webchat_common import get_redis, keys
from webchat_common.names import is_media_name

from . import detect

INCOMING = ".incoming"
#: An .incoming file older than this is left over from a killed worker and is removed at start.
STALE_INCOMING_SECONDS = 3600
ORIGINAL_MAX = 255


class Unreadable(Exception):
    """No such media for this user (missing, not allowed, or not a regular file)."""


def root():
    return Path(current_app.config["MEDIA_ROOT"])


def prepare(media_root):
    """Create the media directories, and drop partial uploads a killed worker left behind."""
    incoming = Path(media_root) / INCOMING
    incoming.mkdir(parents=True, exist_ok=True)
    cutoff = time.time() - STALE_INCOMING_SECONDS
    for leftover in incoming.iterdir():
        try:
            if leftover.stat().st_mtime < cutoff:
                leftover.unlink()
        except FileNotFoundError:
            pass


def incoming_file():
    """Where an arriving upload is written (deleted when closed: at the end of the request)."""
    return tempfile.NamedTemporaryFile(dir=root() / INCOMING, prefix="up-")


#: The quoted ``filename`` parameter of a multipart part's Content-Disposition, undecoded.
_RAW_FILENAME = re.compile(r'(?:^|;)[ \t]*filename[ \t]*=[ \t]*"((?:[^"\\]|\\.)*)"', re.IGNORECASE)
#: The longest extension :func:`clean_original` keeps when it shortens a name.
_EXT_MAX = 16


def upload_filename(upload):
    """The file name the client gave ``upload`` (a werkzeug ``FileStorage``), with every path
    part still in it.  werkzeug reads ``filename="..\\..\\evil.txt"`` as a quoted string in
    which ``\\.`` is an escaped ``.``, and hands over ``....evil.txt``; browsers send a
    backslash as it is.  So the last path part is cut from the header as sent (where a
    backslash is either a separator or an escape: both end a part), and only that part is
    unquoted by werkzeug."""
    disposition = upload.headers.get("Content-Disposition", "")
    raw = _RAW_FILENAME.search(disposition)
    if raw is None or "filename*" in disposition.lower():  # a token, or RFC 5987: werkzeug's reading is exact
        return upload.filename or ""
    last = re.split(r"[\\/]", raw.group(1))[-1]
    return parse_options_header(f'form-data; filename="{last}"')[1].get("filename", "")


def clean_original(filename):
    """The uploader's file name as metadata (see the module docstring): a safe display and
    download name for any text, never empty."""
    base = re.split(r"[\\/]", filename or "")[-1]
    base = "".join(c for c in base if c.isprintable()).strip(" .")
    if len(base) > ORIGINAL_MAX:
        stem, dot, ext = base.rpartition(".")
        ext = dot + ext if stem and len(ext) < _EXT_MAX else ""
        base = base[: ORIGINAL_MAX - len(ext)].rstrip(" .") + ext
    return base or "file"


def save(upload, owner, kind="upload", allowed=None):
    """Store the uploaded temp file ``upload`` (its stream is an :func:`incoming_file`) for
    ``owner`` and return its metadata.  Raises :class:`detect.Refused` if its content is not
    what its name says or not one of ``allowed`` (kind keys)."""
    tmp = upload.stream
    tmp.flush()
    os.fsync(tmp.fileno())
    size = os.fstat(tmp.fileno()).st_size
    sample = os.pread(tmp.fileno(), detect.SAMPLE_SIZE, 0)
    original = clean_original(upload_filename(upload))
    found = detect.classify(sample, original)
    if allowed is not None and found.key not in allowed:
        raise detect.Refused(f"A {found.label} is not accepted here.")
    os.fchmod(tmp.fileno(), 0o644)  # nginx may run as another user
    while True:
        name = f"{secrets.token_urlsafe(16)}.{found.ext}"
        try:
            os.link(tmp.name, root() / name)  # atomic; never replaces an existing file
            break
        except FileExistsError:
            continue
    meta = {
        "name": name,
        "owner": owner,
        "original_name": original,
        "type": found.mimetype,
        "size": size,
        "uploaded_at": round(time.time(), 3),
        "kind": kind,
    }
    try:
        r = get_redis()
        r.zadd(keys.media_by_owner(owner), {name: meta["uploaded_at"]})
        r.hset(keys.media(name), mapping=meta)
    except BaseException:
        (root() / name).unlink(missing_ok=True)
        raise
    return meta


def metadata(name):
    """The metadata of ``name`` (sizes and times as numbers), or None."""
    meta = get_redis().hgetall(keys.media(name))
    if not meta or "owner" not in meta:
        return None
    meta["size"] = int(meta.get("size", 0))
    meta["uploaded_at"] = float(meta.get("uploaded_at", 0))
    return meta


def may_read(meta, user, name):
    """The read rule (see the module docstring)."""
    if meta["owner"].lower() == user.lower() or meta.get("kind") == "avatar":
        return True
    return bool(get_redis().sismember(keys.media_readers(name), user.lower()))


def readable(name, user):
    """Metadata of a media file ``user`` may read and that is a regular file inside the media
    directory (not a symlink); raise :class:`Unreadable` otherwise."""
    if not is_media_name(name):
        raise Unreadable(name)
    meta = metadata(name)
    if meta is None or not may_read(meta, user, name):
        raise Unreadable(name)
    try:
        st = os.lstat(root() / name)
    except FileNotFoundError:
        raise Unreadable(name) from None
    if not stat.S_ISREG(st.st_mode):
        raise Unreadable(name)
    return meta


def list_for(user, limit):
    """The media ``user`` uploaded, newest first."""
    r = get_redis()
    names = r.zrevrange(keys.media_by_owner(user), 0, limit - 1)
    pipe = r.pipeline(transaction=False)
    for name in names:
        pipe.hgetall(keys.media(name))
    items = []
    for name, meta in zip(names, pipe.execute()):
        if meta and "owner" in meta:
            meta["size"] = int(meta["size"])
            meta["uploaded_at"] = float(meta["uploaded_at"])
            items.append(meta)
    return items


def delete(name):
    """Remove a media file and its records (its owner's avatar being replaced, say)."""
    meta = metadata(name)
    r = get_redis()
    r.delete(keys.media(name))
    r.delete(keys.media_readers(name))
    if meta:
        r.zrem(keys.media_by_owner(meta["owner"]), name)
    if is_media_name(name):
        (root() / name).unlink(missing_ok=True)


def set_avatar(user, name):
    """Make ``name`` the avatar of ``user`` (field ``avatar`` of ``user:<lower(name)>``) and
    delete the previous one."""
    r = get_redis()
    old = r.hget(keys.user(user), "avatar")
    r.hset(keys.user(user), "avatar", name)
    if old and old != name:
        delete(old)

