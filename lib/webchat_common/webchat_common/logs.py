"""JSON-lines logging: one object per line on stdout, with the service and request id.

The formatter is python-json-logger's; this module only decides the fields and installs it
once per process (gunicorn's own loggers are pointed here by :mod:`webchat_common.gunicorn_conf`).

Every line has ``time`` (UTC, ISO 8601 with milliseconds), ``level``, ``service``, ``logger``
and ``message``; inside a request also ``request_id``; the access line of each request adds
``method``, ``path``, ``status``, ``duration_ms`` and ``user``.  A traceback is the
``exc_info`` string of its line, never loose lines.  Python warnings, uncaught exceptions of
the main thread and of other threads go through the same handler, so nothing on the output
is plain text.

Attributes that must never be logged (passwords, cookies, session ids, CSRF tokens) are
replaced by ``"[redacted]"`` if some code passes them as ``extra``: a last line of defence,
not an invitation.
"""
import logging
import sys
import threading
import time

from flask import g, has_request_context
from pythonjsonlogger.json import JsonFormatter

FIELDS = "%(asctime)s %(levelname)s %(name)s %(message)s"
RENAME = {"asctime": "time", "levelname": "level", "name": "logger"}
#: ``extra`` names that are blanked whatever their value.
REDACTED = frozenset({"password", "cookie", "cookies", "session", "session_id", "sid", "csrf", "csrf_token",
                      "authorization", "set_cookie"})


class UTCJsonFormatter(JsonFormatter):
    """python-json-logger's formatter with ``time`` as ``2026-01-02T03:04:05.678Z``."""

    def formatTime(self, record, datefmt=None):  # noqa: N802 - logging's name
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"


class ContextFilter(logging.Filter):
    """Adds ``service`` to every record and ``request_id`` inside a request; blanks secrets."""

    def __init__(self, service):
        super().__init__()
        self.service = service

    def filter(self, record):
        record.service = self.service
        if has_request_context() and "request_id" in g and not hasattr(record, "request_id"):
            record.request_id = g.request_id
        for name in REDACTED.intersection(record.__dict__):
            setattr(record, name, "[redacted]")
        return True


def json_handler(service):
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(UTCJsonFormatter(FIELDS, rename_fields=RENAME, timestamp=False))
    handler.addFilter(ContextFilter(service))
    handler.set_name("webchat-json")
    return handler


def _log_uncaught(exc_type, exc, tb):
    if issubclass(exc_type, KeyboardInterrupt):
        sys.__excepthook__(exc_type, exc, tb)
        return
    logging.getLogger("webchat.uncaught").critical("uncaught exception", exc_info=(exc_type, exc, tb))


def _log_uncaught_in_thread(args):
    if args.exc_type is SystemExit:
        return
    logging.getLogger("webchat.uncaught").error(
        "uncaught exception in thread %s", getattr(args.thread, "name", "?"),
        exc_info=(args.exc_type, args.exc_value, args.exc_traceback))


def capture_stray_output():
    """Route what Python would print as plain text on stderr through logging instead:
    warnings, uncaught exceptions (main thread and other threads)."""
    logging.captureWarnings(True)
    sys.excepthook = _log_uncaught
    threading.excepthook = _log_uncaught_in_thread


def setup_logging(service, level="INFO"):
    root = logging.getLogger()
    if not any(h.get_name() == "webchat-json" for h in root.handlers):
        for h in list(root.handlers):
            root.removeHandler(h)
        root.addHandler(json_handler(service))
    root.setLevel(level)
    capture_stray_output()
