"""gunicorn settings every service runs with: ``gunicorn -c python:webchat_common.gunicorn_conf``.

The service is named by ``SERVICE_NAME`` and nothing else: the app (``<name>_service:create_app()``)
and the worker class, workers, threads and worker connections come from the service's own
declaration, ``<name>_service/service.toml`` (:mod:`webchat_common.service`), so the image and
the local stack run each service the same way.  Command-line flags still override these (the
local stack's bind address; the ops tests' own app and worker class).
Environment: ``SERVICE_NAME`` (also the ``service`` field of gunicorn's own JSON log lines),
``PORT`` (default 8000), ``WEB_CONCURRENCY`` (workers, over the declaration),
``GUNICORN_WORKER_CONNECTIONS`` (over the declaration: connections one gevent worker serves at
once, a number or ``auto`` for the open-files limit less 1000; gunicorn's default is 1000),
``PROMETHEUS_MULTIPROC_DIR`` (metrics of all workers, see :mod:`webchat_common.metrics`; one
directory per gunicorn master, wiped when it starts), ``SHUTDOWN_DRAIN_SECONDS`` (default 5).

Shutdown (SIGTERM to the master, what ``docker stop`` and Kubernetes send):

1. the master sets the shared "draining" flag: ``/readyz`` answers 503 in every worker, while
   every other request is still served normally;
2. ``SHUTDOWN_DRAIN_SECONDS`` later (time for readiness probes and load balancers to stop
   sending new work), gunicorn's own graceful stop begins: listeners closed, workers finish
   what they are doing within ``graceful_timeout`` (20 s), then are killed.

Keep ``SHUTDOWN_DRAIN_SECONDS + graceful_timeout`` below the orchestrator's kill timeout
(Kubernetes ``terminationGracePeriodSeconds``, 30 s by default; compose ``stop_grace_period``).
SIGINT and SIGQUIT still stop at once, also during the drain.
"""
import logging
import os
import resource
import sys
import time

from gunicorn.glogging import Logger as _GunicornLogger

from webchat_common import lifecycle, logs, metrics, service

# In the master, before any worker is forked: warnings (gevent's monkey-patching warning is
# emitted in the worker before the app is loaded) and uncaught exceptions go through the JSON
# handler that logconfig_dict installs, not to stderr as plain text.
logs.capture_stray_output()

_service_name = os.environ.get("SERVICE_NAME", "webchat")
_declared = service.gunicorn_settings(_service_name)

bind = f"0.0.0.0:{os.environ.get('PORT', '8000')}"
#: The service's app, when SERVICE_NAME names one (an app on the command line wins).
wsgi_app = service.app(_service_name)
worker_class = _declared["worker_class"]
workers = service.workers(_service_name)
threads = int(_declared["threads"])


def _worker_connections(value):
    """``auto``: as many as the open-files limit allows, less 1000 descriptors kept for the
    worker's Redis connections, listener and logs (chat: one WebSocket per connection)."""
    if value == "auto":
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        return max(1000, soft - 1000) if soft != resource.RLIM_INFINITY else 100_000
    return int(value)


#: gunicorn's default (1000) would cap a chat process at 1,000 WebSockets whatever its fd limit;
#: chat declares ``auto``.  The other services' thread workers keep the default.
worker_connections = _worker_connections(os.environ.get("GUNICORN_WORKER_CONNECTIONS",
                                                        str(_declared["worker_connections"])))
graceful_timeout = 20
accesslog = None  # each request is logged once, by the app, as JSON with its request id


class Logger(_GunicornLogger):
    """gunicorn's logger, minus the access-log work nobody reads.  Given a ``logconfig_dict``,
    gunicorn builds every request's access-log atoms (a dict of ~30 entries from the request
    and response headers) and hands them to ``gunicorn.access``, which drops them here (level
    WARNING, no handler: the app logs each request itself).  That was ~5-7% of a bare Flask
    app's CPU in these workers (``bench/request_path.py --profile``).  The atoms are built only
    if ``gunicorn.access`` would emit the line."""

    def access(self, resp, req, environ, request_time):
        if self.access_log.isEnabledFor(logging.INFO):
            super().access(resp, req, environ, request_time)


logger_class = Logger
# gunicorn 25+ opens a control socket at one fixed path per user ($HOME/.gunicorn/gunicorn.ctl):
# several masters on one host (the local stack, chat replicas) would take it from each other,
# and nothing here uses gunicornc.
control_socket_disable = True
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {
        "json": {"()": "webchat_common.logs.json_handler", "service": _service_name},
    },
    "root": {"handlers": ["json"], "level": "INFO"},
    "loggers": {
        "gunicorn.error": {"handlers": ["json"], "level": "INFO", "propagate": False},
        "gunicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
    },
}

#: Seconds between SIGTERM (readiness turns false) and the start of gunicorn's graceful stop.
shutdown_drain_seconds = float(os.environ.get("SHUTDOWN_DRAIN_SECONDS", "5"))


def on_starting(server):
    """Master, before any worker exists: wipe the metrics directory, and make SIGTERM drain
    first (see the module docstring)."""
    metrics.wipe_multiproc_dir()
    lifecycle.reset()
    _drain_before_stopping(server, shutdown_drain_seconds)


def when_ready(server):
    """Master, logging configured: what gunicorn prints on stderr becomes JSON lines too."""
    logs.redirect_stderr()


def post_fork(server, worker):
    """Worker, before it loads the app: the same (gunicorn prints an app's import error)."""
    logs.redirect_stderr()


def post_worker_init(worker):
    """Worker, app loaded: a crashed greenlet's traceback goes to the JSON log, not to stderr
    as plain text (gevent prints it itself otherwise)."""
    if "gevent" in sys.modules and type(worker).__module__.endswith("ggevent"):
        import gevent

        hub = gevent.get_hub()
        log = logging.getLogger("webchat.uncaught")

        def print_exception(context, exc_type, value, tb):
            log.error("uncaught exception in greenlet %r", context, exc_info=(exc_type, value, tb))

        hub.print_exception = print_exception


def child_exit(server, worker):
    """Master, after a worker exited: its live gauges (open sockets...) stop counting."""
    metrics.mark_process_dead(worker.pid)


def _drain_before_stopping(arbiter, seconds):
    """Replace the arbiter's SIGTERM handling: set the draining flag now, and stop gracefully
    ``seconds`` later.

    gunicorn's master loop calls ``handle_term`` for a queued SIGTERM; the original raises
    StopIteration, and the loop answers that with ``halt()`` (graceful stop).  Ours only records
    a deadline; the loop wakes at least once a second and calls ``manage_workers``, which raises
    the StopIteration once the deadline passed.  The loop keeps reaping and replacing workers
    and handling other signals meanwhile (SIGINT/SIGQUIT still stop at once).
    """
    deadline = []
    manage_workers = arbiter.manage_workers

    def handle_term():
        if not deadline:
            lifecycle.start_draining()
            arbiter.log.info("SIGTERM: readiness is now false; stopping gracefully in %.1f s", seconds)
            deadline.append(time.monotonic() + seconds)
        if seconds <= 0:
            raise StopIteration

    def managed():
        if deadline and time.monotonic() >= deadline[0]:
            arbiter.log.info("drain period over: stopping workers gracefully")
            raise StopIteration
        return manage_workers()

    arbiter.handle_term = handle_term
    arbiter.manage_workers = managed
