"""redis/cluster/redis-cluster.sh for real: six nodes started by the script, each on its own
loopback address as pods have their own (127.0.1.1-6, then 127.0.2.1-6 after a restart on new
addresses), one port for all, with the local redis-server (7.0; the images run 7.4).  The node
names are the Kubernetes component's (the script's defaults), resolved by a getent that reads a
hosts file of the test: the cluster's DNS, which the test changes as a cluster would.

Checked: `create` makes 3 primaries with a replica each, once (run again, it changes nothing),
and only of empty nodes; the nodes require the password, announce their names, and answer a
Cluster client that reaches them by those names; `ready` says no before the Cluster is made and
yes after; the preStop hook hands a primary's slots to its replica without losing a write; a
restart of every node at once on new addresses finds the Cluster again with its data; a node
that lost its volume is added back as a replica by `create`, its old entry forgotten; a
creation cut short is made again; the password never reaches a command line nor the server's
environment."""
import shutil
import signal
import subprocess

import pytest
import redis
from redis.cluster import ClusterNode, RedisCluster

from redis_setup import (
    REDIS_CLUSTER_SCRIPT,
    assert_password_kept_private,
    cli,
    free_port,
    info,
    redis_server_binary,
    script_default,
    script_env,
    wait_for,
)

PASSWORD = "test-redis-password-not-a-secret"
NAMES = script_default("NODES", REDIS_CLUSTER_SCRIPT).split()


class Nodes:
    """The six nodes of the Kubernetes component, as local processes; ``generation`` picks
    their addresses (127.0.<generation>.1-6), which the hosts file gives their names."""

    def __init__(self, tmp_path):
        redis_server_binary()
        self.tmp = tmp_path
        self.port, self.bus_port = free_port(), free_port()
        self.password_file = tmp_path / "password"
        self.password_file.write_text(PASSWORD)
        self.hosts = tmp_path / "hosts"
        self.stubs = tmp_path / "stubs"
        self.stubs.mkdir()
        # getent hosts NAME, answered from the hosts file (an address is its own answer).
        (self.stubs / "getent").write_text(
            '#!/bin/sh\n[ "$1" = hosts ] || exit 2\n'
            'awk -v n="$2" \'$2 == n || $1 == n { print $1 "  " $2; found = 1; exit } END { exit !found }\' "$HOSTS_FILE"\n')
        (self.stubs / "getent").chmod(0o755)
        self.readdress(1)
        self.procs = {}

    def readdress(self, generation):
        """Every name now resolves to an address of ``generation`` (pods that come back elsewhere)."""
        self.addresses = [f"127.0.{generation}.{i + 1}" for i in range(len(NAMES))]
        self.hosts.write_text("".join(f"{a} {n}\n" for a, n in zip(self.addresses, NAMES)))

    def env(self, i):
        # The pod's HOSTNAME: the script takes its own name from NODES by the ordinal.  Its own
        # folders (CONF_DIR, DATA_DIR), kept across its restarts as a pod's volume is.
        e = script_env(self.tmp, f"redis-cluster-{i}", self.password_file, REDIS_PORT=self.port, BUS_PORT=self.bus_port,
                       BIND_ADDRESS=self.addresses[i], NODE_TIMEOUT=1000, START_WAIT=5, CREATE_WAIT=30, HOSTS_FILE=self.hosts)
        e["PATH"] = f"{self.stubs}:{e['PATH']}"
        return e

    def data_dir(self, i):
        return self.tmp / f"redis-cluster-{i}" / "data"

    def start(self, i):
        log = open(self.tmp / f"redis-cluster-{i}.log", "a")
        self.procs[i] = subprocess.Popen(["sh", str(REDIS_CLUSTER_SCRIPT), "redis"], env=self.env(i), stdout=log, stderr=subprocess.STDOUT)

    def start_all(self):
        for i in range(len(NAMES)):
            self.start(i)
        for i in range(len(NAMES)):
            wait_for(f"node {i} to answer", lambda: self.cli(i, "PING") == "PONG")

    def stop(self, i, sig=signal.SIGTERM):
        proc = self.procs.pop(i)
        proc.send_signal(sig)
        proc.wait(timeout=30)

    def run(self, role, i=0):
        return subprocess.run(["sh", str(REDIS_CLUSTER_SCRIPT), role], env=self.env(i), capture_output=True, text=True, timeout=120)

    def create(self):
        proc = self.run("create")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc.stdout

    def cli(self, i, *args):
        return cli(self.addresses[i], self.port, PASSWORD, *args)

    def cluster_info(self, i):
        return dict(line.split(":", 1) for line in self.cli(i, "CLUSTER", "INFO").replace("\r", "").splitlines() if ":" in line)

    def view(self, i):
        """CLUSTER NODES of node ``i``: ``{name announced: [(id, flags, primary id)]}``."""
        out = {}
        for line in self.cli(i, "CLUSTER", "NODES").splitlines():
            node_id, addr, flags, primary = line.split()[:4]
            name = (addr.split(",") + [""])[1]
            out.setdefault(name, []).append((node_id, set(flags.split(",")), primary))
        return out

    def ok(self):
        """Every node says the Cluster is ok and knows the six, none failed; every replica synced."""
        for i in range(len(NAMES)):
            if self.cluster_info(i).get("cluster_state") != "ok":
                return False
            view = self.view(i)
            if sorted(view) != sorted(NAMES) or any(len(v) != 1 or {"fail", "fail?"} & v[0][1] for v in view.values()):
                return False
            replication = info(self.addresses[i], self.port, PASSWORD)
            if replication.get("role") == "slave" and replication.get("master_link_status") != "up":
                return False
        return True

    def wait_ok(self):
        wait_for("the Cluster to be ok, every node known and synced", self.ok, timeout=40)

    def primaries(self):
        """``{primary index: replica index}`` as node 0 sees them."""
        view = {name: entries[0] for name, entries in self.view(0).items()}
        ids = {view[n][0]: NAMES.index(n) for n in view}
        out = {}
        for name, (node_id, flags, primary) in view.items():
            if "slave" in flags:
                assert ids[primary] not in out, "one replica per primary"
                out[ids[primary]] = NAMES.index(name)
        return out

    def client(self):
        """A Cluster client that starts from every node, as the services' URL names them all,
        and reaches them by the names they announce (resolved as the hosts file says, as the
        services resolve them in the cluster's DNS)."""
        def remap(address):
            host, port = address
            return (self.addresses[NAMES.index(host)] if host in NAMES else host, port)
        return RedisCluster(startup_nodes=[ClusterNode(a, self.port) for a in self.addresses], password=PASSWORD,
                            decode_responses=True, socket_timeout=2, address_remap=remap)

    def close(self):
        for proc in self.procs.values():
            proc.kill()
            proc.wait()


@pytest.fixture
def nodes(tmp_path):
    n = Nodes(tmp_path)
    yield n
    n.close()


def made(nodes):
    """Six nodes started and made a Cluster; returns what `create` printed."""
    nodes.start_all()
    out = nodes.create()
    nodes.wait_ok()
    return out


def write_keys(nodes, count=60):
    """Keys over every slot range, held by every replica before this returns."""
    with nodes.client() as client:
        for k in range(count):
            assert client.set(f"key-{k}", str(k))
    for primary in nodes.primaries():
        assert nodes.cli(primary, "WAIT", "1", "5000") == "1"


def assert_keys(nodes, count=60):
    with nodes.client() as client:
        assert [client.get(f"key-{k}") for k in range(count)] == [str(k) for k in range(count)]


def test_create_makes_three_primaries_with_a_replica_each_once(nodes):
    nodes.start_all()
    assert nodes.run("ready", 0).returncode != 0, "not ready before there is a Cluster"
    assert "NOAUTH" in cli(nodes.addresses[0], nodes.port, None, "PING"), "the nodes require the password"
    out = nodes.create()
    assert "making the Cluster" in out
    nodes.wait_ok()
    pairs = nodes.primaries()
    assert len(pairs) == 3 and len(set(pairs) | set(pairs.values())) == 6, pairs
    for i in range(6):
        wait_for(f"node {i} ready", lambda: nodes.run("ready", i).returncode == 0)
    # Clients are sent to the names, not to the addresses: in the slot map, and when they ask a
    # node for a key of another's.
    with redis.Redis(host=nodes.addresses[0], port=nodes.port, password=PASSWORD, decode_responses=True) as r:
        slots = r.cluster("slots")
    # Each range: its first and last slot, then the nodes that serve it, each [endpoint, port, id, ...].
    endpoints = {node[0] for served in slots for node in served[2:]}
    assert len(endpoints) == 3 and endpoints <= set(NAMES), endpoints
    moved = {nodes.cli(0, "GET", f"key-{k}").split(" ")[-1] for k in range(30)} - {""}
    assert moved and moved <= {f"{n}:{nodes.port}" for n in NAMES}, moved
    write_keys(nodes)
    for primary in pairs:
        assert int(nodes.cli(primary, "DBSIZE")) > 0, "keys spread over every primary"
    ids = [nodes.cli(i, "CLUSTER", "MYID") for i in range(6)]
    # Again (every `kubectl apply`, every `docker compose up`): nothing is made, nothing changes.
    again = nodes.create()
    assert "making" not in again and "joins" not in again and "the Cluster is ok" in again
    assert [nodes.cli(i, "CLUSTER", "MYID") for i in range(6)] == ids and nodes.primaries() == pairs
    assert_keys(nodes)
    for i in range(6):
        assert nodes.cli(i, "CONFIG", "GET", "appendfsync").split() == ["appendfsync", "everysec"]
        assert (nodes.tmp / f"redis-cluster-{i}" / "redis.conf").stat().st_mode & 0o077 == 0, "the config file is the owner's only"


def test_pre_stop_hands_a_primary_over_without_losing_a_write(nodes):
    made(nodes)
    write_keys(nodes)
    primary, replica = next(iter(nodes.primaries().items()))
    # A replica's hook does nothing.
    assert nodes.run("pre-stop", replica).returncode == 0
    assert info(nodes.addresses[replica], nodes.port, PASSWORD)["role"] == "slave"
    proc = nodes.run("pre-stop", primary)
    assert proc.returncode == 0, proc.stderr
    assert info(nodes.addresses[primary], nodes.port, PASSWORD)["role"] == "slave", "pre-stop returns once the slots are handed over"
    assert info(nodes.addresses[replica], nodes.port, PASSWORD)["role"] == "master"
    nodes.stop(primary)
    assert_keys(nodes)
    nodes.start(primary)
    nodes.wait_ok()
    assert nodes.primaries()[replica] == primary, "the old primary comes back as the replica"


def test_a_restart_of_every_node_on_new_addresses_finds_the_cluster_again(nodes):
    """As a namespace restarted, or `docker compose down` then `up`: every node stops, and comes
    back under its name at an address none had."""
    made(nodes)
    write_keys(nodes)
    pairs = nodes.primaries()
    for i in range(6):
        nodes.stop(i)
    nodes.readdress(2)
    nodes.start_all()
    nodes.wait_ok()
    assert nodes.primaries() == pairs
    assert_keys(nodes)
    for i in range(6):
        assert nodes.addresses[i] in (nodes.data_dir(i) / "nodes.conf").read_text()


def test_a_node_that_lost_its_volume_joins_again_as_a_replica(nodes):
    made(nodes)
    write_keys(nodes)
    # The first of NODES (a primary once made): `create` asks the nodes in that order, and the
    # node added back does not know its own old entry.
    pairs = nodes.primaries()
    primary = min(pairs)
    replica = pairs[primary]
    nodes.stop(primary, signal.SIGKILL)
    wait_for("its replica promoted", lambda: info(nodes.addresses[replica], nodes.port, PASSWORD).get("role") == "master", timeout=30)
    shutil.rmtree(nodes.data_dir(primary))
    nodes.start(primary)
    wait_for("the new node to answer", lambda: nodes.cli(primary, "PING") == "PONG")
    assert nodes.cluster_info(primary)["cluster_known_nodes"] == "1", "alone, with a new id"
    out = nodes.create()
    assert f"{NAMES[primary]} joins the Cluster as a replica" in out and "forgot" in out and "making" not in out
    nodes.wait_ok()
    assert nodes.primaries()[replica] == primary
    assert_keys(nodes)


def test_a_creation_cut_short_is_made_again(nodes):
    nodes.start_all()
    # Two nodes met, no slot served yet (a Job stopped in the middle of redis-cli --cluster create).
    assert nodes.cli(1, "CLUSTER", "MEET", nodes.addresses[0], str(nodes.port), str(nodes.bus_port)) == "OK"
    wait_for("the two nodes to know each other", lambda: nodes.cluster_info(0)["cluster_known_nodes"] == "2")
    assert "making the Cluster" in nodes.create()
    nodes.wait_ok()
    write_keys(nodes)


def test_create_makes_no_cluster_of_a_node_that_holds_keys_or_without_every_node(nodes):
    # redis-cluster-0's volume holds a single Redis' keys (its append-only file).
    data = nodes.data_dir(0)
    data.mkdir(parents=True)
    plain = subprocess.Popen([redis_server_binary(), "--port", str(nodes.port), "--bind", nodes.addresses[0], "--dir", str(data),
                              "--appendonly", "yes"], stdout=subprocess.DEVNULL)
    try:
        wait_for("a plain Redis", lambda: cli(nodes.addresses[0], nodes.port, None, "SET", "old", "1") == "OK")
    finally:
        plain.terminate()
        plain.wait(timeout=30)
    nodes.start(0)
    wait_for("node 0 to answer", lambda: nodes.cli(0, "PING") == "PONG")
    # Not every node answers: nothing is made.
    env_wait = dict(nodes.env(0), CREATE_WAIT="2")
    proc = subprocess.run(["sh", str(REDIS_CLUSTER_SCRIPT), "create"], env=env_wait, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "no answer from" in proc.stderr, proc.stderr
    for i in range(1, 6):
        nodes.start(i)
    for i in range(6):
        wait_for(f"node {i} to answer", lambda: nodes.cli(i, "PING") == "PONG")
    proc = nodes.run("create")
    assert proc.returncode != 0 and f"{NAMES[0]} holds keys" in proc.stderr, proc.stderr
    for i in range(1, 6):
        assert nodes.cluster_info(i)["cluster_known_nodes"] == "1", "no Cluster made"


@pytest.mark.parametrize("source", ["file", "environment"])
def test_the_password_is_never_on_a_command_line_nor_in_the_servers_environment(source, tmp_path):
    assert_password_kept_private(REDIS_CLUSTER_SCRIPT, "redis", "redis-cluster-0", PASSWORD, source, tmp_path)
