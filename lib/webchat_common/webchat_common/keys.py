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


# Chat (services/chat; docs/chat.md explains how they work together).  A key or channel of one
# person holds their hash tag (``{u:<name>}``) and one of a room the room's (``{r:<room>}``), so
# that on a Redis Cluster everything of one owner is in one slot and each of chat's scripts
# works on one slot (docs/cluster.md, "Slots by owner").


def _user_tag(name):
    """The hash tag of ``name``'s chat keys and channels."""
    return "{u:" + name.lower() + "}"


def _room_tag(room):
    """The hash tag of room ``room``'s keys and channel."""
    return "{r:" + room + "}"



#: Hash (fields ms, seq): the clock of private messages, which makes their ids.
CHAT_CLOCK = "chat:clock"
#: Zset: the chat processes (holder ids), scored by the expiry (ms) each pushes forward on its
#: heartbeat; one whose entry expired died without a word, and its users are swept (a claimed
#: one is renamed ``~<holder>`` while it is swept).
CHAT_NODES = "chat:nodes"
#: Set: the steps of ``chat_service.migrate`` done on this Redis; and the lock of the one
#: process running them (a string, expiring).
CHAT_MIGRATED = "chat:migrated"
CHAT_MIGRATING = "chat:migrating"
#: Prefixes of the channels of a user (their messages), a room, a user's presence: a channel is
#: the prefix, the name, then "}".
CHAT_USER_CHANNEL_PREFIX = "chat:u:" + _user_tag("")[:-1]
CHAT_ROOM_CHANNEL_PREFIX = "chat:r:" + _room_tag("")[:-1]
CHAT_PRESENCE_PREFIX = "chat:p:" + _user_tag("")[:-1]


def chat_pm(owner, other):
    """``owner``'s copy of their private conversation with ``other`` (both directions; each
    person has their own copy, numbered by their own clock, :func:`chat_user_clock`).  An entry
    is a message (field ``f``: the frame JSON as ``owner`` sees it; ``p``: on a message
    ``other`` sent, its id in ``other``'s copy; ``o``: the long-poll tab ``owner`` sent it
    from) or a change to one (fields ``f``, the ``edit`` or ``delete`` frame, and ``e``)."""
    return f"chat:pm:{_user_tag(owner)}:{other.lower()}"


def chat_user_clock(name):
    """Hash (fields ms, seq): ``name``'s clock, which makes the ids of their private copies."""
    return "chat:clock:user:" + _user_tag(name)


def chat_dm_v1(a, b):
    """The one stream of a private conversation from before each person had their own copy
    (both names lower-cased, in sorted order): read only by the migration
    (``chat_service.migrate``), and left to expire."""
    a, b = sorted((a.lower(), b.lower()))
    return f"chat:dm:{a}:{b}"


def chat_room(room):
    """Stream of the messages of room ``room`` (entries as :func:`chat_pm`'s, without ``p``)."""
    return "chat:room:" + _room_tag(room)


def chat_room_clock(room):
    """Hash (fields ms, seq): room ``room``'s clock, which makes the ids of its messages."""
    return "chat:clock:room:" + _room_tag(room)


def chat_edits(stream):
    """Hash of the messages of a conversation stream that were edited or deleted: message id
    -> the message frame as it is now (the text edited, or a tombstone); in the stream's slot."""
    return "chat:edits:" + stream.removeprefix("chat:")


def chat_convs(name):
    """Zset of ``name``'s private conversations: the other person's registered name, scored by
    the ms of the conversation's last message."""
    return "chat:convs:" + _user_tag(name)


def chat_read(name):
    """Hash of ``name``'s read markers: ``@<lower(other person)>`` or ``#<room>`` -> the id up to
    which ``name`` read that conversation (only ever moved forward)."""
    return "chat:read:" + _user_tag(name)


def chat_cursors(name):
    """Hash of where ``name`` was delivered messages up to, per clock: ``@`` (their private
    messages) or ``#<room>`` -> id (a new socket's replay starts after it)."""
    return "chat:cursors:" + _user_tag(name)


def chat_cursor_v1(name):
    """The one id up to which ``name`` was delivered messages, from before positions per clock
    (``chat:cursors``): read where ``chat:cursors`` has no field, never written; it expires
    CHAT_HISTORY_AGE after it was last written."""
    return "chat:cursor:" + name.lower()


def chat_rooms(name):
    return "chat:rooms:" + _user_tag(name)


def chat_members(room):
    return "chat:members:" + _room_tag(room)


def chat_sockets(name):
    """Hash: holder (a chat process's presence id) -> how many sockets of ``name`` that process
    holds.  ``name`` is online while it has a field; the per-user cap
    (``CHAT_MAX_SOCKETS_PER_USER``) adds them up."""
    return "chat:sockets:" + _user_tag(name)


def chat_node(holder):
    """Set of the users (registered names) the chat process ``holder`` holds sockets of: the
    sweep of a dead process goes through it (:data:`CHAT_NODES`)."""
    return "chat:node:" + holder


def chat_cid(sender, cid, receiver=None, room=None):
    """String ``<id> <ts> <receiver>``, for ``CHAT_DEDUP_WINDOW`` seconds: the message ``sender``
    sent to ``receiver`` (a user) or in ``room`` with client id ``cid`` is stored; the same
    ``cid`` sent again is acknowledged with that id and not stored twice.  In the slot of the
    call that stores the message: the sender's for a private message, the room's."""
    if room is not None:
        return f"chat:cid:{_room_tag(room)}:{sender.lower()}:{cid}"
    return f"chat:cid:{_user_tag(sender)}:@{receiver.lower()}:{cid}"


def chat_poll(name, poll_id):
    """Hash ``watch`` (a JSON list of user names), ``gen`` (a count), for CHAT_POLL_RECORD_TTL
    seconds: a long-poll client of ``name`` (named by the ``poll`` id its tab chose) exists,
    these are the users it watches, and this many clients have served the tab (the newest,
    on whichever chat process its last poll reached, is the one); any chat process that gets
    its next poll continues it from here."""
    return f"chat:poll:{_user_tag(name)}:{poll_id}"


def chat_rate(name):
    """Hash ``t`` (s), ``n`` (tokens): ``name``'s token bucket for frames sent over HTTP (``POST
    /chat/api/messages``; a WebSocket keeps its own in memory), expiring once full again."""
    return "chat:rate:" + _user_tag(name)


def chat_typing(name, poll_id):
    """String, for CHAT_TYPING_INTERVAL: a long-poll client of ``name`` sent a typing frame."""
    return f"chat:typing:{_user_tag(name)}:{poll_id}"


def chat_user_channel(name):
    return "chat:u:" + _user_tag(name)


def chat_room_channel(room):
    return "chat:r:" + _room_tag(room)


def chat_presence_channel(name):
    """Pub/sub channel of ``name``'s presence changes, heard by the processes whose sockets
    watch ``name``."""
    return "chat:p:" + _user_tag(name)

