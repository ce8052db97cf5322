"""What on-call relies on, under real gunicorn (and the shared config every service runs with):

- SIGTERM: ``/readyz`` answers 503 at once in every worker while every other request is still
  served, then gunicorn drains in-flight work and exits 0 (gthread and gevent workers, and the
  real auth service);
- metrics in multiprocess mode: the directory is wiped at start, a dead worker's live gauge is
  dropped, and a scrape of either worker sees the sum over both;
- every line a service writes is one JSON object: startup, access lines, an error's traceback,
  a Python warning, a crashing thread, a worker that cannot even import its app.

The app is ``tests/ops_app.py`` (the shared plumbing plus a slow route, an error route...),
started as a real gunicorn process against a real Redis.
"""
import json
import os
import signal
import threading
import time

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from support.gunicorn import DRAIN, Gunicorn
from webchat_testing import wait_until

def get(url, headers=None, timeout=5, **kw):
    """A GET on a new connection each time, so requests spread over the workers."""
    return requests.get(url, headers={"Connection": "close", **(headers or {})}, timeout=timeout, **kw)


@pytest.mark.parametrize("worker_class", ["gthread", "gevent"])
def test_sigterm_turns_readiness_false_while_requests_are_served_then_drains(gunicorn, worker_class):
    g = gunicorn(worker_class=worker_class)
    assert get(g.url + "/readyz").status_code == 200
    slow = {}

    def in_flight():
        slow["resp"] = requests.get(g.url + "/slow", params={"s": DRAIN + 1.5}, timeout=30)

    t = threading.Thread(target=in_flight)
    t.start()
    time.sleep(0.5)  # the slow request is being served
    sent = time.monotonic()
    g.proc.send_signal(signal.SIGTERM)

    # Readiness turns false almost at once, in whichever worker answers...
    wait_until(lambda: get(g.url + "/readyz").status_code == 503, timeout=1.5, interval=0.05,
               what="/readyz to answer 503 after SIGTERM")
    flipped = time.monotonic() - sent
    # ...while the process still takes and serves new requests, on every worker.
    codes = [(get(g.url + "/readyz").status_code, get(g.url + "/pid").status_code) for _ in range(4)]
    assert codes == [(503, 200)] * 4
    assert get(g.url + "/healthz").status_code == 200
    assert time.monotonic() - sent < DRAIN, "still inside the drain period"

    # Then gunicorn's own graceful stop: the in-flight request completes, the process exits 0.
    t.join(30)
    assert slow["resp"].status_code == 200 and slow["resp"].json()["done"] is True
    assert g.proc.wait(30) == 0
    took = time.monotonic() - sent
    assert DRAIN <= took < DRAIN + 10
    assert flipped < 1.5
    with pytest.raises(requests.ConnectionError):
        get(g.url + "/healthz", timeout=2)
    assert any("readiness is now false" in json.loads(line)["message"] for line in g.lines())


def test_sigterm_on_the_real_auth_service(gunicorn):
    """The same on auth itself: ready, SIGTERM, /readyz 503 while /login is still served, exit 0."""
    g = gunicorn(app="auth_service:create_app()", name="auth")
    assert get(g.url + "/readyz").json() == {"status": "ok", "redis": "up"}
    g.proc.send_signal(signal.SIGTERM)
    wait_until(lambda: get(g.url + "/readyz").status_code == 503, timeout=1.5, interval=0.05,
               what="auth's /readyz to answer 503 after SIGTERM")
    assert get(g.url + "/login").status_code == 200
    assert g.proc.wait(30) == 0


def test_sigint_still_stops_at_once(gunicorn):
    """The drain is for SIGTERM only: an operator's Ctrl-C (SIGINT) does not wait for it."""
    g = gunicorn()
    # Both workers serving first: a worker still importing the app when SIGINT comes holds the
    # master up to gunicorn's graceful timeout (seen once in CI: 20 s), which is not the drain.
    seen = set()
    wait_until(lambda: seen.add(get(g.url + "/slow", params={"s": 0}).json()["pid"]) or len(seen) == 2,
               timeout=30, what="both workers answering")
    sent = time.monotonic()
    g.proc.send_signal(signal.SIGINT)
    assert g.proc.wait(30) == 0
    assert time.monotonic() - sent < DRAIN


def scrape(url):
    resp = get(url + "/metrics")
    assert resp.status_code == 200
    assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(resp.text) for s in f.samples}


def concurrent_pids(url, n=2):
    """Pids of ``n`` workers answering ``n`` slow requests at the same time."""
    out = []
    threads = [threading.Thread(target=lambda: out.append(get(url + "/slow", params={"s": 0.5}).json()["pid"]))
               for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def test_metrics_are_summed_over_workers_and_the_directory_is_managed(gunicorn, tmp_path):
    """Sync workers here, only because they make it certain which worker answers: each takes
    one request at a time, so two slow requests at once are served by two workers."""
    stale = tmp_path / "metrics-ops" / "counter_999999.db"
    stale.parent.mkdir()
    stale.write_bytes(b"left over by a previous run")
    g = gunicorn(worker_class="sync", workers=2)
    assert not stale.exists(), "the master wipes the directory when it starts"

    served = 0
    for _ in range(20):  # until the second worker is up too
        pids = concurrent_pids(g.url)
        served += 2
        if len(set(pids)) == 2:
            break
    assert len(set(pids)) == 2, "two workers answered (else this test proves nothing)"
    key = ("webchat_http_requests_total", (("endpoint", "slow"), ("method", "GET"), ("status", "200")))
    # Each worker counted its own requests; every scrape, whichever worker answers it,
    # reports the total of both, and one live gauge per worker.
    for _ in range(4):
        values = scrape(g.url)
        assert values[key] == served
        assert values[("webchat_test_workers", ())] == 2

    # A worker killed outright is replaced; its live gauge is dropped (child_exit), its
    # counters still count.
    victim = pids[0]
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: set(concurrent_pids(g.url)) - set(pids), timeout=30, what="a replacement worker")
    values = scrape(g.url)
    assert values[("webchat_test_workers", ())] == 2
    assert values[key] >= served


def parse_all(lines):
    """Every line as a JSON object (the assertion names the first line that is not)."""
    parsed = []
    for n, line in enumerate(lines, 1):
        try:
            obj = json.loads(line)
        except ValueError:
            pytest.fail(f"line {n} is not JSON: {line!r}")
        assert isinstance(obj, dict), line
        for field in ("time", "level", "service"):
            assert field in obj, f"line {n} has no {field}: {line}"
        parsed.append(obj)
    return parsed


@pytest.mark.parametrize("worker_class", ["gthread", "gevent"])
def test_every_line_a_service_writes_is_json(gunicorn, worker_class):
    g = gunicorn(name="logs", worker_class=worker_class, SHUTDOWN_DRAIN_SECONDS="0.5")
    rid = f"ops-{time.time_ns()}"
    assert get(g.url + "/boom", headers={"X-Request-ID": rid}).status_code == 500
    assert get(g.url + "/warn").status_code == 200
    assert get(g.url + "/thread-crash").status_code == 200
    if worker_class == "gevent":
        assert get(g.url + "/greenlet-crash").status_code == 200
    g.proc.send_signal(signal.SIGTERM)
    assert g.proc.wait(30) == 0
    lines = parse_all(g.lines())

    assert any(o["message"].startswith("Starting gunicorn") for o in lines)
    assert all(o["service"] == "logs" for o in lines)
    boom = [o for o in lines if "boom on purpose" in o.get("exc_info", "")]
    assert len(boom) == 1 and boom[0]["level"] == "ERROR" and boom[0]["request_id"] == rid
    assert "Traceback" in boom[0]["exc_info"]
    access = [o for o in lines if o.get("logger") == "webchat.access" and o.get("request_id") == rid]
    assert len(access) == 1 and access[0]["status"] == 500 and access[0]["level"] == "ERROR"
    assert any("a warning on purpose" in o["message"] and o["level"] == "WARNING" for o in lines)
    assert any("thread crash on purpose" in o.get("exc_info", "") for o in lines)
    if worker_class == "gevent":
        assert any("greenlet crash on purpose" in o.get("exc_info", "") for o in lines)
    assert lines[-1]["message"].startswith("Shutting down")


def test_a_worker_that_cannot_load_its_app_still_logs_json(gunicorn, tmp_path):
    g = Gunicorn(tmp_path, "redis://127.0.0.1:1/0", name="broken", OPS_APP_FAIL_IMPORT="1").start(wait=False)
    try:
        assert g.proc.wait(40) != 0
    finally:
        g.stop()
    lines = parse_all(g.lines())
    assert any("told to fail at import" in o.get("exc_info", "") for o in lines)
