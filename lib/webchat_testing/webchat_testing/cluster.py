"""A Redis Cluster as real processes on loopback: three primaries with a replica each, made
with ``redis-cli --cluster create``, for the Cluster tests (docs/cluster.md).

Every server persists as everywhere else (:data:`webchat_testing.PERSISTENT_ARGS`) and keeps
its Cluster state (its id, the other nodes, who serves which slots, the epochs) in its own
``nodes.conf``, so :meth:`ClusterSet.stop` then :meth:`ClusterSet.start` (or a new
``ClusterSet`` over the same data directory: the ports are kept in it) brings back the same
Cluster with its data; ``redis-cli --cluster create`` runs only on a first start.

A primary that does not answer for :data:`NODE_TIMEOUT_MS` is marked failed by the others, and
its replica is elected in its place.  ``cluster-require-full-coverage`` is :data:`FULL_COVERAGE`
(``no``): when a primary and its replicas are all lost, only the keys of their slots are
unavailable, and the other primaries go on serving theirs.  Redis' default (``yes``) stops the
whole Cluster instead, which buys nothing here: no call of auth or files spans slots, so none
needs every slot at once to stay correct (docs/cluster.md, "Status").
"""
import os
import shutil
import socket
import subprocess

import redis
from redis.crc import key_slot

from . import RedisServer, free_port, wait_until

#: A node that does not answer for this long is failed and its replica promoted (Redis'
#: default is 15 s).  Short here so that a failover test takes seconds.
NODE_TIMEOUT_MS = 1000
#: A replica's full sync (its first, or after it rejoins as the replica of its successor)
#: starts at once: Redis' default waits 5 s for more replicas to share the transfer, which
#: would hold every start of the set, and a shard's acknowledgements after a failover
#: (CHAT_ACK_REPLICAS), 5 s for nothing with one replica per primary.
SYNC_DELAY_S = 0
FULL_COVERAGE = "no"
SLOTS = 16384
#: A node's Cluster bus listens on its port plus this.
BUS_OFFSET = 10000


def _free_node_port():
    """A free port whose Cluster bus port (+ :data:`BUS_OFFSET`) is free too."""
    for _ in range(200):
        port = free_port()
        if port + BUS_OFFSET < 65536 and _bindable(port + BUS_OFFSET):
            return port
    raise RuntimeError("no free port pair for a Cluster node")


def _bindable(port):
    with socket.socket() as s:
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
        return True


def _node(port):
    return redis.Redis(port=port, socket_timeout=1, socket_connect_timeout=1, decode_responses=True)


class ClusterSet:
    """``ClusterSet(data_dir).start()``: ``primaries`` primaries with ``replicas_per_primary``
    replicas each, every slot covered; :attr:`url` is the services' ``REDIS_URL``."""

    def __init__(self, data_dir, primaries=3, replicas_per_primary=1):
        self.data_dir = str(data_dir)
        self.replicas_per_primary = replicas_per_primary
        count = primaries * (1 + replicas_per_primary)
        ports = self._saved_ports(count) or [_free_node_port() for _ in range(count)]
        os.makedirs(self.data_dir, exist_ok=True)
        with open(self._ports_file, "w") as f:
            f.write(" ".join(map(str, ports)))
        self.servers = []
        for i, port in enumerate(ports):
            d = os.path.join(self.data_dir, f"redis-{i}")
            self.servers.append(RedisServer(port=port, data_dir=d, extra_args=(
                "--cluster-enabled", "yes", "--cluster-config-file", os.path.join(d, "nodes.conf"),
                "--cluster-node-timeout", str(NODE_TIMEOUT_MS), "--repl-diskless-sync-delay", str(SYNC_DELAY_S),
                "--cluster-require-full-coverage", FULL_COVERAGE)))
        self._killed_slots = {}

    @property
    def _ports_file(self):
        return os.path.join(self.data_dir, "ports")

    def _saved_ports(self, count):
        try:
            with open(self._ports_file) as f:
                ports = [int(p) for p in f.read().split()]
        except (OSError, ValueError):
            return None
        return ports if len(ports) == count else None

    @property
    def url(self):
        return "redis+cluster://" + ",".join(f"127.0.0.1:{s.port}" for s in self.servers)

    def client(self, **kw):
        """A Cluster client through ``webchat_common``'s own :func:`open_client`."""
        from webchat_common.redis_store import open_client

        return open_client(self.url, decode_responses=True, socket_timeout=2, socket_connect_timeout=1, **kw)

    @property
    def created(self):
        return all(os.path.exists(os.path.join(s.data_dir, "nodes.conf")) for s in self.servers)

    def start(self, timeout=60.0):
        created = self.created
        for server in self.servers:
            server.start()
        if not created:
            cli = shutil.which("redis-cli")
            if not cli:
                raise RuntimeError("redis-cli is not installed (Debian/Ubuntu: apt-get install redis-tools)")
            subprocess.run([cli, "--cluster", "create", *(f"127.0.0.1:{s.port}" for s in self.servers),
                            "--cluster-replicas", str(self.replicas_per_primary), "--cluster-yes"],
                           check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, timeout=timeout)
        wait_until(self.ready, timeout=timeout, interval=0.1,
                   what="the Cluster to cover every slot, with every replica synced")
        return self

    def _live(self):
        return [s for s in self.servers if s.pid is not None]

    def ready(self):
        """Every running node says ``cluster_state:ok`` and sees every slot served, and every
        primary has its replicas connected (``WAIT`` needs them)."""
        for server in self._live():
            with _node(server.port) as r:
                info = r.cluster("info")
                if info["cluster_state"] != "ok" or int(info["cluster_slots_ok"]) != SLOTS:
                    return False
                replication = r.info("replication")
                if replication["role"] == "master" and self._serves_slots(r, server):
                    if replication["connected_slaves"] < self.replicas_per_primary:
                        return False
                elif replication["role"] == "slave" and replication.get("master_link_status") != "up":
                    return False
        return True

    @staticmethod
    def _serves_slots(r, server):
        return any(int(primary[1]) == server.port for _, _, primary, *_ in r.execute_command("CLUSTER SLOTS"))

    def _slot_owner(self, slot):
        """The server that a running node names as the primary of ``slot`` (None if none)."""
        for server in self._live():
            try:
                with _node(server.port) as r:
                    ranges = r.execute_command("CLUSTER SLOTS")
            except redis.RedisError:
                continue
            for start, end, primary, *_ in ranges:
                if int(start) <= slot <= int(end):
                    return next((s for s in self.servers if s.port == int(primary[1])), None)
            return None
        return None

    def primary_of(self, key):
        """The server whose primary role covers ``key``'s slot now."""
        return self._slot_owner(key_slot(key.encode() if isinstance(key, str) else key))

    def primaries(self):
        """The running servers that serve slots as primaries now."""
        out = []
        for server in self._live():
            with _node(server.port) as r:
                if r.info("replication")["role"] == "master" and self._serves_slots(r, server):
                    out.append(server)
        return out

    def move_slot(self, slot, target, timeout=30.0):
        """Move ``slot`` (with its keys) to the primary ``target`` the way ``redis-cli --cluster
        reshard`` does: ``SETSLOT IMPORTING`` on the target, ``MIGRATING`` on the source,
        ``MIGRATE`` of its keys, then ``SETSLOT NODE`` on the target, on every other primary
        and on the source last (the source then drops its subscribers of the slot's sharded
        channels, with a ``sunsubscribe``).  Waits until every running node names ``target``;
        returns the source."""
        source = self._slot_owner(slot)
        if source is None or source is target:
            raise ValueError(f"slot {slot} is served by {source and source.port}, not movable to {target.port}")
        with _node(target.port) as t, _node(source.port) as s:
            target_id, source_id = t.cluster("myid"), s.cluster("myid")
            t.execute_command("CLUSTER SETSLOT", slot, "IMPORTING", source_id)
            s.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", target_id)
            while keys := s.execute_command("CLUSTER GETKEYSINSLOT", slot, 100):
                s.execute_command("MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", *keys)
            t.execute_command("CLUSTER SETSLOT", slot, "NODE", target_id)
            for other in self.primaries():
                if other is not source and other is not target:
                    with _node(other.port) as o:
                        o.execute_command("CLUSTER SETSLOT", slot, "NODE", target_id)
            s.execute_command("CLUSTER SETSLOT", slot, "NODE", target_id)

        def agreed():
            for server in self._live():
                with _node(server.port) as r:
                    ranges = r.execute_command("CLUSTER SLOTS")
                if not any(int(a) <= slot <= int(b) and int(p[1]) == target.port for a, b, p, *_ in ranges):
                    return False
            return True
        wait_until(agreed, timeout=timeout, interval=0.05, what=f"every node to name {target.port} for slot {slot}")
        return source

    def replicated(self, primary):
        """Every replica of ``primary`` holds every write it took (their acknowledged offsets
        reached its own): what a kill of ``primary`` now cannot lose."""
        with _node(primary.port) as r:
            info = r.info("replication")
        offsets = [v["offset"] for k, v in info.items() if k.startswith("slave") and isinstance(v, dict)]
        return len(offsets) >= self.replicas_per_primary and all(o >= info["master_repl_offset"] for o in offsets)

    def kill_primary(self, key):
        """SIGKILL the primary of ``key`` (no chance to flush anything); returns it."""
        slot = key_slot(key.encode() if isinstance(key, str) else key)
        primary = self._slot_owner(slot)
        self._killed_slots[primary.port] = slot
        primary.kill()
        return primary

    def wait_failover(self, old, timeout=30.0):
        """Wait until a replica of ``old`` (killed by :meth:`kill_primary`) serves its slots as
        a primary, and every running node says the Cluster is ok; returns the promoted server."""
        slot = self._killed_slots[old.port]

        def promoted():
            new = self._slot_owner(slot)
            if new is None or new is old:
                return None
            with _node(new.port) as r:
                if r.info("replication")["role"] != "master":
                    return None
            for server in self._live():
                with _node(server.port) as r:
                    if r.cluster("info")["cluster_state"] != "ok":
                        return None
            return new
        return wait_until(promoted, timeout=timeout, interval=0.1, what="a Cluster failover")

    def heal(self, timeout=30.0):
        """Start every killed server again and wait until each rejoined as a synced replica
        (a primary that comes back after its failover is made a replica of its successor)."""
        restarted = [s for s in self.servers if s.pid is None]
        for server in restarted:
            server.start()
        for server in restarted:
            wait_until(lambda: self.synced(server), timeout=timeout, interval=0.1,
                       what=f"the node on port {server.port} to rejoin as a replica")
        self._killed_slots.clear()
        wait_until(self.ready, timeout=timeout, interval=0.1, what="the Cluster to be ok again")

    @staticmethod
    def synced(server):
        """``server`` is a replica with a live link to its primary."""
        with _node(server.port) as r:
            replication = r.info("replication")
            return replication["role"] == "slave" and replication.get("master_link_status") == "up"

    def stop(self):
        """Stop every server (SIGTERM: each writes its AOF and nodes.conf), replicas first, so
        that no replica sees its primary go and starts an election meanwhile."""
        def role(server):
            try:
                with _node(server.port) as r:
                    return r.info("replication")["role"]
            except redis.RedisError:
                return "master"
        live = self._live()
        for server in sorted(live, key=lambda s: role(s) == "master"):
            server.stop()
        for server in self.servers:
            server.stop()

    def wipe(self):
        """Delete the stopped nodes' data (each :meth:`RedisServer.wipe`), not their
        ``nodes.conf``: the same Cluster (its nodes, slots and roles) starts again empty."""
        for server in self.servers:
            server.wipe()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
