"""Auth's writes that span owners (slots of a Redis Cluster, docs/cluster.md) are ordered
single-key writes, not transactions; these tests make the later write fail for real (its key
holds another type, so Redis answers WRONGTYPE) and show the failure is harmless, and that
registration stays first-come-first-served without a transaction."""
import threading

import redis

from auth_service import create_app, users
from auth_service.config import AuthTestConfig
from webchat_common import as_mapping, keys
from webchat_common.sessions import session_key_hash


def test_a_registration_whose_index_write_failed_leaves_a_working_account(app, redis_url, client, auth):
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    r.set(keys.USERS, "not a sorted set")  # the second write (the users index) fails
    assert auth.register("alice").status_code == 503
    r.delete(keys.USERS)
    assert r.hget(keys.user("alice"), "name") == "alice"  # the account was created
    assert auth.register("ALICE").status_code == 409  # its name is taken
    assert r.zrange(keys.USERS, 0, -1) == []  # the contacts list misses it ...
    assert auth.login("alice").status_code == 302  # ... until it logs in, which works
    assert r.zrange(keys.USERS, 0, -1) == ["alice"]
    assert client.get("/api/users").json["users"] == ["alice"]


def test_concurrent_registrations_of_one_name_let_one_win(app, redis_url):
    names = ["bob", "Bob", "BOB", "boB"] * 4
    won, taken = [], []
    start = threading.Barrier(len(names))

    def register(name):
        with app.app_context():
            start.wait()
            try:
                users.create_user(name, "correct horse")
                won.append(name)
            except users.UsernameTaken:
                taken.append(name)

    threads = [threading.Thread(target=register, args=(n,)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1 and len(taken) == len(names) - 1
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    assert r.hget(keys.user("bob"), "name") == won[0]
    assert r.zrange(keys.USERS, 0, -1) == won


def test_a_session_missing_from_the_active_set_only_skews_the_count(app, redis_url, client, auth):
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    auth.register("carol")
    auth.logout()
    r.set(keys.ACTIVE_SESSIONS, "not a sorted set")  # the session's second write fails
    assert auth.login("carol").status_code == 302
    r.delete(keys.ACTIVE_SESSIONS)
    assert client.get("/api/me").json["user"] == "carol"  # logged in all the same
    assert r.zcard(keys.ACTIVE_SESSIONS) == 0  # only the gauge misses the session
    assert b"webchat_auth_active_sessions 0.0" in app.test_client().get("/metrics").data
    sid = client.get_cookie(app.config["SESSION_COOKIE_NAME"]).value
    assert r.exists("session:" + session_key_hash(sid))
    assert auth.logout().status_code in (302, 303)
    assert client.get("/api/me").status_code == 401


def app_as(redis_url, acl_keys, r):
    """The auth app connected as a Redis user that may touch only ``acl_keys`` (an ACL: a
    write it may not make fails for real, with NOPERM)."""
    r.acl_setuser("auth-partial", enabled=True, passwords=["+pw"], commands=["+@all"], keys=acl_keys, reset=True)
    url = redis_url.replace("redis://", "redis://auth-partial:pw@")
    return create_app(as_mapping(AuthTestConfig, REDIS_URL=url, TRUSTED_PROXIES=0))


def test_a_failure_counted_on_one_throttle_counter_only_leaves_it_with_its_window(app, redis_url, auth):
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    auth.register("dave")
    auth.logout()
    try:
        partial = app_as(redis_url, ["~session:*", "~user:*", "~users", "~sessions:active",
                                     "~throttle:login:user:*", "%R~throttle:login:ip:*"], r)
        resp = type(auth)(partial.test_client()).login("dave", password="wrong password")
        assert resp.status_code == 503  # the address's counter was refused, after the account's
    finally:
        r.acl_deluser("auth-partial")
    assert r.get(keys.login_throttle_user("dave")) == "1"
    assert 0 < r.ttl(keys.login_throttle_user("dave")) <= app.config["LOGIN_THROTTLE_WINDOW"]
    assert r.keys("throttle:login:ip:*") == []
    assert auth.login("dave").status_code == 302  # one failure counted: the login goes on


def test_a_scrape_that_could_not_update_the_active_set_leaves_it_for_the_next(app, redis_url, client, auth):
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    auth.register("erin")
    r.zadd(keys.ACTIVE_SESSIONS, {"0" * 64: 1})  # a member long due, whose session is gone
    try:
        partial = app_as(redis_url, ["~session:*", "%R~sessions:active"], r)
        scrape = partial.test_client().get("/metrics").get_data(as_text=True)
        assert "webchat_auth_active_sessions " not in scrape  # the update was refused: no figure
    finally:
        r.acl_deluser("auth-partial")
    assert r.zcard(keys.ACTIVE_SESSIONS) == 2
    assert "webchat_auth_active_sessions 1.0" in client.get("/metrics").get_data(as_text=True)
    assert r.zrange(keys.ACTIVE_SESSIONS, 0, -1) == [session_key_hash(client.get_cookie(
        app.config["SESSION_COOKIE_NAME"]).value)]
