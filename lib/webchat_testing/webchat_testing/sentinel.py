"""Redis with automatic failover, as real processes on loopback: a primary, two replicas and
three Sentinels (quorum 2), for the local stack (``REDIS_TOPOLOGY=sentinel make run``) and the
failover tests.

Every Redis server persists as everywhere else (:data:`webchat_testing.PERSISTENT_ARGS`).  The
Sentinels notice a dead primary after :data:`DOWN_AFTER_MS` and promote the replica that holds
the most (the highest replication offset): with ``CHAT_ACK_REPLICAS=1`` that one holds every
message the chat service acknowledged (docs/durability.md).  Two replicas, so that after a
failover the new primary still has one and acknowledgements go on.  A Sentinel rewrites its
config file as it learns the topology, so each gets a file of its own in the data directory.
"""
import os
import shutil
import subprocess

import redis

from . import RedisServer, free_port, wait_until

#: The name the Sentinels monitor the primary under (the service of the ``redis+sentinel://`` URL).
SERVICE = "webchat"
QUORUM = 2
#: A primary that does not answer for this long is down (Sentinel's default is 30 s; the
#: Kubernetes component uses 5 s).  Short here so that a failover test takes seconds.
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 5000


class SentinelSet:
    """``SentinelSet(data_dir).start()``: the primary, its replicas (synced) and three Sentinels
    that see them all and each other; :attr:`url` is the services' ``REDIS_URL``."""

    def __init__(self, data_dir, replicas=2, sentinels=3):
        self.data_dir = str(data_dir)
        self.servers = [RedisServer(data_dir=os.path.join(self.data_dir, f"redis-{i}"))
                        for i in range(1 + replicas)]
        self.sentinel_ports = [free_port() for _ in range(sentinels)]
        self.sentinel_procs = []

    @property
    def _primary_file(self):
        return os.path.join(self.data_dir, "primary")

    def _first(self):
        """The server to start as primary: the one that was primary when the set was last
        stopped (:meth:`stop` notes it), so that a restart after a failover does not sync the
        newer data away from the promoted replica."""
        try:
            with open(self._primary_file) as f:
                return self.servers[int(f.read())]
        except (OSError, ValueError, IndexError):
            return self.servers[0]

    @property
    def url(self):
        hosts = ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports)
        return f"redis+sentinel://{hosts}/{SERVICE}/0"

    def sentinel(self, i=0):
        return redis.Redis(port=self.sentinel_ports[i], socket_timeout=1, decode_responses=True)

    def primary(self):
        """The RedisServer the Sentinels name as primary now (None if it is not one of ours)."""
        s = self.sentinel()
        try:
            host, port = s.sentinel_get_master_addr_by_name(SERVICE)
        finally:
            s.close()
        return next((server for server in self.servers if server.port == int(port)), None)

    def client(self, **kw):
        """A client of the primary, through the Sentinels (``webchat_common``'s own)."""
        from webchat_common.redis_store import open_client

        return open_client(self.url, decode_responses=True, socket_timeout=2, socket_connect_timeout=1, **kw)

    def _sentinel_conf(self, i, primary):
        d = os.path.join(self.data_dir, f"sentinel-{i}")
        os.makedirs(d, exist_ok=True)
        path = os.path.join(d, "sentinel.conf")
        with open(path, "w") as f:
            f.write(f"port {self.sentinel_ports[i]}\nbind 127.0.0.1\ndir {d}\n"
                    f"logfile {os.path.join(d, 'sentinel.log')}\n"
                    f"sentinel monitor {SERVICE} 127.0.0.1 {primary.port} {QUORUM}\n"
                    f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}\n"
                    f"sentinel failover-timeout {SERVICE} {FAILOVER_TIMEOUT_MS}\n"
                    f"sentinel parallel-syncs {SERVICE} 1\n")
        return path

    def start(self, timeout=30.0):
        binary = shutil.which("redis-server")
        if not binary:
            raise RuntimeError("redis-server is not installed (Debian/Ubuntu: apt-get install redis-server)")
        primary = self._first()
        for server in self.servers:
            server.extra_args = () if server is primary else ("--replicaof", "127.0.0.1", str(primary.port))
        primary.start()
        for server in self.servers:
            if server is not primary:
                server.start()
        for server in self.servers:
            if server is not primary:
                wait_until(lambda: self.synced(server), timeout=timeout, what="a replica to sync with the primary")
        for i in range(len(self.sentinel_ports)):
            proc = subprocess.Popen([binary, self._sentinel_conf(i, primary), "--sentinel"],
                                    stdin=subprocess.DEVNULL)
            self.sentinel_procs.append(proc)
        wait_until(self.ready, timeout=timeout, what="the Sentinels to see the primary, its replicas and each other")
        return self

    @staticmethod
    def synced(server):
        """``server`` is a replica with a live link to its primary."""
        r = redis.Redis(port=server.port, socket_timeout=1, decode_responses=True)
        try:
            return r.info("replication").get("master_link_status") == "up"
        finally:
            r.close()

    def ready(self):
        """Every Sentinel knows the primary, the replicas and the other Sentinels (a failover
        needs them)."""
        others = len(self.sentinel_ports) - 1
        for i in range(len(self.sentinel_ports)):
            s = self.sentinel(i)
            try:
                if (len(s.sentinel_slaves(SERVICE)) < len(self.servers) - 1
                        or len(s.sentinel_sentinels(SERVICE)) < others
                        or s.sentinel_get_master_addr_by_name(SERVICE) is None):
                    return False
            finally:
                s.close()
        return True

    def kill_primary(self):
        """SIGKILL the primary now (no chance to flush anything); returns it."""
        primary = self.primary()
        primary.kill()
        return primary

    def wait_failover(self, old, timeout=30.0):
        """Wait until another primary than ``old`` takes writes and every Sentinel names it as
        a healthy primary (what a client's discovery asks: redis-py skips a Sentinel whose view
        of the primary is still down, and finds none until one has the new view)."""
        def promoted():
            new = self.primary()
            if new is None or new is old:
                return None
            r = redis.Redis(port=new.port, socket_timeout=1)
            try:
                if r.info("replication")["role"] != "master":
                    return None
            finally:
                r.close()
            for i in range(len(self.sentinel_ports)):
                s = self.sentinel(i)
                try:
                    state = s.sentinel_master(SERVICE)
                finally:
                    s.close()
                healthy = state["is_master"] and not state["is_sdown"] and not state["is_odown"]
                if int(state["port"]) != new.port or not healthy:
                    return None
            return new
        return wait_until(promoted, timeout=timeout, interval=0.1, what="a failover")

    def heal(self, timeout=30.0):
        """Start every server that was killed again and wait until each is a synced replica of
        the primary (the Sentinels reconfigure an old primary that comes back)."""
        for server in self.servers:
            if server.pid is None:
                server.start()
                wait_until(lambda: self.synced(server), timeout=timeout, what="a server to rejoin as a replica")

    def stop(self):
        try:
            primary = self.primary() if self.sentinel_procs else None
        except redis.RedisError:
            primary = None
        if primary is not None:
            with open(self._primary_file, "w") as f:
                f.write(str(self.servers.index(primary)))
        for proc in self.sentinel_procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.sentinel_procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.sentinel_procs.clear()
        for server in self.servers:
            server.stop()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
