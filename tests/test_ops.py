"""Operations through the whole stack (real Redis, gunicorn services, nginx; the ``stack``
fixture): what an on-call engineer relies on.

- ``/metrics``, ``/healthz``, ``/readyz`` are not reachable through the public gateway, in
  any spelling; the gateway has its own health location;
- each service serves Prometheus metrics on its own port: the shared HTTP families and its own;
- the request id from the gateway is in the gateway's access line and the service's access
  line for the same request (both JSON, with every documented field, user included), and is
  returned to the client; the user header the services send for the log is not;
- no password, cookie, session id or CSRF token is in any log;
- every line a service writes is one JSON object; the gateway's stdout (access log) too.
"""
import hashlib
import http.client
import json
import re
import time
from urllib.parse import urlsplit

import requests
import websocket
from prometheus_client.parser import text_string_to_metric_families

from support.web import Browser
from webchat_testing import wait_until
from webchat_testing.sessions import COOKIE

GATEWAY_FIELDS = {"time", "level", "service", "request_id", "user", "method", "path", "status", "duration_ms"}
SERVICE_FIELDS = {"time", "level", "service", "request_id", "user", "method", "path", "status", "duration_ms"}
NGINX_ERROR_LINE = re.compile(r"^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d \[(debug|info|notice|warn|error|crit|alert|emerg)\] ")


def raw_get(base, path, method="GET"):
    """Send ``path`` exactly as written (no client-side normalisation)."""
    parts = urlsplit(base)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=5)
    try:
        conn.request(method, path)
        resp = conn.getresponse()
        return resp.status, resp.read().decode("latin-1")
    finally:
        conn.close()


def test_operational_endpoints_are_not_public(gateway):
    for path in ("/metrics", "/healthz", "/readyz"):
        for method in ("GET", "HEAD", "POST"):
            status, _ = raw_get(gateway, path, method)
            assert status == 404, (method, path, status)
    for path in ("/metrics?x=1", "/metrics/", "//metrics", "/%6detrics", "/%6Detrics", "/./metrics",
                 "/media/../metrics", "/chat/../metrics", "/chat/%2e%2e/metrics", "/METRICS", "/metrics%00",
                 "/media/../readyz", "/chat/../healthz"):
        status, body = raw_get(gateway, path)
        assert status != 200 and "webchat_http_requests_total" not in body and '"redis"' not in body, (path, status)
    health = requests.get(gateway + "/gateway/healthz", timeout=5)
    assert health.status_code == 200 and health.json() == {"status": "ok"}


def families(port, **kw):
    resp = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5, **kw)
    assert resp.status_code == 200
    assert resp.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    out = {}
    for family in text_string_to_metric_families(resp.text):
        for s in family.samples:
            out.setdefault(family.name, []).append(s)
    return out


# Families each service must expose.  Counters read back without their ``_total``; a labelled
# family appears once it has a series (the test makes one where needed).
COMMON = {"webchat_http_requests", "webchat_http_request_duration_seconds"}
EXPECTED = {
    "auth": {"webchat_auth_logins", "webchat_auth_login_throttled", "webchat_auth_active_sessions"},
    "files": {"webchat_files_bytes_served", "webchat_files_bytes_uploaded", "webchat_files_uploads_refused"},
    "chat": {"webchat_chat_open_sockets", "webchat_chat_messages_in", "webchat_chat_messages_out",
             "webchat_chat_delivery_seconds", "webchat_chat_replayed", "webchat_chat_frames_refused",
             "webchat_chat_slow_consumer_closes", "webchat_chat_redis_reconnects"},
}


def test_each_service_serves_its_metrics_on_its_own_port(stack, gateway, username):
    b = Browser(gateway)
    assert b.register(username).status_code == 303
    # files: a refused upload makes the uploads_refused{reason} series.
    refused = b.post("/media/", headers={"Origin": "http://evil.example"}, files={"file": ("a.txt", b"hi")})
    assert refused.status_code == 403
    # chat: an open socket and a refused frame.
    ws = websocket.create_connection(gateway.replace("http", "ws", 1) + f"/chat/{username}",
                                     cookie=f"{COOKIE}={b.sid}", origin=gateway, timeout=10)
    try:
        ws.send("this is not JSON")
        # Each chat replica has its own metrics (its own multiprocess directory): scrape until
        # the one holding the socket answers (a scrape counts itself: the second one there also
        # shows the HTTP families).
        chat_port = stack.services["chat"].port

        def holder():
            f = families(chat_port, headers={"Connection": "close"})
            sockets = f.get("webchat_chat_open_sockets")
            if sockets and sockets[0].value >= 1 and "webchat_chat_frames_refused" in f and COMMON <= set(f):
                return f
            return None

        seen = wait_until(holder, timeout=15, what="the chat replica holding the socket to report it")
    finally:
        ws.close()
    assert EXPECTED["chat"] | COMMON <= set(seen), EXPECTED["chat"] - set(seen)

    for name in ("auth", "files"):
        got = set(families(stack.services[name].port))
        assert EXPECTED[name] | COMMON <= got, (name, EXPECTED[name] - got)
        # A service exposes its own families only.
        others = {f for other, fams in EXPECTED.items() if other != name for f in fams}
        assert not got & others, (name, got & others)
    auth = families(stack.services["auth"].port)
    assert any(s.labels == {"endpoint": "auth.register", "method": "POST", "status": "303"} and s.value >= 1
               for s in auth["webchat_http_requests"])
    assert auth["webchat_auth_active_sessions"][0].value >= 1


def log_lines(stack, name):
    path = stack.log_dir / f"{name}.log"
    return path.read_text(errors="replace").splitlines() if path.exists() else []


def json_lines(stack, *names):
    out = []
    for name in names:
        for line in log_lines(stack, name):
            if line.startswith("{"):
                out.append(json.loads(line))
    return out


def service_logs(stack, service):
    svc = stack.services[service]
    return [f"{service}-{i}" for i in range(svc.replicas)]


def find(stack, names, **match):
    return [o for o in json_lines(stack, *names) if all(o.get(k) == v for k, v in match.items())]


def test_request_id_and_user_in_the_gateway_and_the_service_log(stack, gateway, username):
    b = Browser(gateway)
    assert b.register(username).status_code == 303
    for path, service in (("/api/me", "auth"), ("/media/", "files"), ("/chat/", "chat")):
        rid = f"ops-{service}-{time.time_ns()}"
        resp = b.get(path, headers={"X-Request-ID": rid})
        assert resp.status_code == 200, (path, resp.status_code)
        assert resp.headers["X-Request-ID"] == rid
        assert "X-User" not in resp.headers, "the user header is for the gateway's log only"

        gw = wait_until(lambda: find(stack, ["gateway"], request_id=rid), timeout=5, what=f"gateway line {rid}")
        assert len(gw) == 1
        line = gw[0]
        assert GATEWAY_FIELDS <= set(line), GATEWAY_FIELDS - set(line)
        assert line["service"] == "gateway" and line["level"] == "INFO" and line["user"] == username
        assert line["method"] == "GET" and line["path"] == path and line["status"] == 200
        assert isinstance(line["duration_ms"], int) and line["duration_ms"] >= 0
        assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", line["time"])

        svc = wait_until(lambda: find(stack, service_logs(stack, service), request_id=rid, logger="webchat.access"),
                         timeout=5, what=f"{service} access line {rid}")
        assert len(svc) == 1
        line = svc[0]
        assert SERVICE_FIELDS <= set(line), SERVICE_FIELDS - set(line)
        assert line["service"] == service and line["level"] == "INFO" and line["user"] == username
        assert line["method"] == "GET" and line["path"] == path and line["status"] == 200
        assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", line["time"])

    # A WebSocket: the gateway logs the 101 with its user; chat logs it (as 101, with the same
    # request id) when the socket closes.
    rid = f"ops-ws-{time.time_ns()}"
    ws = websocket.create_connection(gateway.replace("http", "ws", 1) + f"/chat/{username}",
                                     cookie=f"{COOKIE}={b.sid}", origin=gateway, timeout=10,
                                     header=[f"X-Request-ID: {rid}"])
    ws.close()
    gw = wait_until(lambda: find(stack, ["gateway"], request_id=rid), timeout=5, what="the WebSocket's gateway line")
    assert gw[0]["status"] == 101 and gw[0]["user"] == username and gw[0]["path"] == f"/chat/{username}"
    svc = wait_until(lambda: find(stack, service_logs(stack, "chat"), request_id=rid, logger="webchat.access"),
                     timeout=10, what="the WebSocket's chat line")
    assert svc[0]["status"] == 101 and svc[0]["user"] == username

    # No id from the client: the gateway makes one, and the service logs that same one.
    resp = b.get("/api/me")
    made = resp.headers["X-Request-ID"]
    assert made
    wait_until(lambda: find(stack, ["auth-0"], request_id=made), timeout=5, what="the gateway-made id in auth's log")
    wait_until(lambda: find(stack, ["gateway"], request_id=made), timeout=5, what="the gateway-made id in its log")
    # A visitor has no user: empty at the gateway, null in the service.
    rid = f"ops-visitor-{time.time_ns()}"
    requests.get(gateway + "/api/me", headers={"X-Request-ID": rid}, timeout=5)
    gw = wait_until(lambda: find(stack, ["gateway"], request_id=rid), timeout=5, what="visitor line")
    assert gw[0]["user"] == "" and gw[0]["status"] == 401 and gw[0]["level"] == "WARNING"
    svc = wait_until(lambda: find(stack, ["auth-0"], request_id=rid), timeout=5, what="visitor auth line")
    assert svc[0]["user"] is None


def test_no_password_cookie_session_id_or_csrf_token_in_any_log(stack, gateway, username):
    password = f"pw-{time.time_ns()}-secret"
    b = Browser(gateway)
    assert b.register(username, password=password).status_code == 303
    assert b.logout().status_code == 303
    b.get("/login")
    visitor_sid = b.sid
    assert b.login(username, password=password).status_code == 302
    sid = b.sid
    token = b.me()["csrf_token"]
    assert Browser(gateway).login(username, password=password + "-wrong").status_code == 401  # a failed one too
    b.get("/media/")
    b.get("/chat/")
    b.get("/api/me?session=" + sid)  # even put in a query string by a client
    ws = websocket.create_connection(gateway.replace("http", "ws", 1) + f"/chat/{username}",
                                     cookie=f"{COOKIE}={sid}", origin=gateway, timeout=10)
    ws.close()
    b.logout()
    rid = f"ops-marker-{time.time_ns()}"
    requests.get(gateway + "/api/me", headers={"X-Request-ID": rid}, timeout=5)
    wait_until(lambda: find(stack, ["gateway"], request_id=rid) and find(stack, ["auth-0"], request_id=rid),
               timeout=5, what="the logs to catch up")

    secrets_ = {"password": password, "session id": sid, "visitor session id": visitor_sid,
                "session key hash": hashlib.sha256(sid.encode()).hexdigest(), "csrf token": token}
    for path in sorted(stack.log_dir.glob("*.log")):
        text = path.read_text(errors="replace")
        for what, value in secrets_.items():
            assert value not in text, f"{what} found in {path.name}"
        assert f"{COOKIE}=" not in text, f"a cookie in {path.name}"


def test_every_service_line_is_json_and_the_gateway_stdout_is_json(stack, gateway):
    requests.get(gateway + "/api/me", timeout=5)  # something in every log by now
    for service in ("auth", "files", "chat"):
        for name in service_logs(stack, service):
            lines = log_lines(stack, name)
            assert lines, name
            for n, line in enumerate(lines, 1):
                try:
                    obj = json.loads(line)
                except ValueError:
                    raise AssertionError(f"{name}.log line {n} is not JSON: {line[:300]!r}") from None
                assert isinstance(obj, dict) and {"time", "level", "service"} <= set(obj), (name, n, line[:300])
                assert obj["service"] == service, (name, n, line[:300])
            assert any(json.loads(line)["message"].startswith("Starting gunicorn") for line in lines), name
    # The gateway's stdout is its JSON access log; its stderr (nginx's error log, same file
    # here) keeps nginx's own format.
    for n, line in enumerate(log_lines(stack, "gateway"), 1):
        if NGINX_ERROR_LINE.match(line):
            continue
        obj = json.loads(line)
        assert GATEWAY_FIELDS <= set(obj), (n, line)
