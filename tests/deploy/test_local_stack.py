"""The containers run as the local stack runs (localstack/): the same gunicorn settings for each
service, and the same configuration names in compose and Kubernetes."""
import os

import pytest

from support.deploy import (
    SERVICES,
    base_objects,
    compose_env,
    container,
    dockerfile_env,
    exec_form,
    gunicorn_settings,
    image_stages,
    instructions,
    k8s_env,
    process_env_names,
    service_package,
    setting_names,
    settings,
)


@pytest.mark.parametrize("name", SERVICES)
def test_images_run_gunicorn_like_the_local_stack(name, tmp_path):
    """The image and the local stack pass gunicorn nothing but the service's name
    (SERVICE_NAME): the app, worker class, workers, threads and connections are the service's
    own declaration (``<name>_service/service.toml``), read by gunicorn_conf for both."""
    from localstack import Stack
    stack = Stack(tmp_path)
    runtime = image_stages(name)[-1]
    argv = exec_form(instructions(runtime, "CMD")[0])
    assert argv == ["gunicorn", "-c", "python:webchat_common.gunicorn_conf"], argv
    local_argv = stack.service_args(stack.services[name], 0)
    assert local_argv[1:5] == ["-m", "gunicorn", "-c", "python:webchat_common.gunicorn_conf"], local_argv
    flags = {a for a in local_argv[5:] if a.startswith("-")}
    assert flags <= {"-b", "-n", "--reuse-port"}, f"where it listens and its name only: {flags}"
    read = process_env_names(name)
    image_env = {k: v for k, v in dockerfile_env(runtime).items() if k in read}
    local_env = {k: v for k, v in stack.service_env(name).items() if k in read}
    assert image_env["SERVICE_NAME"] == local_env["SERVICE_NAME"] == name
    image, local = gunicorn_settings(**image_env), gunicorn_settings(**local_env)
    worker_class, workers = image["worker_class"], image["workers"]
    assert (worker_class, workers) == (local["worker_class"], local["workers"])
    for key in ("wsgi_app", "threads", "worker_connections"):
        assert image[key] == local[key], key
    assert image["wsgi_app"] == f"{service_package(name)}:create_app()"


def test_the_services_declare_how_they_run():
    """What each declaration says (the gevent chat with as many sockets as its fd limit allows;
    thread workers elsewhere), and that gunicorn_conf applies it."""
    import resource
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    auto = max(1000, soft - 1000) if soft != resource.RLIM_INFINITY else 100_000
    expected = {"auth": ("gthread", 2, 1000), "files": ("gthread", 2, 1000), "chat": ("gevent", 1, auto)}
    for name in SERVICES:
        conf = gunicorn_settings(SERVICE_NAME=name)
        assert (conf["worker_class"], conf["workers"], conf["worker_connections"]) == expected[name], name
    # an environment variable still overrides a declaration (documented for chat)
    assert gunicorn_settings(SERVICE_NAME="chat", GUNICORN_WORKER_CONNECTIONS="5000")["worker_connections"] == 5000
    # and a name that is no service (the ops tests' app) gets the defaults and no app
    assert gunicorn_settings(SERVICE_NAME="ops")["wsgi_app"] is None


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
    assert setting_names(base) & set(settings(name)) == local
