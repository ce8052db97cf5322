"""gunicorn settings every service runs with: ``gunicorn -c python:webchat_common.gunicorn_conf``.

Command-line flags override these (the worker class of chat, the local stack's bind address).
Environment: ``PORT`` (default 8000), ``WEB_CONCURRENCY`` (workers, default 2),
``SERVICE_NAME`` (the ``service`` field of gunicorn's own JSON log lines).
"""
import os

bind = f"0.0.0.0:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
threads = 4
graceful_timeout = 20
accesslog = None  # each request is logged once, by the app, as JSON with its request id
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {
        "json": {"()": "webchat_common.logs.json_handler", "service": os.environ.get("SERVICE_NAME", "webchat")},
    },
    "root": {"handlers": ["json"], "level": "INFO"},
    "loggers": {
        "gunicorn.error": {"handlers": ["json"], "level": "INFO", "propagate": False},
        "gunicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
    },
}
