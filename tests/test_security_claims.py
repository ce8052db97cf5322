"""Claims of SECURITY.md about the deployment that no other test proves.  Static: nothing here
starts the stack."""
import shutil
import subprocess
from pathlib import Path

import yaml

from webchat_common.config import Config, _coerce

ROOT = Path(__file__).resolve().parent.parent


def kustomize(directory):
    command = ["kustomize", "build"] if shutil.which("kustomize") else ["kubectl", "kustomize"]
    proc = subprocess.run(command + [str(directory)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


def test_the_prod_overlay_sends_the_session_cookie_over_https_only():
    """ASVS 3.4.1: every service of the production overlay runs with SESSION_COOKIE_SECURE=true
    (test_secure_cookie_when_configured shows the cookie then has the Secure attribute)."""
    objects = kustomize(ROOT / "k8s" / "overlays" / "prod")
    for name in ("auth", "files", "chat"):
        [deployment] = [o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == name]
        [c] = deployment["spec"]["template"]["spec"]["containers"]
        env = {e["name"]: e.get("value") for e in c.get("env", [])}
        assert _coerce("SESSION_COOKIE_SECURE", Config.SESSION_COOKIE_SECURE, env["SESSION_COOKIE_SECURE"]) is True, name
