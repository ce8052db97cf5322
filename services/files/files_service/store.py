"""Media on disk and their metadata in Redis (keys in ``webchat_common.keys``).

Files live flat in ``MEDIA_ROOT`` under generated names ``<22 url-safe chars>.<ext>`` (128
random bits; the extension is the detected type's).  An upload is written to
``MEDIA_ROOT/.incoming/`` while it arrives, checked, then hard-linked to its final name in one
atomic step, so no reader ever sees a partial file under a media name; the metadata is written
after the link, and a file without metadata is never served (the metadata is the permission).

Who may read a file (:func:`may_read`):

- its owner (the uploader);
- every logged-in user, for an avatar;
- the users in its readers set ``media:<name>:readers``: chat (or the owner through
  ``POST /media/<name>/share``) adds the people of the conversation the file was shared in.
"""
import os
import re
import secrets
import stat
import tempfile
import time
from pathlib import Path

from flask import current_app

from webchat_common import get_redis, keys

from . import detect

NAME_RE = re.compile(r"^[A-Za-z0-9_-]{22}\.[a-z0-9]{2,4}$")
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


def clean_original(filename):
    """The uploader's file name as metadata: its last path part, printable, at most 255 chars."""
    base = re.split(r"[\\/]", filename or "")[-1]
    base = "".join(c for c in base if c.isprintable()).strip()
    return base[:ORIGINAL_MAX] or "file"


def save(upload, owner, kind="upload", allowed=None):
    """Store the uploaded temp file ``upload`` (its stream is an :func:`incoming_file`) for
    ``owner`` and return its metadata.  Raises :class:`detect.Refused` if its content is not
    what its name says or not one of ``allowed`` (kind keys)."""
    tmp = upload.stream
    tmp.flush()
    os.fsync(tmp.fileno())
    size = os.fstat(tmp.fileno()).st_size
    sample = os.pread(tmp.fileno(), detect.SAMPLE_SIZE, 0)
    original = clean_original(upload.filename)
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
        pipe = get_redis().pipeline(transaction=True)
        pipe.hset(keys.media(name), mapping=meta)
        pipe.zadd(keys.media_by_owner(owner), {name: meta["uploaded_at"]})
        pipe.execute()
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
    if not NAME_RE.match(name):
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
    pipe = r.pipeline(transaction=True)
    pipe.delete(keys.media(name), keys.media_readers(name))
    if meta:
        pipe.zrem(keys.media_by_owner(meta["owner"]), name)
    pipe.execute()
    if NAME_RE.match(name):
        (root() / name).unlink(missing_ok=True)


def set_avatar(user, name):
    """Make ``name`` the avatar of ``user`` (field ``avatar`` of ``user:<lower(name)>``) and
    delete the previous one."""
    r = get_redis()
    old = r.hget(keys.user(user), "avatar")
    r.hset(keys.user(user), "avatar", name)
    if old and old != name:
        delete(old)


def share(name, users):
    """Let ``users`` (registered names) read ``name``; return the names that were added."""
    r = get_redis()
    pipe = r.pipeline(transaction=False)
    for u in users:
        pipe.exists(keys.user(u))
    known = [u.lower() for u, exists in zip(users, pipe.execute()) if exists]
    if known:
        r.sadd(keys.media_readers(name), *known)
    return known
