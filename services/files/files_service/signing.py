"""Signed media links, checked by nginx's ``secure_link`` module.

A link is ``/media/<name>?exp=<unix s>&sig=<base64url(md5(...)) without padding>`` where the
signed string is exactly what the gateway template gives ``secure_link_md5``::

    "<exp><uri><session cookie value> <MEDIA_URL_SECRET>"

Binding the link to the session cookie means a link that leaks (copied into another browser,
into a chat message, a log) is worthless without that browser's cookie; the expiry bounds how
long a copied cookie keeps reading media after logout (nginx cannot ask Redis).  MD5 is what
``secure_link_md5`` offers; with a 256-bit secret in the hashed string and a short expiry a
forger would need a second preimage of MD5, which nobody can compute.
"""
import base64
import hashlib
import time
from urllib.parse import urlencode


def expiry(ttl, now=None):
    """The expiry for a link issued now: on a ttl/2 grid, so it lies in (now + ttl/2, now + ttl]
    and stays the same URL (cacheable) for ttl/2 seconds."""
    now = int(time.time() if now is None else now)
    step = max(1, ttl // 2)
    return (now // step) * step + ttl


def signature(uri, sid, exp, secret):
    digest = hashlib.md5(f"{exp}{uri}{sid} {secret}".encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def signed_url(uri, sid, secret, ttl, now=None):
    exp = expiry(ttl, now)
    return uri + "?" + urlencode({"exp": exp, "sig": signature(uri, sid, exp, secret)})
