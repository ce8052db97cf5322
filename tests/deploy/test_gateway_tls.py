"""The gateway-tls component (k8s/components/gateway-tls): wherever it is on, the gateway's TLS
settings name the files of the mounted TLS Secret, its probes ask over HTTPS, and nginx
accepts the configuration those settings render (with a certificate made for the test at the
paths the Secret would be mounted at)."""
from pathlib import PurePosixPath

from support.deploy import GATEWAY, container, gateway_render, gateway_values, k8s_env, loopback, nginx_test
from support.tls import self_signed


def test_the_gateway_serves_the_mounted_certificate_when_the_component_is_on(rendered, tmp_path):
    c = container(rendered["objects"], GATEWAY)
    env = {k: e.get("value") for k, e in k8s_env(c).items()}
    on = any(p.name == "gateway-tls" for p in rendered["components"])
    assert bool(env.get("GATEWAY_TLS_CERT_FILE")) == on
    schemes = {c[p]["httpGet"].get("scheme", "HTTP") for p in ("livenessProbe", "readinessProbe")}
    assert schemes == {"HTTPS" if on else "HTTP"}
    if not on:
        return
    pod = next(o for o in rendered["objects"] if o["kind"] == "Deployment" and o["metadata"]["name"] == GATEWAY)
    volumes = {v["name"]: v for v in pod["spec"]["template"]["spec"]["volumes"]}
    files = {}
    for m in c["volumeMounts"]:
        secret = volumes[m["name"]].get("secret")
        if secret:
            for item in secret["items"]:
                files[str(PurePosixPath(m["mountPath"]) / item["path"])] = (secret["secretName"], item["key"])
    assert files[env["GATEWAY_TLS_CERT_FILE"]] == ("webchat-gateway-tls", "tls.crt")
    assert files[env["GATEWAY_TLS_KEY_FILE"]] == ("webchat-gateway-tls", "tls.key")
    cert, key = self_signed(tmp_path)
    values = loopback(gateway_values({k: v if v is not None else "placeholder-from-a-secret" for k, v in env.items()}),
                      tmp_path)
    values.update(GATEWAY_TLS_CERT_FILE=str(cert), GATEWAY_TLS_KEY_FILE=str(key))
    proc = nginx_test(gateway_render.render(values), tmp_path)
    assert proc.returncode == 0, proc.stderr
