"""The servers the chat benchmark compares, each started fresh on free loopback ports.

| variant        | what runs                                                                           |
|----------------|-------------------------------------------------------------------------------------|
| `webchat`      | the real stack (``localstack.Stack``): Redis, auth, files, chat x2, the real gateway |
| `fsio`         | Flask-SocketIO, gevent, Redis message queue, 2 processes behind nginx, forward only  |
| `fsio-history` | the same, plus an XADD of every message into the receiver's Redis stream            |
| `inmem`        | one flask-sock process forwarding through a dict (no Redis per message), behind nginx |
| `fsio-polling` | `fsio` with Engine.IO's long-polling transport only, sticky routing (``bench/longpoll_bench.py``) |

The baselines run exactly like the chat service does in the local stack: ``gunicorn -k gevent
-w 1`` masters sharing one port with ``--reuse-port``, one nginx upstream address, nginx with
the gateway's worker settings.  Every variant gets its own Redis.  The exception is
`fsio-polling`: an Engine.IO polling session lives in the process that made it, so each process
has its own port and nginx picks one by the client's address (below).
"""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from localstack import Stack, nginx_binary, stop_processes  # noqa: E402
from webchat_testing import RedisServer, free_port, wait_until  # noqa: E402

VARIANTS = ("webchat", "webchat-sentinel", "webchat-sentinel-async", "webchat-cluster", "webchat-cluster-async", "fsio", "fsio-history", "inmem")  # chat_load.py's (fsio-polling is longpoll_bench.py's)

# The baselines' gateway: the same process model and connection settings as gateway/nginx.conf.template
# (worker_processes auto, HTTP/1.1 upstream, Upgrade headers), without the parts that do not touch
# a WebSocket message (rate limits, security headers).
BASELINE_NGINX = """\
worker_processes auto;
worker_rlimit_nofile {nofile};
pid {state}/nginx.pid;
error_log {state}/error.log warn;
events {{ worker_connections {worker_connections}; }}
http {{
    access_log off;
    client_body_temp_path {state}/client_body;
    proxy_temp_path {state}/proxy;
    fastcgi_temp_path {state}/fastcgi;
    uwsgi_temp_path {state}/uwsgi;
    scgi_temp_path {state}/scgi;
    map $http_upgrade $connection_upgrade {{ default upgrade; "" close; }}
    upstream app {{ {upstream} keepalive 16; }}
    server {{
        listen 127.0.0.1:{port};
        location = /gateway/healthz {{ return 200 'ok'; }}
        location / {{
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_read_timeout 75s;
            proxy_send_timeout 75s;
        }}
    }}
}}
"""


def children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_seconds(pid, which="all"):
    """utime + stime of a process (or only ``"user"`` or ``"sys"``), in seconds."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        user, sys_ = int(fields[11]), int(fields[12])
        ticks = {"all": user + sys_, "user": user, "sys": sys_}[which]
        return ticks / os.sysconf("SC_CLK_TCK")
    except OSError:
        return 0.0


def nofile_limit(pid):
    try:
        with open(f"/proc/{pid}/limits") as f:
            for line in f:
                if line.startswith("Max open files"):
                    return int(line.split()[3])
    except (OSError, ValueError):
        pass
    return None


class Variant:
    """One server under test.  ``url`` is the gateway's origin; ``workers()`` the pids of the
    processes that hold the WebSockets (the gunicorn workers, not their masters)."""

    name = "?"
    protocol = "webchat"
    node_count = 2

    def __init__(self, state_dir, replicas=2, worker_connections=None, max_mode=False, env=None):
        self.state_dir = Path(state_dir)
        self.env = dict(env or {})  # extra environment for the chat (or baseline) processes
        self.replicas = replicas
        self.worker_connections = worker_connections
        self.max_mode = max_mode  # one process holding as many sockets as it can: raise the gateway cap

    def masters(self):
        raise NotImplementedError

    def workers(self):
        pids = []
        for m in self.masters():
            pids.extend(children(m))
        return pids

    def other_pids(self):
        """Processes that are not the chat workers but do work for every message (nginx, Redis)."""
        return []

    def redis_primary_pids(self):
        """The Redis servers that take the commands of every message (their CPU is "Redis"): the
        one server, or the primaries."""
        return []

    def wait_workers(self, timeout=30):
        wait_until(lambda: len(self.workers()) >= len(self.masters()), timeout=timeout, what=f"{self.name} workers")

    @property
    def ws_base(self):
        return self.url.replace("http://", "ws://", 1)


class WebchatVariant(Variant):
    name = "webchat"
    protocol = "webchat"
    topology = "single"

    def start(self):
        env = dict(self.env)
        if self.worker_connections:
            # gunicorn's gevent worker serves at most worker_connections (default 1000) at once;
            # GUNICORN_CMD_ARGS is read by every gunicorn, after the config file.
            env["GUNICORN_CMD_ARGS"] = f"--worker-connections {self.worker_connections}"
        self.stack = Stack(self.state_dir, chat_replicas=self.replicas, env=env, redis_topology=self.topology)
        if self.max_mode:
            self._start_big_gateway()
        else:
            self.stack.start()
        self.node_count = self.replicas
        self.redis_url = self.stack.redis.url
        self.wait_workers()
        return self

    def _start_big_gateway(self):
        """Max-sockets mode: the real gateway, rendered as usual but with its connection cap
        raised to fit N sockets (each proxied socket takes two nginx connections)."""
        stack = self.stack
        render = stack.render_gateway

        def render_more():
            path = render()
            text = path.read_text()
            text = re.sub(r"worker_connections \d+;", f"worker_connections {self.worker_connections * 2 + 1024};", text)
            text = re.sub(r"worker_rlimit_nofile \d+;", f"worker_rlimit_nofile {self.worker_connections * 2 + 2048};", text)
            text = re.sub(r"access_log /dev/stdout json;", "access_log off;", text)
            path.write_text(text)
            return path

        stack.render_gateway = render_more
        stack.start()

    @property
    def url(self):
        return self.stack.url

    def masters(self):
        return [p.pid for p in self.stack.services["chat"].procs]

    def redis_primary_pids(self):
        return [self.stack.redis.proc.pid] if self.stack.redis.proc else []

    def redis_pids(self):
        return [self.stack.redis.proc.pid] if self.stack.redis.proc else []

    def other_pids(self):
        pids = self.redis_pids()
        if self.stack.nginx:
            pids += children(self.stack.nginx.pid)
        return pids

    def stop(self):
        self.stack.stop()


class WebchatSentinelVariant(WebchatVariant):
    """webchat on Redis with failover (REDIS_TOPOLOGY=sentinel): a primary, two replicas, three
    Sentinels, and every ack waiting for a replica (CHAT_ACK_REPLICAS=1).  Redis is the
    primary; the replicas and Sentinels count among the other processes."""
    name = "webchat-sentinel"
    topology = "sentinel"

    def redis_primary_pids(self):
        return [self.stack.redis.primary().pid]

    def redis_pids(self):
        ha = self.stack.redis
        return [s.pid for s in ha.servers if s.pid] + [p.pid for p in ha.sentinel_procs if p.poll() is None]


class WebchatSentinelAsyncVariant(WebchatSentinelVariant):
    """The same, but acks do not wait for a replica (CHAT_ACK_REPLICAS=0): what the WAIT costs,
    apart from the replicas' and Sentinels' own work."""
    name = "webchat-sentinel-async"

    def start(self):
        self.env["CHAT_ACK_REPLICAS"] = "0"
        return super().start()


class WebchatClusterVariant(WebchatVariant):
    """webchat on a Redis Cluster (REDIS_TOPOLOGY=cluster): three primaries and a replica each,
    every ack waiting for a replica of the shard that took it (CHAT_ACK_REPLICAS=1).  Redis is
    the three primaries; the replicas count among the other processes."""
    name = "webchat-cluster"
    topology = "cluster"

    def redis_primary_pids(self):
        return [s.pid for s in self.stack.redis.primaries()]

    def redis_pids(self):
        return [s.pid for s in self.stack.redis.servers if s.pid]


class WebchatClusterAsyncVariant(WebchatClusterVariant):
    """The same, but acks do not wait for a replica (CHAT_ACK_REPLICAS=0), as on one Redis."""
    name = "webchat-cluster-async"

    def start(self):
        self.env["CHAT_ACK_REPLICAS"] = "0"
        return super().start()


class BaselineVariant(Variant):
    app = None
    extra_env = {}
    # False: every process listens on one port (--reuse-port), nginx has one upstream address.
    # True: one port per process and nginx routes each client address to one process, always the
    # same (``hash $remote_addr``: what Flask-SocketIO's docs do with ``ip_hash``, which hashes
    # only the first three octets of an IPv4 address and would send every 127.77.0.x client to
    # one process).
    sticky = False

    def start(self):
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.redis = RedisServer(data_dir=str(self.state_dir / "redis")).start()
        self.redis_url = self.redis.url
        self.app_ports = [free_port() for _ in range(self.replicas)] if self.sticky else [free_port()] * self.replicas
        self.app_port = self.app_ports[0]
        self.port = free_port()
        self.procs = []
        self.nginx = None
        try:
            env = dict(os.environ, REDIS_URL=self.redis.url, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1",
                       REDIS_MAX_CONNECTIONS="50", **self.extra_env)
            env.update(self.env)
            env.pop("GUNICORN_CMD_ARGS", None)
            logs = self.state_dir / "logs"
            logs.mkdir(exist_ok=True)
            for i in range(self.replicas):
                args = [sys.executable, "-m", "gunicorn", "-k", "gevent", "-w", "1", "-b", f"127.0.0.1:{self.app_ports[i]}",
                        "--worker-connections", str(self.worker_connections or 25000), "--graceful-timeout", "5",
                        "-n", f"{self.name}-{i}", self.app]
                if self.replicas > 1 and not self.sticky:
                    args.insert(-1, "--reuse-port")
                out = open(logs / f"{self.name}-{i}.log", "ab")
                self.procs.append(subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                                   env=env, start_new_session=True))
            for port in sorted(set(self.app_ports)):
                wait_until(lambda: requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).ok,
                           timeout=30, what=f"{self.name} on port {port}")
            ngx = self.state_dir / "nginx"
            ngx.mkdir(exist_ok=True)
            wc = max(8192, (self.worker_connections or 0) * 2 + 1024)
            conf = ngx / "nginx.conf"
            upstream = " ".join(f"server 127.0.0.1:{p};" for p in sorted(set(self.app_ports)))
            if self.sticky:
                upstream = "hash $remote_addr; " + upstream
            conf.write_text(BASELINE_NGINX.format(state=ngx, port=self.port, upstream=upstream,
                                                  worker_connections=wc, nofile=wc))
            self.nginx = subprocess.Popen([nginx_binary(), "-p", str(ngx), "-c", str(conf), "-g", "daemon off;"],
                                          stdout=open(logs / "nginx.log", "ab"), stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL, start_new_session=True)
            wait_until(lambda: requests.get(self.url + "/gateway/healthz", timeout=1).ok, what="baseline nginx")
            self.wait_workers()
        except BaseException:
            self.stop()
            raise
        return self

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def masters(self):
        return [p.pid for p in self.procs]

    def redis_primary_pids(self):
        return [self.redis.proc.pid] if self.redis.proc else []

    def other_pids(self):
        pids = [self.redis.proc.pid] if self.redis.proc else []
        if self.nginx:
            pids += children(self.nginx.pid)
        return pids

    def stop(self):
        stop_processes(list(self.procs) + ([self.nginx] if self.nginx else []), 15, graceful_quit=[self.nginx])
        self.procs, self.nginx = [], None
        self.redis.stop()
        shutil.rmtree(self.state_dir / "redis", ignore_errors=True)


class FsioVariant(BaselineVariant):
    name = "fsio"
    protocol = "socketio"
    app = "bench.chat_baselines.fsio_app:create_app()"
    extra_env = {"FSIO_HISTORY": "0"}


class FsioHistoryVariant(FsioVariant):
    name = "fsio-history"
    extra_env = {"FSIO_HISTORY": "1"}


class FsioPollingVariant(FsioVariant):
    """Flask-SocketIO over Engine.IO 4's long-polling transport only (``FSIO_TRANSPORTS=polling``),
    two processes, sticky by client address."""
    name = "fsio-polling"
    extra_env = {"FSIO_HISTORY": "0", "FSIO_TRANSPORTS": "polling"}
    sticky = True


class InmemVariant(BaselineVariant):
    name = "inmem"
    protocol = "webchat"
    app = "bench.chat_baselines.sock_app:create_app()"

    def __init__(self, state_dir, replicas=1, **kw):
        super().__init__(state_dir, replicas=1, **kw)  # one process: the dict is its only state
        self.node_count = 1


def make_variant(name, state_dir, **kw):
    cls = {"webchat": WebchatVariant, "webchat-sentinel": WebchatSentinelVariant,
           "webchat-sentinel-async": WebchatSentinelAsyncVariant, "webchat-cluster": WebchatClusterVariant,
           "webchat-cluster-async": WebchatClusterAsyncVariant, "fsio": FsioVariant, "fsio-history": FsioHistoryVariant,
           "inmem": InmemVariant, "fsio-polling": FsioPollingVariant}[name]
    return cls(state_dir, **kw)
