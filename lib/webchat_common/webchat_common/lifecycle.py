"""Readiness across a shutdown: one flag the gunicorn master sets and every worker reads.

gunicorn's graceful stop (SIGTERM to the master) closes the listening sockets and tells the
workers to stop accepting at once: from that moment nothing can ask a worker for ``/readyz``.
A load balancer or a Kubernetes Service that still routes to the process gets "connection
refused" instead of a clean "not ready".  So the master, on SIGTERM, first sets this flag
(``/readyz`` answers 503 in every worker), keeps serving for ``SHUTDOWN_DRAIN_SECONDS`` while
the probes notice, and only then starts gunicorn's own graceful stop (in-flight requests get up
to ``graceful_timeout``).  See :mod:`webchat_common.gunicorn_conf`.

The flag is one byte of an anonymous *shared* mapping made when this module is imported.  The
gunicorn master imports it (through the config module) before it forks any worker, so every
worker, including ones forked later, shares the same byte: no file, no signal, no Redis.
"""
import mmap

_flag = mmap.mmap(-1, 1)  # MAP_SHARED | MAP_ANONYMOUS: shared with every child forked after this


def start_draining():
    """Mark this process group as shutting down: readiness turns false in every worker."""
    _flag[0] = 1


def draining():
    """True once the master began shutting down (or :func:`start_draining` was called here)."""
    return _flag[0] == 1


def reset():
    """Clear the flag (tests that run an app in-process)."""
    _flag[0] = 0
