"""How each service runs, declared once by the service itself: ``<name>_service/service.toml``.

The rule: what differs between the services' processes and images is declared in that file
and read from there by everything that runs them, which then passes nothing but the service
name (``SERVICE_NAME``):

- ``webchat_common.gunicorn_conf`` (the image's ``CMD`` and the local stack alike) takes the
  app and the ``[gunicorn]`` table (``worker_class``, ``workers``, ``threads``,
  ``worker_connections``) from it;
- the one services Dockerfile makes the ``[image] volumes`` folders, owned by the service's user
  (``python -m webchat_common.service prepare-image --owner UID:GID``), so that an empty named
  volume starts with that owner.

The file is found beside the package without importing it (the gunicorn master must not import
a gevent app before its worker patches the standard library).  A name with no such package (the
ops tests' app) gets :data:`GUNICORN_DEFAULTS` and no app.
"""
import argparse
import importlib.util
import os
import tomllib
from pathlib import Path

FILENAME = "service.toml"
#: What a service that declares nothing runs with: two thread workers of four threads, and
#: gunicorn's own connection limit.
GUNICORN_DEFAULTS = {"worker_class": "gthread", "workers": 2, "threads": 4, "worker_connections": "1000"}


def package(name):
    """The Python package of service ``name`` (auth -> auth_service)."""
    return f"{name}_service"


def declaration_path(name):
    """``service.toml`` beside the package of ``name``, or None when there is no such package."""
    try:
        spec = importlib.util.find_spec(package(name))
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / FILENAME


def declaration(name):
    """The parsed declaration of ``name`` (``{}`` when it has none)."""
    path = declaration_path(name)
    return tomllib.loads(path.read_text()) if path and path.is_file() else {}


def app(name):
    """The WSGI app gunicorn loads for ``name``, or None when ``name`` is not a service."""
    return f"{package(name)}:create_app()" if declaration(name) else None


def gunicorn_settings(name):
    """:data:`GUNICORN_DEFAULTS` with the service's ``[gunicorn]`` table over them."""
    return {**GUNICORN_DEFAULTS, **declaration(name).get("gunicorn", {})}


def workers(name, environ=os.environ):
    """Worker processes of the service per container: ``WEB_CONCURRENCY``, else its declaration."""
    return int(environ.get("WEB_CONCURRENCY") or gunicorn_settings(name)["workers"])


def image_volumes(name):
    return list(declaration(name).get("image", {}).get("volumes", []))


def prepare_image(name, owner, root="/"):
    """Make the declared volume folders under ``root``, owned by ``owner`` (``"uid:gid"``)."""
    uid, _, gid = owner.partition(":")
    made = []
    for folder in image_volumes(name):
        path = Path(root) / folder.lstrip("/")
        path.mkdir(parents=True, exist_ok=True)
        os.chown(path, int(uid), int(gid or uid))
        made.append(path)
    return made


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m webchat_common.service")
    parser.add_argument("command", choices=["prepare-image"])
    parser.add_argument("--owner", required=True, help="uid:gid of the service's user")
    parser.add_argument("--service", default=os.environ.get("SERVICE_NAME"), help="default: $SERVICE_NAME")
    args = parser.parse_args(argv)
    if not declaration(args.service or ""):
        parser.error(f"no declaration for service {args.service!r} ({FILENAME} beside its package)")
    for path in prepare_image(args.service, args.owner):
        print(f"made {path} for {args.service}, owned by {args.owner}")


if __name__ == "__main__":
    main()
