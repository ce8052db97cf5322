"""Render ``nginx.conf.template`` the way the official nginx image does (envsubst), but only for
the names the template uses, and refuse to render with any of them missing.

Two kinds of names:

- :data:`VARIABLES`, given by whoever runs the gateway (the local stack, compose, Kubernetes):
  the port, the upstream addresses, the media folder and its link secret;
- :data:`CONSTANTS`, facts of the code with one definition in the Python source
  (:data:`CONSTANT_SOURCES`): the session cookie's name (``webchat_common.config.Config``) and
  the media types shown inline (``files_service.detect``).  :func:`render` fills them itself; the
  gateway image computes them at build time with ``--envsh`` (a script its entrypoint sources
  before it renders the template), so the one template serves all three ways to run.

The sources are loaded by path, not imported: they need only the standard library, and the
gateway image's build stage has no installed package.

    python gateway/render.py > nginx.conf     # variables from the environment
    python gateway/render.py --envsh          # the constants, as shell exports
"""
import importlib.util
import os
import re
import shlex
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TEMPLATE = HERE / "nginx.conf.template"
VARIABLES = ("GATEWAY_PORT", "AUTH_ADDR", "FILES_ADDR", "CHAT_ADDR", "NGINX_STATE_DIR", "MEDIA_ROOT",
             "MEDIA_URL_SECRET")
CONSTANTS = ("SESSION_COOKIE_NAME", "MEDIA_INLINE_KEYS", "MEDIA_STEM", "MEDIA_EXT")
#: Where the constants are defined (paths from the repository root; the gateway image's build
#: stage copies exactly these).
CONSTANT_SOURCES = {
    "config": "lib/webchat_common/webchat_common/config.py",
    "detect": "services/files/files_service/detect.py",
    "names": "lib/webchat_common/webchat_common/names.py",
}
_REF = re.compile(r"\$\{([A-Z_][A-Z0-9_]*)\}")


def _load(name):
    path = ROOT / CONSTANT_SOURCES[name]
    spec = importlib.util.spec_from_file_location(f"_gateway_constants_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def constants():
    """The template's constants, from their one definition in the code.

    ``MEDIA_INLINE_KEYS``: the keys of the gateway's ``$media_disposition`` map for the inline
    extensions (``1jpg "";``: a signed link to an inline type gets no ``Content-Disposition``),
    exact keys so nginx finds them with a hash lookup."""
    config, detect, names = _load("config"), _load("detect"), _load("names")
    return {
        "SESSION_COOKIE_NAME": config.Config.SESSION_COOKIE_NAME,
        "MEDIA_INLINE_KEYS": " ".join(f'1{ext} "";' for ext in sorted(detect.INLINE_EXTS)),
        "MEDIA_STEM": names.MEDIA_STEM,
        "MEDIA_EXT": names.MEDIA_EXT,
    }


def envsh():
    """:func:`constants` as a script the nginx image's entrypoint sources (``*.envsh`` in
    /docker-entrypoint.d/, before 20-envsubst-on-templates.sh renders the template)."""
    lines = ["# The gateway template's constants (gateway/render.py --envsh, at image build)."]
    lines += [f"export {k}={shlex.quote(v)}" for k, v in constants().items()]
    return "\n".join(lines) + "\n"


def render(values, template=TEMPLATE):
    text = Path(template).read_text()
    missing = sorted({n for n in VARIABLES if not str(values.get(n, ""))})
    if missing:
        raise KeyError("gateway template needs: " + ", ".join(missing))
    unknown = sorted(set(_REF.findall(text)) - set(VARIABLES) - set(CONSTANTS))
    if unknown:
        raise KeyError("gateway template uses undeclared variables: " + ", ".join(unknown))
    values = {**values, **constants()}
    return _REF.sub(lambda m: str(values[m.group(1)]), text)


if __name__ == "__main__":
    sys.stdout.write(envsh() if sys.argv[1:] == ["--envsh"] else render(os.environ))
