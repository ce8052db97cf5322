"""What the Redis choices share, and how they stand to each other: chat waits for a replica
exactly with the choices that have replicas (Sentinel, Cluster); the choices are never combined
(two of them fail to render) and come after network-policies; docs/deploy.md says what URL each
one takes; the contract's settings agree with the code; each compose override file (Sentinel,
Cluster) is valid compose and refuses to start without the Redis password."""
import itertools
import json
import os
import re
import subprocess

import jsonschema
import pytest
import yaml

from redis_setup import (ACK_REPLICA_CHOICES, CLUSTER, COMPOSE_CLUSTER_FILE, COMPOSE_SENTINEL_FILE, CONTRACT_SETTINGS, EXTERNAL,
                         REDIS_CHOICES, choice, compose_override_config, documented_url)
from support.deploy import (COMPOSE_TEST_ENV, DEPLOY_DOC, K8S, OVERLAYS, SERVICES, compose_schema, container, k8s_env,
                            kustomization, kustomize_command, settings)

#: The docs' section on the Redis choices.
SECTION = "Redis: single, Sentinel, Cluster, or your own"
#: The components that remove the base's single Redis (external-redis, and redis-cluster, which
#: includes it): listed before another choice, they make it fail to render.  (redis-sentinel
#: first, then one of them, renders: Sentinels with no Redis to watch; docs/deploy.md says so.)
REMOVERS = (EXTERNAL, CLUSTER)
#: The compose files that choose Redis, over docker-compose.yml.
COMPOSE_OVERRIDES = (COMPOSE_SENTINEL_FILE, COMPOSE_CLUSTER_FILE)


def test_chat_waits_for_a_replica_with_replicas_only(rendered):
    objects = rendered["objects"]
    on = choice(rendered["components"]) in ACK_REPLICA_CHOICES
    for name in SERVICES:
        env = k8s_env(container(objects, name))
        expected = {"value": "1"} if on and name == "chat" else None
        got = env.get("CHAT_ACK_REPLICAS")
        assert (got and {"value": got.get("value")}) == expected, (name, got)
        assert env["REDIS_URL_FILE"]["value"].startswith("/run/secrets/webchat-redis/")


def test_each_overlay_lists_one_redis_choice_at_most_after_network_policies():
    for overlay in OVERLAYS:
        names = [c.rstrip("/").rpartition("/")[2] for c in kustomization(overlay).get("components", [])]
        chosen = [n for n in names if n in REDIS_CHOICES]
        assert len(chosen) <= 1, overlay
        if chosen and "network-policies" in names:
            assert names.index(chosen[0]) > names.index("network-policies"), overlay


@pytest.mark.parametrize("first, second", [(a, b) for a, b in itertools.permutations(REDIS_CHOICES, 2) if a in REMOVERS])
def test_two_redis_choices_do_not_render(first, second, tmp_path):
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump({
        "resources": [os.path.relpath(K8S / "base", tmp_path)],
        "components": [os.path.relpath(K8S / "components" / c, tmp_path) for c in (first, second)]}))
    proc = subprocess.run(kustomize_command() + [str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert "redis" in proc.stderr, proc.stderr
    assert proc.returncode != 0, f"{first} and {second} together must not render"


def test_the_docs_say_what_url_each_choice_takes():
    text = DEPLOY_DOC.read_text()
    m = re.search(rf"^## {re.escape(SECTION)}\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    assert m, f"docs/deploy.md has no section '## {SECTION}'"
    section = m.group(1)
    for form in ('`redis://:$P@redis:6379/0`', "rediss://", "redis+sentinel://", "redis+cluster://", "CHAT_ACK_REPLICAS=1",
                 *(f"k8s/components/{c}" for c in REDIS_CHOICES), "docker-compose.sentinel.yml", "docker-compose.cluster.yml",
                 "](cluster.md"):
        assert form in section, f"the Redis section does not mention {form}"
    for scheme in ("redis+sentinel", "redis+cluster"):
        documented_url(scheme)


def test_the_contract_settings_agree_with_the_code_where_it_has_them():
    """CHAT_ACK_REPLICAS is set ahead of the code that reads it (redis_setup.CONTRACT_SETTINGS);
    once the code has it, it must be the contract's (an integer, default 0)."""
    for name, contract in CONTRACT_SETTINGS.items():
        code = settings(name)
        for key, default in contract.items():
            if key in code:
                assert type(code[key]) is type(default) and code[key] == default, (name, key, code[key])


@pytest.mark.parametrize("override", COMPOSE_OVERRIDES, ids=lambda p: p.name)
def test_each_compose_override_file_matches_the_compose_spec_schema(override, tmp_path):
    """The file itself and what compose makes of it over docker-compose.yml."""
    proc = compose_override_config(override, COMPOSE_TEST_ENV, tmp_path)
    assert proc.returncode == 0, proc.stderr
    schema = compose_schema()
    validator = jsonschema.validators.validator_for(schema)(schema)
    for config in (yaml.safe_load(override.read_text()), json.loads(proc.stdout)):
        errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(config)]
        assert not errors, "\n".join(errors)


@pytest.mark.parametrize("override", COMPOSE_OVERRIDES, ids=lambda p: p.name)
def test_each_compose_override_refuses_to_start_without_the_password(override, tmp_path):
    for value in (None, ""):
        env = {k: v for k, v in COMPOSE_TEST_ENV.items() if k != "REDIS_PASSWORD"}
        if value is not None:
            env["REDIS_PASSWORD"] = value
        proc = compose_override_config(override, env, tmp_path)
        assert proc.returncode != 0 and "REDIS_PASSWORD" in proc.stderr, proc.stderr
