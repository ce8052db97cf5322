"""The gateway's edge settings through real nginx, gunicorn and Redis: whose address a request
has (GATEWAY_TRUSTED_PROXIES: X-Forwarded-For is believed only from a trusted proxy), and TLS
(GATEWAY_TLS_CERT_FILE/KEY_FILE: HTTPS only, TLS 1.2+, HSTS, a Secure session cookie).

The address is observed where it matters: auth's per-address login throttle
(``throttle:login:ip:<ip>`` in Redis) and the gateway's JSON access log (``remote_addr``)."""
import ipaddress
import json
import socket
import ssl
import uuid
import warnings
from urllib.parse import urlsplit

import pytest
import redis
import requests

from support.web import Browser
from webchat_testing import wait_until
from webchat_testing.sessions import COOKIE

HSTS_MIN_AGE = 180 * 24 * 3600


def trusted_address(stack, n):
    """The n-th address of the range the stack's gateway trusts as proxies."""
    return str(ipaddress.ip_network(stack.env["GATEWAY_TRUSTED_PROXIES"])[n])


def seen_as(stack, client, forwarded):
    """The ``remote_addr`` the gateway logs for a request from ``client`` carrying
    ``X-Forwarded-For: forwarded`` (``/login``: ``/gateway/healthz`` is not logged)."""
    rid = "edge-" + uuid.uuid4().hex
    resp = client.get("/login", headers={"X-Forwarded-For": forwarded, "X-Request-ID": rid})
    assert resp.status_code == 200 and resp.headers["X-Request-ID"] == rid

    def logged():
        for line in (stack.log_dir / "gateway.log").read_text().splitlines():
            if rid in line and line.startswith("{"):
                return json.loads(line)
    entry = wait_until(logged, timeout=5, what="the request in the gateway's access log")
    return entry["remote_addr"]


def failed_login_counted_for(stack, client, forwarded, username):
    """Fail a login through the gateway with ``X-Forwarded-For: forwarded``; return the
    addresses auth's per-address throttle now counts a failure for."""
    token = client.token()
    resp = client.post("/login", data={"username": username, "password": "wrong", "csrf_token": token},
                       headers={"X-Forwarded-For": forwarded})
    assert resp.status_code == 401, resp.status_code
    r = redis.Redis.from_url(stack.redis.url, decode_responses=True)
    try:
        return {k.rpartition(":")[2]: int(r.get(k)) for k in r.scan_iter("throttle:login:ip:*")}
    finally:
        r.close()


# ---- no trusted proxy (the default) -----------------------------------------------------------

def test_without_trusted_proxies_a_client_cannot_choose_its_address(stack, username):
    b = Browser(stack.url)
    assert seen_as(stack, b, "203.0.113.9") == b.address
    counted = failed_login_counted_for(stack, b, "203.0.113.9", username)
    assert counted.get(b.address) == 1
    assert "203.0.113.9" not in counted


def test_plain_http_responses_carry_no_hsts(stack):
    resp = Browser(stack.url).get("/login")
    assert resp.status_code == 200
    assert "Strict-Transport-Security" not in resp.headers


# ---- behind a trusted proxy -------------------------------------------------------------------

def edge_client(edge_stack, address=None):
    return Browser(edge_stack.url, address=address, verify=edge_stack.env["GATEWAY_TLS_CERT_FILE"])


def test_a_trusted_proxy_hands_on_the_client_address(edge_stack, username):
    proxy = edge_client(edge_stack, trusted_address(edge_stack, 5))
    assert seen_as(edge_stack, proxy, "198.51.100.23") == "198.51.100.23"
    counted = failed_login_counted_for(edge_stack, proxy, "198.51.100.24", username)
    assert counted.get("198.51.100.24") == 1
    assert proxy.address not in counted


@pytest.mark.parametrize("forwarded, client", [
    # The client wrote the first entry itself; its proxy appended what it saw.
    ("203.0.113.66, 198.51.100.30", "198.51.100.30"),
    ("10.1.2.3, 203.0.113.66, 198.51.100.31", "198.51.100.31"),
    # Two trusted hops: the inner proxy's entry is skipped (real_ip_recursive).
    ("198.51.100.32, {trusted}", "198.51.100.32"),
    ("2001:db8::7, {trusted}", "2001:db8::7"),
])
def test_a_chain_resolves_to_the_last_address_that_is_not_a_trusted_proxy(edge_stack, forwarded, client):
    proxy = edge_client(edge_stack, trusted_address(edge_stack, 6))
    forwarded = forwarded.format(trusted=trusted_address(edge_stack, 7))
    assert seen_as(edge_stack, proxy, forwarded) == client


@pytest.mark.parametrize("forged", ["203.0.113.9", "127.0.200.8", "198.51.100.40, 127.0.200.9"])
def test_a_client_outside_the_trusted_range_cannot_forge_its_address(edge_stack, forged, username):
    b = edge_client(edge_stack)
    assert not ipaddress.ip_address(b.address) in ipaddress.ip_network(edge_stack.env["GATEWAY_TRUSTED_PROXIES"])
    assert seen_as(edge_stack, b, forged) == b.address
    counted = failed_login_counted_for(edge_stack, b, forged, username)
    assert counted.get(b.address) == 1
    assert not set(counted) & {a.strip() for a in forged.split(",")}


# ---- TLS --------------------------------------------------------------------------------------

def test_https_works_and_sends_hsts(edge_stack):
    assert edge_stack.url.startswith("https://")
    for path in ("/login", "/gateway/healthz", "/no-such-page"):
        resp = edge_client(edge_stack).get(path)
        assert resp.status_code in (200, 404), (path, resp.status_code)
        hsts = resp.headers["Strict-Transport-Security"]
        age = int(hsts.partition("max-age=")[2].split(";")[0])
        assert age >= HSTS_MIN_AGE, hsts


def test_the_certificate_is_checked_by_the_client(edge_stack):
    """The HTTPS tests above verify the gateway's certificate: one the client does not trust
    fails, so they are not passing with verification off."""
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(edge_stack.url + "/gateway/healthz", timeout=5)


def handshake(edge_stack, minimum, maximum):
    """A TLS handshake with the gateway offering only ``minimum``..``maximum``; the negotiated
    version.  The client itself is allowed the old versions (security level 0)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(edge_stack.env["GATEWAY_TLS_CERT_FILE"])
    ctx.set_ciphers("ALL:@SECLEVEL=0")
    with warnings.catch_warnings():  # TLS 1.0 and 1.1 are deprecated: that is the point
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version, ctx.maximum_version = minimum, maximum
    host, port = urlsplit(edge_stack.url).hostname, urlsplit(edge_stack.url).port
    with socket.create_connection((host, port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname=host) as tls:
            return tls.version()


def test_tls_1_2_and_1_3_are_accepted(edge_stack):
    assert handshake(edge_stack, ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_2) == "TLSv1.2"
    assert handshake(edge_stack, ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_3) == "TLSv1.3"


@pytest.mark.parametrize("version", ["TLSv1", "TLSv1_1"])
def test_tls_1_0_and_1_1_are_refused_by_the_gateway(edge_stack, version):
    with pytest.raises(ssl.SSLError) as err:
        handshake(edge_stack, ssl.TLSVersion[version], ssl.TLSVersion[version])
    # The server's "protocol version" alert, not a client that would not even offer it.
    assert "ALERT_PROTOCOL_VERSION" in str(err.value), err.value
    assert "NO_PROTOCOLS_AVAILABLE" not in str(err.value)


def test_plain_http_to_the_tls_port_is_refused(edge_stack):
    resp = requests.get(edge_stack.url.replace("https://", "http://", 1) + "/login", timeout=5)
    assert resp.status_code == 400
    assert "Set-Cookie" not in resp.headers


def test_over_https_the_session_cookie_is_secure_and_the_site_works(edge_stack, username):
    b = edge_client(edge_stack)
    resp = b.register(username)
    assert resp.status_code == 303
    cookie = resp.headers["Set-Cookie"]
    assert cookie.startswith(COOKIE + "=") and "; Secure" in cookie, cookie
    assert b.me()["user"] == username
    # chat and files are proxied over HTTPS too
    assert b.get("/chat/").status_code == 200
    assert b.get("/media/", headers={"Accept": "application/json"}).status_code == 200
    b.logout()
    resp = b.login(username)
    assert resp.status_code == 302 and "; Secure" in resp.headers["Set-Cookie"]
