"""Integration fixtures: the whole stack (real Redis, gunicorn services, nginx) on free ports,
started by the same code as ``make run``."""
import itertools
import re

import pytest
import requests
from requests.adapters import HTTPAdapter

from localstack import Stack


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    with Stack(tmp_path_factory.mktemp("stack"), chat_replicas=2) as s:
        yield s


@pytest.fixture
def gateway(stack):
    return stack.url


def form_token(html):
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


_addresses = itertools.count(2)


class SourceAddressAdapter(HTTPAdapter):
    def __init__(self, address):
        self.address = address
        super().__init__()

    def init_poolmanager(self, *args, **kwargs):
        kwargs["source_address"] = (self.address, 0)
        super().init_poolmanager(*args, **kwargs)


def new_client_address():
    """A loopback address of its own (127.0.0.0/8 is all loopback): each simulated person
    comes from a different IP, as on the internet, so per-IP limits count per person."""
    n = next(_addresses)
    return f"127.0.{n // 250}.{n % 250 + 2}"


class Browser:
    """A requests session that talks to the gateway like a browser does, from its own address."""

    def __init__(self, base):
        self.base = base
        self.address = new_client_address()
        self.http = requests.Session()
        self.http.mount("http://", SourceAddressAdapter(self.address))
        self.http.headers["Accept"] = "text/html,application/xhtml+xml,*/*;q=0.8"

    def get(self, path, **kw):
        return self.http.get(self.base + path, allow_redirects=False, timeout=10, **kw)

    def post(self, path, **kw):
        return self.http.post(self.base + path, allow_redirects=False, timeout=10, **kw)

    def token(self, path="/login"):
        return form_token(self.get(path).text)

    def register(self, username, password="correct horse"):
        return self.post("/register", data={"username": username, "password": password, "csrf_token": self.token("/register")})

    def login(self, username, password="correct horse", **extra):
        return self.post("/login", data={"username": username, "password": password, "csrf_token": self.token(), **extra})

    def logout(self):
        return self.post("/logout", data={"csrf_token": self.me()["csrf_token"]})

    def me(self):
        return self.get("/api/me").json()

    @property
    def sid(self):
        return self.http.cookies.get("webchat_session")


@pytest.fixture
def browser(gateway):
    return Browser(gateway)


@pytest.fixture
def member(gateway, username):
    """A Browser registered (so logged in) as ``username``."""
    b = Browser(gateway)
    assert b.register(username).status_code == 303
    return b


_counter = iter(range(10**6))


@pytest.fixture
def username(request):
    """A fresh user name per test (the stack is shared by the whole session)."""
    return f"u{next(_counter)}_{abs(hash(request.node.name)) % 10**6}"


CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="session")
def chromium():
    """Headless Chromium (the system package) driven by Playwright."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(chromium):
    context = chromium.new_context()
    page = context.new_page()
    page.set_default_timeout(10_000)
    yield page
    context.close()


# ---- chat (issue 4) --------------------------------------------------------------------------

#: Chat settings for the chat tests' own stack: short presence TTL, pings and checks, so that
#: expiry, keepalive and limits show within seconds (production defaults: docs/chat.md).
CHAT_TEST_ENV = {
    "CHAT_PRESENCE_TTL": "3",
    "CHAT_SESSION_CHECK_INTERVAL": "2",
    "CHAT_PUBSUB_HEALTH_INTERVAL": "1",
    "CHAT_PING_INTERVAL": "4",
    "CHAT_RATE_LIMIT": "20",
    "CHAT_RATE_BURST": "30",
    "CHAT_RATE_STRIKES": "5",
    "CHAT_MAX_FRAME": "8192",
    "CHAT_SEND_QUEUE": "32",
    "CHAT_SEND_TIMEOUT": "3",
    "CHAT_SOCKET_SNDBUF": "8192",
    "CHAT_HISTORY_AGE": "3600",
}


@pytest.fixture(scope="session")
def chat_stack(tmp_path_factory):
    """A stack of its own for the chat tests (two chat processes behind nginx), because they
    kill and restart chat processes and use short timeouts."""
    with Stack(tmp_path_factory.mktemp("chatstack"), chat_replicas=2, env=CHAT_TEST_ENV) as s:
        yield s


def tiny_png(width=2, height=2, rgb=(200, 30, 30)):
    """A real, decodable PNG (browsers render it; the files service detects it)."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack("!I", len(data)) + kind + data + struct.pack("!I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + bytes(rgb) * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack("!IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))
