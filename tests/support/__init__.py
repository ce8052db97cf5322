"""Helpers of the integration tests only (imported as ``support.*``): browser-like clients
(``web``), chat clients (``chat``), the fault suite's settings and figures (``faults``), gunicorn
around the ops test app (``gunicorn``), the deploy checks' readers of Dockerfiles, compose and
kustomize (``deploy``).

Fixtures stay in ``conftest.py``; helpers shared with other test folders, the local stack or the
benchmarks (Redis, ports, waits, planted sessions, media samples) are in ``webchat_testing``."""
