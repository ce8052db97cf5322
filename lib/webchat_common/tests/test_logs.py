"""The JSON-lines log format on its own: fields, UTC time, request id, redaction of secret
extras, and the stderr stand-in that turns stray prints into JSON lines without looping."""
import io
import json
import logging
import re

from flask import Flask, g

from webchat_common import logs
from webchat_testing.sessions import COOKIE


def capture(service="svc"):
    """A logger whose JSON handler writes to a buffer instead of stdout."""
    buf = io.StringIO()
    handler = logs.json_handler(service)
    handler.setStream(buf)
    logger = logging.getLogger(f"test.logs.{id(buf)}")
    logger.propagate = False
    logger.handlers = [handler]
    logger.setLevel(logging.DEBUG)
    return logger, buf


def lines(buf):
    return [json.loads(line) for line in buf.getvalue().splitlines()]


def test_a_line_has_time_level_service_logger_message():
    logger, buf = capture("auth")
    logger.warning("hello %s", "world", extra={"status": 401})
    (line,) = lines(buf)
    assert line["message"] == "hello world" and line["level"] == "WARNING" and line["service"] == "auth"
    assert line["status"] == 401 and line["logger"].startswith("test.logs.")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["time"])


def test_request_id_inside_a_request_only():
    logger, buf = capture()
    app = Flask(__name__)
    with app.test_request_context("/"):
        g.request_id = "rid-1"
        logger.info("in")
    logger.info("out")
    inside, outside = lines(buf)
    assert inside["request_id"] == "rid-1" and "request_id" not in outside


def test_a_traceback_is_one_line():
    logger, buf = capture()
    try:
        raise ValueError("broken\non two lines")
    except ValueError:
        logger.exception("failed")
    assert len(buf.getvalue().splitlines()) == 1
    (line,) = lines(buf)
    assert "Traceback" in line["exc_info"] and "ValueError" in line["exc_info"]


def test_secret_extras_are_redacted():
    logger, buf = capture()
    logger.info("careless", extra={"password": "hunter22", "cookie": f"{COOKIE}=s3cr3tsid", "sid": "s3cr3tsid",
                                   "csrf_token": "t0k3nvalue", "user": "alice"})
    (line,) = lines(buf)
    for secret in ("hunter22", "s3cr3tsid", "t0k3nvalue"):
        assert secret not in buf.getvalue()
    assert line["password"] == line["cookie"] == line["sid"] == line["csrf_token"] == "[redacted]"
    assert line["user"] == "alice"


def test_stderr_writes_become_json_lines_and_cannot_loop(monkeypatch):
    real = io.StringIO()
    fake = logs.StderrToLog(real)
    out = io.StringIO()
    handler = logs.json_handler("svc")
    handler.setStream(out)
    stderr_logger = logging.getLogger("stderr")
    monkeypatch.setattr(stderr_logger, "handlers", [handler])
    monkeypatch.setattr(stderr_logger, "propagate", False)
    fake.write("first line\nsecond ")
    fake.write("half\n\n")
    fake.write("no newline yet")
    fake.flush()
    got = [o["message"] for o in lines(out)]
    assert got == ["first line", "second half", "no newline yet"]
    assert real.getvalue() == ""

    # A handler that itself writes to stderr (logging's last resort does) reaches the real one.
    class Loud(logging.Handler):
        def emit(self, record):
            fake.write("from inside the handler\n")

    monkeypatch.setattr(stderr_logger, "handlers", [Loud()])
    fake.write("outer\n")
    assert real.getvalue() == "from inside the handler\n"


def test_gunicorn_builds_no_access_line_that_would_be_dropped(monkeypatch):
    """gunicorn's own access log is off (the app logs each request): its logger must not build
    the per-request access atoms for ``gunicorn.access`` to throw away, and must still build
    them if that logger is ever turned on."""
    from gunicorn.config import Config as GunicornConfig

    from webchat_common import gunicorn_conf

    cfg = GunicornConfig()
    cfg.set("logconfig_dict", gunicorn_conf.logconfig_dict)
    cfg.set("logger_class", gunicorn_conf.logger_class)
    logger = cfg.logger_class(cfg)
    built = []
    monkeypatch.setattr(logger, "atoms", lambda *a: built.append(a) or {})
    logger.access(None, None, {}, None)
    assert built == []
    level = logger.access_log.level
    monkeypatch.setattr(logger.access_log, "handlers", [logging.NullHandler()])
    logger.access_log.setLevel(logging.INFO)
    try:
        logger.access(None, None, {}, None)
    finally:
        logger.access_log.setLevel(level)
    assert len(built) == 1
