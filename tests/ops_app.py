"""A minimal service for the operations tests (``tests/test_ops*.py``): the shared plumbing of
``webchat_common`` (``init_app``, the gunicorn config, metrics, logs) with a few routes no real
service has: a slow request (in-flight work to drain on SIGTERM), an error, a warning, a
crashing thread, and a live gauge per worker.  Run under real gunicorn by those tests::

    PYTHONPATH=tests REDIS_URL=... gunicorn -c python:webchat_common.gunicorn_conf 'ops_app:create_app()'
"""
import os
import threading
import time
import warnings

from flask import Flask, jsonify, request
from prometheus_client import Gauge

import webchat_common

WORKERS = Gauge("webchat_test_workers", "Live worker processes of the ops test app.", multiprocess_mode="livesum")

if os.environ.get("OPS_APP_FAIL_IMPORT"):
    raise RuntimeError("this app was told to fail at import (OPS_APP_FAIL_IMPORT)")


def create_app():
    app = Flask(__name__)
    webchat_common.load_config(app, webchat_common.Config)
    webchat_common.init_app(app, os.environ.get("SERVICE_NAME", "ops"), static_url_path="/static")
    WORKERS.set(1)

    @app.get("/slow")
    def slow():
        time.sleep(float(request.args.get("s", "2")))
        return jsonify(done=True, pid=os.getpid())

    @app.get("/pid")
    def pid():
        return jsonify(pid=os.getpid())

    @app.get("/boom")
    def boom():
        raise RuntimeError("boom on purpose")

    @app.get("/warn")
    def warn():
        warnings.warn("a warning on purpose", UserWarning, stacklevel=1)
        return "warned"

    @app.get("/thread-crash")
    def thread_crash():
        def crash():
            raise ValueError("thread crash on purpose")

        t = threading.Thread(target=crash, name="crasher")
        t.start()
        t.join()
        return "crashed"

    @app.get("/greenlet-crash")
    def greenlet_crash():
        """Under the gevent worker: a greenlet dies with an exception gevent would print."""
        import gevent

        def crash():
            raise KeyError("greenlet crash on purpose")

        gevent.spawn(crash).join()
        return "crashed"

    return app
