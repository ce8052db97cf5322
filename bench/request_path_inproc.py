"""The request path in-process: CPU per request of each WSGI app, without gunicorn, nginx or wrk.

    python bench/request_path_inproc.py                   # 3 repeats of 3000 requests per variant
    python bench/request_path_inproc.py --cprofile auth   # cProfile of one variant, top 30 by cumulative time

The companion of ``bench/request_path.py`` for A/B work on the shared plumbing: calling the WSGI
app directly (a prepared environ, the response body consumed) measures only what Python does for
the request, so a change of a few percent shows above the noise of a shared machine (CPU time
of this process, ``time.process_time``; the Redis server is another process and not counted, its
round trips are).  Same apps and same requests as the benchmark: auth's ``GET /api/me`` with a
session made by ``/register``, the bare Flask app, the bare app plus the session contract, and the
files service's x-accel path (a link nginx would have refused).  The services run with their
production settings (``TRUSTED_PROXIES=1``, ``MEDIA_GATEWAY=1``), JSON logs to /dev/null, and
``PROMETHEUS_MULTIPROC_DIR`` set, as under gunicorn.
"""
import argparse
import cProfile
import io
import json
import os
import pstats
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

_metrics_dir = tempfile.mkdtemp(prefix="request-path-metrics-")
os.environ["PROMETHEUS_MULTIPROC_DIR"] = _metrics_dir  # before prometheus_client is imported

from werkzeug.test import EnvironBuilder  # noqa: E402

from webchat_common.config import as_mapping  # noqa: E402
from webchat_testing import RedisServer  # noqa: E402
from webchat_testing.sessions import COOKIE  # noqa: E402

PNG = b"\x89PNG\r\n\x1a\n"


def environ_for(path, cookie):
    env = EnvironBuilder(path=path, headers={"Cookie": f"{COOKIE}={cookie}", "Accept": "*/*",
                                             "X-Forwarded-For": "127.0.0.1", "X-Request-ID": "bench-1"}).get_environ()
    env["REMOTE_ADDR"] = "127.0.0.1"
    return env


def call(app, environ):
    status = []
    body = b"".join(app(dict(environ, **{"wsgi.input": io.BytesIO()}), lambda s, h, e=None: status.append(s)))
    return status[0], body


def setup(redis_url, media_root):
    from auth_service import create_app as auth_app
    from auth_service.config import AuthConfig
    from files_service import create_app as files_app
    from files_service.config import FilesConfig

    auth = auth_app(as_mapping(AuthConfig, REDIS_URL=redis_url, PASSWORD_HASH_METHOD="scrypt:16384:8:1"))
    files = files_app(as_mapping(FilesConfig, REDIS_URL=redis_url, MEDIA_ROOT=str(media_root), MEDIA_GATEWAY=True,
                                 MEDIA_URL_SECRET="bench-secret-not-used-by-nginx-here"))
    client = auth.test_client()
    token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/register").text).group(1)
    client.post("/register", data={"username": "bench", "password": "bench-password-1", "csrf_token": token})
    cookie = client.get_cookie(COOKIE).value
    me = client.get("/api/me").json
    fclient = files.test_client()
    fclient.set_cookie(COOKIE, cookie)
    resp = fclient.post("/media/", data={"file": (io.BytesIO(PNG + os.urandom(4088)), "bench.png")},
                        headers={"X-CSRF-Token": me["csrf_token"], "Accept": "application/json"})
    name = resp.json["name"]
    os.environ["BENCH_ME_JSON"] = json.dumps(me)
    os.environ["REDIS_URL"] = redis_url
    import request_path_apps

    return cookie, me, {
        "auth": (auth, "/api/me"),
        "bare": (request_path_apps.bare_app(), "/api/me"),
        "bare_session": (request_path_apps.session_app(), "/api/me"),
        "files": (files, f"/media/{name}?exp={int(time.time()) + 3600}&sig=refused-by-nginx"),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cprofile", metavar="VARIANT", help="profile one variant (auth, bare, bare_session, files)")
    ap.add_argument("--top", type=int, default=30)
    args = ap.parse_args()
    out = sys.stdout
    sys.stdout = open(os.devnull, "w")  # the services' JSON log handler writes here
    with tempfile.TemporaryDirectory(prefix="request-path-inproc-") as tmp:
        redis = RedisServer(data_dir=os.path.join(tmp, "redis"), persistent=True).start()
        try:
            cookie, me, apps = setup(redis.url, Path(tmp) / "media")
            envs = {k: environ_for(path, cookie) for k, (app, path) in apps.items()}
            for k, (app, _) in apps.items():
                status, body = call(app, envs[k])
                assert status.startswith("200"), (k, status, body[:200])
                for _ in range(200):  # warm-up
                    call(app, envs[k])
            if args.cprofile:
                app = apps[args.cprofile][0]
                prof = cProfile.Profile()
                prof.enable()
                for _ in range(args.requests):
                    call(app, envs[args.cprofile])
                prof.disable()
                pstats.Stats(prof, stream=out).sort_stats("cumulative").print_stats(args.top)
                return
            results = {k: [] for k in apps}
            for _ in range(args.repeats):
                for k, (app, _) in apps.items():
                    env = envs[k]
                    t0, w0 = time.process_time(), time.perf_counter()
                    for _ in range(args.requests):
                        call(app, env)
                    results[k].append(((time.process_time() - t0) / args.requests * 1e6,
                                       (time.perf_counter() - w0) / args.requests * 1e6))
            print(f"{args.requests} requests x {args.repeats} repeats per variant (median); "
                  f"load average {os.getloadavg()[0]:.1f}", file=out)
            print(f"{'variant':<14} {'CPU µs/req':>10} {'wall µs/req':>11}  {'CPU x bare':>10}", file=out)
            bare = statistics.median(c for c, _ in results["bare"])
            for k, rs in results.items():
                cpu = statistics.median(c for c, _ in rs)
                wall = statistics.median(w for _, w in rs)
                print(f"{k:<14} {cpu:>10.0f} {wall:>11.0f}  {cpu / bare:>10.2f}", file=out)
        finally:
            redis.stop()


if __name__ == "__main__":
    main()
