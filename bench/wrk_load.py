"""wrk, as the HTTP benchmarks use it (bench/media_bench.py, bench/request_path.py,
bench/history_bench.py): installed when missing, run for one URL with a session cookie, its
report parsed; the command-line options every wrk benchmark takes; and the bench user, registered
through the gateway."""
import re
import shutil
import subprocess
from pathlib import Path

import requests

from webchat_testing.sessions import COOKIE

ROOT = Path(__file__).resolve().parent.parent

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def ensure_wrk():
    """wrk from the system's packages (Debian's ``wrk``), installed when missing."""
    if not shutil.which("wrk"):
        subprocess.run(["bash", str(ROOT / "scripts" / "system-deps.sh"), "wrk"], check=True)
    return shutil.which("wrk")


def add_arguments(ap, duration=5, rounds=5):
    """--duration, --connections, --threads, --rounds."""
    ap.add_argument("--duration", type=int, default=duration, help=f"seconds per measurement (default {duration})")
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=rounds,
                    help=f"rounds of every variant, in rotated order (default {rounds})")


def _ms(text):
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    return float(m.group(1)) * _UNITS[m.group(2)]


def wrk(url, cookie, duration, connections, threads):
    """One wrk run with ``cookie`` as the session cookie: requests done, req/s, p50 and p99 (ms),
    non-2xx/3xx answers and socket errors."""
    out = subprocess.run(
        ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{duration}s", "--latency",
         "-H", f"Cookie: {COOKIE}={cookie}", url],
        capture_output=True, text=True, check=True).stdout
    requests_done = int(re.search(r"(\d+) requests in", out).group(1))
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return {"requests": requests_done, "rate": rate, "p50": p50, "p99": p99,
            "bad": int(bad.group(1)) if bad else 0, "errors": errors.group(1) if errors else ""}


def register(gw, name="bench", password="bench-password-1"):
    """Register ``name`` through the gateway ``gw``: a requests session logged in as them (its
    session cookie is ``COOKIE``)."""
    http = requests.Session()
    token = re.search(r'name="csrf_token" value="([^"]+)"', http.get(gw + "/register").text).group(1)
    resp = http.post(gw + "/register", data={"username": name, "password": password, "csrf_token": token})
    resp.raise_for_status()
    return http
