"""JSON-lines logging: one object per line on stdout, with the service and request id.

The formatter is python-json-logger's; this module only decides the fields and installs it
once per process (gunicorn's own loggers are pointed here by :mod:`webchat_common.gunicorn_conf`).
"""
import logging
import sys

from flask import g, has_request_context
from pythonjsonlogger.json import JsonFormatter

FIELDS = "%(asctime)s %(levelname)s %(name)s %(message)s"
RENAME = {"asctime": "time", "levelname": "level", "name": "logger"}


class ContextFilter(logging.Filter):
    """Adds ``service`` to every record and ``request_id`` inside a request."""

    def __init__(self, service):
        super().__init__()
        self.service = service

    def filter(self, record):
        record.service = self.service
        if has_request_context() and "request_id" in g and not hasattr(record, "request_id"):
            record.request_id = g.request_id
        return True


def json_handler(service):
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter(FIELDS, rename_fields=RENAME, timestamp=False))
    handler.addFilter(ContextFilter(service))
    handler.set_name("webchat-json")
    return handler


def setup_logging(service, level="INFO"):
    root = logging.getLogger()
    if not any(h.get_name() == "webchat-json" for h in root.handlers):
        for h in list(root.handlers):
            root.removeHandler(h)
        root.addHandler(json_handler(service))
    root.setLevel(level)
