"""The one gateway template, rendered as each way to run renders it: the variables compose and
Kubernetes give the gateway are exactly the template's; the nginx image's envsubst renders what
``gateway/render.py`` renders; the result passes ``nginx -t`` (which can fail)."""
from support.deploy import (
    GATEWAY,
    NGINX_IMAGE_ENV,
    SERVICES,
    assert_gateway_location,
    base_objects,
    compose,
    compose_env,
    container,
    entrypoint_render,
    find,
    gateway_image_env,
    gateway_render,
    gateway_values,
    gunicorn_port,
    k8s_env,
    loopback,
    nginx_test,
)


def test_compose_gives_the_gateway_exactly_its_template_variables():
    env = compose_env(GATEWAY)
    image = gateway_image_env()
    assert set(env) <= set(gateway_render.VARIABLES), set(env) - set(gateway_render.VARIABLES)
    assert set(env) | (set(image) & set(gateway_render.VARIABLES)) == set(gateway_render.VARIABLES)
    services = compose()["services"]
    for key, value in env.items():
        if key.endswith("_ADDR"):
            host, _, port = value.rpartition(":")
            assert host in SERVICES and host == key[:-5].lower(), (key, value)
            assert int(port) == gunicorn_port(), (key, value)
            assert host in services


def test_the_nginx_image_renders_the_template_like_render_py():
    env = {**NGINX_IMAGE_ENV, **gateway_image_env(), **compose_env(GATEWAY)}
    text = gateway_render.TEMPLATE.read_text()
    assert entrypoint_render(text, env) == gateway_render.render(gateway_values(compose_env(GATEWAY)))
    # and the emulation is not vacuous: an unset variable stays as written
    assert "${AUTH_ADDR}" in entrypoint_render(text, {})


def test_gateway_config_from_compose_values_passes_nginx_t(tmp_path):
    values = loopback(gateway_values(compose_env(GATEWAY)), tmp_path)
    proc = nginx_test(gateway_render.render(values), tmp_path)
    assert proc.returncode == 0, proc.stderr


def test_nginx_t_does_reject_a_broken_config(tmp_path):
    values = loopback(gateway_values(compose_env(GATEWAY)), tmp_path)
    proc = nginx_test(gateway_render.render(values).replace("events {", "events {\n    no_such_directive on;", 1), tmp_path)
    assert proc.returncode != 0 and "no_such_directive" in proc.stderr


def test_k8s_gives_the_gateway_exactly_its_template_variables(rendered):
    objects = rendered["objects"]
    c = container(objects, GATEWAY)
    env = k8s_env(c)
    image = gateway_image_env()
    assert set(env) <= set(gateway_render.VARIABLES)
    assert set(env) | (set(image) & set(gateway_render.VARIABLES)) == set(gateway_render.VARIABLES)
    assert [p["containerPort"] for p in c["ports"]] == [int(image["GATEWAY_PORT"])]
    for key, e in env.items():
        if key.endswith("_ADDR"):
            host, _, port = e["value"].rpartition(":")
            assert host == key[:-5].lower() and host in SERVICES, e
            (svc,) = find(objects, "Service", host)
            assert int(port) in [p["port"] for p in svc["spec"]["ports"]], e
    for probe in ("livenessProbe", "readinessProbe"):
        assert_gateway_location(c[probe]["httpGet"]["path"])
    # The same addresses as compose: one template, the same values wherever it runs.
    plain = {k: e["value"] for k, e in env.items() if "value" in e}
    assert {k: v for k, v in compose_env(GATEWAY).items() if k in plain} == plain


def test_gateway_config_from_k8s_values_passes_nginx_t(tmp_path):
    env = {}
    for key, e in k8s_env(container(base_objects(), GATEWAY)).items():
        env[key] = e["value"] if "value" in e else "placeholder-from-a-secret"
    values = loopback(gateway_values(env), tmp_path)
    proc = nginx_test(gateway_render.render(values), tmp_path)
    assert proc.returncode == 0, proc.stderr
