"""The containers run as the local stack runs (localstack/): the same gunicorn settings for each
service, and the same configuration names in compose and Kubernetes."""
import os

import pytest

from support.deploy import (
    SERVICES,
    base_objects,
    compose_env,
    container,
    dockerfile_path,
    exec_form,
    gunicorn_settings,
    instructions,
    k8s_env,
    local_stack_services,
    parse_dockerfile,
    service_package,
    settings,
)


@pytest.mark.parametrize("name", SERVICES)
def test_images_run_gunicorn_like_the_local_stack(name, tmp_path):
    local = local_stack_services(tmp_path)[name]
    argv = exec_form(instructions(parse_dockerfile(dockerfile_path(name))[-1], "CMD")[0])
    conf = gunicorn_settings()
    flags = dict(zip(argv[3:-1:2], argv[4:-1:2]))
    assert set(flags) <= {"-k", "-w"}, flags
    worker_class = flags.get("-k") or conf.get("worker_class") or ("gthread" if conf.get("threads", 1) > 1 else "sync")
    workers = int(flags.get("-w", conf["workers"]))
    assert (worker_class, workers) == (local.worker_class, local.workers)
    assert f"{service_package(name)}:create_app()" == local.app


@pytest.mark.parametrize("name", SERVICES)
def test_compose_configures_a_service_like_the_local_stack(name, tmp_path):
    """localstack/__init__.py runs the same processes with the same settings: compose sets the
    same config names (with container values).  Kubernetes may add more (prod's secure cookie)."""
    from localstack import Stack
    stack = Stack(tmp_path)
    env = stack.service_env(name)
    local = {k for k in settings(name) if k in env and env[k] != os.environ.get(k)}
    assert set(compose_env(name)) & set(settings(name)) == local
    base = k8s_env(container(base_objects(), name))
    assert set(base) & set(settings(name)) == local
