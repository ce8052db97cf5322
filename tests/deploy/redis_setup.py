"""The Redis choices of the deploy files (the base's single Redis, the components redis-sentinel,
redis-cluster and external-redis; docker-compose.yml alone or with docker-compose.sentinel.yml
or docker-compose.cluster.yml) and the contract they share with the services' code: the
``redis+sentinel://`` and ``redis+cluster://`` URLs and the settings the deploy files set for
them.  Also: running the scripts that start the Redis servers of those setups outside any
container (redis/redis-ha.sh: every Redis server and Sentinel of the Sentinel setups;
redis/cluster/redis-cluster.sh: every node of the Cluster setups, and the making of the
Cluster), and reading what a render's pods run."""
import importlib
import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

from support.deploy import (
    COMPOSE_FILE,
    DEPLOY_DOC,
    ROOT,
    allowed_env as code_allowed_env,
    container,
    docker_compose_binary,
    find,
    variants,
    workload,
)

REDIS_HA_SCRIPT = ROOT / "redis" / "redis-ha.sh"
REDIS_CLUSTER_SCRIPT = ROOT / "redis" / "cluster" / "redis-cluster.sh"
COMPOSE_SENTINEL_FILE = ROOT / "docker-compose.sentinel.yml"
COMPOSE_CLUSTER_FILE = ROOT / "docker-compose.cluster.yml"
SENTINEL = "redis-sentinel"
CLUSTER = "redis-cluster"
EXTERNAL = "external-redis"
#: Components that replace the base's single Redis: at most one in a render, listed after the
#: other components (they remove or complete what network-policies made, when it is there).
REDIS_CHOICES = (SENTINEL, CLUSTER, EXTERNAL)
#: The workloads each in-cluster choice runs for Redis: their pods are closed by the choice's own
#: NetworkPolicies, with network-policies on or not.
REDIS_TIERS = {SENTINEL: ("redis", SENTINEL), CLUSTER: (CLUSTER,)}
#: The choices whose replicas hold every acknowledged chat message: chat gets CHAT_ACK_REPLICAS=1.
ACK_REPLICA_CHOICES = (SENTINEL, CLUSTER)
#: The password the tests give the scripts (the Secret's file, compose's REDIS_PASSWORD).
PASSWORD = "test-redis-password"

#: The services' connection URL with Sentinels:
#: ``redis+sentinel://[:PASSWORD@]HOST:PORT[,HOST:PORT...]/SERVICE_NAME[/DB]``.
SENTINEL_URL = re.compile(r"redis\+sentinel://(?::(?P<password>[^@/]*)@)?(?P<hosts>[^/@]+)/(?P<service>[^/]+)(?:/(?P<db>\d+))?")

#: Settings the deploy files set for the services' Redis contract, with their type's default:
#: the services' code gets them in the same change (developed beside these files).  Allowed where
#: the config class does not have them yet; where it does, its default must be of this type.
CONTRACT_SETTINGS = {"chat": {"CHAT_ACK_REPLICAS": 0}}


def parse_sentinel_url(url):
    """``(password, [(host, port)], service_name, db)`` of a redis+sentinel:// URL: read by the
    services' own parser (webchat_common.redis_store.parse_sentinel_url) where the code has it,
    else by the form above, with every port given."""
    code = getattr(importlib.import_module("webchat_common.redis_store"), "parse_sentinel_url", None)
    if code:
        parts = code(url)
        return parts.password, [tuple(s) for s in parts.sentinels], parts.service, parts.db
    m = SENTINEL_URL.fullmatch(url)
    assert m, f"not a redis+sentinel:// URL: {url!r}"
    hosts = []
    for entry in m.group("hosts").split(","):
        host, _, port = entry.rpartition(":")
        assert host and port.isdigit(), f"{url!r}: {entry!r} is not HOST:PORT"
        hosts.append((host, int(port)))
    return m.group("password"), hosts, m.group("service"), int(m.group("db") or 0)


def allowed_env(name):
    """What the service reads (support.deploy.allowed_env), and the contract's settings."""
    return code_allowed_env(name) | set(CONTRACT_SETTINGS.get(name, {}))


def contract_values_parse(name, env):
    """Each contract setting in ``env`` parses as its type (what the code will do with it)."""
    for key, default in CONTRACT_SETTINGS.get(name, {}).items():
        if key in env:
            assert str(type(default)(env[key])) == env[key], f"{name}: {key}={env[key]!r} is not a {type(default).__name__}"
    return True


def choice(components):
    """The Redis choice of a render's components: "single", or one of REDIS_CHOICES."""
    found = [c.name for c in components if c.name in REDIS_CHOICES]
    assert len(found) <= 1, f"several Redis choices: {found}"
    return found[0] if found else "single"


def ordered(components):
    """A deployer's order: the Redis choice after the others."""
    return tuple(sorted(components, key=lambda c: (c.name in REDIS_CHOICES, c.name)))


def supported_variants():
    """Every overlay x every subset of the components with at most one Redis choice, the
    components in the order a deployer lists them."""
    return [(o, ordered(s)) for o, s in variants() if sum(c.name in REDIS_CHOICES for c in s) <= 1]


# --- running redis/redis-ha.sh ---


def free_port():
    """A TCP port free on every address (the servers bind 127.0.0.x with the same port)."""
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        return s.getsockname()[1]


def script_env(tmp_dir, name, password_file, **env):
    """The environment redis-ha.sh gets: only PATH, HOSTNAME, its settings, no REDIS_PASSWORD
    unless given; a config folder of its own."""
    conf = Path(tmp_dir) / name
    conf.mkdir(parents=True, exist_ok=True)
    data = conf / "data"
    data.mkdir(exist_ok=True)
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOSTNAME": name, "CONF_DIR": str(conf),
            "DATA_DIR": str(data), "PASSWORD_FILE": str(password_file)}
    return {**base, **{k: str(v) for k, v in env.items()}}


def stub_path(tmp_dir):
    """A PATH on which redis-server and redis-cli do nothing: the script then only writes its
    config (the Sentinels it asks are not there), for reading what it writes."""
    stubs = Path(tmp_dir) / "stubs"
    stubs.mkdir(exist_ok=True)
    scripts = {
        # Writes down what it was started with, beside the config file.
        "redis-server": '#!/bin/sh\nprintf "%s\\n" "$@" > "$CONF_DIR/exec-args"\n',
        "redis-cli": "#!/bin/sh\nexit 1\n",
        # Writes down which file the script reads the password from, and answers as the file would.
        "cat": f'#!/bin/sh\nprintf "%s" "$1" > "$CONF_DIR/password-file"\nexec {shutil.which("cat")} "${{STUB_PASSWORD_FILE:-$1}}"\n',
    }
    for name, text in scripts.items():
        path = stubs / name
        path.write_text(text)
        path.chmod(0o755)
    return f"{stubs}:{os.environ.get('PATH', '/usr/bin:/bin')}"


def written_config(script_text, role, tmp_dir, name, password_file, default_password_file=None, **env):
    """What redis-ha.sh (``script_text``) does for ``role`` as pod/container ``name`` with
    nothing else running (no Sentinel answers, and the script does not wait for one: START_WAIT
    0) on a first start (a Sentinel writes its config in DATA_DIR, a folder of the test):
    ``{"conf": the config file's lines, split,
    "args": what it starts redis-server with, "password_file": the file it reads the password
    from (None: it took REDIS_PASSWORD), "conf_path": where it writes the config}``.  ``password_file`` None: the script's own
    default, answered by ``default_password_file`` (the stub cat reads it instead)."""
    script = Path(tmp_dir) / f"redis-ha-{name}.sh"
    script.write_text(script_text)
    e = script_env(tmp_dir, name, password_file or default_password_file, START_WAIT=0, **env)
    e["PATH"] = stub_path(tmp_dir)
    if role == "redis":
        del e["DATA_DIR"]  # the script's own: only named on redis-server's command line
    if password_file is None:
        e["STUB_PASSWORD_FILE"] = e.pop("PASSWORD_FILE")
    proc = subprocess.run(["sh", str(script), role], env=e, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    conf_dir = Path(e["CONF_DIR"])
    args = (conf_dir / "exec-args").read_text().splitlines()
    read = conf_dir / "password-file"
    return {"conf": config_lines(Path(args[0]).read_text()), "args": args,
            "password_file": read.read_text() if read.exists() else None, "conf_path": args[0]}


def assert_password_kept_private(script, role, name, password, source, tmp_dir):
    """What ``script`` execs for ``role`` as pod/container ``name``, recorded by a redis-server
    that writes down its arguments and its environment (redis-server's own /proc/PID/cmdline and
    environ show its process title, not them): the password, from the Secret's file (``source``
    "file", Kubernetes) or from REDIS_PASSWORD ("environment", compose, which the script must
    remove), is in the config file it names (the owner's only), never in its arguments nor in
    its environment."""
    tmp_dir = Path(tmp_dir)
    password_file = tmp_dir / "password"
    password_file.write_text(password)
    bin_dir = tmp_dir / "bin"
    bin_dir.mkdir()
    record = tmp_dir / "exec"
    (bin_dir / "redis-server").write_text(f'#!/bin/sh\nprintf "%s\\0" "$@" > {record}.args\nenv -0 > {record}.env\n')
    (bin_dir / "redis-server").chmod(0o755)
    (bin_dir / "redis-cli").write_text("#!/bin/sh\nexit 1\n")  # nobody to ask
    (bin_dir / "redis-cli").chmod(0o755)
    env = script_env(tmp_dir, name, password_file, START_WAIT=0)
    env["PATH"] = f"{bin_dir}:{env['PATH']}"
    if source == "environment":
        env["PASSWORD_FILE"] = str(tmp_dir / "missing")
        env["REDIS_PASSWORD"] = password
    proc = subprocess.run(["sh", str(script), role], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    args = Path(f"{record}.args").read_bytes()
    environ = Path(f"{record}.env").read_bytes()
    assert args.split(b"\0")[0].endswith(b".conf") and password.encode() not in args
    assert password.encode() not in environ and b"REDIS_PASSWORD=" not in environ
    conf = Path(args.split(b"\0")[0].decode())
    assert f"requirepass {password}" in conf.read_text()
    assert conf.stat().st_mode & 0o077 == 0, "the config file is the owner's only"


def config_lines(text):
    return [line.split() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def script_default(setting, script=REDIS_HA_SCRIPT):
    """The default a script (redis-ha.sh unless named) gives a setting (``NAME=${NAME:-default}``)."""
    m = re.search(rf"^{setting}=\$\{{{setting}:-([^}}]*)\}}$", script.read_text(), re.M)
    assert m, f"{script.name} has no default for {setting}"
    return m.group(1)


def redis_server_binary():
    found = shutil.which("redis-server")
    assert found, "redis-server is not installed (scripts/system-deps.sh installs it)"
    return found


def cli(host, port, password, *args, timeout=5):
    """One command through redis-cli (the password in its environment); its output."""
    proc = subprocess.run(["redis-cli", "--no-auth-warning", "-h", host, "-p", str(port), *map(str, args)],
                          capture_output=True, text=True, timeout=timeout,
                          env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **({"REDISCLI_AUTH": password} if password else {})})
    return proc.stdout.strip()


def info(host, port, password, section="replication"):
    out = cli(host, port, password, "INFO", section)
    return dict(line.split(":", 1) for line in out.replace("\r", "").splitlines() if ":" in line)


def wait_for(what, check, timeout=30, interval=0.2):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(interval)


# --- what a render's Redis pods run (the scripts of the ConfigMaps they mount) ---


def script_of(objects, name):
    """The script a workload's (or a Job's) container runs: ``(script text, role)``, from the
    ConfigMap volume its command names."""
    pod, c = pod_and_container(objects, name)
    assert c["command"][0] == "sh" and len(c["command"]) == 3, c["command"]
    _, path, role = c["command"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    (mount,) = [m for m in c["volumeMounts"] if path.startswith(m["mountPath"].rstrip("/") + "/")]
    (cm,) = find(objects, "ConfigMap", volumes[mount["name"]]["configMap"]["name"])
    return cm["data"][path[len(mount["mountPath"].rstrip("/")) + 1:]], role


def pod_and_container(objects, name):
    """The pod spec and the one container of the workload or Job ``name``."""
    jobs = find(objects, "Job", name)
    if jobs:
        (job,) = jobs
        pod = job["spec"]["template"]["spec"]
        (c,) = pod["containers"]
        return pod, c
    return workload(objects, name)["spec"]["template"]["spec"], container(objects, name)


def secret_file(objects, name, key="password"):
    """The path at which a workload's (or a Job's) container sees the key of the Secret webchat-redis."""
    pod, c = pod_and_container(objects, name)
    volumes = {v["name"]: v for v in pod["volumes"]}
    for m in c["volumeMounts"]:
        secret = volumes.get(m["name"], {}).get("secret")
        if secret and secret["secretName"] == "webchat-redis":
            for item in secret["items"]:
                if item["key"] == key:
                    return m["mountPath"].rstrip("/") + "/" + item["path"]
    raise AssertionError(f"{name} does not mount the key {key} of the Secret webchat-redis")


def run_pod(objects, name, ordinal, tmp_path):
    """What the script of pod ``name``-``ordinal`` writes and execs (:func:`written_config`),
    the password in the file the pod mounts from the Secret."""
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


def documented_url(scheme):
    """The URL of the ``scheme`` (``redis+sentinel``, ``redis+cluster``) that docs/deploy.md says
    to put in the Secret (key url)."""
    urls = re.findall(rf'--from-literal=url="({re.escape(scheme)}://[^"]+)"', DEPLOY_DOC.read_text())
    assert len(set(urls)) == 1, f"docs/deploy.md: one Secret URL of the form {scheme}://, found {urls}"
    return urls[0]


# --- docker-compose.yml with an override file ---


def compose_override_config(override, env, tmp_dir):
    """``docker compose -f docker-compose.yml -f OVERRIDE config``, as support.deploy's
    compose_config does it for the main file (exactly ``env`` as the variables)."""
    env_file = Path(tmp_dir) / "compose.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    return subprocess.run(
        [docker_compose_binary(), "-f", str(COMPOSE_FILE), "-f", str(override),
         "--project-directory", str(ROOT), "--env-file", str(env_file), "config", "--format", "json"],
        capture_output=True, text=True, timeout=60,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_dir)})
