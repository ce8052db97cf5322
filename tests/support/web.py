"""Clients for the integration tests: a browser-like HTTP client from its own loopback address,
and small helpers (form tokens, a real PNG).  Fixtures are in ``tests/conftest.py``."""
import itertools
import re

import requests
from requests.adapters import HTTPAdapter

from webchat_testing.sessions import COOKIE


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

    def __init__(self, base, address=None, verify=True):
        self.base = base
        self.address = address or new_client_address()
        self.http = requests.Session()
        self.http.mount("http://", SourceAddressAdapter(self.address))
        self.http.mount("https://", SourceAddressAdapter(self.address))
        self.verify = verify  # a gateway with TLS: its certificate (per request, or
        # requests prefers REQUESTS_CA_BUNDLE from the environment over a session's verify)
        self.http.headers["Accept"] = "text/html,application/xhtml+xml,*/*;q=0.8"

    def get(self, path, timeout=10, **kw):
        return self.http.get(self.base + path, allow_redirects=False, timeout=timeout, verify=self.verify, **kw)

    def post(self, path, timeout=10, **kw):
        return self.http.post(self.base + path, allow_redirects=False, timeout=timeout, verify=self.verify, **kw)

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
        return self.http.cookies.get(COOKIE)


def tiny_png(width=2, height=2, rgb=(200, 30, 30)):
    """A real, decodable PNG (browsers render it; the files service detects it)."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack("!I", len(data)) + kind + data + struct.pack("!I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + bytes(rgb) * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack("!IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))
