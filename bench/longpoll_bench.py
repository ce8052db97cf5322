"""Long-polling benchmark: the chat service's long-polling transport next to its WebSocket and
next to Flask-SocketIO's long-polling, in one run.

    python bench/longpoll_bench.py                                   # 50 pairs, 4 in flight, 2 + 10 s, all three
    python bench/longpoll_bench.py --pairs 20 --duration 5 --variants webchat-lp,fsio-polling

| variant        | server (``chat_servers``, each started fresh, its own Redis)              | client |
|----------------|---------------------------------------------------------------------------|--------|
| `webchat-ws`   | the real stack, 2 chat processes, the real gateway                        | ``chat_load.measure``: asyncio + websockets, `/chat/<user>` |
| `webchat-lp`   | the same stack                                                            | this file: `GET /chat/api/events` parked, `POST /chat/api/messages` |
| `fsio-polling` | Flask-SocketIO, 2 processes, `FSIO_TRANSPORTS=polling`, nginx sticky by client address | this file: Engine.IO 4 polling (`GET`/`POST /socket.io/?EIO=4&transport=polling&sid=..`) |

Workload (the same for all three): ``--pairs`` pairs of users (default 50 = 100 clients), both ends
of a pair in one client process, a pair on two different server processes where that can be known
(WebSocket: the ``hello`` frame's ``node``; Flask-SocketIO polling: each client address sticks to
one process, whose ``hello`` names it; webchat's long-poll requests may land on any chat process,
so its pairs are not placed).  Closed loop: each client keeps ``--window`` (4) private messages in
flight to its partner and sends the next one when the partner has received one, for ``--warmup``
(2 s) then ``--duration`` (10 s) measured.  A message's data carries its send time
(``time.perf_counter()`` when its POST, or its WebSocket frame, is written); the latency is its
receipt at the partner minus that: one clock, both ends live in one process.  The webchat variants
run with the per-socket rate limit out of the way (``--chat-env``, as ``make bench-chat`` does:
the baseline has none) and without presence watches (the long-poll client sends none).

Printed per variant: delivered messages/s, p50/p99/max latency, server CPU seconds per 1000
delivered messages (chat or Flask-SocketIO workers, plus nginx and Redis, from
``chat_servers.cpu_seconds`` over the measured window), the load generator's CPU, Redis commands
per message, frames other than messages (errors, ``close``, a message's copy sent back to its
sender), slow (> 1 s) messages; for the polling variants GETs per message and the POSTs' round
trip; for webchat's long-poll how many polls were answered by another chat process than the tab's
previous one (each is a pick-up: a replay from Redis; counted from the chat processes' access
logs).  Then the long-poll / WebSocket and long-poll / Flask-SocketIO-polling ratios.

The polling client is written here, not python-socketio's ``socketio.Client(transports=["polling"])``:
that one makes each request with ``requests`` (a Session, its adapters and hooks: several times the
CPU of a bare ``http.client`` request) and runs its own threads per client, so on this 2-core
machine it would measure the generator as much as the server.  Here every client is two plain
threads, each with its own keep-alive ``http.client`` connection (one for the parked GET, one for
the POSTs, both from one of 32 source addresses 127.77.0.2-33), the same code for both polling
variants, spread over ``--clients`` processes (default 4).  Its Socket.IO packets are the ones
``chat_load.SocketIOProto`` writes for the WebSocket baseline.

Everything is bounded (2 x pairs clients, a fixed duration, request timeouts), traffic goes to
127.0.0.0/8 only, and each server is stopped when its variant is done.
"""
import argparse
import collections
import http.client
import json
import multiprocessing as mp
import os
import queue
import resource
import secrets
import shutil
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlencode, urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))

import chat_load  # noqa: E402
import chat_servers  # noqa: E402
from chat_load import (SOURCES, SocketIOProto, code_version, combine, pair_across, percentile,  # noqa: E402
                       raise_nofile, redis_calls, seed_users, stop_clients)
from chat_servers import cpu_seconds  # noqa: E402
from webchat_testing.sessions import COOKIE  # noqa: E402

VARIANTS = ("webchat-ws", "webchat-lp", "fsio-polling")
TRANSPORT = {"webchat-ws": "WebSocket", "webchat-lp": "long-polling", "fsio-polling": "Engine.IO polling"}
POLL_TIMEOUT = 40  # s: a parked GET is answered within ~25 s by both servers


# --------------------------------------------------------------------------------------------
# HTTP, one keep-alive connection

class Conn:
    """One keep-alive HTTP/1.1 connection to the gateway, from one source address.  A request on
    a connection the server closed meanwhile (keep-alive timeout, nginx's keepalive_requests) is
    made once more on a new one; both polling APIs make that safe (a GET of the same cursor, a
    POST of the same cid)."""

    def __init__(self, url, source, timeout):
        parts = urlsplit(url)
        self.conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout, source_address=(source, 0))
        self.reconnects = 0
        self.closing = False

    def request(self, method, path, body=None, headers=None):
        for attempt in (1, 2):
            try:
                self.conn.request(method, path, body=body, headers=headers or {})
                resp = self.conn.getresponse()
                return resp.status, resp.read()  # http.client closes the connection itself if the answer said so
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError, http.client.CannotSendRequest):
                self.conn.close()
                if attempt == 2 or self.closing:
                    raise
                self.reconnects += 1

    def shutdown(self):
        """Wake a thread blocked in this connection's read (at the end of a run)."""
        self.closing = True
        sock = self.conn.sock
        if sock is not None:
            try:
                sock.shutdown(2)
            except OSError:
                pass


class PollError(Exception):
    def __init__(self, status, body):
        super().__init__(f"{status} {body[:200]!r}")
        self.status = status


# --------------------------------------------------------------------------------------------
# the two polling protocols (client side)

def positions_query(answer):
    """The query part (``&last_id=..&rooms=..``) that polls on from a poll's answer."""
    query = {"rooms": ",".join(f"{room}:{mid}" for room, mid in answer["rooms"].items())}
    if answer["last_id"]:
        query["last_id"] = answer["last_id"]
    return "&" + urlencode(query)


class LongPollProto:
    """The chat service's long-polling API (docs/chat.md): ``GET /chat/api/events?poll=&last_id=&rooms=``
    answers ``{"frames": [...], "last_id": .., "rooms": {..}}`` (the positions to poll from
    next); ``POST /chat/api/messages?poll=`` takes one
    client frame and answers ``{"frames": [ack]}`` or a 4xx ``{"error", "code", "frames"}``."""

    sticky = False  # any chat process answers any request: there is no process to pair across

    def __init__(self, cfg, user, sid):
        self.poll_id = secrets.token_urlsafe(12)  # one "tab"
        self.positions = ""   # the query of the positions answered last
        self.headers = {"Cookie": f"{COOKIE}={sid}", "Origin": cfg["origin"]}
        self.post_headers = dict(self.headers, **{"X-CSRF-Token": cfg["csrf"], "Content-Type": "application/json"})

    def open(self, get, post):
        """The first poll: ``hello``, the replay, ``sync``.  Returns (node of the hello, other frames)."""
        frames = self.poll(get)
        hello = next((f for k, f in frames if k == "hello"), None)
        if hello is None:
            raise RuntimeError(f"no hello in the first poll: {[k for k, _ in frames]}")
        return hello.get("node"), [(k, f) for k, f in frames if k != "hello"]

    def poll(self, get):
        path = f"/chat/api/events?poll={self.poll_id}" + self.positions
        status, body = get.request("GET", path, headers=self.headers)
        if status != 200:
            raise PollError(status, body)
        doc = json.loads(body)
        if "rooms" in doc:
            self.positions = positions_query(doc)
        frames = [(f.get("type") or "untyped", f) for f in doc.get("frames") or []]
        if doc.get("superseded"):  # a newer poll of this tab took over (we never send two at once)
            frames.append(("superseded", doc))
        return frames

    def send(self, post, receiver, data, cid):
        """POST one message; None when acknowledged, else what went wrong (counted)."""
        body = json.dumps({"type": "message", "receiver": receiver, "data": data, "cid": cid})
        status, resp = post.request("POST", f"/chat/api/messages?poll={self.poll_id}", body, self.post_headers)
        try:
            doc = json.loads(resp)
        except ValueError:
            return f"post-{status}-not-json"
        if status != 200:
            return f"post-{status}-{doc.get('code') if isinstance(doc, dict) else '?'}"
        kinds = [f.get("type") for f in doc.get("frames") or []]
        return None if "ack" in kinds else f"post-200-no-ack {kinds}"

    def pong(self, post):
        pass  # the server does not ping a long-poll client

    def close(self, post):
        pass  # nothing to say: the poll is forgotten when it is not polled


class EngineIOProto:
    """Socket.IO 5 over Engine.IO 4 long-polling (what python-socketio's client does with
    ``transports=["polling"]``): a handshake GET answers ``0{"sid": ..}``, a POST of ``40``
    connects the namespace, then GETs receive and POSTs send packets, several in one body
    separated by ``\\x1e``; the server's ping ``2`` is answered with a POST of ``3``."""

    sticky = True  # a session lives in one process; nginx keeps a client address on one

    def __init__(self, cfg, user, sid):
        self.path = None
        self.headers = {"Cookie": f"{COOKIE}={sid}", "Origin": cfg["origin"]}
        self.post_headers = dict(self.headers, **{"Content-Type": "text/plain;charset=UTF-8"})

    def open(self, get, post):
        status, body = get.request("GET", "/socket.io/?EIO=4&transport=polling", headers=self.headers)
        text = body.decode()
        if status != 200 or not text.startswith("0"):
            raise PollError(status, body)
        self.path = f"/socket.io/?EIO=4&transport=polling&sid={json.loads(text[1:])['sid']}"
        self.post(post, "40")
        frames = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # the namespace's "40{sid}", then our hello event
            for kind, payload in self.poll(get):
                if kind == "hello":
                    return payload.get("node"), frames
                if kind == "connect_error":
                    raise RuntimeError(f"connect refused: {payload}")
                if kind not in ("connected", "engineio"):
                    frames.append((kind, payload))
        raise RuntimeError("no hello within 30 s")

    def poll(self, get):
        status, body = get.request("GET", self.path, headers=self.headers)
        if status != 200:
            raise PollError(status, body)
        return [SocketIOProto.parse(p) for p in body.decode().split("\x1e")]

    def post(self, post, payload):
        status, resp = post.request("POST", self.path, payload.encode(), self.post_headers)
        return None if status == 200 and resp.lower() == b"ok" else f"post-{status}-{resp[:40]!r}"

    def send(self, post, receiver, data, cid):
        return self.post(post, SocketIOProto.encode(receiver, data, cid))  # no ack in this protocol

    def pong(self, post):
        self.post(post, "3")

    def close(self, post):
        self.post(post, "1")  # Engine.IO's close: the server answers the parked GET and forgets the session


PROTOCOLS = {"webchat-lp": LongPollProto, "fsio-polling": EngineIOProto}


# --------------------------------------------------------------------------------------------
# one client process: two threads per client

PONG, STOP = "pong", "stop"  # outbox items besides "send one message"


class PollSlot:
    """One client: its protocol state, a GET connection and its poller thread, a POST connection
    and its sender thread, fed by ``outbox`` (one item per message to send)."""

    def __init__(self, proto, user, sid, source, cfg):
        self.user = user
        self.proto = proto(cfg, user, sid)
        self.get = Conn(cfg["url"], source, POLL_TIMEOUT)
        self.post = Conn(cfg["url"], source, 15)
        self.outbox = queue.SimpleQueue()
        self.node = self.partner = self.error = None
        self.seq = 0        # messages sent
        self.rx = 0         # messages received from the partner
        self.rx_window = 0  # ... in the measured window
        self.polls = 0      # GETs answered
        self.empty_polls = 0


class PollClient:
    def __init__(self, cfg, conn):
        self.cfg = cfg
        self.conn = conn
        proto = PROTOCOLS[cfg["variant"]]
        self.slots = [PollSlot(proto, u, s, SOURCES[(cfg["offset"] + i) % len(SOURCES)], cfg)
                      for i, (u, s) in enumerate(cfg["users"])]
        self.sending = self.measuring = self.stopping = False
        self.latencies = []  # list.append is atomic: every poller appends here
        self.post_times = []  # round trip of each POST of a message in the measured window
        self.lock = threading.Lock()  # for kinds and samples
        self.kinds = collections.Counter()
        self.samples = {}
        self.pad = "x" * max(0, cfg["size"] - 24)

    def count(self, kind, sample=None):
        with self.lock:
            self.kinds[kind] += 1
            if sample is not None and kind not in self.samples and len(self.samples) < 20:
                self.samples[kind] = str(sample)[:300]

    def open(self, slot):
        try:
            slot.node, frames = slot.proto.open(slot.get, slot.post)
            for kind, payload in frames:
                self.count(kind)
        except Exception as exc:  # noqa: BLE001 - counted and reported
            slot.error = f"{type(exc).__name__}: {exc}"[:200]

    def poller(self, slot):
        perf = time.perf_counter
        while not self.stopping:
            try:
                events = slot.proto.poll(slot.get)
            except Exception as exc:  # noqa: BLE001 - counted; poll again after a pause
                if self.stopping:
                    break
                self.count(f"poll-{getattr(exc, 'status', type(exc).__name__)}", exc)
                time.sleep(0.2)
                continue
            now = perf()
            slot.polls += 1
            if not events:
                slot.empty_polls += 1
            for kind, payload in events:
                if kind == "message" and payload:
                    if payload.get("sender") == slot.user:
                        self.count("message-own")  # a copy of our own message: not a delivery
                        continue
                    slot.rx += 1
                    data = payload.get("data") or ""
                    try:
                        t0 = float(data[:data.index(" ")])
                    except (ValueError, AttributeError):
                        self.count("message-unparsed", payload)
                        continue
                    if self.measuring:
                        slot.rx_window += 1
                        self.latencies.append(now - t0)
                        if now - t0 > 1.0:
                            # when a stall happened, to match with the server's logs
                            self.count(f"slow at {time.strftime('%H:%M:%S')}", f"{now - t0:.2f} s")
                    if self.sending:
                        slot.partner.outbox.put(1)  # the partner sends its next one
                elif kind == "ping":
                    slot.outbox.put(PONG)
                elif kind not in ("engineio", "connected"):
                    self.count(kind, payload if kind in ("error", "system", "close", "superseded", "garbage", "untyped",
                                                         "connect_error") else None)

    def sender(self, slot):
        proto, perf = slot.proto, time.perf_counter
        while True:
            item = slot.outbox.get()
            if item == STOP:
                try:
                    proto.close(slot.post)
                except Exception:  # noqa: BLE001 - the run is over
                    pass
                break
            try:
                if item == PONG:
                    proto.pong(slot.post)
                    continue
                slot.seq += 1
                t0 = perf()
                problem = proto.send(slot.post, slot.partner.user, f"{t0:.7f} {self.pad}", f"{slot.user}.{slot.seq}")
                if self.measuring:
                    self.post_times.append(perf() - t0)
            except Exception as exc:  # noqa: BLE001 - counted
                problem = f"send-{type(exc).__name__}"
            if problem:
                self.count(problem.split(" ")[0], problem)

    def run(self):
        cfg = self.cfg
        t = time.monotonic()
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(self.open, self.slots))
        live = [s for s in self.slots if s.error is None]
        nodes = collections.Counter(s.node for s in live)
        if not PROTOCOLS[cfg["variant"]].sticky:
            for s in live:
                s.node = None  # the next request may go to another process: pair without placing
        pairs, same = pair_across(live)
        threads = []
        for s in live:
            for target in (self.poller, self.sender):
                threads.append(threading.Thread(target=target, args=(s,), daemon=True))
                threads[-1].start()
        errors = collections.Counter(s.error.split(":")[0] for s in self.slots if s.error)
        self.conn.send({"connected": len(live), "failed": sum(errors.values()), "errors": dict(errors),
                        "first_error": next((s.error for s in self.slots if s.error), None),
                        "nodes": dict(nodes), "pairs": len(pairs), "same_node_pairs": same,
                        "connect_s": time.monotonic() - t})
        cmd = self.conn.recv()
        if cmd[0] == "go":
            _, warmup, duration = cmd
            self.sending = True
            for a, b in pairs:
                for _ in range(cfg["window"]):
                    a.outbox.put(1)
                    b.outbox.put(1)
            time.sleep(warmup)
            self.measuring = True
            ru0 = resource.getrusage(resource.RUSAGE_SELF)
            polls0 = sum(s.polls for s in live)
            posts0 = sum(s.seq for s in live)
            t0 = time.perf_counter()
            time.sleep(duration)
            self.measuring = False
            elapsed = time.perf_counter() - t0
            ru1 = resource.getrusage(resource.RUSAGE_SELF)
            polls1 = sum(s.polls for s in live)
            posts1 = sum(s.seq for s in live)
            self.sending = False
            time.sleep(2.0)  # drain what is in flight
            self.conn.send({"received_window": sum(s.rx_window for s in live), "elapsed": elapsed,
                            "latencies": self.latencies, "post_times": self.post_times, "sent": sum(s.seq for s in live),
                            "received": sum(s.rx for s in live), "active_pairs": len(pairs),
                            "polls_window": polls1 - polls0, "posts_window": posts1 - posts0,
                            "empty_polls": sum(s.empty_polls for s in live),
                            "reconnects": sum(s.get.reconnects + s.post.reconnects for s in live),
                            # pairs whose last message in either direction never arrived (after the drain)
                            "stalled_pairs": sum(1 for a, b in pairs if a.seq + b.seq > a.rx + b.rx),
                            "client_cpu": (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime),
                            "kinds": dict(self.kinds), "samples": dict(self.samples)})
            self.conn.recv()  # "close"
        self.stopping = True
        for s in live:
            s.outbox.put(STOP)
        deadline = time.monotonic() + 3
        for th in threads:
            th.join(max(0.0, deadline - time.monotonic()))
        for s in live:
            s.get.shutdown()  # a GET still parked (the server did not answer the close)
        for th in threads:
            th.join(max(0.0, deadline + 2 - time.monotonic()))
        self.conn.send({"closed": True})


def client_process(cfg, conn):
    raise_nofile()
    PollClient(cfg, conn).run()


# --------------------------------------------------------------------------------------------
# one measurement

def measure_ws(args):
    """webchat over WebSocket: the chat benchmark's own measurement (``chat_load.measure``) with
    this run's workload: 2 x pairs sockets, the window, no presence watches."""
    ns = argparse.Namespace(
        worker_connections=0, chat_env=args.chat_env, clients=args.clients, connect_concurrency=200,
        max_connect_concurrency=32, max_connect_time=150, settle_max=10, watch=0, window=args.window,
        size=args.size, warmup=args.warmup, duration=args.duration, profile=None, profile_svg=False,
        keep_state=args.keep_state)
    r = chat_load.measure("webchat", 2 * args.pairs, ns)
    r["variant"] = "webchat-ws"
    r["worker_s_per_1k"] = r["worker_us_per_msg"] / 1000  # us per message = ms per 1000 = s / 1000 per 1000
    r["other_s_per_1k"] = r["other_us_per_msg"] / 1000
    return r


def measure_polling(variant_name, args):
    """Start the server, seed the users, run the polling clients' closed loop, stop everything."""
    state = Path(tempfile.mkdtemp(prefix=f"lpbench-{variant_name}-"))
    if variant_name == "webchat-lp":
        variant = chat_servers.make_variant("webchat", state, env=dict(kv.split("=", 1) for kv in args.chat_env))
    else:
        variant = chat_servers.make_variant("fsio-polling", state)
    result = {"variant": variant_name, "n": 2 * args.pairs}
    variant.start()
    procs, conns = [], []
    try:
        names = [f"p{i:05d}" for i in range(2 * args.pairs)]
        csrf = secrets.token_urlsafe(32)
        sids = seed_users(variant.redis_url, names, csrf=csrf)
        workers = variant.workers()
        clients = max(1, min(args.clients, args.pairs))
        per = -(-len(names) // clients // 2) * 2  # even: pairs stay inside one client process
        for c in range(clients):
            chunk = names[c * per:(c + 1) * per]
            if not chunk:
                break
            parent, child = mp.Pipe()
            cfg = {"variant": variant_name, "users": [(u, sids[u]) for u in chunk], "url": variant.url,
                   "origin": variant.url, "csrf": csrf, "offset": c * per, "window": args.window, "size": args.size}
            p = mp.Process(target=client_process, args=(cfg, child), daemon=True)
            p.start()
            procs.append(p)
            conns.append(parent)
        hellos = [recv(c, 120, "the clients' connect phase") for c in conns]
        nodes = sum((collections.Counter(h["nodes"]) for h in hellos), collections.Counter())
        result.update(
            connected=sum(h["connected"] for h in hellos), failed=sum(h["failed"] for h in hellos),
            connect_errors=dict(sum((collections.Counter(h["errors"]) for h in hellos), collections.Counter())),
            first_error=next((h["first_error"] for h in hellos if h["first_error"]), None),
            nodes=dict(nodes), pairs=sum(h["pairs"] for h in hellos),
            same_node_pairs=sum(h["same_node_pairs"] for h in hellos) if PROTOCOLS[variant_name].sticky else None,
            connect_s=max(h["connect_s"] for h in hellos))
        if result["connected"] < 2:
            raise RuntimeError(f"{variant_name}: no client connected ({result['first_error']})")
        server_pids = workers + variant.other_pids()
        time.sleep(0.5)
        for c in conns:
            c.send(("go", args.warmup, args.duration))
        time.sleep(args.warmup)
        calls0 = redis_calls(variant.redis_url)
        cpu0 = {p: cpu_seconds(p) for p in server_pids}
        t0 = time.monotonic()
        time.sleep(args.duration)
        cpu1 = {p: cpu_seconds(p) for p in server_pids}
        wall = time.monotonic() - t0
        calls1 = redis_calls(variant.redis_url)
        outs = [recv(c, args.duration + 30, "the clients' results") for c in conns]
        posts = sorted(x for o in outs for x in o["post_times"])
        delivered, elapsed = combine(outs, calls0, calls1, result)
        worker_cpu = sum(cpu1[p] - cpu0[p] for p in workers)
        other_cpu = sum(cpu1[p] - cpu0[p] for p in variant.other_pids())
        client_cpu = sum(o["client_cpu"] for o in outs)
        result.update(
            worker_cpu_pct=100 * worker_cpu / wall, other_cpu_pct=100 * other_cpu / wall,
            client_cpu_pct=100 * client_cpu / elapsed,
            worker_s_per_1k=1000 * worker_cpu / delivered if delivered else float("nan"),
            other_s_per_1k=1000 * other_cpu / delivered if delivered else float("nan"),
            client_us_per_msg=1e6 * client_cpu / delivered if delivered else float("nan"),
            gets_per_msg=sum(o["polls_window"] for o in outs) / delivered if delivered else float("nan"),
            posts_per_s=sum(o["posts_window"] for o in outs) / elapsed,
            post_p50_ms=percentile(posts, 50) * 1000, post_p99_ms=percentile(posts, 99) * 1000,
            empty_polls=sum(o["empty_polls"] for o in outs), reconnects=sum(o["reconnects"] for o in outs))
    finally:
        stop_clients(conns, procs, 15)
        variant.stop()
    if variant_name == "webchat-lp":
        result["process_changes"], result["polls_logged"] = process_changes(variant.stack.log_dir)
    if not args.keep_state:
        shutil.rmtree(state, ignore_errors=True)
    return result


def process_changes(log_dir):
    """webchat-lp: how many of a user's consecutive polls were answered by another chat process
    than the one before (each such poll is a pick-up: a replay from Redis, docs/chat.md), from the
    chat processes' access logs (one file per process, one JSON line per request).  (changes, polls)."""
    polls = collections.defaultdict(list)
    for log in sorted(Path(log_dir).glob("chat-*.log")):
        with open(log, errors="replace") as f:
            for line in f:
                if '"/chat/api/events"' not in line:
                    continue
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                polls[rec.get("user")].append((rec.get("time"), log.name))  # logged when it answered
    changes = sum(sum(1 for a, b in zip(seq, seq[1:]) if a[1] != b[1]) for seq in map(sorted, polls.values()))
    return changes, sum(len(seq) for seq in polls.values())


def recv(conn, timeout, what):
    if not conn.poll(timeout):
        raise TimeoutError(f"no answer from a client process within {timeout:.0f} s ({what})")
    return conn.recv()


# --------------------------------------------------------------------------------------------
# report

def summary(r):
    if "error" in r:
        return f"{r['variant']:<13} FAILED {r['error']}"
    same = "pairs not placed" if r.get("same_node_pairs") is None else f"{r['same_node_pairs']} same-process"
    line = (f"{r['variant']:<13} {r['connected']} clients ({r['failed']} failed"
            f"{', ' + str(r['connect_errors']) if r.get('connect_errors') else ''}) in {r['connect_s']:.1f}s, first answered by "
            f"{sorted(r['nodes'].values())}, {r['pairs']} pairs ({same}); {r['sent']} sent, {r['received']} received "
            f"({r['lost']} missing after the drain, {r['stalled_pairs']} pairs stalled); {r['msgs_per_s']:.0f} msgs/s, "
            f"p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms, max {r['max_ms']:.0f} ms; CPU workers "
            f"{r['worker_cpu_pct']:.0f}% nginx+redis {r['other_cpu_pct']:.0f}% client {r['client_cpu_pct']:.0f}% "
            f"= {r['worker_s_per_1k']:.3f} + {r['other_s_per_1k']:.3f} server s per 1000 msgs, client "
            f"{r['client_us_per_msg']:.0f} us per msg")
    if "gets_per_msg" in r:
        line += (f"; {r['gets_per_msg']:.2f} GETs per message, {r['posts_per_s']:.0f} POSTs/s (round trip p50 "
                 f"{r['post_p50_ms']:.1f} ms, p99 {r['post_p99_ms']:.1f} ms), {r['empty_polls']} empty polls, "
                 f"{r['reconnects']} keep-alive reconnects")
    if "process_changes" in r:
        line += (f"; {r['process_changes']} of {r['polls_logged']} polls (whole run) answered by another chat process "
                 f"than the tab's previous poll")
    line += f"; frames {r['kinds']}; Redis calls per message {r.get('redis_calls_per_msg')}"
    if r.get("samples"):
        line += f"; samples {r['samples']}"
    return line + f" [{r['run_s']:.0f}s]"


def table(results):
    head = f"{'variant':<13} {'transport':<18} {'pairs':>5} {'msgs/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} " \
           f"{'srv CPU s/1k msgs':>17} {'(workers':>8} {'+ nginx,redis)':>14} {'client CPU%':>11}"
    lines = [head]
    for r in results:
        if "error" in r:
            lines.append(f"{r['variant']:<13} {TRANSPORT[r['variant']]:<18} FAILED")
            continue
        lines.append(f"{r['variant']:<13} {TRANSPORT[r['variant']]:<18} {r['pairs']:>5} {r['msgs_per_s']:>7.0f} "
                     f"{r['p50_ms']:>7.1f} {r['p99_ms']:>7.1f} {r['max_ms']:>7.0f} "
                     f"{r['worker_s_per_1k'] + r['other_s_per_1k']:>17.3f} {r['worker_s_per_1k']:>8.3f} "
                     f"{r['other_s_per_1k']:>14.3f} {r['client_cpu_pct']:>11.0f}")
    return "\n".join(lines)


def ratios(results):
    by = {r["variant"]: r for r in results if "error" not in r}
    lp = by.get("webchat-lp")
    out = []
    for base, label in (("webchat-ws", "long-poll / WebSocket (webchat)"),
                        ("fsio-polling", "long-poll / Flask-SocketIO polling")):
        b = by.get(base)
        if not (lp and b):
            continue
        cpu = lambda r: r["worker_s_per_1k"] + r["other_s_per_1k"]  # noqa: E731
        out.append(f"{label:<36}: msgs/s {lp['msgs_per_s'] / b['msgs_per_s']:.2f}x, p50 {lp['p50_ms'] / b['p50_ms']:.2f}x, "
                   f"p99 {lp['p99_ms'] / b['p99_ms']:.2f}x, server CPU per message {cpu(lp) / cpu(b):.2f}x")
    return "\n".join(out)


def measure_parked(args):
    """What a waiting poll costs: ``--parked`` tabs each with one poll waiting in the chat
    processes (the webchat stack, polls held 120 s), RSS of the chat workers before and after,
    per waiting poll.  Each tab's first poll is answered at once (``hello``); its second, from
    the ``last_id`` answered, waits.  Clients are asyncio streams, from the 32 source addresses."""
    import asyncio

    n = args.parked
    state = Path(tempfile.mkdtemp(prefix="lpbench-parked-"))
    env = dict(kv.split("=", 1) for kv in args.chat_env)
    env["CHAT_POLL_TIMEOUT"] = "120"
    variant = chat_servers.make_variant("webchat", state, env=env)
    variant.start()
    try:
        names = [f"w{i:05d}" for i in range(n)]
        sids = seed_users(variant.redis_url, names)
        workers = variant.workers()
        u = urlsplit(variant.url)
        time.sleep(1)
        before = sum(chat_servers.rss_kib(w) for w in workers)

        async def tab(i, name):
            reader, writer = await asyncio.open_connection(u.hostname, u.port, local_addr=(SOURCES[i % len(SOURCES)], 0))
            pid = f"parked{i:08d}"

            async def get(query):
                writer.write(f"GET /chat/api/events?{query} HTTP/1.1\r\nHost: {u.netloc}\r\n"
                             f"Cookie: {COOKIE}={sids[name]}\r\nAccept: application/json\r\n\r\n".encode())
                await writer.drain()

            await get(f"poll={pid}")
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
            body = json.loads(await reader.readexactly(length))
            await get(f"poll={pid}" + positions_query(body))
            return writer

        async def run():
            sem = asyncio.Semaphore(200)

            async def one(i, name):
                async with sem:
                    return await tab(i, name)
            writers = await asyncio.gather(*(one(i, name) for i, name in enumerate(names)))
            await asyncio.sleep(3)  # every second poll has reached its process and waits
            after = sum(chat_servers.rss_kib(w) for w in workers)
            for w in writers:
                w.close()
            return after

        t = time.monotonic()
        after = asyncio.run(run())
        return {"variant": "parked", "n": n, "rss_before_kib": before, "rss_after_kib": after,
                "kib_per_poll": (after - before) / n, "open_s": time.monotonic() - t}
    finally:
        variant.stop()
        shutil.rmtree(state, ignore_errors=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", default=",".join(VARIANTS), help=f"from {','.join(VARIANTS)} (default: all, in this order)")
    ap.add_argument("--pairs", type=int, default=50, help="pairs of users (default 50 = 100 clients)")
    chat_load.add_load_args(ap, window=4, warmup=2.0, clients=4)
    ap.add_argument("--keep-state", action="store_true", help="keep each variant's state directory (logs) under $TMPDIR")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--parked", type=int, default=0, metavar="N",
                    help="instead: N tabs with a poll waiting each, and the chat workers' RSS per waiting poll")
    args = ap.parse_args(argv)
    if args.parked:
        raise_nofile()
        r = measure_parked(args)
        print(f"{r['n']} waiting polls (opened in {r['open_s']:.1f} s): chat workers' RSS {r['rss_before_kib']} KiB -> "
              f"{r['rss_after_kib']} KiB, {r['kib_per_poll']:.1f} KiB per waiting poll")
        return 0
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    for v in variants:
        if v not in VARIANTS:
            ap.error(f"unknown variant {v!r}: from {', '.join(VARIANTS)}")

    soft, hard = raise_nofile()
    print(f"# code under test: {code_version()}", flush=True)
    print(f"# {time.strftime('%Y-%m-%d %H:%M:%S %Z')}; {os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.2f}; "
          f"{args.pairs} pairs, window {args.window}, {args.size} B messages, {args.warmup:.0f}+{args.duration:.0f} s per "
          f"variant, {args.clients} client processes; webchat env {args.chat_env}", flush=True)
    results = []
    for v in variants:
        t = time.monotonic()
        try:
            r = measure_ws(args) if v == "webchat-ws" else measure_polling(v, args)
        except Exception as exc:  # noqa: BLE001 - one failed variant does not hide the others
            r = {"variant": v, "error": f"{type(exc).__name__}: {exc}"}
        r["run_s"] = time.monotonic() - t
        results.append(r)
        print(summary(r), flush=True)
    print()
    print(table(results))
    print()
    print(ratios(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0 if all("error" not in r for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
