"""Media benchmark: ``GET /media/<file>`` for a logged-in user through the real gateway, against
nginx serving the same files directly, on this machine, in one run.

    python bench/media_bench.py                       # 1 MiB and 64 KiB, 5 rounds of 5 s per variant
    python bench/media_bench.py --rounds 9 --duration 10 --connections 64

It starts the local stack (the same code as ``make run``: Redis, the services under gunicorn,
nginx rendered from the one gateway template) with one extra nginx ``server`` block in the same
nginx process, so every variant shares nginx's workers, ``sendfile`` and access log:

- ``nginx-static``  the file from a plain ``alias`` location: the ceiling the targets refer to;
- ``static-cached`` the same with the ``open_file_cache`` the gateway's media location has, so
                    the gateway can also be compared like for like;
- ``gateway``       the signed link the files service handed out (``secure_link`` in nginx,
                    Python not involved): what a page does;
- ``x-accel``       the gateway with a link nginx refuses, so the files service checks the
                    session and answers ``X-Accel-Redirect`` ("Flask checks, nginx streams");
- ``flask``         the files service run alone (``send_from_directory``) behind nginx.

The load tool is wrk (Debian/Ubuntu package ``wrk``; installed with scripts/system-deps.sh when
missing).  Printed: requests/s of each variant and its ratio to nginx-static.  Before each run
one request checks that the variant answers 200 with the whole file (a 302 would be counted by
wrk as a success).

The machine is shared and noisy, so the variants are measured in rounds, each round running
every variant once back to back (the order rotated from round to round); the ratio to
nginx-static is taken within each round and the median over the rounds is reported, with the
per-round figures, so the noise is visible rather than hidden.
"""
import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from localstack import Service, Stack  # noqa: E402
from webchat_testing import free_port  # noqa: E402
from webchat_testing.sessions import COOKIE  # noqa: E402
from wrk_load import add_arguments as add_wrk_arguments, ensure_wrk, register, wrk  # noqa: E402

PNG = b"\x89PNG\r\n\x1a\n"
SIZES = {"1 MiB": 1024 * 1024, "64 KiB": 64 * 1024}
TARGETS = {"1 MiB": 0.90, "64 KiB": 0.80}


class BenchStack(Stack):
    """The local stack plus a standalone files service and a second nginx server block
    (static files and the standalone service), in the gateway's own nginx process."""

    def __init__(self, state_dir):
        super().__init__(state_dir, chat_replicas=1)
        self.bench_port = free_port()
        self.services["files_alone"] = Service("files_alone", free_port())

    def service_env(self, name):
        env = super().service_env(name)
        if name == "files_alone":
            # The files service (its app and how it runs: SERVICE_NAME), run alone: no gateway mode.
            env.update(MEDIA_ROOT=str(self.media_root), MEDIA_GATEWAY="0", SERVICE_NAME="files")
        return env

    def render_gateway(self):
        path = super().render_gateway()
        text = path.read_text().rstrip()
        assert text.endswith("}")
        extra = f"""
    upstream files_alone {{
        server 127.0.0.1:{self.services['files_alone'].port};
        keepalive 16;
    }}
    server {{
        listen {self.bench_port};
        proxy_http_version 1.1;
        proxy_set_header Host $http_host;
        proxy_set_header Connection "";
        location /static/ {{
            alias {self.media_root}/;
        }}
        location /cached/ {{
            alias {self.media_root}/;
            open_file_cache max=10000 inactive=60s;
            open_file_cache_valid 10s;
        }}
        location /media/ {{
            proxy_pass http://files_alone;
        }}
    }}
}}
"""
        path.write_text(text[:-1] + extra)
        return path


def check(url, cookie, size):
    resp = requests.get(url, cookies={COOKIE: cookie}, allow_redirects=False, timeout=10)
    if resp.status_code != 200 or len(resp.content) != size:
        raise SystemExit(f"{url} answered {resp.status_code} with {len(resp.content)} bytes, not 200 with {size}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_wrk_arguments(ap)
    args = ap.parse_args()
    ensure_wrk()
    with tempfile.TemporaryDirectory(prefix="media-bench-") as tmp, BenchStack(tmp) as stack:
        gw = stack.url
        bench = f"http://127.0.0.1:{stack.bench_port}"
        http = register(gw)
        cookie = http.cookies[COOKIE]
        csrf = http.get(gw + "/api/me").json()["csrf_token"]
        names = {}
        for label, size in SIZES.items():
            data = PNG + os.urandom(size - len(PNG))
            resp = http.post(gw + "/media/", files={"file": (f"{label}.png", data)},
                             headers={"X-CSRF-Token": csrf, "Accept": "application/json"})
            resp.raise_for_status()
            names[label] = resp.json()["name"]

        def signed(name):  # a fresh link (they live 60-120 s) before each run
            listing = http.get(gw + "/media/", headers={"Accept": "application/json"}).json()["media"]
            return gw + next(m["url"] for m in listing if m["name"] == name)

        variants = {
            "nginx-static": lambda n: f"{bench}/static/{n}",
            "static-cached": lambda n: f"{bench}/cached/{n}",
            "gateway": signed,
            "x-accel": lambda n: f"{gw}/media/{n}?exp={int(time.time()) + 3600}&sig=refused-by-nginx",
            "flask": lambda n: f"{bench}/media/{n}",
        }
        print(f"wrk -t{args.threads} -c{args.connections} -d{args.duration}s, {args.rounds} rounds in rotated order; "
              f"nginx worker_processes auto ({os.cpu_count()} CPUs), gunicorn 2 workers x 4 threads per service; "
              f"load average before: {os.getloadavg()[0]:.1f}", flush=True)
        rates = {}  # (size, variant) -> [req/s per round]
        ratios = {}  # (size, variant) -> [req/s / nginx-static of the same round]
        cached_ratios = {}  # the same against static-cached
        order = list(variants)
        for label, size in SIZES.items():
            for variant, make_url in variants.items():
                check(make_url(names[label]), cookie, size)
                wrk(make_url(names[label]), cookie, 2, args.connections, args.threads)  # warm-up
            for rnd in range(args.rounds):
                this_round = {}
                for variant in order[rnd % len(order):] + order[:rnd % len(order)]:
                    got = wrk(variants[variant](names[label]), cookie, args.duration, args.connections, args.threads)
                    if got["bad"] or got["errors"]:
                        print(f"  {label} {variant}: non-2xx {got['bad']}, socket errors {got['errors']}", flush=True)
                    this_round[variant] = got["rate"]
                    rates.setdefault((label, variant), []).append(got["rate"])
                for variant, rate in this_round.items():
                    ratios.setdefault((label, variant), []).append(rate / this_round["nginx-static"])
                    cached_ratios.setdefault((label, variant), []).append(rate / this_round["static-cached"])
                print(f"  {label} round {rnd + 1}: " + ", ".join(f"{v} {r:.0f}" for v, r in this_round.items()),
                      flush=True)
        print(f"\nload average after: {os.getloadavg()[0]:.1f}")
        print(f"{'size':>7}  {'variant':<13} {'median req/s':>12}  {'min-max req/s':>15}  {'x nginx-static':>14}"
              f"  {'(per-round ratios)':<36} {'x static-cached':>15}  target")
        for label in SIZES:
            for variant in variants:
                r, q = rates[label, variant], ratios[label, variant]
                target = f">= {TARGETS[label]:.2f}" if variant == "gateway" else ""
                spread = f"{min(r):.0f}-{max(r):.0f}"
                per_round = " ".join(f"{x:.2f}" for x in q)
                vs_cached = statistics.median(cached_ratios[label, variant])
                print(f"{label:>7}  {variant:<13} {statistics.median(r):>12.0f}  {spread:>15}  "
                      f"{statistics.median(q):>14.2f}  {per_round:<36} {vs_cached:>15.2f}  {target}")

if __name__ == "__main__":
    main()
