"""Users in Redis (see ``webchat_common.keys``): register, check a password, look one up.

A user name follows ``webchat_common.names.USER_NAME``, matched whole (``"alice\\n"`` is not
``alice``); that module is the only copy of the rule."""
import time

from flask import current_app
from werkzeug.security import check_password_hash, generate_password_hash

from webchat_common import get_redis, keys
from webchat_common.names import is_user_name

PASSWORD_MIN, PASSWORD_MAX = 8, 1024


class UsernameTaken(Exception):
    pass


def username_error(name):
    if not name:
        return "Enter a username."
    if len(name) > 32:
        return "A username has at most 32 characters."
    if not is_user_name(name):
        return "Use only letters, digits, '_' and '-'."
    return None


def password_error(password):
    if not password:
        return "Enter a password."
    if len(password) < PASSWORD_MIN:
        return f"A password has at least {PASSWORD_MIN} characters."
    if len(password) > PASSWORD_MAX:
        return f"A password has at most {PASSWORD_MAX} characters."
    return None


# Check-and-create of the account, atomic on the account's own key (one slot of a Cluster):
# two registrations of one name cannot both win, and a crash cannot leave half an account.
_CREATE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'name', ARGV[1], 'password', ARGV[2], 'created', ARGV[3])
return 1
"""


def create_user(name, password):
    """Store a new user; raise UsernameTaken if the name (in any letter case) exists.

    Two writes, in this order, because the account and the ``users`` index are in different
    slots of a Cluster (docs/cluster.md): the account (created only if absent), then the
    user's entry in the index.  If the second write is lost (a failure in between), the
    account exists and works, its name is taken, and only the contacts list misses it until
    its next login puts it back (:func:`authenticate`)."""
    pw_hash = generate_password_hash(password, method=current_app.config["PASSWORD_HASH_METHOD"])
    created = int(time.time())
    r = get_redis()
    if not r.eval(_CREATE, 1, keys.user(name), name, pw_hash, created):
        raise UsernameTaken(name)
    _index(r, name, created)


def _index(r, name, created):
    """The user's entry in the ``users`` index (kept if there: its score is the registration)."""
    r.zadd(keys.USERS, {name: created}, nx=True)


def get_user(name):
    """The user's fields (without the password hash), or None."""
    data = get_redis().hgetall(keys.user(name))
    if not data or "password" not in data:
        return None
    data.pop("password")
    return data


def _dummy_hash():
    app = current_app
    if "dummy_hash" not in app.extensions:
        app.extensions["dummy_hash"] = generate_password_hash("x" * 16, method=app.config["PASSWORD_HASH_METHOD"])
    return app.extensions["dummy_hash"]


def authenticate(name, password):
    """The registered name if the password is right, else None.  An unknown user costs the
    same hash as a known one, so timing does not tell which names exist.  A login also puts
    the user back in the ``users`` index if a failed registration left them out of it."""
    r = get_redis()
    stored = r.hmget(keys.user(name), "name", "password", "created") if is_user_name(name) else [None] * 3
    registered, pw_hash, created = stored
    if pw_hash is None:
        check_password_hash(_dummy_hash(), password)
        return None
    if not check_password_hash(pw_hash, password):
        return None
    _index(r, registered, int(created))
    return registered


def list_users(offset, limit):
    return get_redis().zrange(keys.USERS, offset, offset + limit - 1)
