"""The chat pods' memory limits and the clients one chat process takes agree (see
``chat_service.capacity``): in every overlay, the cap a chat process derives from its pod's
limit fits the memory a client was measured to hold, and is large enough to be worth a pod."""
import re

import pytest

from chat_service.capacity import max_clients
from chat_service.config import ChatConfig
from support.deploy import OVERLAYS, container, k8s_env, kustomize
from webchat_common import service

#: What one client holds, measured by the chat benchmark (docs/benchmarks.md: 39.2 KiB a
#: socket, 34.5 KiB a waiting long-poll): the larger.
MEASURED_KIB = 39.2
#: Fewer clients than this per pod is a misconfiguration, not a capacity.
AT_LEAST = 1000

UNITS = {"": 1, "k": 1000, "M": 1000 ** 2, "G": 1000 ** 3, "Ki": 1024, "Mi": 1024 ** 2, "Gi": 1024 ** 3}


def quantity(text):
    """A Kubernetes memory quantity ("256Mi", "1G", "134217728") in bytes."""
    m = re.fullmatch(r"([0-9]+)(|k|M|G|Ki|Mi|Gi)", str(text))
    assert m, f"unexpected memory quantity {text!r}"
    return int(m.group(1)) * UNITS[m.group(2)]


def test_quantities_are_read_as_kubernetes_reads_them():
    assert quantity("256Mi") == 256 * 1024 * 1024
    assert quantity("1G") == 10 ** 9
    assert quantity(134217728) == 134217728
    with pytest.raises(AssertionError):
        quantity("1.5Gi")


def chat_pod(objects):
    """The chat container's memory limit, worker processes and capacity settings, as deployed."""
    c = container(objects, "chat")
    env = {k: e.get("value") for k, e in k8s_env(c).items()}
    cfg = {k: int(env.get(k) or getattr(ChatConfig, k))
           for k in ("CHAT_MAX_CLIENTS", "CHAT_PROCESS_MEMORY_MIB", "CHAT_CLIENT_MEMORY_KIB")}
    return quantity(c["resources"]["limits"]["memory"]), service.workers("chat", env), cfg


@pytest.mark.parametrize("overlay", OVERLAYS, ids=lambda o: o.name)
def test_a_chat_process_takes_what_its_pod_s_memory_holds(overlay):
    limit, processes, cfg = chat_pod(kustomize(overlay))
    cap = max_clients(cfg, limit=limit, processes=processes)
    per_process = limit / processes
    assert cap > 0, "a chat pod with a memory limit must cap its clients"
    assert cfg["CHAT_PROCESS_MEMORY_MIB"] * 1024 * 1024 + cap * MEASURED_KIB * 1024 <= per_process, (
        f"{overlay.name}: {cap} clients of {MEASURED_KIB} KiB do not fit in {per_process / 2**20:.0f} MiB")
    assert cap * processes >= AT_LEAST, f"{overlay.name}: a chat pod takes only {cap * processes} clients"


@pytest.mark.parametrize("overlay", OVERLAYS, ids=lambda o: o.name)
def test_the_chat_autoscaler_scales_out_before_a_pod_refuses_clients(overlay):
    """The chat autoscaler's memory target is below the memory a pod holds at its cap (so pods
    are added before clients are refused) and above an idle pod's (so it does not scale idle)."""
    objects = kustomize(overlay)
    (hpa,) = [o for o in objects if o["kind"] == "HorizontalPodAutoscaler" and o["spec"]["scaleTargetRef"]["name"] == "chat"]
    (memory,) = [m["resource"]["target"] for m in hpa["spec"]["metrics"]
                 if m["type"] == "Resource" and m["resource"]["name"] == "memory"]
    target = quantity(memory["averageValue"])
    limit, processes, cfg = chat_pod(objects)
    cap = max_clients(cfg, limit=limit, processes=processes)
    # a process was measured at ~45 MiB before its clients
    at_cap = processes * (45 * 1024 * 1024 + cap * MEASURED_KIB * 1024)
    assert 64 * 1024 * 1024 < target < at_cap <= limit, (target, at_cap, limit)
