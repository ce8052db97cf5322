"""docker-compose.yml as Docker Compose v2 reads it (``config``, no engine) and against the
compose-spec schema: its services, networks, healthchecks, stop periods, and the environment it
gives each service (only what the code reads, every required setting).  The same for
docker-compose.yml with docker-compose.sentinel.yml, whose services' redis+sentinel:// URL must
name what its Sentinels monitor.  Also: every YAML file of the repository parses."""
import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

from support.deploy import (
    COMPOSE_FILE,
    COMPOSE_TEST_ENV,
    GATEWAY,
    K8S,
    ROOT,
    SERVICES,
    allowed_env,
    assert_gateway_location,
    assert_route,
    compose,
    compose_config,
    compose_env,
    compose_raw,
    compose_schema,
    config_class,
    dockerfile_path,
    gateway_image_env,
    gunicorn_port,
    gunicorn_settings,
    healthcheck_text,
    http_path,
    make_app,
    repo_yaml_files,
    required_settings,
    settings,
    url_port,
)
from redis_setup import (
    COMPOSE_SENTINEL_FILE,
    REDIS_HA_SCRIPT,
    allowed_env as contract_allowed_env,
    compose_override_config,
    contract_values_parse,
    parse_sentinel_url,
    script_default,
    written_config,
)
from webchat_common.config import _coerce


def test_every_yaml_file_parses():
    found = repo_yaml_files()
    assert COMPOSE_FILE in found and any(K8S in p.parents for p in found)
    for path in found:
        docs = list(yaml.safe_load_all(path.read_text()))
        assert any(d is not None for d in docs), f"{path} is empty"


def test_compose_file_matches_the_compose_spec_schema():
    schema = compose_schema()
    validator_cls = jsonschema.validators.validator_for(schema)
    validator_cls.check_schema(schema)
    validator = validator_cls(schema, format_checker=validator_cls.FORMAT_CHECKER)
    for config in (compose_raw(), compose()):  # as written, and as compose reads it (interpolated)
        errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(config)]
        assert not errors, "\n".join(errors)
    # The schema is strict enough to notice a misspelt key (so this test can fail).
    broken = compose_raw()
    broken["services"]["auth"]["helthcheck"] = broken["services"]["auth"].get("healthcheck")
    assert list(validator.iter_errors(broken))


def test_compose_refuses_to_start_without_its_secrets(tmp_path):
    assert set(COMPOSE_TEST_ENV) <= set(re.findall(r"\$\{([A-Z_]+):\?", COMPOSE_FILE.read_text()))
    for name in COMPOSE_TEST_ENV:
        for value in (None, ""):
            env = {k: v for k, v in COMPOSE_TEST_ENV.items() if k != name}
            if value is not None:
                env[name] = value
            proc = compose_config(env, tmp_path)
            assert proc.returncode != 0 and name in proc.stderr, (name, value, proc.stderr)


def test_compose_services():
    services = compose()["services"]
    assert set(services) == {"redis", GATEWAY, *SERVICES}
    import inspect
    from localstack import Stack
    local_replicas = inspect.signature(Stack).parameters["chat_replicas"].default
    assert services["chat"]["deploy"]["replicas"] == local_replicas == 2
    for name in SERVICES + (GATEWAY,):
        spec = services[name]
        assert Path(spec["build"]["context"]) == ROOT, "build context: the repository root"
        assert Path(spec["build"]["dockerfile"]) == dockerfile_path(name).relative_to(ROOT)
        if name in SERVICES:  # the one services Dockerfile, told which service to build
            assert spec["build"]["args"] == {"SERVICE": name}
        assert spec["image"].rpartition(":")[0] == f"webchat/{name}"
    for name, spec in services.items():
        assert "container_name" not in spec
        assert spec.get("read_only") is True and "/tmp" in spec.get("tmpfs", []), name
        assert spec.get("cap_drop") == ["ALL"] and "no-new-privileges:true" in spec.get("security_opt", []), name
    published = {name: spec["ports"] for name, spec in services.items() if spec.get("ports")}
    assert list(published) == [GATEWAY], "only the gateway is published"
    (port,) = published[GATEWAY]
    assert port["target"] == int(gateway_image_env()["GATEWAY_PORT"])
    assert compose_raw()["services"][GATEWAY]["ports"] == [f"${{GATEWAY_PORT:-8080}}:{port['target']}"]


def test_compose_networks_keep_redis_behind_the_services():
    services = compose()["services"]
    nets = {name: set(spec.get("networks") or {}) for name, spec in services.items()}
    assert nets["redis"] == {"back"}
    assert "back" not in nets[GATEWAY] and nets[GATEWAY]
    for name in SERVICES:
        assert nets[GATEWAY] <= nets[name] and "back" in nets[name]
    assert set(compose()["networks"]) == set().union(*nets.values())


def test_compose_healthchecks_gate_start_up(tmp_path):
    services = compose()["services"]
    for name, spec in services.items():
        assert spec.get("healthcheck", {}).get("test"), f"{name}: no healthcheck"
        for dep, cond in spec.get("depends_on", {}).items():
            assert cond["condition"] == "service_healthy", (name, dep)
    for name in SERVICES:
        assert set(services[name]["depends_on"]) == {"redis"}
        text = healthcheck_text(services[name]["healthcheck"]["test"])
        assert url_port(text) == gunicorn_port()
        assert_route(make_app(name, tmp_path), http_path(text), f"compose {name} healthcheck")
    assert set(services[GATEWAY]["depends_on"]) == set(SERVICES)
    text = healthcheck_text(services[GATEWAY]["healthcheck"]["test"])
    assert_gateway_location(http_path(text))


def test_compose_stop_grace_period_covers_the_graceful_shutdown():
    conf = gunicorn_settings()
    for name in SERVICES:
        period = compose()["services"][name]["stop_grace_period"]
        seconds = int(period.rstrip("s"))
        assert seconds > conf["graceful_timeout"] + conf["shutdown_drain_seconds"], name


@pytest.mark.parametrize("name", SERVICES)
def test_compose_sets_only_what_the_service_reads(name):
    env = compose_env(name)
    unknown = set(env) - allowed_env(name)
    assert not unknown, f"compose sets variables {name} does not read: {unknown}"
    missing = [s for s in required_settings(config_class(name)) if not env.get(s)]
    assert not missing, f"compose leaves required settings of {name} unset: {missing}"
    defaults = settings(name)
    for key, value in env.items():
        if key in defaults:
            _coerce(key, defaults[key], value)  # raises if the value does not parse
    redis = re.match(r"redis://(?::[^@]+@)?([^:/]+):(\d+)/\d+$", env["REDIS_URL"])
    assert redis and redis.group(1) == "redis" and redis.group(2) == "6379", env["REDIS_URL"]


# --- docker-compose.sentinel.yml: Redis with Sentinel on top of docker-compose.yml ---

SENTINEL_SERVICES = ("redis-sentinel-1", "redis-sentinel-2", "redis-sentinel-3")
REDIS_SERVERS = ("redis", "redis-replica", "redis-replica-2")


@pytest.fixture(scope="module")
def sentinel_compose(tmp_path_factory):
    proc = compose_override_config(COMPOSE_SENTINEL_FILE, COMPOSE_TEST_ENV, tmp_path_factory.mktemp("compose-sentinel"))
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_compose_sentinel_services_are_locked_down_and_run_the_script(sentinel_compose):
    services = sentinel_compose["services"]
    assert set(services) == set(compose()["services"]) | set(REDIS_SERVERS) | set(SENTINEL_SERVICES)
    for name in REDIS_SERVERS + SENTINEL_SERVICES:
        spec = services[name]
        assert spec["image"] == compose()["services"]["redis"]["image"], name
        assert spec.get("read_only") is True and "/tmp" in spec.get("tmpfs", []), name
        assert spec.get("cap_drop") == ["ALL"] and "no-new-privileges:true" in spec.get("security_opt", []), name
        assert set(spec["networks"]) == {"back"} and not spec.get("ports"), f"{name}: only on the services' network"
        assert spec.get("healthcheck", {}).get("test"), name
        mounts = {v["target"]: v for v in spec["volumes"]}
        _, script, role = spec["command"]
        assert spec["command"][0] == "sh" and role == ("sentinel" if name in SENTINEL_SERVICES else "redis"), name
        assert Path(mounts[script]["source"]) == REDIS_HA_SCRIPT and mounts[script].get("read_only"), name
        # A Redis server's data, a Sentinel's config file (its state: the current primary, the
        # epochs) in DATA_DIR: on a named volume, which outlives the container.
        assert mounts[script_default("DATA_DIR")]["type"] == "volume", f"{name}: its data on a volume of its own"
        # They start together: a Redis server waits for the Sentinels and for the primary they
        # name, which may be any of them (a dependency could make them wait for each other).
        assert not set(spec.get("depends_on") or {}) & set(REDIS_SERVERS + SENTINEL_SERVICES), f"{name} waits for another"
    data = [v["source"] for n in REDIS_SERVERS + SENTINEL_SERVICES for v in services[n]["volumes"] if v["target"] == "/data"]
    assert len(set(data)) == len(REDIS_SERVERS + SENTINEL_SERVICES), f"one data volume each: {data}"
    for name in SERVICES:
        for dep in ("redis",) + SENTINEL_SERVICES:
            assert services[name]["depends_on"][dep]["condition"] == "service_healthy", (name, dep)


def test_compose_sentinel_services_url_names_what_the_sentinels_monitor(sentinel_compose, tmp_path):
    """The services' URL lists every Sentinel on the port it listens on and the master name they
    monitor (from the configs the script writes with each container's environment); quorum ≤
    Sentinels; every server and Sentinel knows the same names; chat waits for a replica, and the
    primary for one (min-replicas-to-write) as in Kubernetes."""
    services = sentinel_compose["services"]
    password = COMPOSE_TEST_ENV["REDIS_PASSWORD"]
    script = REDIS_HA_SCRIPT.read_text()
    envs = {n: {k: str(v) for k, v in services[n]["environment"].items()} for n in REDIS_SERVERS + SENTINEL_SERVICES}
    for name, env in envs.items():
        assert env["ANNOUNCE_HOST"] == name
        assert env["REDIS_HOSTS"].split() == list(REDIS_SERVERS) and env["SENTINEL_HOSTS"].split() == list(SENTINEL_SERVICES)
        assert env["REDIS_PASSWORD"] == password
    monitors, sentinel_ports = set(), set()
    for name in SENTINEL_SERVICES:
        out = written_config(script, "sentinel", tmp_path, name, tmp_path / "unused", **envs[name])
        assert out["password_file"] is None, "compose gives the password in REDIS_PASSWORD"
        conf = out["conf"]
        assert ["requirepass", password] in conf
        (monitor,) = [line[2:] for line in conf if line[:2] == ["sentinel", "monitor"]]
        monitors.add(tuple(monitor))
        (port,) = [line[1] for line in conf if line[0] == "port"]
        sentinel_ports.add(int(port))
        assert ["sentinel", "auth-pass", monitor[0], password] in conf
    (master, host, redis_port, quorum), = monitors
    (sentinel_port,) = sentinel_ports
    assert host == REDIS_SERVERS[0] and len(SENTINEL_SERVICES) // 2 < int(quorum) <= len(SENTINEL_SERVICES)
    for name in REDIS_SERVERS:
        conf = written_config(script, "redis", tmp_path, name, tmp_path / "unused", **envs[name])["conf"]
        assert ["requirepass", password] in conf and ["masterauth", password] in conf, name
        assert ["port", redis_port] in conf
        assert [line for line in conf if line[0] == "replicaof"] == ([] if name == "redis" else [["replicaof", "redis", redis_port]])
        (min_replicas,) = [line[1] for line in conf if line[0] == "min-replicas-to-write"]
        assert 1 <= int(min_replicas) < len(REDIS_SERVERS), "one replica down must not stop the writes"
    for name in SERVICES:
        env = {k: str(v) for k, v in services[name]["environment"].items()}
        url_password, hosts, service_name, db = parse_sentinel_url(env["REDIS_URL"])
        assert (url_password, service_name, db) == (password, master, 0), name
        assert hosts == [(s, sentinel_port) for s in SENTINEL_SERVICES], name
        unknown = set(env) - contract_allowed_env(name)
        assert not unknown, f"docker-compose.sentinel.yml sets variables {name} does not read: {unknown}"
        assert contract_values_parse(name, env)
        assert env.get("CHAT_ACK_REPLICAS") == ("1" if name == "chat" else None), name
    raw = yaml.safe_load(COMPOSE_SENTINEL_FILE.read_text())
    assert re.findall(r"\$\{REDIS_PASSWORD:\?", yaml.safe_dump(raw)), "the password from the environment, required"
