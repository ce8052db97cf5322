"""checkov's default Kubernetes policies on every overlay as rendered (kubectl kustomize
k8s/overlays/<name>), and on every overlay with each Redis choice added to its components
(k8s/components/redis-sentinel, redis-cluster, external-redis): no failed check, and every skip carries its reason (an annotation
``checkov.io/skipN: CHECK=reason`` on the workload, or a commented entry of ``skip-check`` in
.checkov.yaml), listed in docs/deploy.md.  checkov runs from its own pinned virtualenv
(checkov_env.py: it cannot share the project's), made on first use."""
import json
import os
import re
import subprocess

import pytest
import yaml

import checkov_env
from redis_setup import REDIS_CHOICES, ordered
from support.deploy import DEPLOY_DOC, K8S, OVERLAYS, ROOT, kustomization, kustomize_command, render_variant

CONFIG = ROOT / ".checkov.yaml"
#: A workload that breaks several default policies: checkov must report it.
BAD_DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: bad
  namespace: checkov-test
spec:
  selector:
    matchLabels: {app: bad}
  template:
    metadata:
      labels: {app: bad}
    spec:
      containers:
        - name: bad
          image: example/bad:1.0
          securityContext:
            privileged: true
"""


@pytest.fixture(scope="module")
def checkov():
    return checkov_env.ensure()


def run_checkov(checkov, path):
    """checkov with .checkov.yaml on one file: its JSON report of the kubernetes framework."""
    env = dict(os.environ, CKV_SKIP_PACKAGE_UPDATE_CHECK="true", BC_SKIP_MAPPING="true")
    proc = subprocess.run([str(checkov), "--config-file", str(CONFIG), "-f", str(path), "-o", "json"],
                          cwd=ROOT, capture_output=True, text=True, env=env, timeout=240)
    assert proc.returncode in (0, 1), f"checkov exited {proc.returncode}:\n{proc.stderr[-4000:]}"
    report = json.loads(proc.stdout)
    reports = report if isinstance(report, list) else [report]
    (kubernetes,) = [r for r in reports if r["check_type"] == "kubernetes"]
    assert kubernetes["summary"]["parsing_errors"] == 0, kubernetes["summary"]
    return kubernetes


def config_skips():
    """The ``skip-check`` entries of .checkov.yaml, each with the comment lines above it."""
    lines = CONFIG.read_text().splitlines()
    skips, comment = {}, []
    for line in lines[lines.index("skip-check:") + 1:]:
        stripped = line.strip()
        if stripped.startswith("#"):
            comment.append(stripped.lstrip("# "))
        elif stripped.startswith("- "):
            skips[stripped[2:].strip()] = " ".join(comment)
            comment = []
        elif stripped:
            break
    assert skips.keys() == set(yaml.safe_load(CONFIG.read_text())["skip-check"])
    return skips


def policy_doc():
    m = re.search(r"^## Policy checks \(checkov\)\n(.*?)(?=^## |\Z)", DEPLOY_DOC.read_text(), re.S | re.M)
    assert m, "docs/deploy.md has no section '## Policy checks (checkov)'"
    return m.group(1)


def checkov_renders():
    """Each overlay as written (None), and with each Redis choice after its own components."""
    return [(o, c) for o in OVERLAYS for c in (None, *REDIS_CHOICES)]


@pytest.mark.parametrize("overlay, redis_choice", checkov_renders(), ids=lambda v: getattr(v, "name", v or "as-written"))
def test_overlay_passes_checkov(overlay, redis_choice, checkov, tmp_path, render_dir):
    rendered = tmp_path / f"{overlay.name}.yaml"
    if redis_choice is None:
        proc = subprocess.run(kustomize_command() + [str(overlay)], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        rendered.write_text(proc.stdout)
    else:
        own = [(overlay / c).resolve() for c in kustomization(overlay).get("components", [])]
        components = ordered(tuple(own) + (K8S / "components" / redis_choice,))
        rendered.write_text(yaml.safe_dump_all(render_variant(overlay, components, render_dir)))
    report = run_checkov(checkov, rendered)
    results = report["results"]
    assert results["passed_checks"], "checkov checked nothing"
    failed = [f"{r['check_id']} {r['resource']}: {r['check_name']}" for r in results["failed_checks"]]
    assert not failed, f"checkov, overlay {overlay.name}: {len(failed)} failed checks\n" + "\n".join(failed)
    doc = policy_doc()
    for r in results["skipped_checks"]:
        reason = (r.get("check_result", {}).get("suppress_comment") or "").strip()
        assert reason and reason != "No comment provided", f"{r['check_id']} {r['resource']}: a skip without a reason"
        assert r["check_id"] in doc, f"{r['check_id']} is skipped but docs/deploy.md (Policy checks) does not say why"


def test_config_skips_have_reasons_and_are_documented():
    doc = policy_doc()
    for check, reason in config_skips().items():
        assert len(reason) > 20, f".checkov.yaml skips {check} without a reason (a comment above it)"
        assert check in doc, f"{check} is skipped in .checkov.yaml but docs/deploy.md (Policy checks) does not say why"


def test_checkov_can_fail(checkov, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD_DEPLOYMENT)
    failed = {r["check_id"] for r in run_checkov(checkov, bad)["results"]["failed_checks"]}
    assert {"CKV_K8S_16", "CKV_K8S_20", "CKV_K8S_28"} <= failed, failed
