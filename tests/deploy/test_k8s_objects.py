"""Checks across the objects of each render (kube-score / kube-linter style: what checkov, which
looks at one object at a time, cannot see), over every overlay x optional components:
Services -> pods and ports, probes -> container ports, PodDisruptionBudgets -> workloads,
HorizontalPodAutoscalers -> Deployments (and no replicas field to fight them), spreading of the
workloads that run several pods, NetworkPolicies -> pods and ports."""
from redis_setup import REDIS_TIERS
from support.deploy import (
    find,
    hpas_of,
    port_on,
    replica_range,
    selected_workloads,
    workloads,
)

PROBES = ("livenessProbe", "readinessProbe", "startupProbe")


def name_of(obj):
    return f"{obj['kind']}/{obj['metadata']['name']}"


def containers(w):
    return w["spec"]["template"]["spec"]["containers"]


def test_every_service_selects_pods_that_have_its_target_ports(rendered):
    objects = rendered["objects"]
    services = find(objects, "Service")
    assert services
    for svc in services:
        selected = selected_workloads(objects, svc["spec"].get("selector"), svc)
        assert selected, f"{name_of(svc)} selects no pod template"
        for port in svc["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            for w in selected:
                assert any(port_on(c, target) for c in containers(w)), \
                    f"{name_of(svc)} port {port.get('name', port['port'])}: targetPort {target!r} is no port of {name_of(w)}"


def test_every_probe_port_exists_on_its_container(rendered):
    checked = 0
    for w in workloads(rendered["objects"]):
        for c in containers(w):
            for probe in PROBES:
                handler = c.get(probe, {})
                for kind in ("httpGet", "tcpSocket", "grpc"):
                    if kind in handler:
                        checked += 1
                        assert port_on(c, handler[kind]["port"]), \
                            f"{name_of(w)} {c['name']} {probe}: port {handler[kind]['port']!r} is no port of the container"
    assert checked


def test_every_pdb_selects_one_workload_and_every_multi_pod_workload_has_one(rendered):
    objects = rendered["objects"]
    budgets = {}
    for pdb in find(objects, "PodDisruptionBudget"):
        selected = selected_workloads(objects, pdb["spec"].get("selector"), pdb)
        assert len(selected) == 1, f"{name_of(pdb)} selects {[name_of(w) for w in selected]}, not one workload"
        (w,) = selected
        budgets.setdefault(name_of(w), []).append(pdb)
        fewest, _ = replica_range(objects, w)
        spec = pdb["spec"]
        assert ("minAvailable" in spec) != ("maxUnavailable" in spec), f"{name_of(pdb)}: one of minAvailable, maxUnavailable"
        # A budget that no eviction can meet blocks every node drain (kube-score's check).
        if "maxUnavailable" in spec:
            assert spec["maxUnavailable"] not in (0, "0%"), f"{name_of(pdb)} allows no eviction"
        elif isinstance(spec["minAvailable"], int):
            assert spec["minAvailable"] < fewest, f"{name_of(pdb)}: minAvailable {spec['minAvailable']} with {fewest} pod(s) blocks drains"
    for w in workloads(objects):
        _, most = replica_range(objects, w)
        if most >= 2:
            assert len(budgets.get(name_of(w), [])) == 1, f"{name_of(w)} runs up to {most} pods: it needs one PodDisruptionBudget"


def test_every_hpa_targets_a_deployment_without_replicas(rendered):
    objects = rendered["objects"]
    hpas = find(objects, "HorizontalPodAutoscaler")
    assert hpas
    for hpa in hpas:
        assert hpa["apiVersion"] == "autoscaling/v2", name_of(hpa)
        ref = hpa["spec"]["scaleTargetRef"]
        targets = [w for w in find(objects, ref["kind"], ref["name"]) if w["metadata"].get("namespace") == hpa["metadata"].get("namespace")]
        assert ref["kind"] == "Deployment" and ref.get("apiVersion") == "apps/v1" and len(targets) == 1, \
            f"{name_of(hpa)}: scaleTargetRef {ref} names no Deployment of this render"
        (target,) = targets
        assert "replicas" not in target["spec"], f"{name_of(target)} sets replicas, which its autoscaler owns"
        assert len(hpas_of(objects, target)) == 1, f"{name_of(target)} has several autoscalers"
        spec = hpa["spec"]
        assert 1 <= spec.get("minReplicas", 1) <= spec["maxReplicas"], f"{name_of(hpa)}: min {spec.get('minReplicas')} max {spec['maxReplicas']}"
        # A Utilization target is a share of the request: every container needs one.
        for metric in spec.get("metrics", []):
            if metric["type"] == "Resource" and metric["resource"]["target"]["type"] == "Utilization":
                resource = metric["resource"]["name"]
                for c in containers(target):
                    assert resource in c.get("resources", {}).get("requests", {}), \
                        f"{name_of(target)} {c['name']}: no {resource} request for {name_of(hpa)}"


def test_every_stateless_deployment_is_autoscaled(rendered):
    """auth, files, chat, gateway have an autoscaler; the StatefulSets (Redis, one pod and its
    volume or three with Sentinels; the Sentinels; the six nodes of a Redis Cluster) do not: they
    say how many pods they run."""
    objects = rendered["objects"]
    for w in workloads(objects):
        if w["kind"] == "Deployment":
            assert len(hpas_of(objects, w)) == 1, f"{name_of(w)} has no HorizontalPodAutoscaler"
        else:
            assert not hpas_of(objects, w) and w["spec"]["replicas"] in (1, 3, 6), name_of(w)


def test_multi_pod_workloads_spread_over_zones_and_nodes(rendered):
    """Every workload that may run several pods spreads them over zones and nodes, preferring
    (ScheduleAnyway) so a one-node dev cluster still schedules them all."""
    objects = rendered["objects"]
    for w in workloads(objects):
        _, most = replica_range(objects, w)
        if most < 2:
            continue
        template = w["spec"]["template"]
        constraints = {c["topologyKey"]: c for c in template["spec"].get("topologySpreadConstraints", [])}
        assert set(constraints) >= {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}, \
            f"{name_of(w)} runs up to {most} pods and does not spread them over zones and nodes"
        for key, c in constraints.items():
            assert c["whenUnsatisfiable"] == "ScheduleAnyway", f"{name_of(w)} {key}: a hard constraint leaves pods Pending on a small cluster"
            assert c["maxSkew"] >= 1
            assert selected_workloads(objects, c["labelSelector"], w) == [w], \
                f"{name_of(w)} {key}: the labelSelector must select exactly this workload's pods"


def is_default_deny(policy):
    spec = policy["spec"]
    return spec["podSelector"] == {} and "Ingress" in spec.get("policyTypes", []) and not spec.get("ingress")


def test_network_policies_cover_every_pod_and_name_real_ports(rendered):
    objects = rendered["objects"]
    policies = find(objects, "NetworkPolicy")
    if "network-policies" not in {c.name for c in rendered["components"]}:
        # Only the Redis tier's own policies (the redis-sentinel or redis-cluster component's),
        # selecting only it.
        tiers = set().union(*REDIS_TIERS.values())
        for policy in policies:
            selected = selected_workloads(objects, policy["spec"]["podSelector"], policy)
            assert selected and {w["metadata"]["name"] for w in selected} <= tiers, name_of(policy)
        if not policies:
            return
    else:
        assert any(is_default_deny(p) for p in policies), "no default-deny ingress policy"
    allowing = [p for p in policies if not is_default_deny(p)]
    for w in workloads(objects) if any(is_default_deny(p) for p in policies) else []:
        assert any(w in selected_workloads(objects, p["spec"]["podSelector"], p) for p in allowing), \
            f"{name_of(w)}: no NetworkPolicy lets anything reach it"
    for policy in allowing:
        selected = selected_workloads(objects, policy["spec"]["podSelector"], policy)
        assert selected, f"{name_of(policy)} selects no pod"
        for rule in policy["spec"].get("ingress", []):
            for peer in rule.get("from", []):
                if "podSelector" in peer and "namespaceSelector" not in peer:
                    assert selected_workloads(objects, peer["podSelector"], policy), \
                        f"{name_of(policy)}: a peer podSelector that selects no pod: {peer}"
            for rule_port in rule.get("ports", []):
                for w in selected:
                    assert any(port_on(c, rule_port["port"]) for c in containers(w)), \
                        f"{name_of(policy)} allows port {rule_port['port']!r}, which {name_of(w)} does not have"
