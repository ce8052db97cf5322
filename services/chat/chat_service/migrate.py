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
"""
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


#: The steps, in order.
STEPS = (("private-copies", private_copies),)


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
