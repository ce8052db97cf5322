"""Secrets are referenced, never written: no Secret objects or generators in k8s/, every secret
setting from a Secret the docs say how to create, compose's secrets required variables, and no
secret value (nor a .env file) in any committed file."""
import re
import subprocess

import yaml

from redis_setup import COMPOSE_CLUSTER_FILE, COMPOSE_SENTINEL_FILE, REDIS_CLUSTER_SCRIPT, REDIS_HA_SCRIPT
from support.deploy import (
    DEPLOY_DOC,
    K8S,
    LITERAL_SECRETS,
    ROOT,
    SECRET_NAME,
    compose_raw,
    deploy_files,
    k8s_env,
    pod_specs,
    secret_source,
    tracked_files,
)


#: Beyond LITERAL_SECRETS, the forms of the Sentinel and Cluster setups and of your own Redis: a
#: password in any Redis URL (rediss://, redis+sentinel://, redis+cluster://), a replica's or a
#: Sentinel's password directive.
MORE_LITERAL_SECRETS = [
    re.compile(r"rediss?(?:\+sentinel|\+cluster)?://:(?!\$)[^@\s'\"]+@"),
    re.compile(r"\b(?:masterauth|sentinel-pass)\s+(?![%$\"'])\S+"),
    re.compile(r"\bauth-pass\s+\S+\s+(?![%$\"'])\S+"),
]


def test_no_secret_objects_or_generators_in_k8s():
    for path in K8S.rglob("*.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is None:
                continue
            assert doc.get("kind") != "Secret", f"{path}: a Secret in a committed file"
            assert "secretGenerator" not in doc, f"{path}: secretGenerator needs the secret in the repository"


def test_k8s_secrets_are_referenced_and_documented(rendered):
    """Every secret setting comes from a Secret (created by hand as docs/deploy.md says, with the
    same name and keys: as a variable or as a mounted file), never from a literal value."""
    doc = DEPLOY_DOC.read_text()
    refs = set()
    for name, pod in pod_specs(rendered["objects"]).items():
        for c in pod["containers"]:
            for key, e in k8s_env(c).items():
                source = secret_source(pod, c, key, e)
                if SECRET_NAME.search(key) or key in ("REDIS_URL", "REDIS_URL_FILE"):
                    assert source, f"{name}: {key} must come from a Secret (a secretKeyRef, or a file of a Secret volume)"
                if source:
                    refs.add(source)
        # Secrets mounted as files (Redis reads its password from one): each key named.
        for volume in pod.get("volumes", []):
            if "secret" in volume:
                items = volume["secret"].get("items")
                assert items, f"{name}: volume {volume['name']} must name the Secret's keys (items)"
                refs |= {(volume["secret"]["secretName"], item["key"]) for item in items}
    assert refs
    for secret, key in refs:
        if key in ("tls.crt", "tls.key"):  # a TLS Secret: kubectl create secret tls NAME --cert= --key=
            assert re.search(rf"kubectl[^\n`]*create secret tls {re.escape(secret)} --cert=\S+ --key=", doc), \
                f"docs/deploy.md does not say how to create the TLS Secret {secret}"
            continue
        commands = re.findall(rf"kubectl[^\n]*create secret generic {re.escape(secret)}\b(?:[^\n]*\\\n)*[^\n]*", doc)
        assert commands, f"docs/deploy.md does not say how to create the Secret {secret}"
        assert any(f"--from-literal={key}=" in cmd for cmd in commands), f"{secret}: key {key} not documented"


def test_compose_secrets_are_required_variables():
    """Secret values in compose come from the deployer's environment (``${VAR:?...}``)."""
    raw = compose_raw()
    for name, spec in raw["services"].items():
        for key, value in (spec.get("environment") or {}).items():
            if SECRET_NAME.search(key) or key == "REDIS_URL":
                secret_vars = re.findall(r"\$\{([A-Z_]+):\?", str(value))
                assert secret_vars, f"{name}: {key} must be ${{VAR:?message}}, not a value"


def test_no_secret_values_in_the_deploy_files():
    for path in deploy_files():
        text = path.read_text()
        for pattern in LITERAL_SECRETS:
            m = pattern.search(text)
            assert not m, f"{path.relative_to(ROOT)}: {m.group(0)!r} looks like a committed secret"
    # The patterns do catch a literal.
    assert LITERAL_SECRETS[0].search("REDIS_URL: redis://:hunter2@redis:6379/0")
    assert not LITERAL_SECRETS[0].search("redis://:${REDIS_PASSWORD:?x}@redis:6379/0")
    assert LITERAL_SECRETS[2].search("--from-literal=password=hunter2 \\")
    assert not LITERAL_SECRETS[2].search('--from-literal=url="redis://:$P@redis:6379/0"')


def test_no_redis_password_in_the_redis_choices_files():
    """The Sentinel, Cluster and own-Redis files (and the deploy files again) with the patterns of their forms."""
    for path in deploy_files() + [COMPOSE_SENTINEL_FILE, REDIS_HA_SCRIPT, REDIS_HA_SCRIPT.parent / "kustomization.yaml",
                                  COMPOSE_CLUSTER_FILE, REDIS_CLUSTER_SCRIPT, REDIS_CLUSTER_SCRIPT.parent / "kustomization.yaml"]:
        text = path.read_text()
        for pattern in LITERAL_SECRETS + MORE_LITERAL_SECRETS:
            m = pattern.search(text)
            assert not m, f"{path.relative_to(ROOT)}: {m.group(0)!r} looks like a committed secret"
    # The patterns do catch a literal, and leave variables alone.
    for literal in ("redis+sentinel://:hunter2@s1:26379/webchat/0", "rediss://:hunter2@host:6380/0", "redis+cluster://:hunter2@n1:6379,n2",
                    "masterauth hunter2", "sentinel sentinel-pass hunter2", "sentinel auth-pass webchat hunter2"):
        assert any(p.search(literal) for p in MORE_LITERAL_SECRETS), literal
    for variable in ("redis+sentinel://:${REDIS_PASSWORD:?x}@s1:26379/webchat/0", 'rediss://:$P@host:6380/0',
                     "redis+cluster://:${REDIS_PASSWORD:?x}@n1:6379,n2:6379",
                     "printf 'masterauth %s\\n'", "printf 'sentinel auth-pass %s %s\\n'"):
        assert not any(p.search(variable) for p in MORE_LITERAL_SECRETS), variable


def test_no_redis_password_in_any_committed_file():
    """Beyond the deploy files: no tracked file outside the tests has a Redis URL with a
    password or a requirepass line (tests may use throwaway values)."""
    checked = 0
    for path in tracked_files():
        if "tests" in path.relative_to(ROOT).parts or not path.is_file():
            continue
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        checked += 1
        for pattern in LITERAL_SECRETS[:2]:
            m = pattern.search(text)
            assert not m, f"{path.relative_to(ROOT)}: {m.group(0)!r} looks like a committed secret"
    assert checked > 20


def test_no_env_file_is_committed():
    proc = subprocess.run(["git", "ls-files", "--", ".env", "*.env", "secrets"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == "", proc.stdout
