"""A planted session (``webchat_testing.sessions``) is a session like auth's: the shared session
interface reads its user and CSRF token, and it expires and ends like any other."""
import redis
from flask import Flask, jsonify

import webchat_common
from webchat_common import Config, TestConfig, as_mapping
from webchat_common.sessions import session_key
from webchat_testing.sessions import COOKIE, login_client, plant_session, sid_of


def make_app(redis_url):
    app = Flask(__name__)
    webchat_common.load_config(app, Config, as_mapping(TestConfig, REDIS_URL=redis_url, TRUSTED_PROXIES=0))
    webchat_common.init_app(app, "test", static_url_path="/static")

    @app.get("/me")
    def me():
        return jsonify(user=webchat_common.current_user(), csrf=webchat_common.csrf_token())

    @app.post("/change")
    def change():
        return "changed"

    return app


def test_a_planted_session_is_read_by_the_session_interface(redis_url):
    r = redis.Redis.from_url(redis_url)
    client = make_app(redis_url).test_client()
    sid = login_client(client, r, "alice", csrf="token-1", ttl=30)
    assert sid_of(client) == sid and len(sid) == 43
    assert 0 < r.ttl(session_key(sid)) <= 30
    assert client.get("/me").json == {"user": "alice", "csrf": "token-1"}
    assert client.post("/change", headers={"X-CSRF-Token": "token-1"}).status_code == 200
    r.close()


def test_plant_session_takes_a_pipeline_and_extra_fields(redis_url):
    r = redis.Redis.from_url(redis_url)
    pipe = r.pipeline(transaction=False)
    sids = [plant_session(pipe, name, login_at=1) for name in ("bob", "carol")]
    pipe.execute()
    client = make_app(redis_url).test_client()
    for name, sid in zip(("bob", "carol"), sids):
        client.set_cookie(COOKIE, sid)
        assert client.get("/me").json["user"] == name
    r.close()


def test_an_old_planted_session_is_past_the_absolute_timeout(redis_url):
    r = redis.Redis.from_url(redis_url)
    client = make_app(redis_url).test_client()
    login_client(client, r, "dave", created=0)
    assert client.get("/me").json["user"] is None
    r.close()
