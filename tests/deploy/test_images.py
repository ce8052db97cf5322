"""The images: every Dockerfile lints clean with hadolint and pins its base images; the one
services Dockerfile builds each Flask service (multi-stage, pinned installs, non-root, healthcheck
on a route); the gateway image carries the one template; every dependency of an image is pinned
and every package file reaches it; nothing of the test tools ships."""
import importlib.metadata
import re
import shlex
import subprocess

import pytest
from packaging.utils import canonicalize_name

from support.deploy import (
    GATEWAY,
    ROOT,
    SERVICES,
    allowed_env,
    assert_gateway_location,
    assert_route,
    common_metrics,
    distribution_closure,
    dockerfile_env,
    dockerfile_path,
    dockerfile_user,
    exec_form,
    gateway_render,
    gunicorn_port,
    gunicorn_settings,
    hadolint_binary,
    http_path,
    image_stages,
    instructions,
    make_app,
    pinned,
    pyproject,
    service_package,
    url_port,
)


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
    for stage in image_stages(name):
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
    stages = image_stages(name)
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
    # The app comes from SERVICE_NAME (gunicorn_conf's wsgi_app, the service's declaration).
    assert gunicorn_settings(SERVICE_NAME=env["SERVICE_NAME"])["wsgi_app"] == f"{service_package(name)}:create_app()"
    assert not {"-b", "--bind"} & set(argv), "the port comes from gunicorn_conf (PORT)"


@pytest.mark.parametrize("name", SERVICES)
def test_image_python_satisfies_requires_python(name):
    from packaging.specifiers import SpecifierSet
    image = image_stages(name)[-1][0][1].split()[0]
    m = re.match(r"python:(\d+\.\d+)", image)
    assert m, f"{image}: name the Python version in the tag"
    for folder in ("lib/webchat_common", f"services/{name}"):
        spec = SpecifierSet(pyproject(ROOT / folder / "pyproject.toml")["project"]["requires-python"])
        assert m.group(1) + ".0" in spec, (folder, str(spec), image)
    assert all(s[0][1].split()[0] == image for s in image_stages(name)), \
        "build and runtime stages on the same image (the venv links to its Python)"


def test_gateway_dockerfile():
    stages = image_stages(GATEWAY)
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


def test_the_test_tools_never_reach_an_image():
    """lib/webchat_testing (RedisServer, the pytest plugin, planted sessions...) is development
    only: out of the build context, installed by no Dockerfile, needed by no image's packages,
    and the runtime library has no test module left."""
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    assert "lib/webchat_testing" in ignored
    for name in SERVICES + (GATEWAY,):
        text = dockerfile_path(name).read_text()
        assert "webchat_testing" not in text and "requirements-dev" not in text, name
    test_tools = {"webchat-testing", "pytest", "hypothesis"}
    for name in SERVICES:
        assert not test_tools & distribution_closure(f"webchat-{name}"), name
    runtime = ROOT / "lib" / "webchat_common" / "webchat_common"
    assert not {"testing.py", "pytest_plugin.py"} & {p.name for p in runtime.iterdir()}
