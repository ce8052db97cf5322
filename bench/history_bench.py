"""History benchmark: pages of a private conversation holding 10,000 messages, read through the
gateway, side by side in one run with the cheapest authenticated request.

    python bench/history_bench.py                             # 10,000 messages, 5 rounds of 5 s
    python bench/history_bench.py --messages 10000 --rounds 3 --connections 1

It starts the local stack (the same code as ``make run``: Redis with its AOF, the services under
gunicorn, nginx from the one gateway template; the chat rate limit raised so the conversation
fills in seconds), registers two people through the gateway and fills their conversation through
the chat WebSocket (the real send path: frames, the send script, acks), both directions, then
edits every 100th message (so pages show edits from ``chat:edits`` as real ones do).  Then,
with wrk and the first person's session cookie, in rounds (order rotated each round; medians):

- ``history newest``  ``GET /chat/api/history?with=<other>``: the 50 newest;
- ``history middle``  ``...&before=<id of the 5,000th>``: 50 from the middle of the stream;
- ``history oldest``  ``...&before=<id of the 51st>``: the first 50 (the deepest page);
- ``auth /api/me``    the session check and nothing else, through the same gateway: the floor
                      any authenticated request pays, for the ratio.

Printed per variant: req/s, p50 and p99 latency (wrk, ``--connections`` at once: 1 by default,
so the latency is a page's own, not a queue's), and req/s as a ratio to ``/api/me``.  Then one
client walks the whole conversation back page by page (``before=`` the first id of each page)
and checks that it meets every message once, in order; its per-page latency is printed too.
"""
import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import websocket

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))

from localstack import Stack  # noqa: E402
from webchat_common import keys  # noqa: E402
from webchat_common.redis_store import open_client  # noqa: E402
from webchat_testing.sessions import COOKIE  # noqa: E402
from wrk_load import add_arguments as add_wrk_arguments, ensure_wrk, register, wrk  # noqa: E402

PAGE = 50
IN_FLIGHT = 200


def fill(stack, alice, bob, count):
    """``count`` messages between ``alice`` and ``bob`` (sessions), both directions, through the
    WebSocket; every 100th edited afterwards.  Returns the ids of the messages in alice's copy
    of the conversation (each person's copy has ids of their own clock), oldest first."""
    socks = {}
    for name, http in (("alice", alice), ("bob", bob)):
        ws = websocket.create_connection(f"ws://127.0.0.1:{stack.gateway_port}/chat/{name}", origin=stack.url,
                                         cookie=f"{COOKIE}={http.cookies[COOKIE]}", timeout=30)
        socks[name] = ws
    ids = []
    for start in range(0, count, IN_FLIGHT):
        batch = range(start, min(count, start + IN_FLIGHT))
        senders = {}
        for i in batch:
            who, to = ("alice", "bob") if i % 3 else ("bob", "alice")
            senders[i] = who
            socks[who].send(json.dumps({"receiver": to, "cid": str(i),
                                        "data": f"message {i}: " + "lorem ipsum dolor sit amet " * 2}))
        acks = {}
        for who, ws in socks.items():  # each socket's acks, reading it until they are all in
            mine = [i for i in batch if senders[i] == who]
            while not all(i in acks for i in mine):
                frame = json.loads(ws.recv())
                if frame.get("type") == "ack":
                    acks[int(frame["cid"])] = frame["id"]
                elif frame.get("type") == "error":
                    raise SystemExit(f"refused while filling: {frame}")
        ids.extend(acks[i] for i in batch)
    for i in range(0, len(ids), 100):
        author, other = ("alice", "bob") if i % 3 else ("bob", "alice")
        socks[author].send(json.dumps({"type": "edit", "with": other, "target": ids[i], "data": "edited",
                                       "cid": f"e{i}"}))
    time.sleep(1.0)
    for ws in socks.values():
        ws.close()
    r = open_client(stack.redis.url, decode_responses=True)
    try:
        return [mid for mid, fields in r.xrange(keys.chat_pm("alice", "bob")) if "e" not in fields]
    finally:
        r.close()


def walk(stack, http, ids):
    """Page back through the whole conversation (alice's copy); the per-page latencies (ms)."""
    url = stack.url + "/chat/api/history"
    got, before, times = [], None, []
    while True:
        params = {"with": "bob", "limit": PAGE}
        if before:
            params["before"] = before
        t0 = time.perf_counter()
        resp = http.get(url, params=params, headers={"Accept": "application/json"})
        times.append((time.perf_counter() - t0) * 1000)
        resp.raise_for_status()
        body = resp.json()
        got = [m["id"] for m in body["messages"]] + got
        if not body["more"]:
            break
        before = body["messages"][0]["id"]
    if got != ids:
        raise SystemExit(f"paging back met {len(got)} messages, {len(set(got))} distinct; expected {len(ids)}")
    return times


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=10_000)
    add_wrk_arguments(ap)
    ap.set_defaults(connections=1, threads=1)
    args = ap.parse_args()
    ensure_wrk()
    # Room for every message and edit in one conversation (CHAT_HISTORY_LENGTH counts entries).
    env = {"CHAT_RATE_LIMIT": "1000000", "CHAT_RATE_BURST": "1000000", "CHAT_SEND_QUEUE": "100000",
           "CHAT_HISTORY_LENGTH": str(args.messages + args.messages // 50 + 1000)}
    with tempfile.TemporaryDirectory(prefix="history-bench-") as tmp, Stack(tmp, chat_replicas=2, env=env) as stack:
        alice, bob = register(stack.url, "alice"), register(stack.url, "bob")
        t0 = time.perf_counter()
        ids = fill(stack, alice, bob, args.messages)
        print(f"filled: {len(ids)} messages in {time.perf_counter() - t0:.1f} s through the WebSocket, "
              f"{(len(ids) + 99) // 100} edited", flush=True)
        base = stack.url + "/chat/api/history?with=bob"
        variants = {
            "history newest": base,
            "history middle": f"{base}&before={ids[len(ids) // 2]}",
            "history oldest": f"{base}&before={ids[PAGE]}",
            "auth /api/me": stack.url + "/api/me",
        }
        for label, url in variants.items():  # each answers 200 and a full page before it is timed
            resp = alice.get(url, headers={"Accept": "application/json"})
            resp.raise_for_status()
            if label.startswith("history") and len(resp.json()["messages"]) != PAGE:
                raise SystemExit(f"{label}: {len(resp.json()['messages'])} messages, not {PAGE}")
        cookie = alice.cookies[COOKIE]
        results = {label: [] for label in variants}
        order = list(variants)
        for rnd in range(args.rounds):
            for label in order[rnd % len(order):] + order[:rnd % len(order)]:
                res = wrk(variants[label], cookie, args.duration, args.connections, args.threads)
                if res["bad"] or res["errors"]:
                    raise SystemExit(f"{label}: {res['bad']} non-2xx answers, socket errors {res['errors']}")
                results[label].append(res)
        print(f"\n{args.rounds} rounds of {args.duration} s, wrk -c{args.connections} -t{args.threads}; medians:")
        floor = [r["rate"] for r in results["auth /api/me"]]
        print(f"{'variant':<16} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'x /api/me':>10}")
        for label, runs in results.items():
            ratio = statistics.median(r["rate"] / f for r, f in zip(runs, floor))
            print(f"{label:<16} {statistics.median(r['rate'] for r in runs):>8.0f} "
                  f"{statistics.median(r['p50'] for r in runs):>7.2f} {statistics.median(r['p99'] for r in runs):>7.2f} "
                  f"{ratio:>10.2f}")
        times = walk(stack, alice, ids)
        print(f"\nwalk back through all {len(ids)} messages: {len(times)} pages of {PAGE}, every message once, "
              f"in order; per page p50 {percentile(times, 50):.2f} ms, p99 {percentile(times, 99):.2f} ms, "
              f"max {max(times):.2f} ms (requests, one at a time)")


if __name__ == "__main__":
    main()
