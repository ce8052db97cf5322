"""Moving chat's data in Redis to the layout this version reads, once.

Rule: each step is idempotent and, once run, named in ``chat:migrated`` (a set).  The first
chat request a process serves runs the steps not yet done (:func:`ensure`), under a lock
(``chat:migrating``) so that one process runs them while the others wait; no chat request is
served from the old layout.  ``python -m chat_service.migrate`` runs them by hand (on a big
deployment: before the new version takes traffic, so that no request waits for it).

Steps:

- ``private-copies``: each private conversation's one stream (``chat:dm:<a>:<b>``) becomes a
  copy per person (``chat:pm:<owner>:<other>``: :func:`webchat_common.keys.chat_pm`), ids
  unchanged, with ``p`` (the message's id in the sender's copy: the same id) on the messages
  the other person sent, and with its edits.  Each person's clock starts at the one global
  clock's last id, so every new id of theirs is above every migrated one and above every
  position a client holds.  The old streams are left to expire.
- ``hash-tags``: every key of one person or one room is renamed to its name with the owner's
  hash tag (``chat:read:alice`` becomes ``chat:read:{u:alice}``, ``chat:room:lobby``
  ``chat:room:{r:lobby}``: :mod:`webchat_common.keys`), so that on a Redis Cluster each of
  chat's calls works on one slot.  A key whose new name exists already is left alone (and
  logged); the process-wide keys (``chat:nodes``, ``chat:node:<process>``) and the ones only
  read until they expire (``chat:dm:``, ``chat:cursor:``) keep their names.  (Chat never ran
  on a Redis Cluster before this step, so it only ever renames within one server.)
"""
import itertools
import json
import logging
import time

from redis.exceptions import RedisError

from webchat_common import keys

from .wire import parse_id

log = logging.getLogger(__name__)

DONE = keys.CHAT_MIGRATED
LOCK = keys.CHAT_MIGRATING
#: How long a process waits for another one's migration before its request gets 503.
WAIT = 20.0


class Migrating(RedisError):
    """Another process is migrating and did not finish within :data:`WAIT` seconds."""


def private_copies(r):
    clock = r.hmget(keys.CHAT_CLOCK, "ms", "seq")
    copied = 0
    for key in r.scan_iter(match=keys.chat_dm_v1("*", "*"), count=500):
        parts = key.split(":")
        if len(parts) != 4:
            continue
        a, b = parts[2], parts[3]
        entries = r.xrange(key)
        if not entries:
            continue
        ttl = r.pttl(key)
        edits = r.hgetall(keys.chat_edits(key))
        for owner, other in {(a, b), (b, a)}:
            copy = keys.chat_pm(owner, other)
            top = r.xrevrange(copy, count=1)
            done_up_to = parse_id(top[0][0]) if top else None
            pipe = r.pipeline(transaction=False)
            for mid, fields in entries:
                if done_up_to is not None and parse_id(mid) <= done_up_to:
                    continue
                out = {"f": fields["f"]}
                if "e" in fields:
                    out["e"] = fields["e"]
                elif str(json.loads(fields["f"]).get("sender", "")).lower() == other:
                    out["p"] = mid
                elif "o" in fields:
                    out["o"] = fields["o"]
                pipe.xadd(copy, out, id=mid)
            if edits:
                pipe.hset(keys.chat_edits(copy), mapping=edits)
            if ttl > 0:
                pipe.pexpire(copy, ttl)
                if edits:
                    pipe.pexpire(keys.chat_edits(copy), ttl)
            if clock[0]:
                pipe.hsetnx(keys.chat_user_clock(owner), "ms", clock[0])
                pipe.hsetnx(keys.chat_user_clock(owner), "seq", clock[1] or "0")
            pipe.execute()
        copied += 1
    log.info("migration private-copies: %d conversations copied", copied)


#: Keys of one person, named ``chat:<kind>:<name>``: kind -> the function naming it now.
_BY_USER = {"convs": keys.chat_convs, "read": keys.chat_read, "cursors": keys.chat_cursors, "rooms": keys.chat_rooms,
            "sockets": keys.chat_sockets, "rate": keys.chat_rate}
#: Keys of a person's long-poll tab, ``chat:<kind>:<name>:<poll>``.
_BY_TAB = {"poll": keys.chat_poll, "typing": keys.chat_typing}


def tagged_name(key):
    """What ``key``, named as before hash tags, is named now; None for a key that keeps its
    name."""
    p = key.split(":")
    if p[0] != "chat" or len(p) < 3 or any(part.startswith("{") for part in p[2:4]):
        return None  # (names have no "{": a tag there is this layout's; a cid may hold one)
    kind, rest = p[1], p[2:]
    if kind == "edits":
        stream = tagged_name("chat:" + ":".join(rest))
        return keys.chat_edits(stream) if stream else None
    if kind == "pm" and len(rest) == 2:
        return keys.chat_pm(*rest)
    if kind == "clock" and len(rest) == 2 and rest[0] in ("user", "room"):
        return keys.chat_user_clock(rest[1]) if rest[0] == "user" else keys.chat_room_clock(rest[1])
    if kind == "room" and len(rest) == 1:
        return keys.chat_room(rest[0])
    if kind == "members" and len(rest) == 1:
        return keys.chat_members(rest[0])
    if kind in _BY_USER and len(rest) == 1:
        return _BY_USER[kind](rest[0])
    if kind in _BY_TAB and len(rest) == 2:
        return _BY_TAB[kind](*rest)
    if kind == "cid" and len(rest) >= 5 and rest[1] == "chat" and rest[2] in ("u", "r"):
        # chat:cid:<sender>:<the receiver's or room's channel>:<cid>
        sender, where, name, cid = rest[0], rest[2], rest[3], ":".join(rest[4:])
        return keys.chat_cid(sender, cid, receiver=name) if where == "u" else keys.chat_cid(sender, cid, room=name)
    return None


def hash_tags(r, batch=1000):
    renamed = kept = 0
    names = r.scan_iter(match="chat:*", count=batch)
    while chunk := list(itertools.islice(names, batch)):
        pairs = [(key, new) for key in chunk if (new := tagged_name(key))]
        pipe = r.pipeline(transaction=False)
        for key, new in pairs:
            pipe.execute_command("RENAMENX", key, new)
        for (key, new), done in zip(pairs, pipe.execute(raise_on_error=False)):
            if done == 1:
                renamed += 1
            elif r.exists(key):
                kept += 1
                log.warning("migration hash-tags: %s not renamed (%s): %s exists already", key, done, new)
    log.info("migration hash-tags: %d keys renamed, %d left", renamed, kept)


#: The steps, in order.
STEPS = (("private-copies", private_copies), ("hash-tags", hash_tags))


def run(r, wait=WAIT):
    """Run the steps not done yet (one process at a time); raises :class:`Migrating` when
    another process holds the lock for longer than ``wait`` seconds."""
    for name, step in STEPS:
        deadline = time.monotonic() + wait
        while not r.sismember(DONE, name):
            if r.set(LOCK, name, nx=True, ex=600):
                try:
                    if not r.sismember(DONE, name):
                        step(r)
                        r.sadd(DONE, name)
                finally:
                    r.delete(LOCK)
                break
            if time.monotonic() > deadline:
                raise Migrating(f"chat's data is being migrated ({name}) by another process: try again shortly")
            time.sleep(0.1)


def ensure(app):
    """Run the steps not done yet, once per process (then a flag answers)."""
    if app.extensions.get("chat_migrated"):
        return
    run(app.extensions["redis"], wait=WAIT)
    app.extensions["chat_migrated"] = True


def main():
    """``python -m chat_service.migrate``: the steps, with the chat service's own settings."""
    from . import create_app

    r = create_app().extensions["redis"]
    run(r, wait=600)
    print("chat data migrated:", ", ".join(sorted(r.smembers(DONE))))


if __name__ == "__main__":
    main()
