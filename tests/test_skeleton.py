"""The walking skeleton through the gateway: one session, seen by auth, files and chat."""
import subprocess
import time

import requests

from support.web import Browser
from webchat_testing.sessions import COOKIE
from webchat_testing import wait_until


def test_one_session_is_seen_by_every_service(browser, username):
    assert browser.register(username).status_code == 303
    browser.logout()
    first = browser.get("/login")
    before = browser.sid
    assert before, "visiting the login form starts a session for its CSRF token"
    resp = browser.login(username)
    assert resp.status_code == 302 and resp.headers["Location"] == "/"
    assert browser.sid and browser.sid != before, "a new session id on login"
    cookie = resp.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie
    assert first.status_code == 200

    home = browser.get("/")
    assert home.status_code == 200 and f'<span id="username">{username}</span>' in home.text
    assert browser.get("/media/", headers={"Accept": "application/json"}).json() == {"media": []}
    assert 'id="no-media"' in browser.get("/media/").text  # a browser gets the media page
    chat = browser.get("/chat/")
    assert chat.status_code == 200 and f'<span id="chat-user">{username}</span>' in chat.text
    assert browser.me()["user"] == username


def test_old_session_id_stops_working_after_login(gateway, browser, username):
    browser.register(username)
    browser.logout()
    browser.get("/login")
    old = browser.sid
    browser.login(username)
    stale = requests.get(gateway + "/api/me", cookies={COOKIE: old}, timeout=5)
    assert stale.status_code == 401


def test_logout_kills_a_copied_cookie_everywhere(gateway, browser, username):
    browser.register(username)
    copied = {COOKIE: browser.sid}
    for path in ("/api/me", "/media/", "/chat/"):
        assert requests.get(gateway + path, cookies=copied, timeout=5).status_code == 200
    assert browser.logout().status_code == 303
    assert requests.get(gateway + "/api/me", cookies=copied, timeout=5).status_code == 401
    assert requests.get(gateway + "/media/", cookies=copied, timeout=5).status_code == 401
    page = requests.get(gateway + "/chat/", cookies=copied, headers={"Accept": "text/html"},
                        allow_redirects=False, timeout=5)
    assert page.status_code == 302 and page.headers["Location"] == "/login?next=/chat/"


def test_visitors_are_refused_by_each_service(gateway):
    assert requests.get(gateway + "/media/", timeout=5).status_code == 401
    assert requests.get(gateway + "/media/", timeout=5).json() == {"error": "login required"}
    page = requests.get(gateway + "/chat/", headers={"Accept": "text/html"}, allow_redirects=False, timeout=5)
    assert page.status_code == 302 and page.headers["Location"] == "/login?next=/chat/"
    home = requests.get(gateway + "/", headers={"Accept": "text/html"}, allow_redirects=False, timeout=5)
    assert home.status_code == 302 and home.headers["Location"] == "/login?next=/"


def test_gateway_request_id_and_security_headers(gateway):
    mine = requests.get(gateway + "/login", headers={"X-Request-ID": "trace-123"}, timeout=5)
    assert mine.headers["X-Request-ID"] == "trace-123"
    made = requests.get(gateway + "/login", headers={"X-Request-ID": "bad id\twith junk"}, timeout=5)
    assert made.headers["X-Request-ID"] and made.headers["X-Request-ID"] != "bad id\twith junk"
    for header in ("X-Content-Type-Options", "X-Frame-Options", "Content-Security-Policy", "Referrer-Policy"):
        assert header in mine.headers
    assert requests.get(gateway + "/metrics", timeout=5).status_code == 404


def test_request_id_reaches_the_service_log(stack, gateway):
    rid = f"skeleton-{time.time_ns()}"
    requests.get(gateway + "/media/", headers={"X-Request-ID": rid}, timeout=5)
    log = stack.log_dir / "files-0.log"
    wait_until(lambda: rid in log.read_text(), timeout=5, what="the request id in the files log")
    gw = stack.log_dir / "gateway.log"
    wait_until(lambda: rid in gw.read_text(), timeout=5, what="the request id in the gateway log")


def test_login_burst_gets_429(gateway):
    b = Browser(gateway)
    codes = [b.login("nobody-" + str(i)).status_code for i in range(15)]
    assert 429 in codes


def test_redis_down_is_503_and_recovers(stack, gateway, browser, username):
    browser.register(username)
    stack.redis.stop()
    try:
        for path in ("/api/me", "/media/", "/chat/"):
            resp = browser.get(path)
            assert resp.status_code == 503, path
            assert "temporarily unavailable" in resp.text
    finally:
        stack.redis.start()
    # Redis came back with its data (AOF, as in every way to run): the services answer again
    # by themselves, and the session is still there.
    wait_until(lambda: browser.get("/api/me").status_code == 200, timeout=20, what="recovery")
    assert browser.me()["user"] == username
    assert browser.get("/media/").status_code == 200
    assert browser.get("/chat/").status_code == 200


def test_rendered_gateway_config_passes_nginx_t(stack):
    conf = stack.state_dir / "nginx" / "nginx.conf"
    assert "${" not in conf.read_text()
    subprocess.run(stack.nginx_args(conf, "-t", "-q"), check=True)


def test_login_failures_look_the_same_through_the_gateway(browser, username):
    browser.register(username)
    browser.logout()
    wrong = browser.login(username, "wrong password")
    unknown = browser.login("nobody-" + username, "wrong password")
    assert wrong.status_code == unknown.status_code == 401
    assert "Wrong username or password." in wrong.text and "Wrong username or password." in unknown.text


def test_bad_fields_get_400_with_per_field_errors(browser):
    token = browser.token("/register")
    missing = browser.post("/register", data={"csrf_token": token})
    assert missing.status_code == 400
    assert 'id="e-username"' in missing.text and 'id="e-password"' in missing.text
    oversized = browser.post("/register", data={"username": "x" * 40, "password": "p" * 2000, "csrf_token": token})
    assert oversized.status_code == 400
    assert "at most 32 characters" in oversized.text and "at most 1024 characters" in oversized.text
    login = browser.post("/login", data={"username": "", "password": "", "csrf_token": browser.token()})
    assert login.status_code == 400 and 'id="e-username"' in login.text


def test_missing_csrf_is_400_through_the_gateway(browser, username):
    browser.get("/login")
    resp = browser.post("/login", data={"username": username, "password": "correct horse"})
    assert resp.status_code == 400 and "security token" in resp.text
    browser.register(username)
    assert browser.post("/logout").status_code == 400
    assert browser.me()["user"] == username, "a logout without the token changes nothing"


def test_login_next_is_never_off_site(browser, username):
    browser.register(username)
    browser.logout()
    for target in ("//evil.example", "https://evil.example", "/\\evil.example"):
        resp = browser.login(username, next=target)
        assert resp.status_code == 302 and resp.headers["Location"] == "/", target
        browser.logout()
    assert browser.login(username, next="/media/").headers["Location"] == "/media/"
