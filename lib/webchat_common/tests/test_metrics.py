"""The shared metrics plumbing in one process (the Flask test metrics_client, no PROMETHEUS_MULTIPROC_DIR):
request counters and latency by endpoint/method/status, ``/metrics``, scrape-time collectors,
readiness while draining.  The multiprocess path under real gunicorn is tested in
``test_metrics_multiproc.py`` and ``tests/test_ops.py``."""
import os
import socket
import time

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.parser import text_string_to_metric_families

import webchat_common
from webchat_common import lifecycle, metrics
from webchat_testing import free_port


def scrape(metrics_client):
    resp = metrics_client.get("/metrics")
    assert resp.status_code == 200
    assert resp.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    return list(text_string_to_metric_families(resp.get_data(as_text=True)))


def sample(families, name, **labels):
    for family in families:
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return 0.0


def test_requests_are_counted_and_timed_by_endpoint_method_status(metrics_client):
    before = scrape(metrics_client)
    metrics_client.get("/hello")
    metrics_client.get("/hello")
    metrics_client.get("/no/such/path")
    metrics_client.get("/boom")
    after = scrape(metrics_client)

    def delta(name, **labels):
        return sample(after, name, **labels) - sample(before, name, **labels)

    assert delta("webchat_http_requests_total", endpoint="hello", method="GET", status="200") == 2
    assert delta("webchat_http_requests_total", endpoint="none", method="GET", status="404") == 1
    assert delta("webchat_http_requests_total", endpoint="boom", method="GET", status="500") == 1
    assert delta("webchat_http_request_duration_seconds_count", endpoint="hello", method="GET", status="200") == 2
    assert delta("webchat_http_request_duration_seconds_bucket", endpoint="hello", method="GET", status="200",
                 le="+Inf") == 2
    # The scrape itself is a request like any other.
    assert delta("webchat_http_requests_total", endpoint="common.metrics", method="GET", status="200") >= 1


def test_an_odd_method_does_not_make_a_new_label_value(metrics_client):
    before = scrape(metrics_client)
    metrics_client.open("/hello", method="BREW")
    after = scrape(metrics_client)
    assert sample(after, "webchat_http_requests_total", endpoint="none", method="other", status="405") - \
        sample(before, "webchat_http_requests_total", endpoint="none", method="other", status="405") == 1


def total(families, name):
    """Sum of ``name`` over every label set except the scrapes themselves."""
    return sum(s.value for f in families for s in f.samples
               if s.name == name and s.labels.get("endpoint") != "common.metrics")


def test_websocket_upgrades_are_counted_but_not_timed(metrics_client):
    before = scrape(metrics_client)
    metrics_client.get("/hello", headers={"Upgrade": "websocket", "Connection": "Upgrade"})
    after = scrape(metrics_client)
    assert total(after, "webchat_http_requests_total") - total(before, "webchat_http_requests_total") == 1
    assert total(after, "webchat_http_request_duration_seconds_count") == \
        total(before, "webchat_http_request_duration_seconds_count")


def test_scrape_time_collectors_are_asked_and_a_broken_one_is_left_out(redis_url, make_metrics_app):
    app = make_metrics_app(redis_url)

    class Answer:
        def collect(self):
            yield GaugeMetricFamily("webchat_test_answer", "A value computed at scrape time.", value=42)

    class Broken:
        def collect(self):
            raise ConnectionError("redis is down")

    metrics.register_collector(app, Broken())
    metrics.register_collector(app, Answer())
    metrics_client = app.test_client()
    metrics_client.get("/hello")
    families = scrape(metrics_client)
    assert sample(families, "webchat_test_answer") == 42
    assert sample(families, "webchat_http_requests_total", endpoint="hello", method="GET", status="200") >= 1, \
        "the rest of the scrape is still there"


def test_metrics_needs_no_session_and_works_with_redis_down(make_metrics_app):
    """A scraper sends no cookie; /metrics must answer even when Redis does not (that is when
    it is needed most)."""
    app = make_metrics_app(f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there
    resp = app.test_client().get("/metrics")
    assert resp.status_code == 200 and b"webchat_http_requests_total" in resp.data


def test_readyz_is_503_while_draining_and_everything_else_still_answers(metrics_client):
    assert metrics_client.get("/readyz").status_code == 200
    lifecycle.start_draining()
    resp = metrics_client.get("/readyz")
    assert resp.status_code == 503 and resp.json == {"status": "shutting down"}
    assert metrics_client.get("/healthz").status_code == 200
    assert metrics_client.get("/hello").status_code == 200


def test_readyz_answers_503_quickly_when_redis_does_not_answer(redis_url, make_metrics_app):
    """A Redis that accepts connections but never answers (a stopped process) must not hang
    the probe: READY_TIMEOUT bounds it."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    try:
        app = make_metrics_app(f"redis://127.0.0.1:{silent.getsockname()[1]}/0")
        start = time.monotonic()
        resp = app.test_client().get("/readyz")
        took = time.monotonic() - start
    finally:
        silent.close()
    assert resp.status_code == 503 and resp.json["redis"] == "down"
    assert took < webchat_common.web.READY_TIMEOUT * 2 + 0.5


def test_the_drain_flag_is_shared_with_processes_forked_before_it_is_set(tmp_path):
    """The gunicorn master sets the flag after forking its workers: a forked child must see it."""
    r, w = os.pipe()
    lifecycle.reset()
    pid = os.fork()
    if pid == 0:  # the "worker": wait for the parent's go, then report what it sees
        os.close(w)
        os.read(r, 1)
        os._exit(0 if lifecycle.draining() else 1)
    os.close(r)
    try:
        lifecycle.start_draining()
        os.write(w, b"x")
        _, status = os.waitpid(pid, 0)
    finally:
        os.close(w)
        lifecycle.reset()
    assert os.waitstatus_to_exitcode(status) == 0
