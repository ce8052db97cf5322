"""Request-path benchmark: what the shared Flask plumbing costs per request, side by side in one run.

    python bench/request_path.py                      # 5 rounds of 5 s per variant, about 3 minutes
    python bench/request_path.py --rounds 9 --duration 10
    python bench/request_path.py --profile var/prof   # then py-spy each service variant (not timed)

It starts the local stack (the same code as ``make run``: Redis with its AOF, the services under
gunicorn, nginx rendered from the one gateway template), registers one user through the gateway
(its session is made by auth, through the session contract) and uploads one small PNG.  Two
baseline apps (``bench/request_path_apps.py``) run under gunicorn with exactly the settings the
auth service runs with in the local stack (``-c python:webchat_common.gunicorn_conf`` with
``SERVICE_NAME=auth``: auth's ``service.toml`` worker class, workers and threads, and
``PROMETHEUS_MULTIPROC_DIR`` set; only the app on the command line differs), each
behind a copy of the gateway's own ``server`` block (same headers, access log, keepalive
upstream) in the same nginx process, on its own port:

- ``auth /api/me``   the real gateway, the auth service, a real session cookie: the session read
                     from Redis, the user read from Redis, the shared plumbing (request id, JSON
                     access log, metrics, CSRF check, ``X-User``);
- ``bare flask``     a Flask app answering the same JSON bytes: no session, no plumbing;
- ``bare + session`` the bare app plus only the session contract (``RedisSessionInterface``:
                     read, and its sliding-TTL refresh), to split the cost;
- ``files x-accel``  the files service's own path: ``GET /media/<name>`` with a link nginx
                     refuses, so the files service checks the session and the read rule and
                     answers ``X-Accel-Redirect`` (nginx then streams the small file).

The load tool is wrk (installed with scripts/system-deps.sh when missing), with the session
cookie on every request.  Each variant is checked once before it is measured (200 and the
expected body).  The variants run in rounds, order rotated each round; the ratios to the bare
app are taken within each round and the medians reported.  Printed per variant: req/s, wrk's
p50 and p99 latency, and CPU per request of the app's gunicorn processes, of nginx and of Redis
(``/proc`` utime + stime over the measured seconds; wrk runs on the same CPUs and is not counted).

``--profile DIR``: after the rounds, each Python variant is run once more under load with
``py-spy record`` (raw collapsed stacks, ``--subprocesses`` on its gunicorn master) and a summary
is printed: the share of busy samples under each piece of the request path.  Profiled runs are
not timed (py-spy slows what it samples).
"""
import argparse
import collections
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))

from localstack import Service, Stack  # noqa: E402
from webchat_common import service as declared  # noqa: E402
from webchat_testing import free_port  # noqa: E402
from webchat_testing.sessions import COOKIE  # noqa: E402
from wrk_load import add_arguments as add_wrk_arguments, ensure_wrk, wrk  # noqa: E402

PNG = b"\x89PNG\r\n\x1a\n"
#: The variants that share the auth service's gunicorn settings, with the app each runs.
BASELINES = {"bare": "request_path_apps:bare_app()", "bare_session": "request_path_apps:session_app()"}
TARGET = 0.5  # auth /api/me / bare flask


def server_block(conf):
    """(start, end) of the gateway's ``server { ... }`` block in the rendered ``conf``."""
    start = conf.index("\n    server {") + 1
    depth = 0
    for i in range(start, len(conf)):
        if conf[i] == "{":
            depth += 1
        elif conf[i] == "}":
            depth -= 1
            if depth == 0:
                return start, i + 1
    raise ValueError("unbalanced server block")


class BenchStack(Stack):
    """The local stack plus the baseline apps, each behind a copy of the gateway's server block
    (its own port, ``proxy_pass`` to its own upstream) in the gateway's own nginx process."""

    def __init__(self, state_dir, me_json):
        super().__init__(state_dir, chat_replicas=1)
        self.me_json = me_json
        self.ports = {}
        for name in BASELINES:
            self.services[name] = Service(name, free_port())
            self.ports[name] = free_port()

    def service_env(self, name):
        env = super().service_env(name)
        if name in BASELINES:
            # SERVICE_NAME=auth: gunicorn_conf runs it with auth's declaration (worker class,
            # workers, threads); the app on the command line (service_args) replaces auth's.
            env["SERVICE_NAME"] = "auth"
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(BENCH), env.get("PYTHONPATH")]))
            env["BENCH_ME_JSON"] = self.me_json
        return env

    def service_args(self, svc, replica):
        args = super().service_args(svc, replica)
        return args + [BASELINES[svc.name]] if svc.name in BASELINES else args

    def render_gateway(self):
        path = super().render_gateway()
        conf = path.read_text()
        start, end = server_block(conf)
        gateway_server = conf[start:end]
        extra = ""
        for name in BASELINES:
            extra += f"""
    upstream {name} {{
        server 127.0.0.1:{self.services[name].port};
        keepalive 16;
    }}
"""
            copy = re.sub(r"listen \d+;", f"listen {self.ports[name]};", gateway_server, count=1)
            copy = copy.replace("proxy_pass http://auth;", f"proxy_pass http://{name};")
            extra += "    " + copy + "\n"
        conf = conf[:end] + "\n" + extra + conf[end:]
        path.write_text(conf)
        return path


# --------------------------------------------------------------------------------------------
# processes and CPU

def children(pid):
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        found.append(int(entry))
            except (OSError, ValueError, IndexError):
                pass
    return found


def cpu_seconds(pids, which="all"):
    """utime + stime (or only ``"sys"``) of ``pids``, in seconds."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[12]) + (int(fields[11]) if which == "all" else 0)
        except OSError:
            pass
    return total / os.sysconf("SC_CLK_TCK")


def process_groups(stack, app_service):
    """{"app": gunicorn master + workers, "nginx": master + workers, "redis": [pid]}"""
    master = stack.services[app_service].procs[0].pid
    return {
        "app": [master, *children(master)],
        "nginx": [stack.nginx.pid, *children(stack.nginx.pid)],
        "redis": [stack.redis.pid],
    }


# --------------------------------------------------------------------------------------------
# load

def measure(stack, variant, url, cookie, args):
    groups = process_groups(stack, variant.service)
    before = {k: cpu_seconds(v) for k, v in groups.items()}
    sys_before = cpu_seconds(groups["app"], "sys")
    result = wrk(url, cookie, args.duration, args.connections, args.threads)
    n = max(1, result["requests"])
    for k, v in groups.items():
        result[f"cpu_{k}"] = (cpu_seconds(v) - before[k]) / n * 1e6  # µs/request
    result["cpu_app_sys"] = (cpu_seconds(groups["app"], "sys") - sys_before) / n * 1e6
    return result


class Variant:
    def __init__(self, label, service, url, check):
        self.label, self.service, self.url, self.check = label, service, url, check


def check_json(expected):
    def check(resp):
        if resp.status_code != 200 or resp.json() != expected:
            raise SystemExit(f"{resp.url} answered {resp.status_code} {resp.text[:200]!r}, not 200 {expected}")
    return check


def check_file(size):
    def check(resp):
        if resp.status_code != 200 or len(resp.content) != size:
            raise SystemExit(f"{resp.url} answered {resp.status_code} with {len(resp.content)} bytes, "
                             f"not 200 with {size}")
    return check


# --------------------------------------------------------------------------------------------
# profile summary

def _frame(func, path):
    """A pattern for py-spy frames ``Class.func (path/to/file.py:line)``."""
    return rf"^(\w+\.)*(<locals>\.)?({func}) \(.*{path}"


#: (label, frame pattern): a sample counts for a label when any frame of its stack matches.
#: Inclusive shares of the samples, so they overlap (Redis I/O is also inside "session open").
APP = _frame("__call__", r"flask/app\.py")
PIECES = [
    ("gunicorn outside the app (accept, parse HTTP, write)", None),
    ("the WSGI app (Flask.__call__ and below)", APP),
    ("  ProxyFix (own work, outside Flask.wsgi_app)", "proxyfix-self"),
    ("  request context push (session open, routing)", _frame("push", r"flask/ctx\.py")),
    ("    werkzeug routing (MapAdapter.match)", _frame("match", r"werkzeug/routing/map\.py")),
    ("    session open (RedisSessionInterface.open_session)", _frame("open_session", r"webchat_common/sessions\.py")),
    ("  session save (save_session: TTL refresh)", _frame("save_session", r"webchat_common/sessions\.py")),
    ("  before_request: request id, CSRF (web.begin)", _frame("begin", r"webchat_common/web\.py")),
    ("    uuid4 request id", _frame("uuid4", r"uuid\.py")),
    ("  after_request (web.finish)", _frame("finish", r"webchat_common/web\.py")),
    ("    access log line (logging, JSON formatter)", _frame("log", r"logging/__init__\.py")),
    ("    metrics (prometheus_client)", r"\(.*prometheus_client/"),
    ("  the view (Flask.dispatch_request)", _frame("dispatch_request", r"flask/app\.py")),
    ("    auth /api/me: user lookup (users.get_user: HGETALL)", _frame("get_user", r"auth_service/users\.py")),
    ("    files: store.readable (HGETALL, lstat)", _frame("readable", r"files_service/store\.py")),
    ("    jsonify", _frame("jsonify", r"flask/json")),
    ("  response: start_response, headers, cookies (Response.__call__)",
     _frame("__call__", r"werkzeug/wrappers/response\.py")),
    ("  Redis commands, all (redis-py execute_command)", _frame("execute_command", r"redis/client\.py")),
    ("  logging, all (Logger.log/info/warning/...)", _frame("log|_log|info|warning|error|debug", r"logging/__init__\.py")),
    ("  Jinja2", r"\(.*jinja2/"),
]


def summarise_profile(path, top=15):
    stacks = collections.Counter()
    with open(path) as f:
        for line in f:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if stack and count.isdigit():
                stacks[stack] += int(count)
    busy = sum(stacks.values()) or 1
    special = {None, "proxyfix-self"}
    compiled = [(label, p if p in special else re.compile(p)) for label, p in PIECES]
    shares = collections.Counter()
    self_ = collections.Counter()
    in_app = re.compile(APP)
    proxy_fix = re.compile(_frame("__call__", r"werkzeug/middleware/proxy_fix\.py"))
    wsgi_app = re.compile(_frame("wsgi_app", r"flask/app\.py"))
    for stack, count in stacks.items():
        frames = stack.split(";")
        self_[re.sub(r":\d+\)$", ")", frames[-1])] += count
        for label, pattern in compiled:
            if pattern is None:
                hit = not any(in_app.search(f) for f in frames)
            elif pattern == "proxyfix-self":
                hit = any(proxy_fix.search(f) for f in frames) and not any(wsgi_app.search(f) for f in frames)
            else:
                hit = any(pattern.search(f) for f in frames)
            if hit:
                shares[label] += count
    lines = [f"    {busy} samples with the GIL held"]
    lines += [f"    {100 * shares[label] / busy:5.1f}%  {label}" for label, _ in PIECES]
    lines.append("    top functions by self samples:")
    lines += [f"    {100 * c / busy:5.1f}%  {f}" for f, c in self_.most_common(top)]
    return "\n".join(lines)


def profile(stack, variant, url, cookie, args, out_dir):
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"request-path-{variant.service}.txt"
    master = stack.services[variant.service].procs[0].pid
    duration = max(args.duration, 8)
    spy = subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(master),
                            "--subprocesses", "--gil", "--rate", "250", "--format", "raw", "--output", str(out),
                            "--duration", str(duration)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(1)  # py-spy attaches
    wrk(url, cookie, duration - 2, args.connections, args.threads)
    _, err = spy.communicate(timeout=60)
    if spy.returncode != 0:
        print(f"  py-spy failed on {variant.label}: {err.decode()[-300:]}")
        return
    print(f"\n  {variant.label} ({out}):")
    print(summarise_profile(out))


def count_syscalls(stack, variant, url, cookie, args, out_dir, seconds=4):
    """``strace -c -f`` on the variant's gunicorn workers during a short wrk run: system calls per
    request, by name (strace slows the workers a lot; the counts, not the times, are the point)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"strace-{variant.service}.txt"
    master = stack.services[variant.service].procs[0].pid
    cmd = ["strace", "-c", "-f", "-q", "-o", str(out)]
    for pid in children(master):
        cmd += ["-p", str(pid)]
    tracer = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1)
    done = wrk(url, cookie, seconds, args.connections, args.threads)["requests"]
    tracer.send_signal(signal.SIGINT)
    tracer.wait(30)
    calls = {}
    for line in out.read_text().splitlines():
        fields = line.split()
        if len(fields) >= 5 and fields[-1].isidentifier() and fields[-1] != "total" and fields[3].isdigit():
            calls[fields[-1]] = int(fields[3])
    total = sum(calls.values())
    top = sorted(calls.items(), key=lambda kv: -kv[1])[:8]
    print(f"  {variant.label:<16} {total / max(1, done):5.1f} syscalls/request: "
          + ", ".join(f"{name} {n / max(1, done):.1f}" for name, n in top), flush=True)


# --------------------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_wrk_arguments(ap)
    ap.add_argument("--media-size", type=int, default=4096, help="bytes of the file x-accel serves (default 4096)")
    ap.add_argument("--profile", metavar="DIR", help="after the rounds, py-spy each Python variant into DIR")
    ap.add_argument("--syscalls", metavar="DIR", help="after the rounds, count each Python variant's system calls "
                    "per request (strace -c) into DIR")
    ap.add_argument("--only", help="comma-separated variant labels to run (default: all)")
    args = ap.parse_args()
    ensure_wrk()
    with tempfile.TemporaryDirectory(prefix="request-path-") as tmp:
        # The baselines answer auth's JSON for the bench user; the user is made first, in a
        # stack of its own (the same Redis data directory, so the session lives on).
        me, cookie, media_name = prepare(Path(tmp), args.media_size)
        with BenchStack(tmp, json.dumps(me)) as stack:
            run(stack, me, cookie, media_name, args)


def register(gw):
    http = requests.Session()
    token = re.search(r'name="csrf_token" value="([^"]+)"', http.get(gw + "/register").text).group(1)
    resp = http.post(gw + "/register", data={"username": "bench", "password": "bench-password-1",
                                             "csrf_token": token})
    resp.raise_for_status()
    return http


def prepare(state_dir, media_size):
    """Register the bench user and upload its file; returns (/api/me JSON, cookie, media name)."""
    with Stack(state_dir, chat_replicas=1) as stack:
        http = register(stack.url)
        me = http.get(stack.url + "/api/me").json()
        data = PNG + os.urandom(media_size - len(PNG))
        resp = http.post(stack.url + "/media/", files={"file": ("bench.png", data)},
                         headers={"X-CSRF-Token": me["csrf_token"], "Accept": "application/json"})
        resp.raise_for_status()
        return me, http.cookies[COOKIE], resp.json()["name"]


def run(stack, me, cookie, media_name, args):
    gw = stack.url
    variants = [
        Variant("auth /api/me", "auth", gw + "/api/me", check_json(me)),
        Variant("bare flask", "bare", f"http://127.0.0.1:{stack.ports['bare']}/api/me", check_json(me)),
        Variant("bare + session", "bare_session", f"http://127.0.0.1:{stack.ports['bare_session']}/api/me",
                check_json(me)),
        Variant("files x-accel", "files",
                f"{gw}/media/{media_name}?exp={int(time.time()) + 3600}&sig=refused-by-nginx",
                check_file(args.media_size)),
    ]
    if args.only:
        wanted = set(args.only.split(","))
        variants = [v for v in variants if v.label in wanted or v.service in wanted]
    for name, app in BASELINES.items():
        which = requests.get(f"http://127.0.0.1:{stack.services[name].port}/_bench/app", timeout=10).text
        if which != app.split(":")[1].removesuffix("()"):
            raise SystemExit(f"{name} runs {which!r}, not {app}")
    for v in variants:
        v.check(requests.get(v.url, cookies={COOKIE: cookie}, allow_redirects=False, timeout=10))
        wrk(v.url, cookie, 2, args.connections, args.threads)  # warm-up
    auth = declared.gunicorn_settings("auth")
    print(f"wrk -t{args.threads} -c{args.connections} -d{args.duration}s --latency, {args.rounds} rounds in rotated "
          f"order; every app under gunicorn -k {auth['worker_class']} -w {auth['workers']} --threads "
          f"{auth['threads']} (auth's service.toml); nginx worker_processes auto ({os.cpu_count()} CPUs); "
          f"x-accel file {args.media_size} bytes; load average before: {os.getloadavg()[0]:.1f}", flush=True)
    results = collections.defaultdict(list)  # label -> [wrk result per round]
    ratios = collections.defaultdict(list)  # label -> [rate / bare rate in the same round]
    for rnd in range(args.rounds):
        order = variants[rnd % len(variants):] + variants[:rnd % len(variants)]
        this_round = {}
        for v in order:
            r = measure(stack, v, v.url, cookie, args)
            if r["bad"] or r["errors"]:
                print(f"  {v.label}: non-2xx {r['bad']}, socket errors {r['errors']}", flush=True)
            this_round[v.label] = r
            results[v.label].append(r)
        if "bare flask" in this_round:
            for label, r in this_round.items():
                ratios[label].append(r["rate"] / this_round["bare flask"]["rate"])
        print(f"  round {rnd + 1}: " + ", ".join(f"{v.label} {this_round[v.label]['rate']:.0f}" for v in variants),
              flush=True)
    print(f"\nload average after: {os.getloadavg()[0]:.1f}")
    if args.rounds:
        report(variants, results, ratios)
    if args.profile:
        print("\nprofiles (py-spy --gil: samples of the thread holding the GIL, i.e. Python CPU; "
              "shares inclusive, so nested lines overlap):")
        for v in variants:
            profile(stack, v, v.url, cookie, args, Path(args.profile))
    if args.syscalls and shutil.which("strace"):
        print("\nsystem calls per request in the gunicorn workers (strace -c -f):")
        for v in variants:
            count_syscalls(stack, v, v.url, cookie, args, Path(args.syscalls))


def report(variants, results, ratios):
    med = lambda label, key: statistics.median(r[key] for r in results[label])  # noqa: E731
    print(f"{'variant':<16} {'req/s':>7} {'min-max':>11} {'p50 ms':>7} {'p99 ms':>7} {'app µs/req':>10} "
          f"{'of it sys':>9} {'nginx µs':>8} {'redis µs':>8}  {'x bare':>6}  per-round x bare")
    for v in variants:
        rates = [r["rate"] for r in results[v.label]]
        q = ratios.get(v.label, [])
        print(f"{v.label:<16} {med(v.label, 'rate'):>7.0f} {min(rates):>5.0f}-{max(rates):<5.0f} "
              f"{med(v.label, 'p50'):>7.2f} {med(v.label, 'p99'):>7.2f} {med(v.label, 'cpu_app'):>10.0f} "
              f"{med(v.label, 'cpu_app_sys'):>9.0f} {med(v.label, 'cpu_nginx'):>8.0f} {med(v.label, 'cpu_redis'):>8.0f}  "
              f"{statistics.median(q) if q else float('nan'):>6.2f}  {' '.join(f'{x:.2f}' for x in q)}")
    if ratios.get("auth /api/me"):
        a = statistics.median(ratios["auth /api/me"])
        print(f"\na/b auth /api/me / bare flask: {a:.2f} (target >= {TARGET}: {'met' if a >= TARGET else 'missed'})")
    if ratios.get("files x-accel"):
        print(f"c/b files x-accel / bare flask: {statistics.median(ratios['files x-accel']):.2f}")
    if ratios.get("bare + session"):
        print(f"d/b bare + session / bare flask: {statistics.median(ratios['bare + session']):.2f}")


if __name__ == "__main__":
    main()
