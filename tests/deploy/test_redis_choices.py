"""What the Redis choices of Kubernetes share, and how they stand to each other: chat waits for a
replica exactly with Sentinels; the choices are never combined (together they fail to render)
and come after network-policies; docs/deploy.md says what URL each one takes; the contract's
settings agree with the code."""
import os
import re
import subprocess

import yaml

from redis_setup import CONTRACT_SETTINGS, EXTERNAL, REDIS_CHOICES, SENTINEL, choice, documented_url
from support.deploy import DEPLOY_DOC, K8S, OVERLAYS, SERVICES, container, k8s_env, kustomization, kustomize_command, settings


def test_chat_waits_for_a_replica_with_sentinels_only(rendered):
    objects = rendered["objects"]
    on = choice(rendered["components"]) == SENTINEL
    for name in SERVICES:
        env = k8s_env(container(objects, name))
        expected = {"value": "1"} if on and name == "chat" else None
        got = env.get("CHAT_ACK_REPLICAS")
        assert (got and {"value": got.get("value")}) == expected, (name, got)
        assert env["REDIS_URL_FILE"]["value"].startswith("/run/secrets/webchat-redis/")


def test_the_redis_choices_are_alone_and_after_network_policies(tmp_path):
    """Together they fail to render (one Redis); each overlay lists its Redis choice (if any,
    uncommented) after network-policies, whose Redis policy external-redis removes."""
    for overlay in OVERLAYS:
        names = [c.rstrip("/").rpartition("/")[2] for c in kustomization(overlay).get("components", [])]
        chosen = [n for n in names if n in REDIS_CHOICES]
        assert len(chosen) <= 1, overlay
        if chosen and "network-policies" in names:
            assert names.index(chosen[0]) > names.index("network-policies"), overlay
    target = tmp_path / "both"
    target.mkdir()
    (target / "kustomization.yaml").write_text(yaml.safe_dump({
        "resources": [os.path.relpath(K8S / "base", target)],
        "components": [os.path.relpath(K8S / "components" / c, target) for c in (EXTERNAL, SENTINEL)]}))
    proc = subprocess.run(kustomize_command() + [str(target)], capture_output=True, text=True, timeout=60)
    assert "redis" in proc.stderr, proc.stderr
    assert proc.returncode != 0, "external-redis and redis-sentinel together must not render"


def test_the_docs_say_what_url_each_choice_takes():
    text = DEPLOY_DOC.read_text()
    m = re.search(r"^## Redis: single, Sentinel, or your own\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    assert m, "docs/deploy.md has no section '## Redis: single, Sentinel, or your own'"
    section = m.group(1)
    for form in ('`redis://:$P@redis:6379/0`', "rediss://", "redis+sentinel://", "CHAT_ACK_REPLICAS=1",
                 "k8s/components/redis-sentinel", "k8s/components/external-redis", "docker-compose.sentinel.yml"):
        assert form in section, f"the Redis section does not mention {form}"
    documented_url("redis+sentinel")


def test_the_contract_settings_agree_with_the_code_where_it_has_them():
    """CHAT_ACK_REPLICAS is set ahead of the code that reads it (redis_setup.CONTRACT_SETTINGS);
    once the code has it, it must be the contract's (an integer, default 0)."""
    for name, contract in CONTRACT_SETTINGS.items():
        code = settings(name)
        for key, default in contract.items():
            if key in code:
                assert type(code[key]) is type(default) and code[key] == default, (name, key, code[key])
