"""Configuration shared by every service, read from the environment.

The tutorial's ``settings.py`` idea (a config class per environment) with one rule added:
nothing secret has a default.  A service calls :func:`load_config` in its app factory; tests
pass their own mapping instead of touching the environment.
"""
import os


class Config:
    """Defaults that are safe everywhere.  Every name here can be set from the environment."""

    #: ``redis://[:password@]host:port/db``, or the Sentinel or Cluster form
    #: (:mod:`.redis_store`); required, there is no default Redis.
    REDIS_URL = None
    #: Connections one process may hold; more waiters block up to REDIS_POOL_TIMEOUT.
    REDIS_MAX_CONNECTIONS = 50
    REDIS_POOL_TIMEOUT = 5.0
    #: Seconds a Redis call may take before the request gets a 503.
    REDIS_SOCKET_TIMEOUT = 2.0
    SESSION_COOKIE_NAME = "webchat_session"
    SESSION_COOKIE_SECURE = False
    SESSION_COOKIE_SAMESITE = "Lax"
    SESSION_COOKIE_HTTPONLY = True
    #: Sliding idle timeout: a session unused this long is gone.
    SESSION_IDLE_TIMEOUT = 30 * 60
    #: Absolute timeout: no session outlives this, however busy.
    SESSION_ABSOLUTE_TIMEOUT = 12 * 60 * 60
    LOG_LEVEL = "INFO"
    #: Largest request body, in bytes (uploads have their own limit in the files service).
    MAX_CONTENT_LENGTH = 64 * 1024
    #: Trust this many proxies' X-Forwarded-For (1 behind the gateway, 0 when run alone).
    TRUSTED_PROXIES = 1


class TestConfig(Config):
    TESTING = True
    SESSION_IDLE_TIMEOUT = 60
    SESSION_ABSOLUTE_TIMEOUT = 120


_BOOLS = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False, "": False}


def _coerce(name, default, raw):
    if isinstance(default, bool):
        try:
            return _BOOLS[raw.strip().lower()]
        except KeyError:
            raise ValueError(f"{name} must be true or false, not {raw!r}") from None
    if isinstance(default, int):
        return int(raw)
    if isinstance(default, float):
        return float(raw)
    return raw


def load_config(app, defaults, overrides=None, environ=os.environ):
    """Fill ``app.config`` from ``defaults`` (a Config class), then the environment, then
    ``overrides`` (what tests pass to ``create_app``).

    Only upper-case names of ``defaults`` are read from the environment, with their default's
    type, so a typo in a variable fails loudly instead of being ignored silently.  A secret
    can come from a file instead (a Kubernetes Secret mounted as a volume, a compose secret):
    ``<NAME>_FILE`` names it, and its content less a final newline is the value; setting both
    is an error.
    """
    app.config.from_object(defaults)
    if overrides is None:
        for name in dir(defaults):
            if not name.isupper():
                continue
            if name + "_FILE" in environ:
                if name in environ:
                    raise RuntimeError(f"{name} and {name}_FILE are both set: give one")
                app.config[name] = _coerce(name, getattr(defaults, name), _read_secret(environ[name + "_FILE"]))
            elif name in environ:
                app.config[name] = _coerce(name, getattr(defaults, name), environ[name])
    else:
        app.config.update(overrides)
    missing = [n for n in required_settings(defaults) if not app.config.get(n)]
    if missing:
        raise RuntimeError("missing required setting(s): " + ", ".join(missing))


def _read_secret(path):
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise RuntimeError(f"cannot read the setting's file {path}: {exc.strerror}") from None
    return text[:-1] if text.endswith("\n") else text


def required_settings(defaults):
    """Names whose default is None: they have to be given (the environment or a test config)."""
    return [n for n in dir(defaults) if n.isupper() and getattr(defaults, n) is None]


def as_mapping(config_class, **extra):
    """A config class's upper-case settings as a dict, plus ``extra``: what tests pass to
    ``create_app``."""
    values = {n: getattr(config_class, n) for n in dir(config_class) if n.isupper()}
    values.update(extra)
    return values
