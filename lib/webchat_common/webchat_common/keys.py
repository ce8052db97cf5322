"""Every Redis key the system uses, in one place.  The README's key table mirrors this.

| key                              | type   | TTL                 | written by | read by      |
|----------------------------------|--------|---------------------|------------|--------------|
| session:<sha256(sid)>            | string | idle, capped by abs | all        | all          |
| sessions:ended (pub/sub)         | channel| -                   | all        | chat         |
| user:<lower(name)>               | hash   | none                | auth       | auth, files, chat |
| users                            | zset   | none                | auth       | chat (contacts) |
| throttle:login:user:<lower(name)>| string | LOGIN_THROTTLE_WINDOW | auth     | auth         |
| throttle:login:ip:<ip>           | string | LOGIN_THROTTLE_WINDOW | auth     | auth         |
| sessions:active                  | zset   | none (members pruned at scrape) | auth | auth (metrics: session key hash -> predicted expiry, ms) |
| media:<name>                     | hash   | none                | files      | files        |
| media:<name>:readers             | set    | none                | files, chat | files       |
| media:owner:<lower(name)>        | zset   | none                | files      | files        |
| chat:inbox:<lower(name)>         | stream | CHAT_HISTORY_AGE (refreshed per message) | chat | chat |
| chat:room:<room>                 | stream | CHAT_HISTORY_AGE (refreshed per message) | chat | chat |
| chat:clock                       | hash   | none (fields ms, seq: the message id generator) | chat | chat |
| chat:cursor:<lower(name)>        | string | CHAT_HISTORY_AGE    | chat       | chat (delivered-up-to id) |
| chat:rooms:<lower(name)>         | set    | none                | chat       | chat (rooms a user joined) |
| chat:members:<room>              | set    | none                | chat       | chat         |
| chat:online                      | zset   | none (score = presence expiry, ms) | chat | chat |
| chat:conn:<lower(name)>          | zset   | CHAT_PRESENCE_TTL (node -> expiry ms) | chat | chat |
| chat:u:<lower(name)> (pub/sub)   | channel| -                   | chat       | chat (the user's process) |
| chat:r:<room> (pub/sub)          | channel| -                   | chat       | chat (members' processes) |
| chat:presence (pub/sub)          | channel| -                   | chat       | chat (every process) |
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


# Chat (services/chat; docs/chat.md explains how they work together).
CHAT_CLOCK = "chat:clock"
CHAT_ONLINE = "chat:online"
CHAT_PRESENCE_CHANNEL = "chat:presence"


def chat_inbox(name):
    """Stream of private messages to ``name``; every entry has one field ``f``: the frame JSON."""
    return "chat:inbox:" + name.lower()


def chat_room(room):
    """Stream of the messages of room ``room`` (same entry shape as an inbox)."""
    return "chat:room:" + room


def chat_cursor(name):
    """The id up to which ``name`` was delivered messages (offline delivery starts after it)."""
    return "chat:cursor:" + name.lower()


def chat_rooms(name):
    return "chat:rooms:" + name.lower()


def chat_members(room):
    return "chat:members:" + room


def chat_conn(name):
    """Which chat processes (node ids) hold sockets of ``name``, scored by expiry (ms)."""
    return "chat:conn:" + name.lower()


def chat_user_channel(name):
    return "chat:u:" + name.lower()


def chat_room_channel(room):
    return "chat:r:" + room
