"""Prometheus metrics for every service: shared HTTP metrics, ``/metrics``, gunicorn plumbing.

Under gunicorn each service runs several worker processes; a scrape reaches one of them, so
the numbers have to be summed over all of them.  That is prometheus-client's *multiprocess
mode*: when ``PROMETHEUS_MULTIPROC_DIR`` is set (before ``prometheus_client`` is imported,
i.e. in the process environment), every process writes its values to mmapped files in that
directory and ``/metrics`` reads them all.  The directory is wiped when the gunicorn master
starts (:func:`wipe_multiproc_dir`, called from ``on_starting`` in
:mod:`webchat_common.gunicorn_conf`) and a dead worker's live gauges are dropped
(:func:`mark_process_dead`, from ``child_exit``).  One directory per gunicorn master: two
masters sharing one would wipe each other's files.

When the variable is unset (unit tests with the Flask test client, ``flask run``) the default
single-process registry is used; nothing else changes.

A service defines its own metrics in ``<service>/metrics.py`` with plain prometheus_client,
at module level, named ``webchat_<service>_...``::

    # files_service/metrics.py
    from prometheus_client import Counter, Gauge

    BYTES_SERVED = Counter("webchat_files_bytes_served_total", "Bytes of media sent to clients.")
    UPLOADS_REFUSED = Counter("webchat_files_uploads_refused_total", "Uploads refused.", ["reason"])
    # A gauge needs a multiprocess mode: "livesum" sums the values of the live processes.
    OPEN = Gauge("webchat_chat_open_sockets", "Open WebSockets.", multiprocess_mode="livesum")

    # in a view
    metrics.BYTES_SERVED.inc(len(data))
    metrics.UPLOADS_REFUSED.labels(reason="too_large").inc()

Keep label values to a small fixed set (never a user name, path or id).  A value that has to
be computed when scraped (from Redis, say) is a collector registered with
:func:`register_collector`; it is asked on every scrape, in the app context of the
``/metrics`` request, and must be cheap.

Every service gets, from :func:`webchat_common.init_app`:

- ``webchat_http_requests_total{endpoint,method,status}``: requests answered (an accepted
  WebSocket counts as ``101`` when it closes);
- ``webchat_http_request_duration_seconds{endpoint,method,status}``: time from the first
  ``before_request`` hook to the response (WebSocket upgrades are counted but not timed:
  their "duration" is the life of the socket).

``endpoint`` is the Flask endpoint name (``auth.login``, ``common.readyz``), ``none`` when no
route matched, so the label set stays small whatever paths clients send.
"""
import glob
import logging
import os
import time

from flask import Response, current_app, g, request
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, multiprocess
from prometheus_client.exposition import choose_encoder

log = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

#: Request latency buckets, in seconds: from a fast JSON answer to a slow upload.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

HTTP_REQUESTS = Counter(
    "webchat_http_requests_total",
    "HTTP requests answered, by Flask endpoint, method and status code.",
    ["endpoint", "method", "status"],
)
HTTP_LATENCY = Histogram(
    "webchat_http_request_duration_seconds",
    "Time to answer an HTTP request (WebSocket upgrades are not timed), by endpoint, method and status.",
    ["endpoint", "method", "status"],
    buckets=LATENCY_BUCKETS,
)

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def multiproc_dir():
    """The multiprocess directory, or None in single-process mode."""
    return os.environ.get(MULTIPROC_ENV) or None


def wipe_multiproc_dir(path=None):
    """Create the multiprocess directory if needed and delete every file in it: values left
    by a previous run (or a previous master on this directory) must not be summed into ours."""
    path = path or multiproc_dir()
    if not path:
        return
    os.makedirs(path, exist_ok=True)
    for name in glob.glob(os.path.join(path, "*.db")):
        try:
            os.remove(name)
        except FileNotFoundError:
            pass


def mark_process_dead(pid, path=None):
    """Drop the live gauges of a worker that exited (its counters keep counting)."""
    path = path or multiproc_dir()
    if path:
        multiprocess.mark_process_dead(pid, path)


def register_collector(app, collector):
    """Add a scrape-time collector (an object with ``collect()`` yielding metric families) to
    ``app``'s ``/metrics``.  It runs inside the ``/metrics`` request, so it may use
    ``get_redis()``; an exception in it is logged and leaves its families out of that scrape."""
    app.extensions.setdefault("webchat_collectors", []).append(collector)


class _Guarded:
    """Runs a scrape-time collector; a failure (Redis down, say) drops its families only."""

    def __init__(self, collector):
        self.collector = collector

    def collect(self):
        try:
            families = list(self.collector.collect())
        except Exception:  # noqa: BLE001 - one broken collector must not break the scrape
            log.warning("metrics collector %s failed", type(self.collector).__name__, exc_info=True)
            return []
        return families


class _Default:
    """The process-wide default registry, as one collector of a per-scrape registry."""

    def collect(self):
        return REGISTRY.collect()


def scrape_registry(app):
    """A registry for one scrape: every process's values (multiprocess mode) or this
    process's (single-process mode), plus the app's scrape-time collectors."""
    registry = CollectorRegistry(auto_describe=False)
    path = multiproc_dir()
    if path:
        multiprocess.MultiProcessCollector(registry, path=path)
    else:
        registry.register(_Default())
    for collector in app.extensions.get("webchat_collectors", []):
        registry.register(_Guarded(collector))
    return registry


def metrics_view():
    """``GET /metrics``: the Prometheus text format (0.0.4) by default, or what the scraper's
    ``Accept`` asks for (OpenMetrics), as prometheus-client's own exporters negotiate it."""
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    return Response(encoder(scrape_registry(current_app)), headers={"Content-Type": content_type})


def _is_upgrade():
    return request.headers.get("Upgrade", "").lower() == "websocket"


def logged_status(response):
    """The status to log and count: 101 for a WebSocket that was accepted.  flask-sock sends
    the 101 itself and hands Flask a placeholder 200 response when the socket closes; a
    refused handshake keeps its own 4xx."""
    if response.status_code == 200 and _is_upgrade() and request.endpoint is not None:
        return 101
    return response.status_code


#: (endpoint, method, status) -> the labelled (counter, histogram) children.  ``labels()``
#: looks the child up under a lock and checks the label values on every call; the label
#: sets are few and fixed (see the module docstring), so each is looked up once per process.
_children = {}


def _children_of(endpoint, method, status):
    key = (endpoint, method, status)
    children = _children.get(key)
    if children is None:
        children = _children[key] = (HTTP_REQUESTS.labels(endpoint, method, status),
                                     HTTP_LATENCY.labels(endpoint, method, status))
    return children


def record_request(response, status=None):
    """Count and time one answered request (called from init_app's ``after_request``)."""
    req = request._get_current_object()
    endpoint = req.endpoint or "none"
    method = req.method if req.method in _METHODS else "other"
    status = str(status if status is not None else response.status_code)
    count, latency = _children_of(endpoint, method, status)
    count.inc()
    start = g.get("start")
    if start is not None and not _is_upgrade():
        latency.observe(time.perf_counter() - start)
