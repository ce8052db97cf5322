"""The Redis choices in Kubernetes against the services' contract and against each other: the
redis-sentinel component's Sentinels monitor the master name of the services' URL (the Secret's
redis+sentinel:// URL, as docs/deploy.md says to make it), on the port its headless Service
exposes, with a quorum of 2 of 3; its Redis pods get requirepass and masterauth from the
Secret's file; chat waits for a replica; the choices are never combined and come after
network-policies.  The configs are the ones the rendered ConfigMap's script writes (run here,
with redis-server and redis-cli replaced by recorders; test_redis_ha_script.py runs it for real)."""
import os
import re
import subprocess

import yaml

from redis_setup import (
    CONTRACT_SETTINGS,
    EXTERNAL,
    REDIS_CHOICES,
    REDIS_HA_SCRIPT,
    SENTINEL,
    choice,
    parse_sentinel_url,
    script_default,
    written_config,
)
from support.deploy import (
    DEPLOY_DOC,
    K8S,
    OVERLAYS,
    SERVICES,
    container,
    find,
    k8s_env,
    kustomization,
    kustomize_command,
    settings,
    workload,
)

PASSWORD = "test-redis-password"


def sentinel_objects(rendered):
    """The render's objects with the redis-sentinel component on, else None (nothing to check)."""
    return rendered["objects"] if choice(rendered["components"]) == SENTINEL else None


def script_of(objects, name):
    """The script a workload's container runs: ``(script text, role)``, from the ConfigMap
    volume its command names."""
    pod = workload(objects, name)["spec"]["template"]["spec"]
    c = container(objects, name)
    assert c["command"][0] == "sh" and len(c["command"]) == 3, c["command"]
    _, path, role = c["command"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    (mount,) = [m for m in c["volumeMounts"] if path.startswith(m["mountPath"].rstrip("/") + "/")]
    (cm,) = find(objects, "ConfigMap", volumes[mount["name"]]["configMap"]["name"])
    return cm["data"][path[len(mount["mountPath"].rstrip("/")) + 1:]], role


def secret_file(objects, name, key="password"):
    """The path at which a workload's container sees the key of the Secret webchat-redis."""
    pod = workload(objects, name)["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    for m in container(objects, name)["volumeMounts"]:
        secret = volumes.get(m["name"], {}).get("secret")
        if secret and secret["secretName"] == "webchat-redis":
            for item in secret["items"]:
                if item["key"] == key:
                    return m["mountPath"].rstrip("/") + "/" + item["path"]
    raise AssertionError(f"{name} does not mount the key {key} of the Secret webchat-redis")


def run_pod(objects, name, ordinal, tmp_path):
    script, role = script_of(objects, name)
    password = tmp_path / "password"
    password.write_text(PASSWORD)
    out = written_config(script, role, tmp_path, f"{name}-{ordinal}", None, default_password_file=password)
    assert out["password_file"] == secret_file(objects, name), "the script reads the password where the pod mounts it"
    return out


def directive(conf, *key):
    """The values of a config directive (``key`` its first words), one list per line."""
    return [line[len(key):] for line in conf if tuple(line[:len(key)]) == key]


def headless_service(objects, workload_name):
    w = workload(objects, workload_name)
    (svc,) = find(objects, "Service", w["spec"]["serviceName"])
    assert svc["spec"].get("clusterIP") == "None", f"{svc['metadata']['name']}: per-pod names need a headless Service"
    assert svc["spec"].get("publishNotReadyAddresses") is True, "names that resolve before the pods are ready (peers find each other at start)"
    return svc


def documented_sentinel_url():
    """The redis+sentinel:// URL docs/deploy.md says to put in the Secret (key url)."""
    urls = re.findall(r'--from-literal=url="(redis\+sentinel://[^"]+)"', DEPLOY_DOC.read_text())
    assert len(set(urls)) == 1, f"docs/deploy.md: one Secret URL for the redis-sentinel component, found {urls}"
    return urls[0]


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
    password, hosts, service_name, db = parse_sentinel_url(documented_sentinel_url())
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


def test_chat_waits_for_a_replica_with_sentinels_only(rendered):
    objects = rendered["objects"]
    on = choice(rendered["components"]) == SENTINEL
    for name in SERVICES:
        env = k8s_env(container(objects, name))
        expected = {"value": "1"} if on and name == "chat" else None
        got = env.get("CHAT_ACK_REPLICAS")
        assert (got and {"value": got.get("value")}) == expected, (name, got)
        assert env["REDIS_URL_FILE"]["value"].startswith("/run/secrets/webchat-redis/")


def test_the_redis_choices_are_alone_and_after_network_policies(tmp_path):
    """Together they fail to render (one Redis); each overlay lists its Redis choice (if any,
    uncommented) after network-policies, whose Redis policy external-redis removes."""
    for overlay in OVERLAYS:
        names = [c.rstrip("/").rpartition("/")[2] for c in kustomization(overlay).get("components", [])]
        chosen = [n for n in names if n in REDIS_CHOICES]
        assert len(chosen) <= 1, overlay
        if chosen and "network-policies" in names:
            assert names.index(chosen[0]) > names.index("network-policies"), overlay
    target = tmp_path / "both"
    target.mkdir()
    (target / "kustomization.yaml").write_text(yaml.safe_dump({
        "resources": [os.path.relpath(K8S / "base", target)],
        "components": [os.path.relpath(K8S / "components" / c, target) for c in (EXTERNAL, SENTINEL)]}))
    proc = subprocess.run(kustomize_command() + [str(target)], capture_output=True, text=True, timeout=60)
    assert "redis" in proc.stderr, proc.stderr
    assert proc.returncode != 0, "external-redis and redis-sentinel together must not render"


def test_the_docs_say_what_url_each_choice_takes():
    text = DEPLOY_DOC.read_text()
    m = re.search(r"^## Redis: single, Sentinel, or your own\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    assert m, "docs/deploy.md has no section '## Redis: single, Sentinel, or your own'"
    section = m.group(1)
    for form in ('`redis://:$P@redis:6379/0`', "rediss://", "redis+sentinel://", "CHAT_ACK_REPLICAS=1",
                 "k8s/components/redis-sentinel", "k8s/components/external-redis", "docker-compose.sentinel.yml"):
        assert form in section, f"the Redis section does not mention {form}"
    documented_sentinel_url()


def test_the_contract_settings_agree_with_the_code_where_it_has_them():
    """CHAT_ACK_REPLICAS is set ahead of the code that reads it (redis_setup.CONTRACT_SETTINGS);
    once the code has it, it must be the contract's (an integer, default 0)."""
    for name, contract in CONTRACT_SETTINGS.items():
        code = settings(name)
        for key, default in contract.items():
            if key in code:
                assert type(code[key]) is type(default) and code[key] == default, (name, key, code[key])
