"""What a client can ask: send, edit or delete a message, mark a conversation read, say one is
typing, join or leave a room, watch users, share a file.

Rule: every frame gets its answer (``ack``, ``read``, ``room``, ``watching``, ``pong``) or one
``error`` frame with a code (``typing``, fire and forget, is answered only when refused), and a
command only ever touches its own socket and what its user may change: the sender is the
session's user (never the client's ``sender``), a room needs membership, a private
conversation is the user's own with the other person, only a message's author may change it,
a shared file must be the sender's own.  Frames have already been parsed
(``wire.parse_frame``) and rate-limited by the socket (:mod:`.conn`).  The frame table is in
docs/chat.md.
"""
import json
import logging
import time

from redis.exceptions import RedisError

from webchat_common import keys, media
from webchat_common.names import is_media_name, is_room_name, is_user_name

from . import metrics
from .conversations import Refusal
from .store import NotReplicated
from .wire import control_payload, format_id, parse_id

log = logging.getLogger(__name__)


class Commands:
    """One per process; ``node`` gives the store, the conversations, Redis and the settings."""

    def __init__(self, node):
        cfg = node.cfg
        self.store = node.store
        self.conversations = node.conversations
        self.accounts = node.conversations.accounts
        self.redis = node.redis
        self.default_room = node.default_room
        self.max_rooms = cfg["CHAT_MAX_ROOMS"]
        self.watch_max = cfg["CHAT_WATCH_MAX"]
        self.edit_window = cfg["CHAT_EDIT_WINDOW"]
        self.typing_interval = cfg["CHAT_TYPING_INTERVAL"]
        self.typing_ttl = cfg["CHAT_TYPING_TTL"]
        self.typing_max_members = cfg["CHAT_TYPING_MAX_MEMBERS"]

    def run(self, conn, msg):
        cid = msg.get("cid")
        kind = msg.get("type", "message")
        try:
            if kind == "message":
                self.message(conn, msg, cid)
            elif kind in ("edit", "delete"):
                self.change(conn, kind, msg, cid)
            elif kind == "read":
                self.read(conn, msg, cid)
            elif kind == "typing":
                self.typing(conn, msg, cid)
            elif kind in ("join", "leave"):
                self.membership(conn, kind, msg.get("room"), cid)
            elif kind == "watch":
                self.watch_users(conn, msg.get("users"), cid)
            elif kind == "ping":
                conn.reply({"type": "pong", "cid": cid})
            else:
                conn.error("bad_frame", "unknown type: use message, edit, delete, read, typing, join, leave, watch "
                           "or ping", cid)
        except NotReplicated:
            conn.error("unavailable", "no replica of the chat store confirmed the message in time: it is "
                       "stored but not yet safe; send it again with the same cid", cid)
        except RedisError:
            # Not "nothing was stored": Redis may have run the send and gone before it
            # answered (a graceful Redis stop does that).  Sending again with the same cid is
            # always safe: a cid already stored is acknowledged, not stored twice.
            conn.error("unavailable", "the chat store did not answer: the message may or may not be stored; "
                       "send it again with the same cid", cid)
        except Exception:  # noqa: BLE001 - a bug met by one frame costs that frame, not the socket
            log.exception("could not handle a frame from %s", conn.user)
            conn.error("server_error", "the server could not handle this frame: nothing was sent", cid)

    # ---- message ---------------------------------------------------------------------------

    def message(self, conn, msg, cid):
        metrics.MESSAGES_IN.inc()
        data = msg.get("data")
        if not _text_ok(conn, data, cid):
            return
        receiver, room = msg.get("receiver"), msg.get("room")
        if (receiver is None) == (room is None):
            conn.error("bad_frame", "give exactly one of receiver (a user name) or room", cid)
            return
        fields = {"sender": conn.user, "data": data}
        if cid is not None:
            fields["cid"] = cid
        if receiver is not None:
            if not is_user_name(receiver):
                conn.error("unknown_receiver", "no such user", cid)
                return
            named, receiver = receiver, self.accounts.name(receiver)
            if receiver is None:
                conn.error("unknown_receiver", f"no such user: {named}", cid)
                return
        media = msg.get("media")
        if media is not None:
            if not self.share_media(conn, media, receiver, room, cid):
                return
            fields["media"] = media
        if receiver is not None:
            mid, ts, name, online, duplicate = self.store.send_private(conn.user, receiver, fields, cid, conn.token)
            conn.reply(_ack(mid, ts, cid, duplicate, receiver=name, delivered=online))
            if not online and not duplicate:
                # The tutorial's notice; the message is stored and delivered when they connect.
                conn.reply({"type": "system", "sender": "system", "receiver": conn.user, "code": "offline",
                            "about": name, "id": mid, "data": "receiver is offline"})
            return
        if not isinstance(room, str) or room not in conn.rooms:
            conn.error("not_member", "join the room first", cid)
            return
        mid, ts, duplicate = self.store.send_room(conn.user, room, fields, cid)
        conn.reply(_ack(mid, ts, cid, duplicate, room=room))

    def share_media(self, conn, name, receiver, room, cid):
        """A message may carry one of the sender's uploads (``media``: its name in the files
        service).  The people of the conversation are added to its readers (the files
        service's ``media:<name>:readers``, see ``webchat_common.media``) before the message goes out,
        so their browsers can open ``/media/<name>``.  Only the owner can share a file."""
        if not is_media_name(name):
            conn.error("bad_media", "media must be the name of a file you uploaded", cid)
            return False
        if room is not None and room == self.default_room:
            conn.error("bad_media", "files are shared in private conversations and named rooms", cid)
            return False
        if room is not None and (not isinstance(room, str) or room not in conn.rooms):
            conn.error("not_member", "join the room first", cid)
            return False
        people = [receiver] if receiver is not None else self.redis.smembers(keys.chat_members(room))
        added = media.share(self.redis, name, conn.user, people)
        if added is None:
            conn.error("bad_media", "no such file of yours", cid)
            return False
        return True

    # ---- changes to a message, read markers, typing ------------------------------------------

    def _place(self, conn, msg, cid):
        """The conversation a frame names (``with`` or ``room``), or None with its error sent."""
        try:
            return self.conversations.locate(conn.user, msg.get("with"), msg.get("room"), conn.rooms)
        except Refusal as refused:
            conn.error(refused.code, refused.message, cid)
            return None

    def change(self, conn, kind, msg, cid):
        """Edit (``data``: the new text) or delete message ``target`` of a conversation: only
        its author, within CHAT_EDIT_WINDOW, not once deleted.  Everyone who has the message
        gets an ``edit`` or ``delete`` frame carrying the message as it is now; the author's
        socket also gets an ``ack`` of the change."""
        target = parse_id(msg.get("target"))
        if target is None:
            conn.error("bad_frame", "target must be the id of a message", cid)
            return
        data = msg.get("data")
        if kind == "edit" and not _text_ok(conn, data, cid):
            return
        place = self._place(conn, msg, cid)
        if place is None:
            return
        tid = format_id(target)
        now, before = self._current(place, tid)
        if now is None:
            conn.error("unknown_message", "no such message in this conversation", cid)
            return
        if not isinstance(now.get("sender"), str) or now["sender"].lower() != conn.lower:
            conn.error("not_author", "only its author can change a message", cid)
            return
        if now.get("deleted"):
            conn.error("deleted", "this message was deleted", cid)
            return
        at = int(time.time() * 1000)
        window = int(self.edit_window * 1000)
        res = self.store.change(place.clock, place.stream, target, before, _changed(now, kind, data, at), kind, window,
                                [place.channel()])
        theirs = place.theirs()
        if theirs is not None and not isinstance(res, str):
            # The receiver's copy, where the message has an id of its own and carries ours (p).
            # One missing there was never stored there (its send stopped halfway and was not
            # sent again): nothing to change.
            mapped = self.store.find_sent(theirs.stream, tid)
            now, before = self._current(theirs, mapped, sent_as=tid) if mapped else (None, "")
            if now is not None and not now.get("deleted"):
                self.store.change(theirs.clock, theirs.stream, parse_id(mapped), before,
                                  _changed(now, kind, data, at), kind, window, [theirs.channel()])
        if res == "too_late":
            conn.error("too_late", f"a message can be changed for {self.edit_window / 60:g} minutes after it is sent",
                       cid)
        elif res == "changed":
            conn.error("conflict", "the message changed meanwhile: read it again and retry", cid)
        else:
            conn.reply(_ack(*res, cid, False, target=tid, **place.where()))

    def _current(self, place, tid, sent_as=None):
        """Message ``tid`` of ``place``'s stream as it is now (a dict), and as chat:edits holds
        it ("" when it was never changed); (None, "") when it is not a message there (with
        ``sent_as``: not the message whose id in its sender's copy that is)."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.xrange(place.stream, tid, tid)
        pipe.hget(keys.chat_edits(place.stream), tid)
        entry, before = pipe.execute()
        if not entry or "e" in entry[0][1] or (sent_as is not None and entry[0][1].get("p") != sent_as):
            return None, ""
        return json.loads(before or entry[0][1]["f"]), before or ""

    def read(self, conn, msg, cid):
        """Move the user's read marker of a conversation up to message ``up_to`` (never back).
        Every socket of the user gets a ``read`` frame with the unread count left (this one's
        carries the ``cid``); in a private conversation the other person's sockets get one too
        (without the count).  A marker already there or further is answered to this socket
        alone, with the marker as it is."""
        up_to = parse_id(msg.get("up_to"))
        if up_to is None:
            conn.error("bad_frame", "up_to must be the id of a message", cid)
            return
        place = self._place(conn, msg, cid)
        if place is None:
            return
        res = self.conversations.read(place, up_to)
        if res is None:
            conn.error("unknown_message", "no such message in this conversation", cid)
            return
        moved, marker, unread = res
        mine = {"type": "read", "user": conn.user, **place.where(), "up_to": marker, "unread": unread, "cid": cid}
        if not moved:
            conn.reply(mine)
            return
        # The other person is told in their copy's ids: up to the last of their messages read.
        theirs = place.theirs() and self.conversations.peer_id(place, parse_id(marker))
        pipe = self.redis.pipeline(transaction=False)
        pipe.spublish(keys.chat_user_channel(conn.user), control_payload(mine))
        if theirs:
            pipe.spublish(keys.chat_user_channel(place.peer),
                          control_payload({"type": "read", "user": conn.user, "with": conn.user,
                                           "up_to": format_id(theirs)}))
        pipe.execute()

    def typing(self, conn, msg, cid):
        """Tell the other person (or the room's members) that the user is typing: not stored,
        at most one every CHAT_TYPING_INTERVAL per socket, shown for CHAT_TYPING_TTL seconds
        (``expires_in``) unless renewed; not sent in rooms of more than
        CHAT_TYPING_MAX_MEMBERS (the default room counts every registered user)."""
        place = self._place(conn, msg, cid)
        if place is None:
            return
        if not conn.may_type(self.typing_interval):
            conn.error("too_fast", f"at most one typing frame every {self.typing_interval:g} s", cid)
            return
        frame = {"type": "typing", "user": conn.user, "expires_in": self.typing_ttl}
        if place.room is not None:
            size = (self.redis.zcard(keys.USERS) if place.room == self.default_room
                    else self.redis.scard(keys.chat_members(place.room)))
            if size > self.typing_max_members:
                return
            self.redis.spublish(keys.chat_room_channel(place.room), control_payload({**frame, "room": place.room}))
        elif place.peer.lower() != conn.lower:
            self.redis.spublish(keys.chat_user_channel(place.peer), control_payload({**frame, "with": conn.user}))

    # ---- watch -----------------------------------------------------------------------------

    def watch_users(self, conn, users, cid):
        """The users whose presence this client is sent: the list replaces the previous one
        (see :meth:`.client.Client.watch`)."""
        if not isinstance(users, list) or not all(is_user_name(u) for u in users):
            conn.error("bad_watch", "users must be a list of user names", cid)
            return
        given = {}
        for u in users:
            if u.lower() != conn.lower:
                given.setdefault(u.lower(), u)
        if len(given) > self.watch_max:
            conn.error("bad_watch", f"at most {self.watch_max} users can be watched", cid)
            return
        conn.watch(given, cid)

    # ---- rooms -----------------------------------------------------------------------------

    def membership(self, conn, kind, room, cid):
        if not is_room_name(room):
            conn.error("bad_room", "a room name is 1-32 letters, digits, - or _", cid)
            return
        if room == self.default_room:
            conn.error("bad_room", "everyone is in the default room", cid)
            return
        r = self.redis
        if kind == "join":
            if room not in conn.rooms and r.scard(keys.chat_rooms(conn.user)) >= self.max_rooms:
                conn.error("too_many_rooms", f"at most {self.max_rooms} rooms", cid)
                return
            since = conn.join(room, self._joined)
        else:
            pipe = r.pipeline(transaction=False)
            pipe.srem(keys.chat_rooms(conn.user), room)
            pipe.srem(keys.chat_members(room), conn.user)
            pipe.execute()
            conn.leave(room)
        # Every socket of this user, on every process, follows (this one included: it gets
        # the frame as its confirmation); the room's members see who came or went.
        frame = {"type": "room", "action": kind, "room": room, "cid": cid}
        if kind == "join":
            frame["since"] = format_id(since)  # for the user's other sockets: see Connection.follow
        pipe = r.pipeline(transaction=False)
        pipe.spublish(keys.chat_user_channel(conn.user), control_payload(frame))
        pipe.spublish(keys.chat_room_channel(room),
                      control_payload({"type": "member", "action": kind, "room": room, "user": conn.user}))
        pipe.execute()

    def _joined(self, user, room):
        """Record ``user`` in ``room``; returns the last id the room's clock issued before (the
        replay of the room starts after it)."""
        since = self.store.room_issued(room)
        pipe = self.redis.pipeline(transaction=False)
        pipe.sadd(keys.chat_rooms(user), room)
        pipe.sadd(keys.chat_members(room), user)
        pipe.execute()
        return since


def _changed(now, kind, data, at):
    """Message ``now`` (a dict) as an ``edit`` to text ``data`` at ms ``at``, or a ``delete``
    (a tombstone), makes it."""
    if kind == "edit":
        return {**now, "data": data, "edited": at}
    after = {k: now[k] for k in ("type", "id", "ts", "sender", "receiver", "room") if k in now}
    after["deleted"] = True
    return after


def _text_ok(conn, data, cid):
    """A message's text must be a string with something in it; else the error is sent."""
    if not isinstance(data, str):
        conn.error("bad_frame", "data must be a string", cid)
        return False
    if not data.strip():
        conn.error("empty_data", "data is empty", cid)
        return False
    return True


def _ack(mid, ts, cid, duplicate, **where):
    """The ``ack`` of a stored message or change (``where``: its ``receiver`` or ``room``, and
    a change's ``target``); a ``cid`` stored before is acknowledged with the first message's
    id and ``duplicate: true``."""
    frame = {"type": "ack", "id": mid, "ts": ts, "cid": cid, **where}
    if duplicate:
        frame["duplicate"] = True
    return frame
