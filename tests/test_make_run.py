"""``make run`` as a person uses it: it prints the URL, serves, and on Ctrl-C or SIGTERM stops
every process it started."""
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import requests

from support.web import Browser
from webchat_testing import free_port, wait_until

ROOT = Path(__file__).resolve().parent.parent


def descendants(pid):
    """Every process below ``pid`` (from /proc's parent links)."""
    children = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def alive(pid):
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.parametrize("how, topology", [("ctrl-c", "single"), ("sigterm", "single"), ("sigterm", "sentinel"),
                                           ("sigterm", "cluster")])
def test_make_run_serves_and_stops_everything(tmp_path, how, topology):
    port = free_port()
    env = dict(os.environ, GATEWAY_PORT=str(port), CHAT_REPLICAS="2", STATE_DIR=str(tmp_path),
               REDIS_TOPOLOGY=topology)
    proc = subprocess.Popen(["make", "--no-print-directory", "run"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        lines = []
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "webchat is running" in line:
                break
        assert f"http://127.0.0.1:{port}/" in "".join(lines), "".join(lines)
        assert requests.get(f"http://127.0.0.1:{port}/gateway/healthz", timeout=5).ok
        assert requests.get(f"http://127.0.0.1:{port}/login", timeout=5).status_code == 200
        started = descendants(proc.pid)
        names = {Path(f"/proc/{p}/comm").read_text().strip() for p in started if alive(p)}
        assert {"redis-server", "nginx"} <= names, names
        if topology != "single":  # a primary, two replicas, three Sentinels; three primaries, three replicas
            redis_procs = [p for p in started if alive(p) and Path(f"/proc/{p}/comm").read_text().strip() == "redis-server"]
            assert len(redis_procs) == 6, redis_procs
            b = Browser(f"http://127.0.0.1:{port}")
            assert b.register(f"{topology}_user").status_code == 303 and b.me()["user"] == f"{topology}_user"
        assert sum(1 for p in started if "gunicorn" in Path(f"/proc/{p}/cmdline").read_text()) >= 4

        if how == "ctrl-c":
            os.killpg(proc.pid, signal.SIGINT)  # what the terminal does
        else:
            proc.send_signal(signal.SIGTERM)  # what a supervisor does, to make alone
        proc.wait(60)
        wait_until(lambda: not [p for p in started if alive(p)], timeout=30, what="every process to stop")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.stdout.close()
