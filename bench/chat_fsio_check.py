"""Check the Flask-SocketIO baseline with python-socketio's own client (websocket transport).

The load generator speaks Engine.IO/Socket.IO itself (so every variant has the same client cost);
this shows that the baseline is an ordinary Flask-SocketIO server that the official client talks to,
with the same frames: ``hello`` on connect, ``message`` {receiver, data} forwarded to the receiver.

    .venv/bin/python bench/chat_fsio_check.py
"""
import sys
import tempfile
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import socketio  # noqa: E402

import chat_servers  # noqa: E402
from chat_load import seed_users  # noqa: E402
from webchat_testing.sessions import COOKIE  # noqa: E402


def main():
    variant = chat_servers.make_variant("fsio-history", tempfile.mkdtemp(prefix="chatbench-check-")).start()
    try:
        sids = seed_users(variant.redis_url, ["alice", "bob"])
        got, hellos = threading.Event(), {}
        received = {}
        clients = {}
        for name in ("alice", "bob"):
            c = socketio.Client(reconnection=False)

            def on_hello(data, name=name):
                hellos[name] = data

            def on_message(data, name=name):
                received[name] = data
                got.set()

            c.on("hello", on_hello)
            c.on("message", on_message)
            c.connect(variant.url, transports=["websocket"], wait_timeout=10,
                      headers={"Cookie": f"{COOKIE}={sids[name]}"})  # websocket-client sends Origin itself
            clients[name] = c
        # a client without a session is refused
        refused = socketio.Client(reconnection=False)
        try:
            refused.connect(variant.url, transports=["websocket"], wait_timeout=5)
            print("FAIL: a connection without a session was accepted")
            return 1
        except socketio.exceptions.ConnectionError:
            pass
        clients["alice"].emit("message", {"receiver": "bob", "data": "hi bob"})
        if not got.wait(10):
            print("FAIL: bob got nothing")
            return 1
        msg = received["bob"]
        ok = msg.get("sender") == "alice" and msg.get("data") == "hi bob" and msg.get("type") == "message"
        print(f"hello frames: {sorted(hellos)}; bob got {msg}")
        print("OK" if ok else "FAIL: unexpected frame")
        for c in clients.values():
            c.disconnect()
        return 0 if ok else 1
    finally:
        variant.stop()


if __name__ == "__main__":
    sys.exit(main())
