"""Media test data: tiny but real files of every type the files service knows (their signatures
are what detection reads), which of them are shown inline, and a logged-in uploader with a Flask
test client.  The files service's unit tests and the integration tests (``tests/test_media*.py``)
use the samples; the fixtures built on them are in ``services/files/tests/conftest.py``.
"""
import secrets
import time
from io import BytesIO

from webchat_common import keys

from .sessions import plant_session

# Tiny but real files of each type (their signatures are what detection reads).
SAMPLES = {
    "photo.jpg": (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(range(256)) * 8, "image/jpeg"),
    "pic.png": (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 8, "image/png"),
    "anim.gif": (b"GIF89a\x01\x00\x01\x00" + bytes(range(256)) * 4, "image/gif"),
    "img.webp": (b"RIFF\x24\x00\x00\x00WEBPVP8 " + bytes(range(256)) * 4, "image/webp"),
    "song.mp3": (b"ID3\x03\x00\x00\x00\x00\x00\x00" + b"\xff\xfb\x90\x00" + bytes(1000), "audio/mpeg"),
    "voice.ogg": (b"OggS\x00\x02" + bytes(range(256)) * 4, "audio/ogg"),
    "clip.mp4": (b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 4, "video/mp4"),
    "clip.webm": (b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01\x42\x82\x84webm" + bytes(range(256)) * 4, "video/webm"),
    "doc.pdf": (b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n" * 20, "application/pdf"),
    "notes.txt": ("plain words, ünïcode\n".encode() * 50, "text/plain"),
    "page.html": (b"<!doctype html><html><body><script>alert(document.cookie)</script></body></html>", "text/html"),
    "logo.svg": (b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>', "image/svg+xml"),
    "tool.exe": (b"MZ\x90\x00\x03\x00\x00\x00" + bytes(range(256)) * 4, "application/octet-stream"),
}
INLINE = {"photo.jpg", "pic.png", "anim.gif", "img.webp", "song.mp3", "voice.ogg", "clip.mp4", "clip.webm",
          "doc.pdf", "notes.txt"}


class Person:
    """A registered, logged-in user with a test client of their own."""

    def __init__(self, app, r, name):
        self.name = name
        r.hset(keys.user(name), mapping={"name": name, "password": "x", "created": int(time.time())})
        self.csrf = secrets.token_urlsafe(32)
        self.sid = plant_session(r, name, csrf=self.csrf)
        self.client = app.test_client()
        self.client.set_cookie(app.config["SESSION_COOKIE_NAME"], self.sid)

    def upload(self, filename, data, path="/media/", headers=None, **extra):
        hdrs = {"X-CSRF-Token": self.csrf, "Accept": "application/json"}
        hdrs.update(headers or {})
        return self.client.post(path, data={"file": (BytesIO(data), filename), **extra},
                                content_type="multipart/form-data", headers=hdrs)

    def upload_raw(self, disposition_filename, data, path="/media/"):
        """Upload with ``disposition_filename`` (bytes) written as is between the quotes of
        ``filename="..."``, as a browser writes it (a backslash is sent as it is)."""
        boundary = b"----webchat-test-boundary"
        body = (b"--" + boundary + b"\r\nContent-Disposition: form-data; name=\"file\"; filename=\""
                + disposition_filename + b"\"\r\nContent-Type: application/octet-stream\r\n\r\n"
                + data + b"\r\n--" + boundary + b"--\r\n")
        return self.client.post(path, data=body, headers={
            "X-CSRF-Token": self.csrf, "Accept": "application/json",
            "Content-Type": "multipart/form-data; boundary=" + boundary.decode()})
