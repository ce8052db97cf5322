"""Development only (never installed in an image): what the tests, the local stack and the
benchmarks share.

This module: free ports, a real redis-server, readiness waits.  The local stack runner
(``localstack``), every test folder (through the ``redis_url`` fixture of
:mod:`webchat_testing.pytest_plugin`) and the benchmarks start Redis with :class:`RedisServer`,
so there is one way to start Redis, and the local stack runs it with the same persistence as
compose and Kubernetes (:data:`PERSISTENT_ARGS`; docs/durability.md says why, and
``tests/test_durability_config.py`` keeps the three in step).

The other modules: :mod:`.sessions` (a logged-in user planted in Redis by the session
contract), :mod:`.media` (real little files of every type, a logged-in uploader),
:mod:`.pytest_plugin` (fixtures and hypothesis profiles, ``-p webchat_testing.pytest_plugin``).

The rule: a helper used by more than one test folder, by the local stack or by a benchmark
lives here; a helper of the integration tests only lives in ``tests/support``; fixtures live in
``conftest.py`` files (or the plugin), never in a helper or test module.
"""
import contextlib
import os
import random
import shutil
import socket
import subprocess
import tempfile
import time

import redis

#: How often Redis fsyncs its append-only file, everywhere it persists (local stack, compose,
#: Kubernetes): once a second, in a background thread.  Acknowledged writes survive a kill of
#: the Redis process; an OS crash or power loss can take about the last second (two when the
#: disk is slow).  docs/durability.md has the reasoning and the per-failure figures.
APPENDFSYNC = "everysec"
#: Redis' persistence arguments where data must survive restarts: the same as compose and
#: Kubernetes give (``save`` is left at Redis' default there and here: the RDB snapshots are a
#: spare copy; on start Redis loads the AOF, which is more recent).
PERSISTENT_ARGS = ("--appendonly", "yes", "--appendfsync", APPENDFSYNC)
#: Nothing on disk: the unit tests' Redis (see ``pytest_plugin.redis_server``).
EPHEMERAL_ARGS = ("--appendonly", "no", "--save", "")
#: Where Redis 7 keeps its multi-part AOF, inside ``--dir``.
AOF_DIRNAME = "appendonlydir"


def _ephemeral_low():
    """The lowest port the kernel gives outgoing connections (Linux: ip_local_port_range)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


#: The ports :func:`free_port` handed out in this process: never twice, since a server may bind
#: its port long after it was chosen (a stack picks its chat port, then starts Redis and its
#: Sentinels first).  Suspected in one run: chat's health check at start answered, for 30 s,
#: by a server that closed the connection, as Redis does with HTTP.
_given = set()


def free_port():
    """A TCP port free on every address now, for a server started next, and not handed out
    before in this process.  Taken at random below the kernel's ephemeral range: a port the
    kernel hands out (``bind(0)``) is also where it puts the local end of outgoing
    connections, and with benchmarks or other test runs opening thousands of them one could
    take the port before our server binds it (seen: nginx's "Address already in use", a stack
    answering on someone else's port)."""
    low = min(_ephemeral_low(), 32768)
    for _ in range(200):
        port = random.randrange(10000, low)
        if port in _given:
            continue
        with socket.socket() as s:
            try:
                s.bind(("0.0.0.0", port))
            except OSError:
                continue
        _given.add(port)
        return port
    with socket.socket() as s:  # a crowded range: let the kernel pick
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(check, timeout=15.0, interval=0.05, what="condition"):
    """Call ``check`` until it returns a true value or raises nothing falsy; return its value."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - we report the last failure below
            last = exc
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}" + (f": {last!r}" if last else ""))


class RedisServer:
    """A redis-server process on a loopback port with its own data directory: the one way this
    project starts Redis outside containers (the local stack, ``make run``, the integration and
    fault tests, the benchmarks, and, without persistence, the unit tests).

    ``persistent=True`` (the default) runs Redis as compose and Kubernetes do: an append-only
    file with ``appendfsync`` :data:`APPENDFSYNC` (:data:`PERSISTENT_ARGS`; why that setting,
    and what each failure can lose: docs/durability.md).  ``persistent=False`` keeps nothing on
    disk (:data:`EPHEMERAL_ARGS`).

    The port and the data directory are the server's for its whole life, so every way of
    stopping it can be followed by :meth:`start` on the same address and data:
    :meth:`stop` (SIGTERM: Redis flushes and fsyncs its AOF, then exits), :meth:`kill`
    (SIGKILL: no chance to flush anything), :meth:`restart` (stop, then start).  :meth:`wipe`
    deletes the data of a stopped server (a Redis that comes back empty)."""

    def __init__(self, port=None, data_dir=None, log_file=None, persistent=True, extra_args=()):
        self.port = port or free_port()
        self.extra_args = tuple(extra_args)  # e.g. ("--replicaof", host, port): see .sentinel
        self._own_dir = data_dir is None
        self.data_dir = data_dir or tempfile.mkdtemp(prefix="webchat-redis-")
        self.log_file = log_file or os.path.join(self.data_dir, "redis.log")
        self.persistent = persistent
        self.proc = None

    @property
    def url(self):
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self):
        return self.proc.pid if self.proc and self.proc.poll() is None else None

    def args(self, binary="redis-server"):
        """The command line :meth:`start` runs."""
        return [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.data_dir,
                *(PERSISTENT_ARGS if self.persistent else EPHEMERAL_ARGS),
                "--logfile", self.log_file, "--protected-mode", "yes", *self.extra_args]

    def start(self, timeout=15.0):
        """Start the server (loading its AOF if there is one) and wait until it answers PING
        (a server still loading its data answers LOADING and is waited for)."""
        if self.pid:
            raise RuntimeError(f"redis on port {self.port} is already running (pid {self.pid})")
        binary = shutil.which("redis-server")
        if not binary:
            raise RuntimeError("redis-server is not installed (Debian/Ubuntu: apt-get install redis-server)")
        os.makedirs(self.data_dir, exist_ok=True)
        self.proc = subprocess.Popen(self.args(binary), stdin=subprocess.DEVNULL)
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5, socket_timeout=1)
        try:
            wait_until(lambda: self.proc.poll() is None and client.ping(), timeout=timeout,
                       what=f"redis on port {self.port} (log: {self.log_file})")
        finally:
            client.close()
        return self

    def stop(self, timeout=10.0):
        """SIGTERM and wait (SIGKILL after ``timeout`` s).  With the AOF on, Redis writes and
        fsyncs what it has before exiting, so nothing it acknowledged is lost."""
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill(self):
        """SIGKILL and reap: the process gets no chance to write or fsync anything."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def restart(self, timeout=15.0):
        """Graceful stop (SIGTERM), then start again on the same port and data directory."""
        self.stop()
        return self.start(timeout)

    def wipe(self):
        """Delete the stopped server's data (AOF directory, RDB file): it starts empty."""
        if self.pid:
            raise RuntimeError("stop the server before wiping its data")
        shutil.rmtree(os.path.join(self.data_dir, AOF_DIRNAME), ignore_errors=True)
        for name in ("dump.rdb", "appendonly.aof"):
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(self.data_dir, name))

    def cleanup(self):
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.cleanup()
