"""``python -m localstack``: run the stack until Ctrl-C or SIGTERM, then stop all of it.

Environment: GATEWAY_PORT (default 8080), CHAT_REPLICAS (default 2), STATE_DIR (default var/stack),
REDIS_TOPOLOGY (``single``, the default, ``sentinel`` or ``cluster``);
every other variable is passed on to the services (see docs/configuration.md).
"""
import os
import signal
import sys
import threading

from . import ROOT, Stack


def main():
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stack = Stack(
        state_dir=os.environ.get("STATE_DIR", ROOT / "var" / "stack"),
        gateway_port=int(os.environ.get("GATEWAY_PORT", "8080")),
        chat_replicas=int(os.environ.get("CHAT_REPLICAS", "2")),
        redis_topology=os.environ.get("REDIS_TOPOLOGY", "single"),
    )
    stack.start()
    print(f"webchat is running: {stack.url}/   (logs in {stack.log_dir}; Ctrl-C stops it)", flush=True)
    while not stop.is_set():
        dead = [p for p in stack.processes() if p.poll() is not None]
        if dead:
            print(f"a process exited ({dead[0].args[0]} ...); stopping; see {stack.log_dir}", file=sys.stderr)
            break
        stop.wait(1)
    print("stopping...", flush=True)
    stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
