"""Every Redis key the system uses, in one place.  The README's key table mirrors this.

| key                              | type   | TTL                 | written by | read by      |
|----------------------------------|--------|---------------------|------------|--------------|
| session:<sha256(sid)>            | string | idle, capped by abs | all        | all          |
| sessions:ended (pub/sub)         | channel| -                   | all        | chat         |
| user:<lower(name)>               | hash   | none                | auth       | auth, files, chat |
| users                            | zset   | none                | auth       | chat (contacts) |
| throttle:login:user:<lower(name)>| string | LOGIN_THROTTLE_WINDOW | auth     | auth         |
| throttle:login:ip:<ip>           | string | LOGIN_THROTTLE_WINDOW | auth     | auth         |
| media:<name>                     | hash   | none                | files      | files        |
| media:<name>:readers             | set    | none                | files, chat | files       |
| media:owner:<lower(name)>        | zset   | none                | files      | files        |
| sessions:active                  | zset   | none (members pruned at scrape) | auth | auth (metrics: session key hash -> predicted expiry, ms) |
"""


def user(name):
    """Hash: ``name`` (as registered), ``password`` (KDF hash), ``created`` (unix s), ``avatar``."""
    return "user:" + name.lower()


USERS = "users"  # zset of registered names, scored by registration time
ACTIVE_SESSIONS = "sessions:active"  # zset: logged-in session key hashes -> predicted expiry (ms)


def login_throttle_user(name):
    return "throttle:login:user:" + name.lower()


def login_throttle_ip(ip):
    return "throttle:login:ip:" + ip


def media(name):
    """Hash: ``name``, ``owner``, ``original_name``, ``type`` (Content-Type), ``size`` (bytes),
    ``uploaded_at`` (unix s), ``kind`` (``upload`` or ``avatar``).  Its existence is what makes
    the file ``MEDIA_ROOT/<name>`` servable."""
    return "media:" + name


def media_readers(name):
    """Set of lower-cased user names who may read ``name`` besides its owner: chat adds the
    people of the conversation a file is shared in (``SADD``); avatars need no entry."""
    return "media:" + name + ":readers"


def media_by_owner(user):
    """Zset of the media names ``user`` uploaded, scored by upload time (``GET /media/``)."""
    return "media:owner:" + user.lower()
