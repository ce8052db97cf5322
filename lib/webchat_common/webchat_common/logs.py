"""JSON-lines logging: one object per line on stdout, with the service and request id.

The formatter is python-json-logger's; this module only decides the fields and installs it
once per process (gunicorn's own loggers are pointed here by :mod:`webchat_common.gunicorn_conf`).

Every line has ``time`` (UTC, ISO 8601 with milliseconds), ``level``, ``service``, ``logger``
and ``message``; inside a request also ``request_id``; the access line of each request adds
``method``, ``path``, ``status``, ``duration_ms`` and ``user``.  A traceback is the
``exc_info`` string of its line, never loose lines.  Python warnings, uncaught exceptions of
the main thread and of other threads, and (under gunicorn) whatever is written to
``sys.stderr`` go through the same handler, so nothing on the output is plain text.

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
    """python-json-logger's formatter with ``time`` as ``2026-01-02T03:04:05.678Z``.

    Two things it did for every line are done once: the JSON encoder (``json.dumps(cls=...)``
    builds one per call; ``encode`` keeps no state between calls, so one serves every thread),
    and the date and time up to the second (formatted again only when the second changes)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._encoder = self.json_encoder(default=self.json_default, indent=self.json_indent,
                                          ensure_ascii=self.json_ensure_ascii)
        self._second = (None, "")

    def formatTime(self, record, datefmt=None):  # noqa: N802 - logging's name
        second = int(record.created)
        cached = self._second
        if cached[0] != second:
            cached = self._second = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
        return cached[1] + f".{int(record.msecs):03d}Z"

    def jsonify_log_record(self, log_data):
        return self._encoder.encode(log_data)


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


class StderrToLog:
    """A stand-in for ``sys.stderr`` that turns each line written to it into a JSON log line
    (logger ``stderr``, level WARNING).  gunicorn prints some errors there besides logging them
    (a worker that cannot load its app, for one), and so might any library.  Writes that
    happen while a line is being logged (logging's own last-resort output) go to the real
    stderr, so this can never loop."""

    encoding = "utf-8"
    errors = "backslashreplace"

    def __init__(self, real):
        self.real = real
        self._buf = ""
        self._busy = False
        self._log = logging.getLogger("stderr")

    def write(self, text):
        if self._busy:
            return self.real.write(text)
        self._buf += text
        while "\n" in self._buf:
            line, self._buf = self._buf.split("\n", 1)
            self._emit(line)
        return len(text)

    def _emit(self, line):
        if not line.strip():
            return
        self._busy = True
        try:
            self._log.warning(line.rstrip())
        finally:
            self._busy = False

    def flush(self):
        if self._buf:
            line, self._buf = self._buf, ""
            self._emit(line)

    def fileno(self):
        return self.real.fileno()

    def isatty(self):
        return False

    def writable(self):
        return True


def redirect_stderr():
    """Make ``sys.stderr`` a :class:`StderrToLog` (once).  Output written to file descriptor 2
    directly (C code) is not seen."""
    if not isinstance(sys.stderr, StderrToLog):
        sys.stderr = StderrToLog(sys.stderr)


def setup_logging(service, level="INFO"):
    root = logging.getLogger()
    if not any(h.get_name() == "webchat-json" for h in root.handlers):
        for h in list(root.handlers):
            root.removeHandler(h)
        root.addHandler(json_handler(service))
    root.setLevel(level)
    capture_stray_output()
