"""One gunicorn master with the services' shared config (``webchat_common.gunicorn_conf``) around
``tests/ops_app.py``, for the operations tests (``tests/test_ops_lifecycle.py``; the fixture that
starts and stops them is ``gunicorn`` in ``tests/conftest.py``), or around a service as its image
and the local stack run it (``app=None``: ``SERVICE_NAME`` names it; tests/test_cluster_services.py)."""
import os
import signal
import subprocess
import sys
from pathlib import Path

import requests

from webchat_testing import free_port, wait_until

#: The folder of ops_app.py (on the workers' PYTHONPATH).
HERE = Path(__file__).resolve().parent.parent
DRAIN = 4.0  # SHUTDOWN_DRAIN_SECONDS for these tests


class Gunicorn:
    """One gunicorn master (and its workers) with the services' config, output to a file.
    ``app=None``: the service ``name``, with the app, worker class and workers its
    ``service.toml`` declares (the command line of ``localstack.Stack.service_args``)."""

    def __init__(self, tmp_path, redis_url, app="ops_app:create_app()", worker_class="gthread", workers=2,
                 name="ops", **env):
        self.port = free_port()
        self.log = tmp_path / f"{name}.log"
        self.metrics_dir = tmp_path / f"metrics-{name}"
        # The caller's PYTHONPATH is kept (after HERE): run from a git worktree with its
        # folders on it, the workers import that tree's code, not the editable installs'.
        path = os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")]))
        self.env = dict(os.environ, REDIS_URL=redis_url, SERVICE_NAME=name, PYTHONUNBUFFERED="1",
                        PYTHONPATH=path, PROMETHEUS_MULTIPROC_DIR=str(self.metrics_dir),
                        SHUTDOWN_DRAIN_SECONDS=str(DRAIN))
        self.env.update(env)
        self.args = [sys.executable, "-m", "gunicorn", "-c", "python:webchat_common.gunicorn_conf",
                     "-b", f"127.0.0.1:{self.port}"]
        if app is not None:
            self.args += ["-k", worker_class, "-w", str(workers), app]
        self.proc = None

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def start(self, wait=True):
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(self.args, stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env=self.env, start_new_session=True)
        if wait:
            wait_until(lambda: requests.get(self.url + "/healthz", timeout=1).ok, timeout=40,
                       what=f"gunicorn on {self.port}")
        return self

    def stop(self):
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def lines(self):
        return self.log.read_text().splitlines()
