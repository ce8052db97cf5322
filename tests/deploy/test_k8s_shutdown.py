"""Shutdown of the Kubernetes pods, over every render: each container of a Deployment has a
preStop hook (a sleep, so the endpoint removal reaches every proxy before the process hears of
it), and terminationGracePeriodSeconds, which counts from the start of preStop, covers
preStop + the service's drain (SHUTDOWN_DRAIN_SECONDS from the container's environment, else
gunicorn_conf's default) + gunicorn's graceful_timeout, with a margin.  The gateway (nginx,
which quits gracefully on the image's STOPSIGNAL, SIGQUIT) gets the same budget: a request it
proxies to a stopping service may take that long."""
from support.deploy import (
    GATEWAY,
    SERVICES,
    find,
    gunicorn_settings,
    image_stages,
    instructions,
    k8s_env,
    pre_stop_seconds,
    workload,
)

#: Seconds beyond preStop + drain + graceful_timeout before the kubelet's SIGKILL: the exec
#: hook's start, the master's exit after its workers, a slow node.
MARGIN = 5


def shutdown_budget(c):
    """preStop + drain + graceful_timeout of one container, in seconds."""
    conf = gunicorn_settings()
    env = k8s_env(c)
    drain = float(env["SHUTDOWN_DRAIN_SECONDS"]["value"]) if "SHUTDOWN_DRAIN_SECONDS" in env else conf["shutdown_drain_seconds"]
    return pre_stop_seconds(c) + drain + conf["graceful_timeout"]


def test_gunicorn_shutdown_is_what_the_manifests_assume():
    conf = gunicorn_settings()
    assert conf["graceful_timeout"] == 20 and conf["shutdown_drain_seconds"] == 5


def test_every_deployment_container_waits_in_pre_stop(rendered):
    deployments = find(rendered["objects"], "Deployment")
    assert {d["metadata"]["name"] for d in deployments} == set(SERVICES) | {GATEWAY}
    for d in deployments:
        for c in d["spec"]["template"]["spec"]["containers"]:
            assert pre_stop_seconds(c) >= 3, f"{d['metadata']['name']} {c['name']}: no preStop sleep of a few seconds"


def test_grace_period_covers_pre_stop_drain_and_graceful_timeout(rendered):
    for name in SERVICES + (GATEWAY,):
        pod = workload(rendered["objects"], name)["spec"]["template"]["spec"]
        for c in pod["containers"]:
            needed = shutdown_budget(c) + MARGIN
            assert pod["terminationGracePeriodSeconds"] >= needed, \
                f"{name}: terminationGracePeriodSeconds {pod['terminationGracePeriodSeconds']} < preStop + drain + graceful_timeout + {MARGIN} = {needed}"


def test_pre_stop_sleep_exists_in_the_images():
    """``sleep`` is in the final stage's base image (coreutils in python slim, busybox in the
    nginx alpine image), and no image changes the stop signal: gunicorn drains on SIGTERM, nginx
    quits gracefully on the SIGQUIT its base image declares."""
    for name in SERVICES + (GATEWAY,):
        final = image_stages(name)[-1]
        (base,) = instructions(final, "FROM")
        assert base.startswith(("python:3.11-slim", "nginxinc/nginx-unprivileged:")), \
            f"{name}: new base image {base!r}: check that it has /bin/sleep for the preStop hook"
        assert not instructions(final, "STOPSIGNAL"), f"{name}: the stop signal is the base image's"
