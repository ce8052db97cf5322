"""k8s/: every overlay with and without every optional component, rendered by kustomize and
validated against the Kubernetes API schemas (which can fail); namespaces, one file per service,
locked-down pods running as the image user, the images compose builds, Services that select
their pods, and Flask pods that match the code (ports, probes, environment, grace period)."""
import kubernetes_validate
import pytest
import yaml

from support.deploy import (
    COMPONENTS,
    GATEWAY,
    K8S,
    K8S_VERSION,
    OVERLAYS,
    SERVICES,
    assert_route,
    base_objects,
    config_class,
    container,
    dockerfile_user,
    find,
    gateway_render,
    gunicorn_port,
    gunicorn_settings,
    image_stages,
    k8s_env,
    setting_names,
    kustomization,
    make_app,
    pod_specs,
    required_settings,
    settings,
    variants,
    workload,
)
from redis_setup import REDIS_CHOICES, allowed_env as contract_allowed_env, contract_values_parse, supported_variants
from webchat_common.config import _coerce


def test_base_is_namespace_agnostic():
    for obj in base_objects():
        assert "namespace" not in obj["metadata"], f"{obj['kind']}/{obj['metadata']['name']}"
    for path in (K8S / "base").glob("*.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            assert doc.get("kind") != "Namespace"


def test_base_has_one_file_per_service():
    for name in SERVICES + (GATEWAY, "redis"):
        docs = list(yaml.safe_load_all((K8S / "base" / f"{name}.yaml").read_text()))
        kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
        assert {("Service", name), ("ServiceAccount", name)} <= kinds
        assert ("Deployment", name) in kinds or ("StatefulSet", name) in kinds


def test_the_gateway_configmap_is_the_template_itself():
    """Generated from gateway/nginx.conf.template by gateway/kustomization.yaml: no copy."""
    (cm,) = [o for o in base_objects() if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("gateway-template")]
    assert cm["data"] == {"nginx.conf.template": gateway_render.TEMPLATE.read_text()}
    volumes = workload(base_objects(), GATEWAY)["spec"]["template"]["spec"]["volumes"]
    assert cm["metadata"]["name"] in [v.get("configMap", {}).get("name") for v in volumes]
    mounts = container(base_objects(), GATEWAY)["volumeMounts"]
    assert any(m["mountPath"] == "/etc/nginx/templates/nginx.conf.template" for m in mounts)
    copies = [p for p in K8S.rglob("*") if p.is_file() and "listen ${GATEWAY_PORT}" in p.read_text(errors="ignore")]
    assert not copies, f"a second copy of the template: {copies}"


def test_every_overlay_and_component_combination_is_covered():
    """Every subset of the components, except those with both Redis choices (one Redis)."""
    assert {o.name for o in OVERLAYS} >= {"dev", "prod"}
    assert {c.name for c in COMPONENTS} >= {"network-policies", *REDIS_CHOICES}
    assert len(variants()) == len(OVERLAYS) * 2 ** len(COMPONENTS)
    others = len(COMPONENTS) - len(REDIS_CHOICES)
    assert len(supported_variants()) == len(OVERLAYS) * 2 ** others * (1 + len(REDIS_CHOICES))


@pytest.mark.parametrize("version", [K8S_VERSION, kubernetes_validate.latest_version()])
def test_objects_match_the_kubernetes_api_schemas(rendered, version):
    """Against the oldest version we support and the newest the package knows (an API removed
    since would show here)."""
    errors = []
    for obj in rendered["objects"]:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"{obj['kind']}/{obj['metadata']['name']}: {exc.message} at {list(exc.path)}")
    assert not errors, "\n".join(errors)


def test_schema_validation_can_fail():
    deployment = dict(workload(base_objects(), "auth"))
    deployment["spec"] = dict(deployment["spec"], replica=2)
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)


def test_overlay_sets_its_namespace_everywhere(rendered):
    namespace = kustomization(rendered["overlay"])["namespace"]
    for obj in rendered["objects"]:
        if obj["kind"] == "Namespace":
            assert obj["metadata"]["name"] == namespace
        else:
            assert obj["metadata"].get("namespace") == namespace, f"{obj['kind']}/{obj['metadata']['name']}"


def test_pods_are_locked_down(rendered):
    """The "restricted" Pod Security Standard and more: non-root, RuntimeDefault seccomp, no
    privilege escalation, no capabilities, read-only root filesystem, requests and limits,
    probes, its own service account without an API token, no service-link variables."""
    objects = rendered["objects"]
    accounts = {o["metadata"]["name"] for o in find(objects, "ServiceAccount")}
    for name, pod in pod_specs(objects).items():
        sc = pod["securityContext"]
        assert sc["runAsNonRoot"] is True and sc["runAsUser"] > 0, name
        assert sc["seccompProfile"]["type"] == "RuntimeDefault", name
        assert pod["serviceAccountName"] == name and name in accounts
        assert pod["automountServiceAccountToken"] is False
        assert pod["enableServiceLinks"] is False, name
        assert not pod.get("hostNetwork") and not pod.get("hostPID")
        for c in pod["containers"]:
            csc = c["securityContext"]
            assert csc["allowPrivilegeEscalation"] is False and not csc.get("privileged"), name
            assert csc["capabilities"]["drop"] == ["ALL"] and not csc["capabilities"].get("add"), name
            assert csc["readOnlyRootFilesystem"] is True, name
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(c["resources"][kind]), (name, kind)
            assert c["livenessProbe"] and c["readinessProbe"], name
            mounts = {m["mountPath"] for m in c.get("volumeMounts", [])}
            assert "/tmp" in mounts, f"{name}: a writable /tmp (emptyDir) beside the read-only root"
            image = c["image"]
            assert ":" in image.rpartition("/")[2] and not image.endswith(":latest"), image


def test_pods_run_as_the_image_user(rendered):
    for name in SERVICES + (GATEWAY,):
        uid, gid = dockerfile_user(image_stages(name)[-1])
        sc = pod_specs(rendered["objects"])[name]["securityContext"]
        assert (str(sc["runAsUser"]), str(sc["runAsGroup"])) == (uid, gid or uid), name


def test_images_are_the_ones_compose_builds(rendered):
    for name in SERVICES + (GATEWAY,):
        image = container(rendered["objects"], name)["image"]
        assert image.rpartition(":")[0].endswith(f"webchat/{name}"), image


def test_services_select_their_pods_and_ports(rendered):
    objects = rendered["objects"]
    for svc in find(objects, "Service"):
        name = svc["metadata"]["name"]
        pod = workload(objects, name)["spec"]["template"]
        assert svc["spec"]["selector"].items() <= pod["metadata"]["labels"].items(), name
        container_ports = {p["name"]: p["containerPort"] for c in pod["spec"]["containers"] for p in c["ports"]}
        for port in svc["spec"]["ports"]:
            assert port["targetPort"] in container_ports or port["targetPort"] in container_ports.values(), (name, port)


def test_flask_pods_match_the_code(rendered, tmp_path):
    objects = rendered["objects"]
    conf = gunicorn_settings()
    for name in SERVICES:
        pod = pod_specs(objects)[name]
        c = container(objects, name)
        env = k8s_env(c)
        port = gunicorn_port(**{k: e["value"] for k, e in env.items() if k == "PORT" and "value" in e})
        assert [p["containerPort"] for p in c["ports"]] == [port], name
        (svc,) = find(objects, "Service", name)
        assert [p["port"] for p in svc["spec"]["ports"]] == [port], "compose and k8s share the gateway's addresses"
        app = make_app(name, tmp_path)
        assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
        for probe in ("livenessProbe", "readinessProbe"):
            assert_route(app, c[probe]["httpGet"]["path"], f"k8s {name} {probe}")
        drain = float(env["SHUTDOWN_DRAIN_SECONDS"]["value"]) if "SHUTDOWN_DRAIN_SECONDS" in env else conf["shutdown_drain_seconds"]
        assert pod["terminationGracePeriodSeconds"] > conf["graceful_timeout"] + drain, name

        unknown = set(env) - contract_allowed_env(name)
        assert not unknown, f"k8s sets variables {name} does not read: {unknown}"
        assert contract_values_parse(name, {k: e["value"] for k, e in env.items() if "value" in e})
        missing = [s for s in required_settings(config_class(name)) if s not in setting_names(env)]
        assert not missing, f"k8s leaves required settings of {name} unset: {missing}"
        defaults = settings(name)
        for key, e in env.items():
            if "value" in e and key in defaults:
                _coerce(key, defaults[key], e["value"])
    # Several chat pods at all times (messages cross pods through Redis): its autoscaler's floor.
    for objs in (objects, base_objects()):
        (hpa,) = find(objs, "HorizontalPodAutoscaler", "chat")
        assert hpa["spec"]["minReplicas"] >= 2
