"""The redis-sentinel component against the services' contract: its Sentinels monitor the
master name of the services' URL (the Secret's redis+sentinel:// URL, as docs/deploy.md says to
make it), on the port its headless Service exposes, with a quorum of 2 of 3; its Redis pods get
requirepass and masterauth from the Secret's file.  The configs are the ones the rendered
ConfigMap's script writes (run here, with redis-server and redis-cli replaced by recorders;
test_redis_ha_script.py runs it for real).  What every Redis choice shares is in
test_redis_choices.py."""
from redis_setup import (
    PASSWORD,
    REDIS_HA_SCRIPT,
    SENTINEL,
    choice,
    directive,
    documented_url,
    headless_service,
    parse_sentinel_url,
    run_pod,
    script_default,
    script_of,
)
from support.deploy import container, workload


def sentinel_objects(rendered):
    """The render's objects with the redis-sentinel component on, else None (nothing to check)."""
    return rendered["objects"] if choice(rendered["components"]) == SENTINEL else None


def test_the_pods_run_the_script_of_the_repository(rendered):
    objects = sentinel_objects(rendered)
    if objects is None:
        return
    for name, role in (("redis", "redis"), (SENTINEL, "sentinel")):
        script, run_role = script_of(objects, name)
        assert script == REDIS_HA_SCRIPT.read_text() and run_role == role
    # A Redis pod may wait START_WAIT for the Sentinels, then as long for its primary, before
    # redis-server listens: a startup probe covers it (else liveness restarts the waiting pod).
    startup = container(objects, "redis")["startupProbe"]
    assert startup["tcpSocket"]["port"] == "redis"
    budget = startup.get("periodSeconds", 10) * startup.get("failureThreshold", 3)
    assert budget > 2 * int(script_default("START_WAIT")) + 10, f"startup probe budget {budget} s"
    hook = container(objects, "redis")["lifecycle"]["preStop"]["exec"]["command"]
    assert hook == container(objects, "redis")["command"][:2] + ["pre-stop"]
    grace = workload(objects, "redis")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > 20 + 10, "the preStop hook may wait 20 s for the handover, then Redis writes its AOF"


def test_each_redis_pod_gets_the_password_from_the_file_and_replicates_the_first(rendered, tmp_path):
    objects = sentinel_objects(rendered)
    if objects is None:
        return
    sts = workload(objects, "redis")
    replicas = sts["spec"]["replicas"]
    assert replicas == 3
    svc = headless_service(objects, "redis")
    (port,) = [p["containerPort"] for p in container(objects, "redis")["ports"]]
    assert [p["port"] for p in svc["spec"]["ports"]] == [port]
    mounts = {m["mountPath"]: m["name"] for m in container(objects, "redis")["volumeMounts"]}
    claims = {t["metadata"]["name"] for t in sts["spec"]["volumeClaimTemplates"]}
    for i in range(replicas):
        tmp = tmp_path / str(i)
        tmp.mkdir()
        out = run_pod(objects, "redis", i, tmp)
        conf = out["conf"]
        assert directive(conf, "requirepass") == [[PASSWORD]]
        assert directive(conf, "masterauth") == [[PASSWORD]], "replicas (and a demoted primary) authenticate to the primary"
        assert directive(conf, "port") == [[str(port)]]
        me = f"redis-{i}.{svc['metadata']['name']}"
        assert directive(conf, "replica-announce-ip") == [[me]]
        first = f"redis-0.{svc['metadata']['name']}"
        assert directive(conf, "replicaof") == ([] if i == 0 else [[first, str(port)]])
        (min_replicas,) = directive(conf, "min-replicas-to-write")
        assert 1 <= int(min_replicas[0]) < replicas, "one replica down must not stop the writes"
        assert directive(conf, "min-replicas-max-lag") == [["10"]]
        # Persistence as everywhere (docs/durability.md), on the pod's volume.
        args = out["args"]
        assert args[1:] == ["--dir", args[2], "--appendonly", "yes", "--appendfsync", "everysec"]
        assert mounts[args[2]] in claims, f"{args[2]} is no persistent volume of the pod"


def test_the_sentinels_monitor_what_the_services_url_names(rendered, tmp_path):
    objects = sentinel_objects(rendered)
    if objects is None:
        return
    sts = workload(objects, SENTINEL)
    count = sts["spec"]["replicas"]
    svc = headless_service(objects, SENTINEL)
    assert svc["metadata"]["name"] == SENTINEL
    (sentinel_port,) = [p["containerPort"] for p in container(objects, SENTINEL)["ports"]]
    assert [(p["port"], p["targetPort"]) for p in svc["spec"]["ports"]] == [(sentinel_port, "sentinel")]
    redis_svc = headless_service(objects, "redis")
    (redis_port,) = [p["containerPort"] for p in container(objects, "redis")["ports"]]
    monitors = set()
    for i in range(count):
        tmp = tmp_path / str(i)
        tmp.mkdir()
        out = run_pod(objects, SENTINEL, i, tmp)
        conf = out["conf"]
        assert out["conf_path"] == str(tmp / f"{SENTINEL}-{i}" / "data" / "sentinel.conf"), "the config file in DATA_DIR"
        assert directive(conf, "port") == [[str(sentinel_port)]]
        # The services' one password opens the Sentinels too; a Sentinel gives its requirepass to
        # the other Sentinels (so they must all have the same).
        assert directive(conf, "requirepass") == [[PASSWORD]]
        assert directive(conf, "sentinel", "resolve-hostnames") == [["yes"]]
        assert directive(conf, "sentinel", "announce-hostnames") == [["yes"]]
        assert directive(conf, "sentinel", "announce-ip") == [[f"{SENTINEL}-{i}.{svc['metadata']['name']}"]]
        assert directive(conf, "sentinel", "announce-port") == [[str(sentinel_port)]]
        keys = [tuple(line[:2]) for line in conf]
        assert keys.index(("sentinel", "resolve-hostnames")) < keys.index(("sentinel", "monitor")), "resolve-hostnames before a monitor that names a host"
        (monitor,) = directive(conf, "sentinel", "monitor")
        name, host, port, quorum = monitor
        monitors.add((name, host, int(port), int(quorum)))
        assert directive(conf, "sentinel", "auth-pass") == [[name, PASSWORD]]
        assert directive(conf, "sentinel", "down-after-milliseconds") == [[name, "5000"]]
        assert directive(conf, "sentinel", "failover-timeout") == [[name, "60000"]]
    (name, host, port, quorum) = monitors.pop()
    assert not monitors, "every Sentinel monitors the same primary"
    assert (host, port) == (f"redis-0.{redis_svc['metadata']['name']}", redis_port)
    assert (quorum, count) == (2, 3) and count // 2 < quorum <= count, "a majority of the Sentinels"
    # The URL the services get (the Secret's key url, made as docs/deploy.md says).
    password, hosts, service_name, db = parse_sentinel_url(documented_url("redis+sentinel"))
    assert password == "$P", "the documented URL takes the password from the shell variable"
    assert hosts == [(f"{SENTINEL}-{i}.{svc['metadata']['name']}", sentinel_port) for i in range(count)]
    assert service_name == name
    assert db == 0


def test_each_sentinel_keeps_its_config_file_on_a_volume_of_its_own(rendered):
    """redis-ha.sh writes a Sentinel's config file (what it learns: the current primary, the
    epochs) in DATA_DIR: in the pod, a volume of the StatefulSet's claims (one per pod, kept
    across restarts), not an emptyDir; small, ReadWriteOnce, writable."""
    objects = sentinel_objects(rendered)
    if objects is None:
        return
    sts = workload(objects, SENTINEL)
    data_dir = script_default("DATA_DIR")
    mounts = {m["mountPath"]: m for m in container(objects, SENTINEL)["volumeMounts"]}
    assert data_dir in mounts and not mounts[data_dir].get("readOnly"), f"{SENTINEL}: nothing mounted at {data_dir}"
    templates = {t["metadata"]["name"]: t for t in sts["spec"].get("volumeClaimTemplates", [])}
    name = mounts[data_dir]["name"]
    assert name in templates, f"{SENTINEL}: {data_dir} is no volume of the StatefulSet's claims"
    assert name not in {v["name"] for v in sts["spec"]["template"]["spec"].get("volumes", [])}, "a pod volume would hide the claim"
    spec = templates[name]["spec"]
    assert spec["accessModes"] == ["ReadWriteOnce"]
    size = spec["resources"]["requests"]["storage"]
    assert size.endswith("Mi") and int(size[:-2]) <= 64, f"a config file needs no {size}"
