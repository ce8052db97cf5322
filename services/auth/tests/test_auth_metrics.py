"""Auth's metrics through the real views and a real Redis: login results, throttling, and the
active-sessions gauge (its cheap bookkeeping in ``sessions:active`` included)."""
import redis
from prometheus_client.parser import text_string_to_metric_families

from auth_service import metrics
from webchat_common.sessions import session_key, session_key_hash
from webchat_testing.sessions import COOKIE


def scrape(client):
    resp = client.get("/metrics")
    assert resp.status_code == 200
    values = {}
    for family in text_string_to_metric_families(resp.get_data(as_text=True)):
        for s in family.samples:
            values[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return values


def value(values, name, **labels):
    return values.get((name, tuple(sorted(labels.items()))), 0.0)


def test_logins_are_counted_by_result_and_throttling_separately(app, client, auth):
    auth.register()
    auth.logout()
    before = scrape(client)
    assert auth.login().status_code == 302
    auth.logout()
    for _ in range(app.config["LOGIN_MAX_FAILURES_PER_USER"]):
        assert auth.login(password="wrong password").status_code == 401
    assert auth.login(password="wrong password").status_code == 429
    assert auth.login().status_code == 429  # the right password is throttled too
    after = scrape(client)

    def delta(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("webchat_auth_logins_total", result="ok") == 1
    assert delta("webchat_auth_logins_total", result="failed") == app.config["LOGIN_MAX_FAILURES_PER_USER"]
    assert delta("webchat_auth_login_throttled_total") == 2


def test_a_form_without_a_password_is_not_a_login_attempt(client, auth):
    before = scrape(client)
    assert auth.login(password="").status_code == 400
    after = scrape(client)
    assert value(after, "webchat_auth_logins_total", result="failed") == \
        value(before, "webchat_auth_logins_total", result="failed")


def test_active_sessions_follow_login_logout_and_expiry(app, redis_url, auth):
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    other = app.test_client()
    other_auth = type(auth)(other)
    observer = app.test_client()

    def active():
        return value(scrape(observer), "webchat_auth_active_sessions")

    assert active() == 0
    auth.register("alice")                     # registration logs in
    assert active() == 1
    other_auth.login("alice")                  # a second browser
    assert active() == 2
    auth.logout()
    assert active() == 1
    auth.login("alice")
    first = auth.client.get_cookie(COOKIE).value
    token = auth.client.get("/api/me").json["csrf_token"]
    again = auth.client.post("/login", data={"username": "alice", "password": "correct horse", "csrf_token": token})
    assert again.status_code == 302            # logging in again replaces that session
    assert auth.client.get_cookie(COOKIE).value != first
    assert active() == 2
    assert not r.zscore(metrics.ACTIVE_SESSIONS_KEY, session_key_hash(first))

    # A session that expired in Redis leaves the count once its predicted expiry has passed.
    sid = other.get_cookie(COOKIE).value
    r.delete(session_key(sid))
    r.zadd(metrics.ACTIVE_SESSIONS_KEY, {session_key_hash(sid): 1})
    assert active() == 1
    # One still alive when its predicted expiry passes (it was used meanwhile) stays, with its
    # real expiry as the new score: it is not re-checked on every scrape.
    live = session_key_hash(auth.client.get_cookie(COOKIE).value)
    r.zadd(metrics.ACTIVE_SESSIONS_KEY, {live: 1})
    assert active() == 1
    assert r.zscore(metrics.ACTIVE_SESSIONS_KEY, live) > 1
    assert r.zcard(metrics.ACTIVE_SESSIONS_KEY) == 1
    r.close()


def test_metrics_still_answer_when_redis_is_down(app, client, redis_server):
    """The gauge needs Redis; the rest of the scrape must not."""
    redis_server.stop()
    try:
        values = scrape(client)
    finally:
        redis_server.start()
    assert ("webchat_auth_active_sessions", ()) not in values
    assert ("webchat_auth_logins_total", (("result", "ok"),)) in values
    assert any(name == "webchat_http_requests_total" for name, _ in values)
