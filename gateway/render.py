"""Render ``nginx.conf.template`` the way the official nginx image does (envsubst), but only for
the names the template uses, and refuse to render with any of them missing.

Two kinds of names:

- :data:`VARIABLES`, given by whoever runs the gateway (the local stack, compose, Kubernetes):
  the port, the upstream addresses, the media folder and its link secret, and the optional
  :data:`OPTIONAL` ones (trusted proxies, TLS), empty by default;
- :data:`CONSTANTS`, facts of the code with one definition in the Python source
  (:data:`CONSTANT_SOURCES`): the session cookie's name (``webchat_common.config.Config``) and
  the media types shown inline (``files_service.detect``).  :func:`render` fills them itself; the
  gateway image computes them at build time with ``--envsh`` (a script its entrypoint sources
  before it renders the template), so the one template serves all three ways to run.

The optional variables become nginx directives (:func:`edge`: ``set_real_ip_from`` lines, the
``ssl`` of ``listen`` and the certificate lines), which envsubst cannot write; in the image,
``gateway/edge.envsh`` computes the same :data:`DERIVED` names when the container starts.

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
#: Optional variables and their defaults (empty: trust no proxy, plain HTTP).
#: ``GATEWAY_TRUSTED_PROXIES``: comma-separated address ranges (CIDR) whose X-Forwarded-For is
#: believed; ``GATEWAY_TLS_CERT_FILE``/``GATEWAY_TLS_KEY_FILE``: PEM files, both or neither.
OPTIONAL = {"GATEWAY_TRUSTED_PROXIES": "", "GATEWAY_TLS_CERT_FILE": "", "GATEWAY_TLS_KEY_FILE": ""}
VARIABLES = ("GATEWAY_PORT", "AUTH_ADDR", "FILES_ADDR", "CHAT_ADDR", "NGINX_STATE_DIR", "MEDIA_ROOT",
             "MEDIA_URL_SECRET", *OPTIONAL)
#: Names the template uses that :func:`edge` computes from the optional variables.
DERIVED = ("GATEWAY_REAL_IP_FROM", "GATEWAY_LISTEN_SSL", "GATEWAY_TLS_CERTIFICATE")
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


def edge(values):
    """The :data:`DERIVED` names from the optional variables in ``values`` (missing = default).

    ``GATEWAY_REAL_IP_FROM``: one ``set_real_ip_from <range>;`` per trusted range (nothing:
    nginx's realip module then changes no address); ``GATEWAY_LISTEN_SSL``: ``ssl`` or nothing;
    ``GATEWAY_TLS_CERTIFICATE``: the ``ssl_certificate``/``ssl_certificate_key`` lines or
    nothing.  Refuses a range that is not an address or network (host bits set included) and a
    certificate without its key or the reverse.  ``gateway/edge.envsh`` writes the same."""
    import ipaddress

    def get(name):
        return str(values.get(name, OPTIONAL[name]))

    ranges = [r.strip() for r in get("GATEWAY_TRUSTED_PROXIES").split(",") if r.strip()]
    for r in ranges:
        try:
            ipaddress.ip_network(r)
        except ValueError as exc:
            raise ValueError(f"GATEWAY_TRUSTED_PROXIES: {exc}") from None
    cert, key = get("GATEWAY_TLS_CERT_FILE"), get("GATEWAY_TLS_KEY_FILE")
    if bool(cert) != bool(key):
        raise ValueError("GATEWAY_TLS_CERT_FILE and GATEWAY_TLS_KEY_FILE go together")
    for path in (cert, key):
        if re.search(r"[\"'\\;{}$#\s]", path):
            raise ValueError(f"TLS file path with a space, quote or nginx syntax: {path!r}")
    return {
        "GATEWAY_REAL_IP_FROM": " ".join(f"set_real_ip_from {r};" for r in ranges),
        "GATEWAY_LISTEN_SSL": "ssl" if cert else "",
        "GATEWAY_TLS_CERTIFICATE": f"ssl_certificate {cert}; ssl_certificate_key {key};" if cert else "",
    }


def render(values, template=TEMPLATE):
    text = Path(template).read_text()
    missing = sorted({n for n in VARIABLES if n not in OPTIONAL and not str(values.get(n, ""))})
    if missing:
        raise KeyError("gateway template needs: " + ", ".join(missing))
    unknown = sorted(set(_REF.findall(text)) - set(VARIABLES) - set(CONSTANTS) - set(DERIVED))
    if unknown:
        raise KeyError("gateway template uses undeclared variables: " + ", ".join(unknown))
    values = {**OPTIONAL, **values, **edge(values), **constants()}
    return _REF.sub(lambda m: str(values[m.group(1)]), text)


if __name__ == "__main__":
    sys.stdout.write(envsh() if sys.argv[1:] == ["--envsh"] else render(os.environ))
