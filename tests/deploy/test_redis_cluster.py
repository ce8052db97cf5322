"""The Redis Cluster choice against the services' contract: in Kubernetes (every render with the
redis-cluster component) and in compose (docker-compose.yml with docker-compose.cluster.yml).

Every node runs the repository's redis/cluster/redis-cluster.sh, which gives it requirepass and
masterauth from the Secret's file (compose: REDIS_PASSWORD), cluster-enabled with nodes.conf on
its volume, the AOF as everywhere, its own stable name announced on the port and bus port its
container has; the Job (compose: the one-shot service) that makes the Cluster names exactly the
StatefulSet's (compose: the node services') nodes, enough of them for 3 primaries with their
replicas, and the policies let it in; the services' redis+cluster:// URL (docs/deploy.md's, for
the Secret; compose's REDIS_URL), read by the services' own parser, names every node on that
port; the base's single Redis is gone.  The configs are the ones the rendered ConfigMap's script
writes (run with redis-server replaced by a recorder; test_redis_cluster_script.py runs it for
real)."""
import copy
import re

import pytest
import yaml

from redis_setup import (
    CLUSTER,
    COMPOSE_CLUSTER_FILE,
    PASSWORD,
    REDIS_CLUSTER_SCRIPT,
    allowed_env as contract_allowed_env,
    choice,
    compose_override_config,
    contract_values_parse,
    directive,
    documented_url,
    headless_service,
    pod_and_container,
    run_pod,
    script_default,
    script_of,
    secret_file,
    written_config,
)
from support.deploy import (
    COMPOSE_TEST_ENV,
    SERVICES,
    compose,
    container,
    find,
    label_match,
    reachable,
    workload,
    workloads,
)
from webchat_common.redis_store import parse_cluster_url
from webchat_testing import PERSISTENT_ARGS
from webchat_testing.cluster import FULL_COVERAGE, SYNC_DELAY_S

#: The Job (compose: the one-shot service) that makes the Cluster.
JOB = "redis-cluster-create"
#: The nodes the script knows when nothing else is said: the Kubernetes component's.
NODES = script_default("NODES", REDIS_CLUSTER_SCRIPT).split()
REPLICAS_PER_PRIMARY = int(script_default("REPLICAS_PER_PRIMARY", REDIS_CLUSTER_SCRIPT))


def setting(name):
    return script_default(name, REDIS_CLUSTER_SCRIPT)


def cluster_objects(rendered):
    """The render's objects with the redis-cluster component on, else None (nothing to check)."""
    return rendered["objects"] if choice(rendered["components"]) == CLUSTER else None


def node_ports(c):
    """``{"redis": port, "bus": port}`` of a node's container."""
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert set(ports) == {"redis", "bus"}, ports
    return ports


def assert_node_config(out, name, port, bus_port, password):
    """What the script wrote and execs for node ``name``: the Cluster's settings, the password,
    the AOF as everywhere, its state (nodes.conf) beside its data."""
    conf, args = out["conf"], out["args"]
    assert directive(conf, "requirepass") == [[password]]
    assert directive(conf, "masterauth") == [[password]], "a replica authenticates to its primary"
    assert directive(conf, "port") == [[str(port)]]
    assert directive(conf, "cluster-enabled") == [["yes"]]
    assert directive(conf, "cluster-port") == [[str(bus_port)]], "the bus port the container and the policies have"
    # Clients are sent to the node's stable name, not to an address that changes with the pod.
    assert directive(conf, "cluster-announce-hostname") == [[name]]
    assert directive(conf, "cluster-preferred-endpoint-type") == [["hostname"]]
    assert directive(conf, "cluster-require-full-coverage") == [[FULL_COVERAGE]], "as the local Cluster (docs/cluster.md)"
    assert directive(conf, "repl-diskless-sync-delay") == [[str(SYNC_DELAY_S)]], "a replica syncs at once, as in the local Cluster"
    (timeout,) = directive(conf, "cluster-node-timeout")
    assert 2000 <= int(timeout[0]) <= 15000, f"cluster-node-timeout {timeout[0]} ms: a failover after seconds, not on a hiccup"
    # A primary whose one replica is down goes on taking writes (chat's acks wait for a replica
    # instead: CHAT_ACK_REPLICAS).
    assert not directive(conf, "min-replicas-to-write")
    assert args[1:] == ["--dir", args[2], *PERSISTENT_ARGS], "persistence as everywhere (docs/durability.md)"
    assert directive(conf, "cluster-config-file") == [[f"{args[2]}/nodes.conf"]], "the Cluster state beside the data"
    return args[2]


def assert_enough_nodes(count):
    """Three primaries at least (a majority of them elects a replica in a failed one's place),
    each with its replicas."""
    assert count % (1 + REPLICAS_PER_PRIMARY) == 0 and count // (1 + REPLICAS_PER_PRIMARY) >= 3, count


def assert_reads_its_secret_files(pod, c, name):
    """The pod's user can read the Secret files it mounts: Kubernetes makes them root's, with the
    pod's fsGroup as their group where it has one."""
    sc = pod["securityContext"]
    for volume in pod["volumes"]:
        if "secret" in volume:
            mode = volume["secret"].get("defaultMode", 0o644)
            by_group = mode & 0o040 and sc.get("fsGroup") in (sc.get("runAsGroup"), *sc.get("supplementalGroups", []))
            assert mode & 0o004 or by_group, f"{name}: uid {sc['runAsUser']} cannot read the Secret {volume['secret']['secretName']}"


# --- Kubernetes ---


def test_the_nodes_and_the_job_run_the_script_of_the_repository(rendered):
    objects = cluster_objects(rendered)
    if objects is None:
        return
    assert script_of(objects, CLUSTER) == (REDIS_CLUSTER_SCRIPT.read_text(), "redis")
    assert script_of(objects, JOB) == (REDIS_CLUSTER_SCRIPT.read_text(), "create")
    c = container(objects, CLUSTER)
    run = c["command"][:2]
    assert c["readinessProbe"]["exec"]["command"] == run + ["ready"]
    assert c["lifecycle"]["preStop"]["exec"]["command"] == run + ["pre-stop"]
    # A restarting node may wait START_WAIT for the other names before redis-server listens.
    startup = c["startupProbe"]
    assert startup["tcpSocket"]["port"] == "redis"
    budget = startup.get("periodSeconds", 10) * startup.get("failureThreshold", 3)
    assert budget > int(setting("START_WAIT")) + 10, f"startup probe budget {budget} s"
    # The readiness script makes two calls of at most 3 s each.
    assert c["readinessProbe"]["timeoutSeconds"] > 2 * 3
    spec = workload(objects, CLUSTER)["spec"]
    assert spec["template"]["spec"]["terminationGracePeriodSeconds"] > 20 + 10, \
        "the preStop hook may wait 20 s for the handover, then Redis writes its AOF"
    # Every node at once: the Job waits for all of them, and after a restart of everything each
    # node finds the others by their names.
    assert spec["podManagementPolicy"] == "Parallel"


def test_each_node_gets_the_cluster_config_from_the_secret_and_its_volume(rendered, tmp_path):
    objects = cluster_objects(rendered)
    if objects is None:
        return
    sts = workload(objects, CLUSTER)
    replicas = sts["spec"]["replicas"]
    assert_enough_nodes(replicas)
    svc = headless_service(objects, CLUSTER)
    ports = node_ports(container(objects, CLUSTER))
    assert [(p["port"], p["targetPort"]) for p in svc["spec"]["ports"]] == [(ports["redis"], "redis")]
    mounts = {m["mountPath"]: m for m in container(objects, CLUSTER)["volumeMounts"]}
    claims = {t["metadata"]["name"] for t in sts["spec"]["volumeClaimTemplates"]}
    names = [f"{CLUSTER}-{i}.{svc['metadata']['name']}" for i in range(replicas)]
    assert names == NODES, "the nodes the Job makes the Cluster of are the StatefulSet's pods"
    for i in range(replicas):
        tmp = tmp_path / str(i)
        tmp.mkdir()
        data = assert_node_config(run_pod(objects, CLUSTER, i, tmp), names[i], ports["redis"], ports["bus"], PASSWORD)
        assert mounts[data]["name"] in claims and not mounts[data].get("readOnly"), f"{data} is no volume of the pod's own"


def test_the_job_makes_the_cluster_of_the_nodes_and_may_reach_them(rendered):
    objects = cluster_objects(rendered)
    if objects is None:
        return
    (job,) = find(objects, "Job", JOB)
    pod, c = pod_and_container(objects, JOB)
    assert secret_file(objects, JOB) == secret_file(objects, CLUSTER) == setting("PASSWORD_FILE")
    for name in (CLUSTER, JOB):
        assert_reads_its_secret_files(*pod_and_container(objects, name), name)
    assert job["spec"]["backoffLimit"] >= 1 and pod["restartPolicy"] in ("OnFailure", "Never")
    # Deleted once finished, so the next `kubectl apply` makes it again (it adds back a node
    # that lost its volume; a Job's template cannot change in place).
    assert 0 < job["spec"]["ttlSecondsAfterFinished"] <= 24 * 3600
    # Locked down as every pod (test_k8s.py checks the workloads; a Job is none).
    assert c["image"] == container(objects, CLUSTER)["image"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod["automountServiceAccountToken"] is False and pod["enableServiceLinks"] is False
    (account,) = find(objects, "ServiceAccount", pod["serviceAccountName"])
    assert account["metadata"]["name"] == JOB and account["automountServiceAccountToken"] is False
    csc = c["securityContext"]
    assert csc["allowPrivilegeEscalation"] is False and csc["readOnlyRootFilesystem"] is True and csc["capabilities"]["drop"] == ["ALL"]
    assert {"cpu", "memory"} <= set(c["resources"]["requests"]) and {"cpu", "memory"} <= set(c["resources"]["limits"])
    assert "/tmp" in {m["mountPath"] for m in c["volumeMounts"]}
    # Its pod is none of the nodes (no Service, budget or policy of theirs counts it).
    labels = job["spec"]["template"]["metadata"]["labels"]
    assert not label_match(workload(objects, CLUSTER)["spec"]["selector"], labels)
    # The policies let it reach the nodes' port, not their bus.  support.deploy.reachable
    # evaluates the policies for workloads: the Job's pod is given to it as one.
    as_workload = {"kind": "Deployment", "metadata": {"name": JOB}, "spec": {"template": copy.deepcopy(job["spec"]["template"])}}
    as_workload["spec"]["template"]["spec"]["containers"][0]["ports"] = []
    flows = {(dst, port) for src, dst, port in reachable([*objects, as_workload]) if src == JOB}
    ports = node_ports(container(objects, CLUSTER))
    assert (CLUSTER, ports["redis"]) in flows and (CLUSTER, ports["bus"]) not in flows


def test_the_services_url_names_every_node():
    """The Secret's url as docs/deploy.md says to make it: every node, by its name, on its port,
    read by the services' own parser."""
    url = parse_cluster_url(documented_url("redis+cluster"))
    assert url.password == "$P", "the documented URL takes the password from the shell variable"
    assert [tuple(n) for n in url.nodes] == [(name, int(setting("REDIS_PORT"))) for name in NODES]


def test_the_single_redis_is_gone(rendered):
    objects = cluster_objects(rendered)
    if objects is None:
        return
    assert [w["metadata"]["name"] for w in workloads(objects) if w["metadata"]["name"].startswith("redis")] == [CLUSTER]
    for kind in ("Service", "ServiceAccount", "NetworkPolicy", "PodDisruptionBudget"):
        assert not find(objects, kind, "redis"), kind
    for w in workloads(objects):
        for c in w["spec"]["template"]["spec"]["containers"]:
            assert not c["image"].startswith("redis:") or w["metadata"]["name"] == CLUSTER, w["metadata"]["name"]


# --- compose: docker-compose.yml with docker-compose.cluster.yml ---


@pytest.fixture(scope="module")
def cluster_compose(tmp_path_factory):
    proc = compose_override_config(COMPOSE_CLUSTER_FILE, COMPOSE_TEST_ENV, tmp_path_factory.mktemp("compose-cluster"))
    assert proc.returncode == 0, proc.stderr
    return yaml.safe_load(proc.stdout)


def compose_nodes(config):
    """The node services, in the order of the NODES every one of them (and the one-shot) gets."""
    services = config["services"]
    lists = {str(spec.get("environment", {}).get("NODES")) for name, spec in services.items() if name.startswith("redis")}
    (nodes,) = lists
    return nodes.split()


def test_compose_cluster_nodes_are_locked_down_and_run_the_script(cluster_compose):
    services = cluster_compose["services"]
    nodes = compose_nodes(cluster_compose)
    assert nodes[0] == "redis", "docker-compose.yml's redis is the first node (compose cannot take it away)"
    assert_enough_nodes(len(nodes))
    assert set(services) == set(compose()["services"]) | set(nodes) | {JOB}
    data = []
    for name in nodes + [JOB]:
        spec = services[name]
        assert spec["image"] == compose()["services"]["redis"]["image"], name
        assert spec.get("read_only") is True and spec.get("tmpfs") == ["/tmp"], name
        assert spec.get("cap_drop") == ["ALL"] and spec.get("security_opt") == ["no-new-privileges:true"], name
        assert set(spec["networks"]) == {"back"} and not spec.get("ports"), f"{name}: only on the services' network"
        mounts = {v["target"]: v for v in spec["volumes"]}
        sh, script, role = spec["command"]
        assert sh == "sh" and role == ("create" if name == JOB else "redis"), name
        assert mounts[script]["source"] == str(REDIS_CLUSTER_SCRIPT) and mounts[script].get("read_only"), name
        if name == JOB:
            continue
        assert spec["restart"] == "unless-stopped" and spec["healthcheck"]["test"], name
        # The node's data and nodes.conf on a named volume of its own, which outlives the container.
        assert mounts[setting("DATA_DIR")]["type"] == "volume", name
        data.append(mounts[setting("DATA_DIR")]["source"])
        # They start together (after a `down`, each finds the others by name).
        assert not set(spec.get("depends_on") or {}) & set(nodes), f"{name} waits for another node"
    assert len(set(data)) == len(nodes), f"one data volume each: {data}"
    base = {v["target"]: v["source"] for v in compose()["services"]["redis"]["volumes"]}
    assert base[setting("DATA_DIR")] not in data, "the single Redis' volume (its keys) is no node's"
    # The one-shot runs once the nodes answer, at every `up`; the services once it is done.
    job = services[JOB]
    assert job["restart"] == "no"
    assert {n: d["condition"] for n, d in job["depends_on"].items()} == {n: "service_healthy" for n in nodes}
    for name in SERVICES:
        assert services[name]["depends_on"][JOB]["condition"] == "service_completed_successfully", name


def test_compose_cluster_services_url_names_every_node(cluster_compose, tmp_path):
    """The services' URL names every node on the port it listens on, with the password; every
    node announces the name compose gives it; chat waits for a replica."""
    services = cluster_compose["services"]
    nodes = compose_nodes(cluster_compose)
    password = COMPOSE_TEST_ENV["REDIS_PASSWORD"]
    script = REDIS_CLUSTER_SCRIPT.read_text()
    assert {str(v) for k, v in services[JOB]["environment"].items() if k == "REDIS_PASSWORD"} == {password}
    ports = set()
    for name in nodes:
        env = {k: str(v) for k, v in services[name]["environment"].items()}
        assert env["ANNOUNCE_HOST"] == name and env["REDIS_PASSWORD"] == password
        out = written_config(script, "redis", tmp_path, name, tmp_path / "unused", **env)
        assert out["password_file"] is None, "compose gives the password in REDIS_PASSWORD"
        (port,) = directive(out["conf"], "port")
        ports.add(int(port[0]))
        assert_node_config(out, name, port[0], setting("BUS_PORT"), password)
    (port,) = ports
    for name in SERVICES:
        env = {k: str(v) for k, v in services[name]["environment"].items()}
        url = parse_cluster_url(env["REDIS_URL"])
        assert url.password == password and [tuple(n) for n in url.nodes] == [(n, port) for n in nodes], name
        unknown = set(env) - contract_allowed_env(name)
        assert not unknown, f"docker-compose.cluster.yml sets variables {name} does not read: {unknown}"
        assert contract_values_parse(name, env)
        assert env.get("CHAT_ACK_REPLICAS") == ("1" if name == "chat" else None), name
    raw = COMPOSE_CLUSTER_FILE.read_text()
    assert re.findall(r"\$\{REDIS_PASSWORD:\?", raw), "the password from the environment, required"
