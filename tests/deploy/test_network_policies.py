"""The network-policies component and the Redis choices: who may reach whom, computed from the
rendered NetworkPolicies for every render.  Without the component nothing is enforced, except
that the redis-sentinel and redis-cluster components always close their Redis pods (and
Sentinels) to all but their flows; external-redis leaves no Redis pod and no policy for one."""
from redis_setup import CLUSTER, EXTERNAL, REDIS_CLUSTER_SCRIPT, REDIS_TIERS, SENTINEL, choice, script_default
from support.deploy import GATEWAY, SERVICES, find, gateway_image_env, gunicorn_port, reachable, workloads

REDIS_PORT, SENTINEL_PORT = 6379, 26379
#: A Cluster node's bus port, where the nodes talk to each other (redis-cluster.sh's cluster-port).
BUS_PORT = int(script_default("BUS_PORT", REDIS_CLUSTER_SCRIPT))


def redis_flows(redis_choice):
    """What the Redis tier needs: the services reach Redis; with Sentinels, the services and the
    Sentinels reach the Sentinels, and the Sentinels and the Redis servers (replication) reach
    the Redis servers; with a Cluster, the services and the nodes (replication) reach the nodes,
    and the nodes only reach each other's bus (the Job that makes the Cluster is no workload:
    test_redis_cluster.py checks its flow)."""
    if redis_choice == EXTERNAL:
        return set()
    if redis_choice == CLUSTER:
        return ({(s, CLUSTER, REDIS_PORT) for s in SERVICES + (CLUSTER,)}
                | {(CLUSTER, CLUSTER, BUS_PORT)})
    flows = {(s, "redis", REDIS_PORT) for s in SERVICES}
    if redis_choice == SENTINEL:
        flows |= {(s, SENTINEL, SENTINEL_PORT) for s in SERVICES + (SENTINEL,)}
        flows |= {(s, "redis", REDIS_PORT) for s in ("redis", SENTINEL)}
    return flows


def test_network_policies(rendered):
    objects = rendered["objects"]
    allowed = reachable(objects)
    redis_choice = choice(rendered["components"])
    pods = {w["metadata"]["name"] for w in workloads(objects)}
    everyone = tuple(sorted(pods)) + ("outside",)
    redis_tier = set(REDIS_TIERS.get(redis_choice, ())) & pods
    if "network-policies" not in {c.name for c in rendered["components"]}:
        # Open, but for the Sentinel or Cluster setup's pods.
        ports = {(w["metadata"]["name"], p["containerPort"]) for w in workloads(objects)
                 for c in w["spec"]["template"]["spec"]["containers"] for p in c["ports"]}
        expected = {(src, dst, port) for src in everyone for dst, port in ports if dst not in redis_tier}
        expected |= redis_flows(redis_choice) if redis_tier else set()
        assert allowed == expected
        if redis_choice != EXTERNAL:
            assert ("outside", "redis", REDIS_PORT) in allowed or redis_tier
        return
    gateway_port = int(gateway_image_env()["GATEWAY_PORT"])
    expected = {(src, GATEWAY, gateway_port) for src in everyone}
    expected |= {(GATEWAY, s, gunicorn_port()) for s in SERVICES}
    expected |= redis_flows(redis_choice)
    assert allowed == expected


def test_external_redis_leaves_no_redis_pod_and_no_policy_for_one(rendered):
    objects = rendered["objects"]
    if choice(rendered["components"]) != EXTERNAL:
        return
    names = {w["metadata"]["name"] for w in workloads(objects)}
    assert names == set(SERVICES) | {GATEWAY}, names
    assert not [w for w in workloads(objects) for c in w["spec"]["template"]["spec"]["containers"] if c["image"].startswith("redis:")]
    for kind in ("Service", "ServiceAccount", "NetworkPolicy", "PodDisruptionBudget"):
        assert not [o for o in find(objects, kind) if o["metadata"]["name"].startswith("redis")], kind
    for policy in find(objects, "NetworkPolicy"):
        labels = policy["spec"]["podSelector"].get("matchLabels", {})
        assert labels.get("app.kubernetes.io/name") in (None, *SERVICES, GATEWAY), policy["metadata"]["name"]
