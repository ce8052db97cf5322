"""Media: one folder, written by the files service and read by nginx, in compose and Kubernetes,
with the same values on both sides and the files service's internal location in the template."""
import os
import re

from support.deploy import (
    GATEWAY,
    base_objects,
    compose,
    compose_env,
    compose_mounts,
    compose_raw,
    container,
    dockerfile_user,
    find,
    gateway_render,
    image_stages,
    k8s_env,
    k8s_mounts,
    media_shared,
    pod_specs,
    secret_source,
    settings,
)
from webchat_common import service


def test_compose_media_volume_is_shared_with_the_gateway(tmp_path):
    files_env, gateway_env = compose_env("files"), compose_env(GATEWAY)
    if not media_shared():
        assert not compose_mounts(GATEWAY)
        return
    root = files_env["MEDIA_ROOT"]
    assert gateway_env["MEDIA_ROOT"] == root
    source, read_only = compose_mounts("files")[root]
    assert source in compose()["volumes"] and not read_only
    assert compose_mounts(GATEWAY)[root] == (source, True), "the gateway reads the same volume, read-only"
    # The image makes the folder, owned by the service's user: an empty named volume starts so.
    # The files service declares it; the Dockerfile makes the declared folders, after
    # SERVICE_NAME is set, for its numeric user.
    runtime = image_stages("files")[-1]
    uid, gid = dockerfile_user(runtime)
    assert root in service.image_volumes("files")
    steps = [(instr, args) for instr, args in runtime]
    (prepare,) = [i for i, (instr, args) in enumerate(steps)
                  if instr == "RUN" and re.search(rf"-m webchat_common\.service prepare-image --owner {uid}:{gid or uid}\b", args)]
    assert any(instr == "ENV" and "SERVICE_NAME=files" in args for instr, args in steps[:prepare])
    made = service.prepare_image("files", f"{os.getuid()}:{os.getgid()}", root=tmp_path)
    assert made == [tmp_path / root.lstrip("/")] and made[0].is_dir()


def test_k8s_media_volume_is_shared_with_the_gateway(rendered):
    objects = rendered["objects"]
    files_env, gateway_env = k8s_env(container(objects, "files")), k8s_env(container(objects, GATEWAY))
    if not media_shared():
        assert not find(objects, "PersistentVolumeClaim")
        return
    root = files_env["MEDIA_ROOT"]["value"]
    assert gateway_env["MEDIA_ROOT"]["value"] == root
    claim, read_only = k8s_mounts(objects, "files")[root]
    assert find(objects, "PersistentVolumeClaim", claim) and not read_only
    assert k8s_mounts(objects, GATEWAY)[root] == (claim, True)
    gateway_pod = pod_specs(objects)[GATEWAY]
    files_gid = pod_specs(objects)["files"]["securityContext"]["fsGroup"]
    assert files_gid in gateway_pod["securityContext"].get("supplementalGroups", []), "nginx can read the media"
    assert "fsGroup" not in gateway_pod["securityContext"], "would re-own the shared volume"
    (pvc,) = find(base_objects(), "PersistentVolumeClaim", claim)
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"], "pods on several nodes share it (dev: one node)"


def test_files_and_gateway_share_the_same_values():
    """A setting both read (the media folder, the link secret) has the same source in both."""
    raw = compose_raw()["services"]
    shared = set(compose_env("files")) & set(compose_env(GATEWAY))
    for key in shared:
        assert raw["files"]["environment"][key] == raw[GATEWAY]["environment"][key], key
    objects = base_objects()
    pods = pod_specs(objects)
    sources = {}
    for name in ("files", GATEWAY):
        c = container(objects, name)
        sources[name] = {k[:-len("_FILE")] if k.endswith("_FILE") else k: secret_source(pods[name], c, k, e) or e
                         for k, e in k8s_env(c).items()}
    assert set(sources["files"]) & set(sources[GATEWAY]) == shared
    for key in shared:  # the same value, or the same Secret's key (as a variable or as a file)
        assert sources["files"][key] == sources[GATEWAY][key], key


def test_files_internal_location_is_in_the_template():
    prefix = settings("files").get("MEDIA_ACCEL_PREFIX")
    if prefix is None:
        return
    text = gateway_render.TEMPLATE.read_text()
    m = re.search(rf"location {re.escape(prefix)} \{{(.*?)\}}", text, re.S)
    assert m and "internal;" in m.group(1), f"the template has no internal location {prefix}"
