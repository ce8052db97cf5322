"""What a client can ask: send a message, join or leave a room, watch users, share a file.

Rule: every frame gets its answer (``ack``, ``room``, ``watching``, ``pong``) or one ``error``
frame with a code, and a command only ever touches its own socket and what its user may
change: the sender is the session's user (never the client's ``sender``), a room message needs
membership, a shared file must be the sender's own.  Frames have already been parsed
(``wire.parse_frame``) and rate-limited by the socket (:mod:`.conn`).  The frame table is in
docs/chat.md.
"""
import logging

from redis.exceptions import RedisError

from webchat_common import keys, media
from webchat_common.names import is_media_name, is_room_name, is_user_name

from . import metrics
from .wire import control_payload, format_id

log = logging.getLogger(__name__)


class Commands:
    """One per process; ``node`` gives the store, the presence watch, Redis and the settings."""

    def __init__(self, node):
        self.store = node.store
        self.watch = node.watch
        self.redis = node.redis
        self.default_room = node.default_room
        self.max_rooms = node.cfg["CHAT_MAX_ROOMS"]
        self.watch_max = node.cfg["CHAT_WATCH_MAX"]

    def run(self, conn, msg):
        cid = msg.get("cid")
        kind = msg.get("type", "message")
        try:
            if kind == "message":
                self.message(conn, msg, cid)
            elif kind in ("join", "leave"):
                self.membership(conn, kind, msg.get("room"), cid)
            elif kind == "watch":
                self.watch_users(conn, msg.get("users"), cid)
            elif kind == "ping":
                conn.reply({"type": "pong", "cid": cid})
            else:
                conn.error("bad_frame", "unknown type: use message, join, leave, watch or ping", cid)
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
        if not isinstance(data, str):
            conn.error("bad_frame", "data must be a string", cid)
            return
        if not data.strip():
            conn.error("empty_data", "data is empty", cid)
            return
        receiver, room = msg.get("receiver"), msg.get("room")
        if (receiver is None) == (room is None):
            conn.error("bad_frame", "give exactly one of receiver (a user name) or room", cid)
            return
        fields = {"sender": conn.user, "data": data}
        if cid is not None:
            fields["cid"] = cid
        if receiver is not None and not is_user_name(receiver):
            conn.error("unknown_receiver", "no such user", cid)
            return
        media = msg.get("media")
        if media is not None:
            if not self.share_media(conn, media, receiver, room, cid):
                return
            fields["media"] = media
        if receiver is not None:
            sent = self.store.send_private(conn.user, receiver, fields, cid)
            if sent is None:
                conn.error("unknown_receiver", f"no such user: {receiver}", cid)
                return
            mid, ts, name, online, duplicate = sent
            conn.reply(_ack(mid, ts, cid, duplicate, receiver=name))
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
        if receiver is not None and not added:
            conn.error("unknown_receiver", f"no such user: {receiver}", cid)
            return False
        return True

    # ---- watch -----------------------------------------------------------------------------

    def watch_users(self, conn, users, cid):
        """The users whose presence this socket is sent: the list replaces the previous one,
        and the answer (``watching``, queued once their state is known) gives the state of
        each; later changes come as ``presence`` frames.  Starting to watch costs rate-limit
        tokens (one per 100 users new to this socket), so swapping long lists cannot load
        Redis with subscriptions."""
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
        old = set(self.watch.watched_by(conn))
        conn.spend(sum(1 for u in given if u not in old) / 100)
        self.watch.set(conn, given, cid)

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
        # the frame as its confirmation).
        frame = {"type": "room", "action": kind, "room": room, "cid": cid}
        if kind == "join":
            frame["since"] = format_id(since)  # for the user's other sockets: see Connection.follow
        r.publish(keys.chat_user_channel(conn.user), control_payload(frame))

    def _joined(self, user, room):
        """Record ``user`` in ``room``; returns the last id issued before (the replay of the
        room starts after it)."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.hmget(keys.CHAT_CLOCK, "ms", "seq")
        pipe.sadd(keys.chat_rooms(user), room)
        pipe.sadd(keys.chat_members(room), user)
        (ms, seq), _, _ = pipe.execute()
        return int(ms or 0), int(seq or 0)


def _ack(mid, ts, cid, duplicate, **where):
    """The ``ack`` of a stored message (``where``: its ``receiver`` or ``room``); a ``cid``
    stored before is acknowledged with the first message's id and ``duplicate: true``."""
    frame = {"type": "ack", "id": mid, "ts": ts, "cid": cid, **where}
    if duplicate:
        frame["duplicate"] = True
    return frame
