"""The one gateway template, rendered as each way to run renders it: the variables compose and
Kubernetes give the gateway are exactly the template's; the nginx image's envsubst renders what
``gateway/render.py`` renders; the result passes ``nginx -t`` (which can fail)."""
import re
import shlex

import pytest

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
    envsh_exports,
    gateway_edge_exports,
    find,
    gateway_constants_script,
    gateway_image_env,
    gateway_render,
    gateway_values,
    gunicorn_port,
    image_stages,
    instructions,
    k8s_env,
    loopback,
    nginx_test,
    webchat_common,
)
from support.tls import self_signed


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
    code, derived, err = gateway_edge_exports(env)
    assert code == 0, err
    text = gateway_render.TEMPLATE.read_text()
    assert entrypoint_render(text, {**env, **derived}) == gateway_render.render(gateway_values(compose_env(GATEWAY)))
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
    # The same addresses as compose: one template, the same values wherever it runs (the
    # optional edge settings, trusted proxies and TLS, are each deployment's own).
    plain = {k: e["value"] for k, e in env.items() if "value" in e and k not in gateway_render.OPTIONAL}
    assert {k: v for k, v in compose_env(GATEWAY).items() if k in plain} == plain


def test_gateway_config_from_k8s_values_passes_nginx_t(tmp_path):
    env = {}
    for key, e in k8s_env(container(base_objects(), GATEWAY)).items():
        env[key] = e["value"] if "value" in e else "placeholder-from-a-secret"
    values = loopback(gateway_values(env), tmp_path)
    proc = nginx_test(gateway_render.render(values), tmp_path)
    assert proc.returncode == 0, proc.stderr


def test_the_template_takes_the_cookie_name_and_the_inline_types_from_the_code(tmp_path):
    """The session cookie's name and the media types shown inline are defined once, in the
    Python source (webchat_common.config, files_service.detect); the template names them as
    constants that render.py fills, and that the image computes from the same source at build
    time and hands to its entrypoint."""
    from files_service import detect
    constants = gateway_render.constants()
    assert constants["SESSION_COOKIE_NAME"] == webchat_common.Config.SESSION_COOKIE_NAME
    keys = dict(re.findall(r'(\w+) ("")?;', constants["MEDIA_INLINE_KEYS"]))
    assert set(keys) == {f"1{ext}" for ext in detect.INLINE_EXTS}
    text = gateway_render.TEMPLATE.read_text()
    assert webchat_common.Config.SESSION_COOKIE_NAME not in text, "the cookie name is written once, in the code"
    assert not re.search(r"^\s*1[a-z0-9]{2,4} ", text, re.M), "the inline keys are written once, in the code"
    conf = gateway_render.render(loopback(gateway_values(compose_env(GATEWAY)), tmp_path))
    assert f"$cookie_{webchat_common.Config.SESSION_COOKIE_NAME} " in conf
    for key in keys:
        assert re.search(rf'^\s+.*\b{key} "";', conf, re.M), key
    # The image: its constants stage writes what render.py computes, and the runtime stage puts
    # it where the entrypoint sources it (executable, *.envsh, before 20-envsubst-on-templates).
    path, script = gateway_constants_script()
    assert envsh_exports(script) == constants
    assert script == gateway_render.envsh()
    runtime = image_stages(GATEWAY)[-1]
    copies = [shlex.split(a) for a in instructions(runtime, "COPY") if a.startswith("--from=constants")]
    (copy,) = copies
    assert "--chmod=0755" in copy and copy[-2] == path, copy
    target = copy[-1]
    assert re.fullmatch(r"/docker-entrypoint\.d/1\d-[\w-]+\.envsh", target), target


EDGE_CASES = [
    {},
    {"GATEWAY_TRUSTED_PROXIES": "10.0.0.0/8"},
    {"GATEWAY_TRUSTED_PROXIES": "10.0.0.0/8, 192.168.1.7 ,fd00::/8,"},
    {"GATEWAY_TRUSTED_PROXIES": " , "},
    {"GATEWAY_TLS_CERT_FILE": "/etc/tls/tls.crt", "GATEWAY_TLS_KEY_FILE": "/etc/tls/tls.key"},
    {"GATEWAY_TRUSTED_PROXIES": "172.16.0.0/12", "GATEWAY_TLS_CERT_FILE": "/c.pem", "GATEWAY_TLS_KEY_FILE": "/k.pem"},
]


@pytest.mark.parametrize("settings", EDGE_CASES)
def test_the_image_writes_the_optional_directives_like_render_py(settings):
    """gateway/edge.envsh (run at container start) and render.py's edge() are two writings of
    one rule: the same settings give the same directives."""
    code, derived, err = gateway_edge_exports({**gateway_image_env(), **settings})
    assert code == 0, err
    assert derived == gateway_render.edge(settings)
    assert set(derived) == set(gateway_render.DERIVED)


@pytest.mark.parametrize("settings", [
    {"GATEWAY_TRUSTED_PROXIES": "10.0.0.0/8;evil"},
    {"GATEWAY_TRUSTED_PROXIES": "*"},
    {"GATEWAY_TLS_CERT_FILE": "/etc/tls/tls.crt"},
    {"GATEWAY_TLS_KEY_FILE": "/etc/tls/tls.key"},
    {"GATEWAY_TLS_CERT_FILE": "/a b.crt", "GATEWAY_TLS_KEY_FILE": "/k.pem"},
    {"GATEWAY_TLS_CERT_FILE": "/c.pem; include /x", "GATEWAY_TLS_KEY_FILE": "/k.pem"},
])
def test_both_refuse_a_bad_optional_setting(settings):
    code, _, err = gateway_edge_exports({**gateway_image_env(), **settings})
    assert code != 0 and ("GATEWAY_TRUSTED_PROXIES" in err or "TLS" in err), (code, err)
    with pytest.raises(ValueError):
        gateway_render.edge(settings)


def test_render_py_refuses_a_range_nginx_would_misread():
    for bad in ("10.0.0.1/8", "example.com", "300.1.1.1"):
        with pytest.raises(ValueError):
            gateway_render.edge({"GATEWAY_TRUSTED_PROXIES": bad})


def test_the_image_sources_the_edge_script_after_the_constants_and_defaults_to_off():
    runtime = image_stages(GATEWAY)[-1]
    copies = [shlex.split(a) for a in instructions(runtime, "COPY")]
    (copy,) = [c for c in copies if c[-2] == "gateway/edge.envsh"]
    assert "--chmod=0755" in copy, copy
    (constants,) = [c for c in copies if c[0] == "--from=constants"]
    assert re.fullmatch(r"/docker-entrypoint\.d/1\d-[\w-]+\.envsh", copy[-1]), copy
    assert constants[-1].rsplit("/", 1)[1] < copy[-1].rsplit("/", 1)[1] < "20-envsubst-on-templates.sh"
    image = gateway_image_env()
    assert {k: image[k] for k in gateway_render.OPTIONAL} == gateway_render.OPTIONAL


def test_gateway_config_with_tls_and_trusted_proxies_passes_nginx_t(tmp_path):
    cert, key = self_signed(tmp_path)
    values = loopback(gateway_values(compose_env(GATEWAY)), tmp_path)
    values.update(GATEWAY_TRUSTED_PROXIES="10.0.0.0/8,fd00::/8", GATEWAY_TLS_CERT_FILE=str(cert),
                  GATEWAY_TLS_KEY_FILE=str(key))
    conf = gateway_render.render(values)
    assert "set_real_ip_from 10.0.0.0/8; set_real_ip_from fd00::/8;" in conf
    assert re.search(r"listen \d+ ssl;", conf)
    proc = nginx_test(conf, tmp_path)
    assert proc.returncode == 0, proc.stderr
    # and a certificate that is not there is an error nginx -t reports
    values["GATEWAY_TLS_CERT_FILE"] = str(tmp_path / "missing.crt")
    (tmp_path / "again").mkdir()
    proc = nginx_test(gateway_render.render(values), tmp_path / "again")
    assert proc.returncode != 0 and "missing.crt" in proc.stderr
