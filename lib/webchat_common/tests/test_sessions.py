"""The session contract against a real Redis, through a tiny app that uses the shared plumbing."""
import json
import pickle
import time

import pytest
from flask import Flask, request

import webchat_common
from webchat_common import Config
from webchat_common.sessions import ENDED_CHANNEL, session_key, session_key_hash
from webchat_testing.sessions import COOKIE, sid_of


def test_cookie_is_a_random_id_and_the_value_is_json(client, r):
    client.post("/login/alice")
    sid = sid_of(client)
    assert len(sid) == 43  # 32 random bytes, url-safe base64
    raw = r.get(session_key(sid))
    record = json.loads(raw)
    assert record["data"]["user"] == "alice"
    assert r.get("session:" + sid) is None, "the key is a hash of the cookie, not the cookie"


def test_cookie_flags(client):
    resp = client.post("/login/alice")
    cookie = resp.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie


def test_secure_cookie_when_configured(redis_url, make_app):
    client = make_app(redis_url, SESSION_COOKIE_SECURE=True).test_client()
    assert "Secure" in client.post("/login/alice").headers["Set-Cookie"]


def test_login_gives_a_new_id_and_the_old_one_dies(client, r):
    client.get("/token")  # a visitor's session (holds the CSRF token)
    before = sid_of(client)
    assert r.exists(session_key(before))
    client.post("/login/alice")
    after = sid_of(client)
    assert after != before
    assert not r.exists(session_key(before))


def test_regenerate_works_on_an_empty_session(client):
    client.post("/login/alice")  # no session before: still a fresh id, and it is stored
    assert client.get("/whoami").json == {"user": "alice"}


def test_visitor_without_session_writes_nothing(client, r):
    client.get("/whoami")
    assert sid_of(client) is None
    assert r.dbsize() == 0


def test_logout_deletes_and_announces(client, r):
    client.post("/login/alice")
    sid = sid_of(client)
    pubsub = r.pubsub()
    pubsub.subscribe(ENDED_CHANNEL)
    pubsub.get_message(timeout=1)
    client.post("/logout")
    assert not r.exists(session_key(sid))
    msg = pubsub.get_message(timeout=2)
    assert msg["data"].decode() == session_key_hash(sid)
    copied = client.application.test_client()
    copied.set_cookie(COOKIE, sid)
    assert copied.get("/whoami").json == {"user": None}


def test_a_request_in_flight_during_logout_cannot_revive_the_session(app, r):
    client = app.test_client()
    client.post("/login/alice")
    sid = sid_of(client)
    with app.test_request_context("/", headers={"Cookie": f"{COOKIE}={sid}"}):
        sess = app.session_interface.open_session(app, request)
        r.delete(session_key(sid))  # logout happens meanwhile
        sess["late"] = 1
        resp = app.response_class()
        app.session_interface.save_session(app, sess, resp)
    assert not r.exists(session_key(sid))


def test_idle_timeout_slides(redis_url, r, make_app):
    client = make_app(redis_url, SESSION_IDLE_TIMEOUT=2, SESSION_ABSOLUTE_TIMEOUT=60).test_client()
    client.post("/login/alice")
    for _ in range(3):  # 3 s of activity, each request within the idle window
        time.sleep(1)
        assert client.get("/whoami").json == {"user": "alice"}
    time.sleep(2.5)
    assert client.get("/whoami").json == {"user": None}


def test_a_request_slides_the_ttl_to_the_idle_timeout(redis_url, r, make_app):
    client = make_app(redis_url, SESSION_IDLE_TIMEOUT=60, SESSION_ABSOLUTE_TIMEOUT=3600).test_client()
    client.post("/login/alice")
    key = session_key(sid_of(client))
    r.expire(key, 5)
    assert client.get("/whoami").json == {"user": "alice"}
    assert 58 <= r.ttl(key) <= 60


def test_a_short_request_reads_and_slides_its_session_in_one_round_trip(client, r):
    """The benchmark's finding (bench/request_path.py): each Redis round trip is a large part of
    a request's cost, so reading a session and sliding its TTL is one ``GETEX``."""
    client.post("/login/alice")
    r.config_resetstat()
    assert client.get("/whoami").json == {"user": "alice"}
    calls = {name.removeprefix("cmdstat_"): stat["calls"] for name, stat in r.info("commandstats").items()}
    calls = {k: v for k, v in calls.items() if not k.startswith(("config", "info"))}
    assert calls == {"getex": 1}


def test_the_ttl_is_capped_by_the_absolute_timeout(redis_url, r, make_app):
    client = make_app(redis_url, SESSION_IDLE_TIMEOUT=60, SESSION_ABSOLUTE_TIMEOUT=10).test_client()
    client.post("/login/alice")
    key = session_key(sid_of(client))
    assert client.get("/whoami").json == {"user": "alice"}
    assert 0 < r.ttl(key) <= 10


def test_a_long_request_slides_the_ttl_from_its_end(redis_url, r, make_app):
    """The idle window starts when a request ends (a WebSocket that was open for minutes
    counts as activity up to its close), not only when it began."""
    app = make_app(redis_url, SESSION_IDLE_TIMEOUT=4, SESSION_ABSOLUTE_TIMEOUT=3600)

    @app.get("/slow")
    def slow():
        time.sleep(2.2)
        return "done"

    client = app.test_client()
    client.post("/login/alice")
    key = session_key(sid_of(client))
    assert client.get("/slow").text == "done"
    assert r.pttl(key) > 3000


def test_absolute_timeout_ends_a_busy_session(redis_url, make_app):
    client = make_app(redis_url, SESSION_IDLE_TIMEOUT=60, SESSION_ABSOLUTE_TIMEOUT=2).test_client()
    client.post("/login/alice")
    assert client.get("/whoami").json == {"user": "alice"}
    time.sleep(1.2)
    assert client.get("/whoami").json == {"user": "alice"}
    time.sleep(1.2)
    assert client.get("/whoami").json == {"user": None}


def test_absolute_timeout_is_checked_on_read_not_only_by_ttl(client, r):
    client.post("/login/alice")
    key = session_key(sid_of(client))
    record = json.loads(r.get(key))
    record["created"] = time.time() - 10**6
    r.set(key, json.dumps(record), ex=600)
    assert client.get("/whoami").json == {"user": None}
    assert not r.exists(key)


class Exploit:
    """Unpickling this would create a file: the proof that pickle ran."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_a_planted_pickle_is_refused_logged_and_never_run(client, r, tmp_path, caplog):
    client.post("/login/alice")
    sid = sid_of(client)
    marker = tmp_path / "pwned"
    r.set(session_key(sid), pickle.dumps({"user": "mallory", "x": Exploit(str(marker))}))
    with caplog.at_level("ERROR"):
        assert client.get("/whoami").json == {"user": None}
    assert not marker.exists()
    assert any("refused a session value" in rec.getMessage() for rec in caplog.records)
    assert not r.exists(session_key(sid))


@pytest.mark.parametrize("value", ["not json", "[1, 2]", '{"created": 1}', '{"created": "x", "data": {}}',
                                   '{"created": 1, "data": []}'])
def test_values_outside_the_contract_are_refused(client, r, value):
    client.post("/login/alice")
    sid = sid_of(client)
    r.set(session_key(sid), value)
    assert client.get("/whoami").json == {"user": None}


@pytest.mark.parametrize("cookie", ["short", "x" * 43 + "y", "../../etc/passwd-xxxxxxxxxxxxxxxxxxxxxxxxxx", "a" * 42 + "!"])
def test_malformed_cookies_never_reach_redis(client, cookie):
    client.set_cookie(COOKIE, cookie)
    assert client.get("/whoami").json == {"user": None}


def test_csrf_required_on_unsafe_methods(client):
    client.post("/login/alice")
    missing = client.post("/change")
    assert missing.status_code == 400 and "security token" in missing.json["error"]
    wrong = client.post("/change", headers={"X-CSRF-Token": "nope"})
    assert wrong.status_code == 400
    token = client.get("/token").json["token"]
    assert client.post("/change", headers={"X-CSRF-Token": token}).status_code == 200
    assert client.post("/change", data={"csrf_token": token}).status_code == 200


def test_request_id_is_kept_when_plain_and_replaced_otherwise(client):
    assert client.get("/healthz", headers={"X-Request-ID": "abc-1"}).headers["X-Request-ID"] == "abc-1"
    made = client.get("/healthz", headers={"X-Request-ID": "a b;c<x>"}).headers["X-Request-ID"]
    assert made and made != "a b;c<x>" and len(made) == 32


def test_redis_down_is_a_503_not_a_trace(redis_url, make_app):
    app = make_app("redis://127.0.0.1:1/0", REDIS_SOCKET_TIMEOUT=0.5)
    client = app.test_client()
    client.set_cookie(COOKIE, "a" * 43)
    resp = client.get("/whoami", headers={"Accept": "text/html"})
    assert resp.status_code == 503
    assert b"temporarily unavailable" in resp.data and b"Traceback" not in resp.data
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 503


def test_load_config_reads_typed_environment(redis_url):
    app = Flask(__name__)
    env = {"REDIS_URL": redis_url, "SESSION_COOKIE_SECURE": "true", "SESSION_IDLE_TIMEOUT": "90", "UNRELATED": "x"}
    webchat_common.load_config(app, Config, environ=env)
    assert app.config["SESSION_COOKIE_SECURE"] is True and app.config["SESSION_IDLE_TIMEOUT"] == 90
    with pytest.raises(ValueError, match="SESSION_COOKIE_SECURE"):
        webchat_common.load_config(Flask(__name__), Config, environ={**env, "SESSION_COOKIE_SECURE": "maybe"})
    with pytest.raises(RuntimeError, match="REDIS_URL"):
        webchat_common.load_config(Flask(__name__), Config, environ={})


def test_a_setting_can_come_from_a_file(redis_url, tmp_path):
    """A Secret mounted as a file: <NAME>_FILE names it; its final newline is not the value's."""
    secret = tmp_path / "url"
    secret.write_text(redis_url + "\n")
    app = Flask(__name__)
    webchat_common.load_config(app, Config, environ={"REDIS_URL_FILE": str(secret)})
    assert app.config["REDIS_URL"] == redis_url
    with pytest.raises(RuntimeError, match="both set"):
        webchat_common.load_config(Flask(__name__), Config, environ={"REDIS_URL": redis_url, "REDIS_URL_FILE": str(secret)})
    with pytest.raises(RuntimeError, match="cannot read"):
        webchat_common.load_config(Flask(__name__), Config, environ={"REDIS_URL_FILE": str(tmp_path / "missing")})
    typed = tmp_path / "timeout"
    typed.write_text("90")
    app = Flask(__name__)
    webchat_common.load_config(app, Config, environ={"REDIS_URL": redis_url, "SESSION_IDLE_TIMEOUT_FILE": str(typed)})
    assert app.config["SESSION_IDLE_TIMEOUT"] == 90


def test_unexpected_errors_are_a_500_page_without_a_trace(redis_url, make_app):
    app = make_app(redis_url, PROPAGATE_EXCEPTIONS=False)

    @app.get("/boom")
    @app.get("/api/boom")
    def boom():
        raise ZeroDivisionError("secret detail")

    client = app.test_client()
    page = client.get("/boom", headers={"Accept": "text/html"})
    assert page.status_code == 500 and b"<h1>500</h1>" in page.data
    assert b"secret detail" not in page.data and b"Traceback" not in page.data
    api = client.get("/api/boom")
    assert api.status_code == 500 and api.json == {"error": "Something went wrong on our side. It has been logged."}
    assert client.post("/healthz").status_code == 405
    assert client.post("/healthz").headers["Allow"]
