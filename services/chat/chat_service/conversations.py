"""What a person sees of their conversations: where one is, its history page by page, the
list of them with unread counts, and read markers.

Rule: a conversation is read only by its people.  A private one is named by the reader and
the other person (``with``), so the reader is always one of its two people; a room is read
by its current members (everyone, for the default room).  Messages come as they are now (the
edited text, or a tombstone for a deleted one), in the shape of the ``message`` frame, oldest
first; pages are cut by id (``before``), so paging back meets every kept message once, however
many arrive meanwhile.  Read markers only move forward; sending a message moves one's own.
"""
import json

from webchat_common import keys
from webchat_common.names import is_room_name, is_user_name

from . import scripts
from .accounts import Accounts
from .lua import Lua, Pipeline
from .wire import format_id, http_status, parse_id


class Refusal(Exception):
    """A conversation the person may not use: an error ``code`` (the frame's) and a sentence;
    over HTTP, the code's ``status`` (``wire.http_status``)."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code, self.message = code, message
        self.status = http_status(code)


def read_field(peer=None, room=None):
    """A conversation's field in the reader's ``chat:read:<user>``: ``#<room>`` or
    ``@<lower(other person)>`` (the send scripts write the same)."""
    return "#" + room if room is not None else "@" + peer.lower()


class Place:
    """One conversation of ``user``: with ``peer`` (the registered name) or in ``room``."""

    __slots__ = ("user", "peer", "room", "stream", "clock", "field")

    def __init__(self, user, peer=None, room=None):
        self.user, self.peer, self.room = user, peer, room
        self.stream = keys.chat_room(room) if room is not None else keys.chat_pm(user, peer)
        self.clock = keys.chat_room_clock(room) if room is not None else keys.chat_user_clock(user)
        self.field = read_field(peer, room)

    def theirs(self):
        """The other person's side of a private conversation (None for a room, or for a
        conversation with oneself, which has one copy)."""
        if self.room is not None or self.peer.lower() == self.user.lower():
            return None
        return Place(self.peer, peer=self.user)

    def where(self):
        """The conversation as a frame's fields: ``{"with": name}`` or ``{"room": room}``."""
        return {"room": self.room} if self.room is not None else {"with": self.peer}

    def channel(self):
        """Where a change to this side of the conversation is published: the room, or the
        side's person (each copy's changes go to its owner)."""
        return keys.chat_room_channel(self.room) if self.room is not None else keys.chat_user_channel(self.user)


def _no_user():
    return Refusal("unknown_receiver", "no such user")


def _not_member():
    return Refusal("not_member", "join the room first")


class Conversations:
    def __init__(self, redis, cfg):
        self.redis = redis
        self.default_room = cfg["CHAT_DEFAULT_ROOM"]
        self.unread_cap = cfg["CHAT_UNREAD_CAP"]
        self.listed = cfg["CHAT_CONVERSATIONS_MAX"]
        self.members_max = cfg["CHAT_MEMBERS_MAX"]
        self.ttl_ms = int(cfg["CHAT_HISTORY_AGE"] * 1000)
        self.accounts = Accounts(redis)
        self.s_history = Lua(redis, scripts.HISTORY)
        self.s_summary = Lua(redis, scripts.SUMMARY)
        self.s_unread = Lua(redis, scripts.UNREAD)
        self.s_mark = Lua(redis, scripts.MARK)
        self.s_peer_id = Lua(redis, scripts.PEER_ID)
        self.peer_scan = 2 * cfg["CHAT_HISTORY_LENGTH"]

    def locate(self, user, peer=None, room=None, rooms=None):
        """The conversation ``user`` names with ``peer`` (a user name) or ``room``, with the
        other person's registered name, or a :class:`Refusal`.  ``rooms``: the rooms ``user`` is
        in, when the caller knows them (a socket does); else membership is read from Redis."""
        place = self._named(user, peer, room)
        if room is not None:
            member = (room == self.default_room or (room in rooms if rooms is not None
                      else self.redis.sismember(keys.chat_members(room), user)))
            if not member:
                raise _not_member()
            return place
        name = self.accounts.name(peer)
        if name is None:
            raise _no_user()
        return Place(user, peer=name)

    def _named(self, user, peer, room):
        """The conversation a request names, checked for form only."""
        if (peer is None) == (room is None):
            raise Refusal("bad_frame", "give exactly one of with (a user name) or room")
        if room is not None:
            if not is_room_name(room):
                raise Refusal("bad_room", "a room name is 1-32 letters, digits, - or _")
            return Place(user, room=room)
        if not is_user_name(peer):
            raise _no_user()
        return Place(user, peer=peer)

    # ---- history ---------------------------------------------------------------------------

    def history(self, user, peer, room, before, limit):
        """A page for ``user`` of their conversation with ``peer`` or in ``room``, in one
        script: who may read is checked there too.  Returns the answer's fields but the
        messages, and up to ``limit`` messages before id ``before`` (None: the newest) oldest
        first, as JSON texts; or raises :class:`Refusal`."""
        place = self._named(user, peer, room)
        if room is None:
            name = self.accounts.name(peer)
            if name is None:
                raise _no_user()
            place, admit = Place(user, peer=name), []
        else:
            admit = [] if room == self.default_room else [keys.chat_members(room)]
        # (The reader's marker is in the reader's slot, the page in the conversation's.)
        pipe = Pipeline(self.redis)
        pipe.hget(keys.chat_read(user), place.field)
        self.s_history(keys=[place.stream, keys.chat_edits(place.stream), *admit],
                       args=[format_id(before) if before else "+", limit, user], client=pipe)
        marker, res = pipe.execute()
        if res[0] == -1:
            raise _not_member()
        _, *frames = res
        if room is None:
            read = {user: marker}
            theirs = place.theirs()
            if theirs is not None:
                # their marker names an id of their copy: the last of ours they read, in our ids
                other = self.peer_id(theirs, read=True)
                read[name] = format_id(other) if other else None
            fields = {"with": name, "read": read}
        else:
            fields = {"room": room, "read": {user: marker}}
        return {**fields, "more": len(frames) > limit}, frames[:limit][::-1]

    def peer_id(self, place, mid=None, read=False):
        """What the other person of the private conversation ``place`` (one person's side)
        knows a point of it by: the id in their own copy of the last message at or before
        ``mid`` (or, with ``read``, the side's read marker) that they sent; None when there is
        none.  (Their copy keeps each message's id in the sender's copy: ``p``.)"""
        if read:
            found = self.s_peer_id(keys=[place.stream, keys.chat_read(place.user)], args=[place.field, self.peer_scan])
        else:
            found = self.s_peer_id(keys=[place.stream], args=[format_id(mid), self.peer_scan])
        return parse_id(found) if found else None

    # ---- the list --------------------------------------------------------------------------

    def listing(self, user, rooms):
        """``user``'s private conversations (the CHAT_CONVERSATIONS_MAX latest) and rooms, each
        with its last message, unread count and read marker, newest first."""
        peers = self.redis.zrevrange(keys.chat_convs(user), 0, self.listed - 1)
        places = [Place(user, peer=p) for p in peers] + [Place(user, room=r) for r in sorted(rooms)]
        marks = self.redis.hmget(keys.chat_read(user), [p.field for p in places]) if places else []
        pipe = Pipeline(self.redis)
        for place, mark in zip(places, marks):
            self.s_summary(keys=[place.stream, keys.chat_edits(place.stream)],
                           args=[mark or "", self.unread_cap], client=pipe)
        out = []
        for place, mark, (last, unread) in zip(places, marks, pipe.execute() if places else []):
            last = json.loads(last) if last else None
            out.append({**place.where(), "last": last, "unread": unread, "read_up_to": mark})
        # (Newest first by time: ids of different clocks, a room's and the private one, are
        # not comparable beyond their ms.)
        out.sort(key=lambda c: (c["last"]["ts"], parse_id(c["last"]["id"])) if c["last"] else (0, (0, 0)),
                 reverse=True)
        return out

    # ---- members --------------------------------------------------------------------------

    def members(self, user, room):
        """The members of ``room`` (everyone registered, for the default room), sorted, at most
        CHAT_MEMBERS_MAX, and whether there are more; only for a member (:class:`Refusal`)."""
        self.locate(user, room=room)
        if room == self.default_room:
            names = self.redis.zrange(keys.USERS, 0, self.members_max)
        else:
            names = sorted(self.redis.smembers(keys.chat_members(room)), key=str.lower)
        return names[:self.members_max], len(names) > self.members_max

    # ---- read markers ----------------------------------------------------------------------

    def read(self, place, up_to):
        """Move ``place.user``'s read marker up to message ``up_to`` (an id tuple), never back.
        Returns (moved?, the marker, unread count after it), or None when ``up_to`` is not a
        message of the conversation.  The message is checked (and what follows it counted) in
        the conversation's slot, then the marker moved in the reader's: two calls, and a
        marker already further is counted from again."""
        tid = format_id(up_to)
        unread = self.s_unread(keys=[place.stream], args=[tid, self.unread_cap, "check"])
        if unread == -1:
            return None
        moved, marker = self.s_mark(keys=[keys.chat_read(place.user)], args=[place.field, tid, self.ttl_ms])
        if marker != tid:
            unread = self.s_unread(keys=[place.stream], args=[marker, self.unread_cap, ""])
        return bool(moved), marker, unread
