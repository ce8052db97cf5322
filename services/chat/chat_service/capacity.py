"""How many clients (sockets and long-poll tabs) one chat process takes.

Rule: a process never takes more clients than its share of the container's memory holds.  A
pod with a memory limit (a cgroup limit: Kubernetes' ``resources.limits.memory``, compose's
``mem_limit``) gives each of its worker processes ``limit / workers``; a process needs
CHAT_PROCESS_MEMORY_MIB before its first client and CHAT_CLIENT_MEMORY_KIB per client (the
chat benchmark measures 39-40 KiB a socket, 34.5 KiB a waiting poll).  The rest is refused
before the upgrade with 503 and ``Retry-After`` (another process, or this one later, has
room), instead of the kernel killing the process for its memory and every client on it.
CHAT_MAX_CLIENTS set to a number overrides the derivation; with no memory limit and no number
the open-files limit is the only bound.
"""
from pathlib import Path

from webchat_common import service

#: cgroup v2, then v1: the container's memory limit in bytes ("max", or a huge v1 number: none).
CGROUP_LIMITS = ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")
#: A v1 "limit" at or above this is the kernel's way of saying there is none.
_NO_LIMIT = 1 << 60


def memory_limit(paths=CGROUP_LIMITS):
    """The container's memory limit in bytes, or None when it has none."""
    for path in paths:
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text == "max":
            return None
        try:
            value = int(text)
        except ValueError:
            continue
        return value if value < _NO_LIMIT else None
    return None


def max_clients(cfg, limit=None, processes=None):
    """Clients one process may hold, or 0 for no cap.  ``limit`` (bytes) and ``processes``
    default to the container's (see the module docstring)."""
    if cfg["CHAT_MAX_CLIENTS"] > 0:
        return cfg["CHAT_MAX_CLIENTS"]
    limit = memory_limit() if limit is None else limit
    if not limit:
        return 0
    share = limit // (processes or service.workers("chat"))
    room = share - cfg["CHAT_PROCESS_MEMORY_MIB"] * 1024 * 1024
    return max(1, room // (cfg["CHAT_CLIENT_MEMORY_KIB"] * 1024))
