"""The whole stack as local processes: Redis, the three services under gunicorn, nginx.

``make run`` runs this with ``python -m localstack``; the integration tests start the same
:class:`Stack` on free ports.  Each process writes its output to ``<state_dir>/logs/<name>.log``.
"""
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

from webchat_testing import RedisServer, free_port, wait_until
from webchat_testing.cluster import ClusterSet
from webchat_testing.sentinel import SentinelSet

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "gateway"))
from render import render  # noqa: E402  (gateway/render.py is a script, not a package)

NGINX_MIME_TYPES = "/etc/nginx/mime.types"

#: REDIS_TOPOLOGY: how the stack runs Redis (docs/configuration.md).  ``single``: one server;
#: ``sentinel``: a primary, two replicas and three Sentinels (automatic failover);
#: ``cluster``: a Redis Cluster of three primaries with a replica each (docs/cluster.md), its
#: nodes' data in a directory of their own.
TOPOLOGIES = {
    "single": lambda d: RedisServer(data_dir=str(d), persistent=True),
    "sentinel": SentinelSet,
    "cluster": lambda d: ClusterSet(d / "cluster"),
}
#: The topologies with replicas: there chat acknowledges a message once a replica holds it
#: (CHAT_ACK_REPLICAS=1; on a Cluster, a replica of the shard that took the write).
REPLICATED = {"sentinel", "cluster"}


@dataclass
class Service:
    """A service's processes here: its port and replicas.  How it runs (app, worker class,
    workers, connections) is its own declaration, read by gunicorn_conf from SERVICE_NAME alone,
    as in its image (webchat_common.service)."""
    name: str
    port: int
    replicas: int = 1
    procs: list = field(default_factory=list)


class Stack:
    def __init__(self, state_dir, gateway_port=None, chat_replicas=2, env=None, redis_topology="single"):
        self.state_dir = Path(state_dir)
        self.gateway_port = gateway_port or free_port()
        self.env = dict(env or {})
        # With its AOF, as compose and Kubernetes run it (docs/durability.md): stopping and
        # starting the stack, or Redis alone, keeps accounts, sessions and messages.
        if redis_topology not in TOPOLOGIES:
            raise ValueError(f"REDIS_TOPOLOGY must be one of {', '.join(TOPOLOGIES)}, not {redis_topology!r}")
        self.redis_topology = redis_topology
        self.redis = TOPOLOGIES[redis_topology](self.state_dir / "redis")
        self.services = {
            "auth": Service("auth", free_port()),
            "files": Service("files", free_port()),
            "chat": Service("chat", free_port(), replicas=chat_replicas),
        }
        self.nginx = None
        self.log_dir = self.state_dir / "logs"
        # Media: one directory read by the files service and nginx; a fresh link-signing
        # secret per run (never stored in the repository).
        self.media_root = self.state_dir / "media"
        self.media_url_secret = secrets.token_urlsafe(32)

    @property
    def tls(self):
        """The gateway serves HTTPS: ``env`` names a certificate (GATEWAY_TLS_CERT_FILE, with
        GATEWAY_TLS_KEY_FILE), which must be valid for 127.0.0.1 (the tests make one)."""
        return bool(self.env.get("GATEWAY_TLS_CERT_FILE"))

    @property
    def url(self):
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.gateway_port}"

    def service_env(self, name):
        env = dict(os.environ)
        env.update(
            REDIS_URL=self.redis.url,
            SERVICE_NAME=name,
            PYTHONUNBUFFERED="1",
        )
        if self.redis_topology in REPLICATED and name == "chat":
            env["CHAT_ACK_REPLICAS"] = "1"  # an ack: on a replica too (docs/durability.md)
        if name == "files":
            env.update(MEDIA_ROOT=str(self.media_root), MEDIA_GATEWAY="1", MEDIA_URL_SECRET=self.media_url_secret)
        env.update(self.env)
        return env

    def _spawn(self, name, args, env=None):
        self.log_dir.mkdir(parents=True, exist_ok=True)
        out = open(self.log_dir / f"{name}.log", "ab")
        return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, start_new_session=True)

    def service_args(self, svc, replica):
        """gunicorn's command line for one replica: where it listens and its process name; the
        service itself is named by SERVICE_NAME (:meth:`service_env`) and nothing else, as in
        its image."""
        args = [sys.executable, "-m", "gunicorn", "-c", "python:webchat_common.gunicorn_conf",
                "-b", f"127.0.0.1:{svc.port}", "-n", f"{svc.name}-{replica}"]
        if svc.replicas > 1:
            args.append("--reuse-port")  # replicas share one address, as behind a k8s Service
        return args

    def start_service(self, svc, replica):
        args = self.service_args(svc, replica)
        env = self.service_env(svc.name)
        # Metrics of this master's workers (webchat_common.metrics): one directory per master,
        # since each master wipes its directory when it starts.
        env["PROMETHEUS_MULTIPROC_DIR"] = str(self.state_dir / "metrics" / f"{svc.name}-{replica}")
        # /readyz is 503 this long after SIGTERM before gunicorn drains (5 s in production).
        env.setdefault("SHUTDOWN_DRAIN_SECONDS", "1")
        proc = self._spawn(f"{svc.name}-{replica}", args, env)
        svc.procs.append(proc)
        return proc

    def wait_service(self, svc):
        wait_until(lambda: requests.get(f"http://127.0.0.1:{svc.port}/healthz", timeout=1).ok,
                   timeout=30, what=f"{svc.name} on port {svc.port}")

    def render_gateway(self):
        ngx = self.state_dir / "nginx"
        ngx.mkdir(parents=True, exist_ok=True)
        shutil.copy(NGINX_MIME_TYPES, ngx / "mime.types")
        conf = render({
            "GATEWAY_PORT": self.gateway_port,
            "AUTH_ADDR": f"127.0.0.1:{self.services['auth'].port}",
            "FILES_ADDR": f"127.0.0.1:{self.services['files'].port}",
            "CHAT_ADDR": f"127.0.0.1:{self.services['chat'].port}",
            "NGINX_STATE_DIR": str(ngx),
            "MEDIA_ROOT": str(self.media_root),
            "MEDIA_URL_SECRET": self.media_url_secret,
            **{k: v for k, v in self.env.items() if k.isupper()},
        })
        path = ngx / "nginx.conf"
        path.write_text(conf)
        return path

    def nginx_args(self, conf, *extra):
        return [nginx_binary(), "-p", str(conf.parent), "-c", str(conf), *extra]

    def start(self):
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            self.media_root.mkdir(parents=True, exist_ok=True)
            self.redis.start()
            for svc in self.services.values():
                for i in range(svc.replicas):
                    self.start_service(svc, i)
            for svc in self.services.values():
                self.wait_service(svc)
            conf = self.render_gateway()
            subprocess.run(self.nginx_args(conf, "-t", "-q"), check=True, capture_output=True)
            self.nginx = self._spawn("gateway", self.nginx_args(conf, "-g", "daemon off;" + nginx_user()))
            verify = self.env["GATEWAY_TLS_CERT_FILE"] if self.tls else True
            wait_until(lambda: requests.get(self.url + "/gateway/healthz", timeout=1, verify=verify).ok,
                       what="the gateway")
        except BaseException:
            self.stop()
            raise
        return self

    def processes(self):
        procs = [self.nginx] if self.nginx else []
        for svc in self.services.values():
            procs.extend(svc.procs)
        return [p for p in procs if p is not None]

    def stop(self, timeout=25):
        stop_processes(self.processes(), timeout, graceful_quit=[self.nginx])
        self.nginx = None
        for svc in self.services.values():
            svc.procs.clear()
        self.redis.stop()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def nginx_user():
    """Started as root, nginx's workers would drop to ``nobody``, who cannot read the media under
    a private state directory: keep them as the user running the stack (local runs only; the
    containers run nginx unprivileged)."""
    return " user root;" if os.geteuid() == 0 else ""


def stop_processes(procs, timeout, graceful_quit=()):
    """SIGTERM each process (SIGQUIT, nginx's graceful stop, for those in ``graceful_quit``),
    wait ``timeout`` seconds in all, then SIGKILL the process group of any still running."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGQUIT if p in graceful_quit else signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for p in procs:
        try:
            p.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def nginx_binary():
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
    if not found:
        raise RuntimeError("nginx is not installed (Debian/Ubuntu: apt-get install nginx)")
    return found
