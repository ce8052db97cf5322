"""docker-compose.yml as Docker Compose v2 reads it (``config``, no engine) and against the
compose-spec schema: its services, networks, healthchecks, stop periods, and the environment it
gives each service (only what the code reads, every required setting).  Also: every YAML file of
the repository parses."""
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
