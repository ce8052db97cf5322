"""Presence benchmark: what a chat process's presence costs Redis and the process, at many users.

    python bench/presence_bench.py                    # 19,000 users, 3 rounds
    python bench/presence_bench.py --users 50000 --rounds 5

It starts a redis-server (no persistence) and drives the chat service's own presence code
(``chat_service.presence.Presence``) as a process holding ``--users`` users, one socket each:

- ``admit``   every user's first socket (the socket cap, the count, the online announcement);
- ``beat``    one heartbeat of the process (every CHAT_PRESENCE_TTL / 3 in the service);
- ``PING``    one round trip, the floor any Redis call pays: the beat is printed as a ratio to it;
- ``sweep``   another process claiming this one as dead and sweeping its users (offline once);
- ``renew``   this process finding it was swept, holding all its users again under a new id.

Printed per step: wall time, this process's CPU time, and Redis' own CPU (``INFO
commandstats``: the sum of ``usec`` over every command the step ran), medians of the rounds.
"""
import argparse
import statistics
import sys
import time
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "services" / "chat"), str(ROOT / "lib" / "webchat_common"), str(ROOT / "lib" / "webchat_testing")]

from chat_service.presence import Presence  # noqa: E402
from webchat_common import keys  # noqa: E402
from webchat_testing import RedisServer  # noqa: E402

CFG = {"CHAT_PRESENCE_TTL": 30, "CHAT_MAX_SOCKETS_PER_USER": 10}


def redis_usec(r):
    return sum(v["usec"] for v in r.info("commandstats").values())


def timed(r, fn):
    """(wall s, process CPU s, Redis CPU s) of ``fn()``."""
    u0, t0, c0 = redis_usec(r), time.perf_counter(), time.process_time()
    fn()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return wall, cpu, (redis_usec(r) - u0) / 1e6


def one_round(r, users):
    r.flushall()
    node = Presence(r, f"bench-{time.monotonic_ns()}", CFG)
    held = [(u, 1) for u in users]
    out = {"admit": timed(r, lambda: [node.admit(u, 1) for u in users])}
    out["beat"] = timed(r, lambda: node.beat(lambda: held, lambda u: True))
    out["PING"] = timed(r, r.ping)
    r.zadd("chat:nodes", {node.holder: 0})  # it missed its beats: the next sweep claims it
    out["sweep"] = timed(r, Presence(r, "sweeper", CFG).sweep)
    out["renew"] = timed(r, lambda: node.beat(lambda: held, lambda u: True))
    assert r.hlen(keys.chat_sockets(users[0])) == 1, "the renewal holds the users again"
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--users", type=int, default=19_000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    server = RedisServer(persistent=False)
    server.start()
    try:
        r = redis.Redis(port=server.port, decode_responses=True)
        users = [f"user{i}" for i in range(args.users)]
        rounds = [one_round(r, users) for _ in range(args.rounds)]
    finally:
        server.stop()
    print(f"presence of one process holding {args.users:,} users; medians of {args.rounds} rounds")
    print(f"{'step':8} {'wall ms':>10} {'process CPU ms':>15} {'Redis CPU ms':>13} {'per user µs (wall)':>19}")
    med = {}
    for step in rounds[0]:
        wall, cpu, rcpu = (statistics.median(r[step][i] for r in rounds) for i in range(3))
        med[step] = wall
        per_user = "" if step in ("beat", "PING") else f"{wall / args.users * 1e6:19.1f}"
        print(f"{step:8} {wall * 1000:10.2f} {cpu * 1000:15.2f} {rcpu * 1000:13.2f} {per_user}")
    print(f"beat / PING round trip: {med['beat'] / med['PING']:.2f}x")


if __name__ == "__main__":
    main()
