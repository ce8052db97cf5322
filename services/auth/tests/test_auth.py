import json

import pytest


def test_register_logs_in_and_shows_home(client, auth):
    resp = auth.register()
    assert resp.status_code == 303 and resp.headers["Location"] == "/"
    home = client.get("/", headers={"Accept": "text/html"})
    assert home.status_code == 200
    assert b'<span id="username">alice</span>' in home.data
    assert client.get("/api/me").json["user"] == "alice"


def test_home_redirects_visitors_to_login_with_next(client):
    resp = client.get("/profile", headers={"Accept": "text/html"})
    assert resp.status_code == 302
    assert resp.headers["Location"] == "/login?next=/profile"


def test_api_me_is_json_401_for_visitors(client):
    resp = client.get("/api/me", headers={"Accept": "text/html"})
    assert resp.status_code == 401
    assert resp.json == {"error": "login required"}


@pytest.mark.parametrize(
    "username,password,field,message",
    [
        ("", "correct horse", "username", "Enter a username."),
        ("x" * 33, "correct horse", "username", "at most 32"),
        ("bad name!", "correct horse", "username", "Use only letters"),
        ("bob", "short", "password", "at least 8"),
        ("bob", "p" * 1025, "password", "at most 1024"),
    ],
)
def test_register_rejects_bad_fields(client, auth, username, password, field, message):
    resp = client.post("/register", data={"username": username, "password": password,
                                          "csrf_token": auth._form_token()})
    assert resp.status_code == 400
    assert f'id="e-{field}"'.encode() in resp.data
    assert message.encode() in resp.data


def test_register_taken_name_is_409_in_any_case(client, auth):
    auth.register("alice")
    auth.logout()
    resp = auth.register("ALICE")
    assert resp.status_code == 409
    assert b"That username is taken." in resp.data


def test_login_failures_share_one_message(client, auth):
    auth.register()
    auth.logout()
    wrong = auth.login(password="wrong password")
    unknown = auth.login(username="nobody")
    assert wrong.status_code == unknown.status_code == 401
    assert b"Wrong username or password." in wrong.data and b"Wrong username or password." in unknown.data
    assert b'value="alice"' in wrong.data  # the form is kept


def test_login_without_csrf_is_400(client, auth):
    auth.register()
    auth.logout()
    resp = client.post("/login", data={"username": "alice", "password": "correct horse"})
    assert resp.status_code == 400


@pytest.mark.parametrize("target", ["//evil.example", "https://evil.example/x", "/\\evil.example", "javascript:alert(1)"])
def test_login_never_redirects_off_site(client, auth, target):
    auth.register()
    auth.logout()
    resp = auth.login(next=target)
    assert resp.status_code == 302
    assert resp.headers["Location"] == "/"


def test_login_follows_a_local_next(client, auth):
    auth.register()
    auth.logout()
    assert auth.login(next="/chat/?room=x").headers["Location"] == "/chat/?room=x"


def test_account_is_throttled_after_failures(client, auth, app):
    auth.register()
    auth.logout()
    for _ in range(app.config["LOGIN_MAX_FAILURES_PER_USER"]):
        assert auth.login(password="wrong password").status_code == 401
    resp = auth.login()  # even the right password waits out the window
    assert resp.status_code == 429
    assert int(resp.headers["Retry-After"]) > 0


def test_logout_needs_post_and_csrf(client, auth):
    auth.register()
    assert client.get("/logout").status_code == 405
    assert client.post("/logout").status_code == 400
    assert auth.logout().status_code == 303
    assert client.get("/api/me").status_code == 401


def test_errors_are_pages_or_json_without_traces(client):
    page = client.get("/nope", headers={"Accept": "text/html"})
    assert page.status_code == 404 and b"<h1>404</h1>" in page.data
    api = client.get("/api/nope")
    assert api.status_code == 404 and "error" in api.json


def test_create_user_command(app):
    runner = app.test_cli_runner()
    result = runner.invoke(args=["create-user", "carol", "--password", "long enough pw"])
    assert result.exit_code == 0, result.output
    again = runner.invoke(args=["create-user", "carol", "--password", "long enough pw"])
    assert again.exit_code != 0 and "taken" in again.output
    bad = runner.invoke(args=["create-user", "bad name", "--password", "long enough pw"])
    assert bad.exit_code != 0


def test_factory_requires_redis_url():
    from auth_service import create_app

    with pytest.raises(RuntimeError, match="REDIS_URL"):
        create_app({"REDIS_URL": None})


def test_api_me_reads_only_the_session(alice, auth, app, client):
    """After a login, ``/api/me`` is one Redis command (the session's GETEX): the name and the
    registration time came into the session at login.  A session from before that (no
    ``created`` in it) reads the user once and keeps it."""
    r = app.extensions["redis"]
    for log_in in (lambda: None, lambda: (auth.logout(), auth.login())):
        log_in()
        created = int(r.hget("user:alice", "created"))
        r.config_resetstat()
        me = client.get("/api/me").json
        assert me["user"] == "alice" and me["created"] == created
        calls = {name.removeprefix("cmdstat_"): stat["calls"] for name, stat in r.info("commandstats").items()}
        assert {k: v for k, v in calls.items() if not k.startswith(("config", "info"))} == {"getex": 1}
    key = next(iter(r.scan_iter("session:*")))
    data = json.loads(r.get(key))
    del data["data"]["created"]
    r.set(key, json.dumps(data), keepttl=True)
    assert client.get("/api/me").json["created"] == me["created"]
    assert json.loads(r.get(key))["data"]["created"] == me["created"], "kept in the session"
