"""Who may read a media file besides its owner: the rule the files service and chat share.

Rule: only a file's owner shares it, and only with registered users; sharing adds their
lower-cased names to the file's readers set (``media:<name>:readers``, see :mod:`.keys`),
which the files service checks on every read.  The files service shares through
``POST /media/<name>/share``, chat when a message carries the file (the receiver, or the
room's members).  Avatars need no sharing: every logged-in user may read them.
"""
from . import keys


def is_owner(redis, name, user):
    """Whether ``name`` is a stored file of ``user``'s."""
    stored_owner = redis.hget(keys.media(name), "owner")
    return bool(stored_owner) and stored_owner.lower() == user.lower()


def share(redis, name, owner, users):
    """Let ``users`` (names, any case) read ``owner``'s file ``name``.  Returns the registered
    names added as readers (lower-cased), or None (nothing changed) when ``name`` is not a
    file of ``owner``'s."""
    users = list(users)
    pipe = redis.pipeline(transaction=False)
    pipe.hget(keys.media(name), "owner")
    for u in users:
        pipe.exists(keys.user(u))
    stored_owner, *exists = pipe.execute()
    if not stored_owner or stored_owner.lower() != owner.lower():
        return None
    known = list(dict.fromkeys(u.lower() for u, found in zip(users, exists) if found))
    if known:
        redis.sadd(keys.media_readers(name), *known)
    return known
