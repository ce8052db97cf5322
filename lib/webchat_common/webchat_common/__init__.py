"""Shared library of the webchat services: see :mod:`.sessions` for the session contract,
:mod:`.web` for the request plumbing and :mod:`.keys` for every Redis key the system uses."""
from .config import Config, TestConfig, as_mapping, load_config
from .redis_store import get_redis
from .web import (
    CSRF_REFUSED,
    csrf_exempt,
    csrf_token,
    csrf_valid,
    current_user,
    error_response,
    init_app,
    login_form,
    login_required,
    new_login,
    origin_allowed,
    request_int,
    wants_json,
)

__all__ = [
    "Config",
    "TestConfig",
    "as_mapping",
    "CSRF_REFUSED",
    "csrf_exempt",
    "csrf_valid",
    "csrf_token",
    "current_user",
    "error_response",
    "get_redis",
    "init_app",
    "load_config",
    "login_form",
    "login_required",
    "new_login",
    "origin_allowed",
    "request_int",
    "wants_json",
]
