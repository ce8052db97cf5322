"""Claims of SECURITY.md (ASVS V2) that no other test proves: what passwords may be, how they
are stored, what the forms ask for, and the throttle's bound.  Through the real views and a real
Redis, like test_auth.py."""
import math
import re
import time

import redis

from auth_service.config import AuthConfig
from webchat_testing.sessions import COOKIE


def input_names(html):
    return set(re.findall(r'<input[^>]*\bname="([^"]+)"', html))


def test_long_passwords_are_accepted_and_never_truncated(client, auth):
    """ASVS 2.1.2, 2.1.3: 64 characters and more are fine; every character counts, spaces too."""
    password = "correct horse battery staple " * 4  # 116 characters, ends with a space
    assert auth.register(password=password).status_code == 303
    auth.logout()
    for almost in (password[:64], password[:-1], password.strip(), " ".join(password.split())):
        assert auth.login(password=almost).status_code == 401, repr(almost)
    assert auth.login(password=password).status_code == 302


def test_any_unicode_password_is_accepted(client, auth):
    """ASVS 2.1.4, 2.1.9: any printable character, no composition rule (12 emoji are a password)."""
    for i, password in enumerate(["🐱" * 12, "ねこ と いぬ の はなし", "пароль без цифр", "alllowercase"]):
        name = f"user{i}"
        assert auth.register(name, password).status_code == 303, password
        auth.logout()
        assert auth.login(name, password).status_code == 302, password
        auth.logout()


def test_passwords_are_stored_as_salted_scrypt_hashes(app, client, auth, redis_url):
    """ASVS 2.4.1, 2.4.2: a werkzeug scrypt hash with its own random salt per credential; the
    password itself is nowhere in Redis."""
    password = "the same password"
    auth.register("alice", password)
    auth.logout()
    auth.register("bob", password)
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    hashes = [r.hget(f"user:{name}", "password") for name in ("alice", "bob")]
    stored = [r.get(k) if r.type(k) == "string" else str(r.hgetall(k)) for k in r.keys("*")
              if r.type(k) in ("string", "hash")]
    r.close()
    assert stored and not any(password in value for value in stored)
    salts = []
    for h in hashes:
        method, salt, digest = h.split("$")
        assert method == app.config["PASSWORD_HASH_METHOD"] and method.startswith("scrypt:")
        assert len(salt) >= 16 and re.fullmatch(r"[A-Za-z0-9]+", salt)  # 16 of 62 symbols: ~95 bits
        assert len(bytes.fromhex(digest)) == 64
        salts.append(salt)
    assert salts[0] != salts[1] and hashes[0] != hashes[1]
    assert AuthConfig.PASSWORD_HASH_METHOD.startswith("scrypt:")


def test_an_old_password_still_logs_in_with_nothing_to_rotate(client, auth, redis_url):
    """ASVS 2.1.10: no password expiry and no history: an account is a name, a hash and a date."""
    auth.register()
    auth.logout()
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    r.hset("user:alice", "created", int(time.time()) - 10 * 365 * 86400)
    assert set(r.hgetall("user:alice")) == {"name", "password", "created"}
    r.close()
    resp = auth.login()
    assert resp.status_code == 302 and resp.headers["Location"] == "/"


def test_password_managers_and_paste_may_fill_in_the_forms(client):
    """ASVS 2.1.11: the fields say what they hold (autocomplete) and nothing blocks paste."""
    login = client.get("/login", headers={"Accept": "text/html"}).get_data(as_text=True)
    register = client.get("/register", headers={"Accept": "text/html"}).get_data(as_text=True)
    assert re.search(r'name="password" type="password"[^>]*autocomplete="current-password"', login)
    assert re.search(r'name="password" type="password"[^>]*autocomplete="new-password"', register)
    for page in (login, register):
        assert re.search(r'name="username" type="text"[^>]*autocomplete="username"', page)
        assert not re.search(r'onpaste|oncopy|ondrop|autocomplete="off"', page)


def test_the_forms_ask_only_for_a_name_and_a_password(client):
    """ASVS 2.5.2: no password hint, no secret question."""
    register = client.get("/register", headers={"Accept": "text/html"}).get_data(as_text=True)
    login = client.get("/login", headers={"Accept": "text/html"}).get_data(as_text=True)
    assert input_names(register) == {"csrf_token", "username", "password"}
    assert input_names(login) == {"csrf_token", "next", "username", "password"}


def test_no_account_exists_until_someone_registers(client, auth, redis_url):
    """ASVS 2.5.4: the service creates no default or shared account."""
    client.get("/login")  # the app is up and has served a page
    for name, password in (("admin", "admin"), ("root", "root"), ("sa", "password")):
        assert auth.login(name, password).status_code == 401
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    assert r.keys("user:*") == [] and r.zcard("users") == 0
    r.close()


def test_at_most_100_failed_logins_an_hour_per_account():
    """ASVS 2.2.1: with the production settings, one account gets at most this many tries an hour
    (the window is fixed; test_account_is_throttled_after_failures shows the limit is kept)."""
    windows_per_hour = math.ceil(3600 / AuthConfig.LOGIN_THROTTLE_WINDOW)
    assert AuthConfig.LOGIN_MAX_FAILURES_PER_USER * windows_per_hour <= 100


def test_failed_logins_count_per_account_whatever_the_letter_case(client, auth, app):
    """ASVS 2.2.1: varying the case of the name does not buy more tries."""
    auth.register()
    auth.logout()
    names = ["alice", "ALICE", "Alice", "aLiCe", "alicE"]
    for i in range(app.config["LOGIN_MAX_FAILURES_PER_USER"]):
        assert auth.login(names[i % len(names)], "wrong password").status_code == 401
    assert auth.login("alice").status_code == 429


def test_the_login_form_escapes_what_was_typed(client, auth):
    """Reflected XSS: the name typed is shown back in the form, escaped."""
    typed = '"><script>alert(1)</script>'
    resp = auth.login(typed, "wrong password")
    assert resp.status_code == 401
    page = resp.get_data(as_text=True)
    assert "<script>alert(1)</script>" not in page
    assert "&#34;&gt;&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_failed_logins_count_per_client_address(client, auth, app):
    """ASVS 2.2.1: many names tried from one address run into the per-address limit; another
    address is not affected."""
    per_user = app.config["LOGIN_MAX_FAILURES_PER_USER"]
    per_ip = app.config["LOGIN_MAX_FAILURES_PER_IP"]
    for i in range(per_ip):
        assert auth.login(f"guess{i // (per_user - 1)}", "wrong password").status_code == 401
    assert auth.login("someone-else", "wrong password").status_code == 429
    client.environ_base["REMOTE_ADDR"] = "10.0.0.2"
    assert auth.login("someone-else", "wrong password").status_code == 401


def test_registration_also_gives_a_new_session_id(app, client, auth):
    """ASVS 3.2.1: the visitor's session (it holds the form's CSRF token) is replaced at
    registration, as at login."""
    client.get("/register", headers={"Accept": "text/html"})
    before = client.get_cookie(COOKIE).value
    assert auth.register().status_code == 303
    after = client.get_cookie(COOKIE).value
    assert after != before
    stale = app.test_client()
    stale.set_cookie(COOKIE, before)
    assert stale.get("/api/me").status_code == 401
    assert client.get("/api/me").json["user"] == "alice"
