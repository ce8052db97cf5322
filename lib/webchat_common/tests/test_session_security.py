"""Claims of SECURITY.md (ASVS V3) that test_sessions.py does not prove on its own: where the
session id comes from, that it is only ever read from the cookie, the cookie's scope, and the
default timeouts."""
from webchat_common import Config
from webchat_common import sessions

from webchat_testing.sessions import COOKIE, sid_of


def test_session_ids_come_from_the_secrets_module(client, monkeypatch):
    """ASVS 3.2.2, 3.2.4: 32 bytes (256 bits) from the OS CSPRNG (``secrets``), new at each login."""
    made = []
    real = sessions.secrets.token_urlsafe

    def recording(nbytes):
        made.append((nbytes, real(nbytes)))
        return made[-1][1]

    monkeypatch.setattr(sessions.secrets, "token_urlsafe", recording)
    client.post("/login/alice")
    first = sid_of(client)
    client.post("/login/alice")
    second = sid_of(client)
    ids = [value for nbytes, value in made if nbytes == 32]
    assert first in ids and second in ids and first != second


def test_a_session_id_in_the_url_is_not_a_session(app, client):
    """ASVS 3.1.1: the id is read from the cookie only; in a query string or a form it is nothing."""
    client.post("/login/alice")
    sid = sid_of(client)
    stranger = app.test_client()
    for query in (f"?{COOKIE}={sid}", f"?session={sid}", f"?sid={sid}"):
        assert stranger.get("/whoami" + query).json == {"user": None}
    assert stranger.get_cookie(COOKIE) is None


def test_the_session_cookie_is_host_only(client):
    """ASVS 3.4.5: no Domain attribute (only the host that set it gets it back); Path=/ because
    auth, files and chat all read it."""
    cookie = client.post("/login/alice").headers["Set-Cookie"]
    attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")[1:]}
    assert "domain" not in attributes
    assert "Path=/" in cookie


def test_default_timeouts_are_within_asvs_level_2():
    """ASVS 3.3.2 (level 2): re-authentication after 30 minutes idle or 12 hours at most."""
    assert Config.SESSION_IDLE_TIMEOUT <= 30 * 60
    assert Config.SESSION_ABSOLUTE_TIMEOUT <= 12 * 60 * 60
