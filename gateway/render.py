"""Render ``nginx.conf.template`` the way the official nginx image does (envsubst), but only for
the variables the template names, and refuse to render with any of them missing.

    python gateway/render.py > nginx.conf     # values from the environment
"""
import os
import re
import sys
from pathlib import Path

TEMPLATE = Path(__file__).with_name("nginx.conf.template")
VARIABLES = ("GATEWAY_PORT", "AUTH_ADDR", "FILES_ADDR", "CHAT_ADDR", "NGINX_STATE_DIR", "MEDIA_ROOT",
             "MEDIA_URL_SECRET")
_REF = re.compile(r"\$\{([A-Z_][A-Z0-9_]*)\}")


def render(values, template=TEMPLATE):
    text = Path(template).read_text()
    missing = sorted({n for n in VARIABLES if not str(values.get(n, ""))})
    if missing:
        raise KeyError("gateway template needs: " + ", ".join(missing))
    unknown = sorted(set(_REF.findall(text)) - set(VARIABLES))
    if unknown:
        raise KeyError("gateway template uses undeclared variables: " + ", ".join(unknown))
    return _REF.sub(lambda m: str(values[m.group(1)]), text)


if __name__ == "__main__":
    sys.stdout.write(render(os.environ))
