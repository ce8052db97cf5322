"""Every Redis key the system uses, built in one place.

The table of keys (type, TTL, who writes and reads each) is in docs/redis-keys.md; a test
checks that it names every key built here.  The session keys are in
:mod:`.sessions`.
"""


USER_PREFIX = "user:"


def user(name):
    """Hash: ``name`` (as registered), ``password`` (KDF hash), ``created`` (unix s), ``avatar``."""
    return USER_PREFIX + name.lower()


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
#: Prefix of the per-user presence channels (the Lua scripts add the lower-cased name).
CHAT_PRESENCE_PREFIX = "chat:p:"


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


CHAT_CONN_PREFIX = "chat:conn:"


def chat_conn(name):
    """Which chat processes (node ids) hold sockets of ``name``, scored by expiry (ms)."""
    return CHAT_CONN_PREFIX + name.lower()


CHAT_SOCKETS_PREFIX = "chat:sockets:"


def chat_sockets(name):
    """Hash: node id -> how many sockets of ``name`` that chat process holds (the per-user cap,
    ``CHAT_MAX_SOCKETS_PER_USER``, counts the nodes still live in :func:`chat_conn`)."""
    return CHAT_SOCKETS_PREFIX + name.lower()


def chat_cid(sender, target, cid):
    """String ``<id> <ts> <receiver>``, for ``CHAT_DEDUP_WINDOW`` seconds: the message ``sender``
    sent to ``target`` (a user or room channel name) with client id ``cid`` is stored; the same
    ``cid`` sent again is acknowledged with that id and not stored twice."""
    return f"chat:cid:{sender.lower()}:{target}:{cid}"


def chat_user_channel(name):
    return "chat:u:" + name.lower()


def chat_room_channel(room):
    return "chat:r:" + room


def chat_presence_channel(name):
    """Pub/sub channel of ``name``'s presence changes, heard by the processes whose sockets
    watch ``name``."""
    return CHAT_PRESENCE_PREFIX + name.lower()
