"""Chat benchmark: authenticated WebSockets through a gateway, private messages between users on
different chat processes, side by side against Flask-SocketIO and an in-memory flask-sock.

    python bench/chat_load.py                          # N = 100 and 1000, every variant, then max sockets
    python bench/chat_load.py --sockets 100 --variants webchat,inmem --duration 10
    python bench/chat_load.py --max-sockets --max-variants webchat,inmem
    python bench/chat_load.py --sockets 100,1000 --variants webchat,webchat-sentinel,webchat-sentinel-async --rounds 3
    python bench/chat_load.py --sockets 100,1000 --variants webchat,webchat-cluster,webchat-cluster-async --rounds 3

For each N and variant: start the server fresh (its own Redis), create N users with a session each,
open N sockets through the gateway (client processes separate from the server, each socket from one
of several 127.77.0.x source addresses), read each socket's ``hello`` frame to learn which chat
process it is on, pair users across processes, then run a closed loop for a fixed time: each socket
keeps ``--window`` private messages in flight to its partner and sends the next one when the partner
has received one.  Printed: delivered messages/s, p50/p99 end-to-end latency (send -> receipt at
the receiver, timestamps from one clock since both ends of a pair live in one client process),
RSS per socket of the processes holding the sockets ((RSS after opening - RSS before) / N), and
CPU used by the server side and by the load generator during the measured window.

Everything is bounded: N sockets, a fixed duration, traffic to 127.0.0.0/8 only; servers stopped at the end.
"""
import argparse
import asyncio
import collections
import json
import math
import multiprocessing as mp
import os
import re
import resource
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import chat_servers  # noqa: E402
from chat_servers import cpu_seconds, nofile_limit, rss_kib  # noqa: E402
from webchat_testing.sessions import COOKIE  # noqa: E402

SOURCE_NET = "127.77.0."  # client sockets come from 127.77.0.2 .. 127.77.0.33
SOURCES = [SOURCE_NET + str(i) for i in range(2, 34)]
PASSWORD = secrets.token_urlsafe(16)  # the bench users' password, new every run


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


# --------------------------------------------------------------------------------------------
# users and sessions

def seed_users(redis_url, names, ttl=3600, csrf=None):
    """Create users and a logged-in session for each straight in Redis, by the contract of
    ``webchat_common.sessions`` and ``webchat_common.keys`` (logging in 19,000 users through
    auth would take an hour of scrypt and trip its throttles).  ``csrf``: the CSRF token of
    every session (for a client that POSTs; default a fresh one each).  Returns {name: session id}."""
    from werkzeug.security import generate_password_hash

    from webchat_common.redis_store import open_client
    from webchat_testing.sessions import plant_session

    r = open_client(redis_url)
    pw_hash = generate_password_hash(PASSWORD, method="scrypt:32768:8:1")
    sids = {}
    now = time.time()
    pipe = r.pipeline(transaction=False)
    for i, name in enumerate(names):
        pipe.hset("user:" + name.lower(), mapping={"name": name, "password": pw_hash, "created": int(now)})
        pipe.zadd("users", {name: now})
        sids[name] = plant_session(pipe, name, ttl=ttl, created=now, csrf=csrf, login_at=int(now))
        if i % 1000 == 999:
            pipe.execute()
    pipe.execute()
    r.close()
    return sids


def combine(outs, calls0, calls1, result):
    """Add what the load-generator processes measured (``outs``) and the Redis commands run
    meanwhile (two ``redis_calls`` readings) to ``result``: messages/s, latency percentiles,
    sent, received, lost, pairs, frames seen.  Returns (messages delivered, seconds measured)."""
    lat = sorted(x for o in outs for x in o["latencies"])
    elapsed = statistics.mean(o["elapsed"] for o in outs)
    delivered = sum(o["received_window"] for o in outs)
    samples = {}
    for o in outs:
        samples.update(o["samples"])
    calls = {k: v - calls0.get(k, 0) for k, v in calls1.items() if v - calls0.get(k, 0) > 0 and k not in ("info", "hello")}
    result.update(
        redis_calls_per_msg={k: round(v / delivered, 2) for k, v in sorted(calls.items(), key=lambda kv: -kv[1])} if delivered else {},
        msgs_per_s=delivered / elapsed,
        p50_ms=percentile(lat, 50) * 1000, p99_ms=percentile(lat, 99) * 1000,
        max_ms=(lat[-1] * 1000) if lat else float("nan"),
        sent=sum(o["sent"] for o in outs), received=sum(o["received"] for o in outs),
        lost=sum(o["sent"] for o in outs) - sum(o["received"] for o in outs),
        active_pairs=sum(o["active_pairs"] for o in outs), stalled_pairs=sum(o["stalled_pairs"] for o in outs),
        kinds=dict(sum((collections.Counter(o["kinds"]) for o in outs), collections.Counter())), samples=samples,
    )
    return delivered, elapsed


def stop_clients(conns, procs, wait):
    """Tell each load-generator process to close its connections, wait up to ``wait`` seconds
    for its last word, then for the process (terminated if it hangs)."""
    for c in conns:
        try:
            c.send(("close",))
        except OSError:
            pass
    for c in conns:
        try:
            if c.poll(wait):
                c.recv()
        except (OSError, EOFError):
            pass
    for p in procs:
        p.join(5)
        if p.is_alive():
            p.terminate()


def real_login(base, name, source="127.77.1.2"):
    """Register and log in one user through the gateway, as a browser does; the session id.
    Checks that the seeded sessions follow the same contract as real ones."""
    import requests
    from requests.adapters import HTTPAdapter

    class Source(HTTPAdapter):
        def init_poolmanager(self, *a, **kw):
            kw["source_address"] = (source, 0)
            super().init_poolmanager(*a, **kw)

    s = requests.Session()
    s.mount("http://", Source())
    s.headers["Accept"] = "text/html"

    def token(path):
        return re.search(r'name="csrf_token" value="([^"]+)"', s.get(base + path, timeout=10).text).group(1)

    s.post(base + "/register", data={"username": name, "password": PASSWORD, "csrf_token": token("/register")},
           allow_redirects=False, timeout=30)
    resp = s.post(base + "/login", data={"username": name, "password": PASSWORD, "csrf_token": token("/login")},
                  allow_redirects=False, timeout=30)
    sid = s.cookies.get(COOKIE)
    if resp.status_code not in (302, 303) or not sid:
        raise RuntimeError(f"real login of {name} failed: {resp.status_code} {resp.text[:200]}")
    return sid


# --------------------------------------------------------------------------------------------
# wire protocols (client side)

class WebchatProto:
    """The chat service's frames (and the in-memory baseline's, which copies them)."""

    name = "webchat"

    @staticmethod
    def path(user):
        return f"/chat/{user}"

    @staticmethod
    async def after_open(ws):
        pass

    @staticmethod
    def encode(receiver, data, cid):
        return json.dumps({"receiver": receiver, "data": data, "cid": cid})

    @staticmethod
    def parse(frame):
        """(kind, payload dict or None)."""
        try:
            msg = json.loads(frame)
        except ValueError:
            return "garbage", None
        if not isinstance(msg, dict):
            return "garbage", None
        return msg.get("type") or "untyped", msg


class SocketIOProto:
    """Socket.IO v5 over Engine.IO v4, websocket transport only (what python-socketio's client
    sends with ``transports=['websocket']``), written out so every variant has the same client cost."""

    name = "socketio"

    @staticmethod
    def path(user):
        return "/socket.io/?EIO=4&transport=websocket"

    @staticmethod
    async def after_open(ws):
        opening = await ws.recv()
        if not opening.startswith("0"):
            raise RuntimeError(f"no engine.io open packet: {opening[:80]!r}")
        await ws.send("40")  # connect to the default namespace

    @staticmethod
    def encode(receiver, data, cid):
        return "42" + json.dumps(["message", {"receiver": receiver, "data": data, "cid": cid}])

    @staticmethod
    def parse(frame):
        if frame == "2":
            return "ping", None
        if frame.startswith("42"):
            try:
                event, payload = json.loads(frame[2:])[:2]
            except ValueError:
                return "garbage", None
            return event, payload
        if frame.startswith("40"):
            return "connected", None
        if frame.startswith("44"):
            return "connect_error", {"error": frame[2:]}
        return "engineio", None


PROTOCOLS = {"webchat": WebchatProto, "socketio": SocketIOProto}


# --------------------------------------------------------------------------------------------
# one client process

def pair_across(slots):
    """Pair users on different chat processes (``slot.node``) where possible: both directions,
    one partner each (sets ``slot.partner``).  Returns (pairs, how many pairs share a process)."""
    groups = collections.defaultdict(list)
    for s in slots:
        groups[s.node].append(s)
    pairs, same = [], 0
    while True:
        live = sorted((g for g in groups.values() if g), key=len, reverse=True)
        if len(live) >= 2:
            pairs.append((live[0].pop(), live[1].pop()))
        elif live and len(live[0]) >= 2:
            pairs.append((live[0].pop(), live[0].pop()))
            same += 1
        else:
            break
    for a, b in pairs:
        a.partner, b.partner = b, a
    return pairs, same


class Slot:
    __slots__ = ("user", "sid", "ws", "node", "hello", "partner", "seq", "rx", "error")

    def __init__(self, user, sid):
        self.user, self.sid = user, sid
        self.ws = None
        self.node = None
        self.hello = None
        self.partner = None
        self.seq = 0   # messages this socket sent
        self.rx = 0    # messages this socket received
        self.error = None


class Client:
    def __init__(self, cfg, conn):
        self.cfg = cfg
        self.conn = conn
        self.proto = PROTOCOLS[cfg["protocol"]]
        self.slots = [Slot(u, s) for u, s in cfg["users"]]
        self.sending = False
        self.measuring = False
        self.last_frame = 0.0
        self.latencies = []
        self.received_window = 0
        self.received = 0
        self.sent = 0
        self.kinds = collections.Counter()
        self.samples = {}
        self.pad = "x" * max(0, cfg["size"] - 24)

    async def command(self):
        return await asyncio.get_running_loop().run_in_executor(None, self.conn.recv)

    async def open(self, i, slot, gate):
        import websockets

        proto = self.proto
        async with gate:
            if time.monotonic() > self.deadline:
                slot.error = "NotTried: the connect deadline passed"
                return
            try:
                slot.hello = asyncio.get_running_loop().create_future()
                slot.ws = await websockets.connect(
                    self.cfg["ws_base"] + proto.path(slot.user), origin=self.cfg["origin"],
                    additional_headers={"Cookie": f"{COOKIE}={slot.sid}"}, compression=None,
                    open_timeout=60, ping_interval=None, close_timeout=2, max_size=1 << 20, max_queue=64,
                    local_addr=(SOURCES[(self.cfg["offset"] + i) % len(SOURCES)], 0))
                await proto.after_open(slot.ws)
                asyncio.get_running_loop().create_task(self.reader(slot))
                slot.node = await asyncio.wait_for(slot.hello, 30)
            except Exception as exc:  # noqa: BLE001 - counted and reported
                slot.error = f"{type(exc).__name__}: {exc}"[:200]
                if slot.ws is not None:
                    await slot.ws.close()
                    slot.ws = None

    async def reader(self, slot):
        proto, ws = self.proto, slot.ws
        perf = time.perf_counter
        try:
            async for frame in ws:
                self.last_frame = time.monotonic()
                kind, payload = proto.parse(frame)
                if kind == "message":
                    if payload and payload.get("sender") == slot.user:
                        # our own message, sent to every socket of its sender (webchat keeps
                        # a person's devices in sync): work the server does, not a delivery
                        self.kinds["message-own"] += 1
                        continue
                    now = perf()
                    self.received += 1
                    slot.rx += 1
                    data = payload.get("data", "") if payload else ""
                    try:
                        t0 = float(data[:data.index(" ")])
                    except (ValueError, AttributeError):
                        self.kinds["message-unparsed"] += 1
                        continue
                    if self.measuring:
                        self.received_window += 1
                        self.latencies.append(now - t0)
                        if now - t0 > 1.0 and len(self.samples) < 20:
                            # when a stall happened, to match with the server's logs
                            self.samples[f"slow at {time.strftime('%H:%M:%S')}"] = f"{now - t0:.2f} s"
                    if self.sending:
                        # the message came from our partner: the partner sends its next one
                        await self.send(slot.partner)
                    continue
                self.kinds[kind] += 1
                if kind == "ping":
                    await ws.send("3")
                elif kind == "hello" and not slot.hello.done():
                    slot.hello.set_result(str(payload.get("node") or payload.get("process") or "?"))
                elif kind in ("connect_error", "error", "system", "garbage", "untyped") and kind not in self.samples:
                    self.samples[kind] = str(payload)[:300]
        except Exception as exc:  # noqa: BLE001 - a socket dropped: counted
            self.kinds["reader-" + type(exc).__name__] += 1
            rcvd = getattr(exc, "rcvd", None)
            if rcvd is not None:  # the server closed it: keep its close code and reason
                key = f"closed {rcvd.code} {rcvd.reason}"[:120]
                self.kinds[key] += 1
            if slot.hello is not None and not slot.hello.done():
                slot.hello.set_exception(exc)

    async def send(self, slot):
        slot.seq += 1
        self.sent += 1
        data = f"{time.perf_counter():.7f} {self.pad}"
        try:
            await slot.ws.send(self.proto.encode(slot.partner.user, data, f"{slot.user}.{slot.seq}"))
        except Exception as exc:  # noqa: BLE001
            self.kinds["send-" + type(exc).__name__] += 1

    async def rebalance(self, gate):
        """The kernel spreads --reuse-port connections by a hash of the source port: reopen sockets
        of the fullest process until every process has its share (bounded), so that pairs can cross."""
        reopened = 0
        index = {id(s): i for i, s in enumerate(self.slots)}
        for _ in range(50):
            groups = collections.defaultdict(list)
            for s in self.slots:
                if s.ws is not None:
                    groups[s.node].append(s)
            open_count = sum(len(g) for g in groups.values())
            if not open_count:
                break
            share = open_count // self.cfg["nodes"]
            if len(groups) >= self.cfg["nodes"] and max(len(g) for g in groups.values()) <= share + 1:
                break
            extra = [s for g in groups.values() for s in g[share + 1:]] if len(groups) >= self.cfg["nodes"] \
                else max(groups.values(), key=len)[share:]
            if not extra:
                break
            await asyncio.gather(*(s.ws.close() for s in extra), return_exceptions=True)
            for s in extra:
                s.ws = None
            await asyncio.gather(*(self.open(index[id(s)], s, gate) for s in extra))
            reopened += len(extra)
        return reopened

    def pair(self):
        return pair_across([s for s in self.slots if s.ws is not None])

    async def watch(self):
        """As the page does with its contacts: each socket watches the presence of its partner
        and of the next users of this client process, ``watch`` users in all (webchat only)."""
        k = self.cfg["watch"]
        live = [s for s in self.slots if s.ws is not None]
        if not k or len(live) < 2:
            return
        for i, s in enumerate(live):
            names = {s.partner.user} if s.partner else set()
            for j in range(1, len(live)):
                if len(names) >= k:
                    break
                names.add(live[(i + j) % len(live)].user)
            names.discard(s.user)
            try:
                await s.ws.send(json.dumps({"type": "watch", "users": sorted(names)}))
            except Exception as exc:  # noqa: BLE001
                self.kinds["watch-" + type(exc).__name__] += 1

    async def run(self):
        cfg = self.cfg
        gate = asyncio.Semaphore(cfg["connect_concurrency"])
        t = time.monotonic()
        self.deadline = t + cfg["connect_deadline"]
        await asyncio.gather(*(self.open(i, s, gate) for i, s in enumerate(self.slots)))
        reopened = await self.rebalance(gate) if cfg["nodes"] >= 2 else 0
        pairs, same = self.pair()
        await self.watch()
        # Let the connect phase's traffic (watch answers, presence frames about watched users
        # who came online) drain before measuring: steady-state messaging is what the load run
        # measures; the time this takes is reported on its own.
        t_quiet = time.monotonic()
        while time.monotonic() - self.last_frame < 1.0 and time.monotonic() - t_quiet < cfg["settle_max"]:
            await asyncio.sleep(0.2)
        settle = time.monotonic() - t_quiet
        errors = collections.Counter(s.error.split(":")[0] for s in self.slots if s.error)
        first_error = next((s.error for s in self.slots if s.error), None)
        self.conn.send({"connected": sum(1 for s in self.slots if s.ws is not None), "failed": sum(errors.values()),
                        "errors": dict(errors), "first_error": first_error,
                        "nodes": dict(collections.Counter(s.node for s in self.slots if s.ws is not None)),
                        "pairs": len(pairs), "same_node_pairs": same, "reopened": reopened, "settle_s": settle, "connect_s": time.monotonic() - t})
        cmd = await self.command()
        if cmd[0] == "go":
            _, warmup, duration, active = cmd
            senders = pairs if active is None else pairs[:active]
            self.sending = True
            ru0 = None
            for a, b in senders:
                for _ in range(cfg["window"]):
                    await self.send(a)
                    await self.send(b)
            await asyncio.sleep(warmup)
            self.measuring = True
            ru0 = resource.getrusage(resource.RUSAGE_SELF)
            t0 = time.perf_counter()
            await asyncio.sleep(duration)
            self.measuring = False
            elapsed = time.perf_counter() - t0
            ru1 = resource.getrusage(resource.RUSAGE_SELF)
            self.sending = False
            await asyncio.sleep(2.0)  # drain what is in flight
            self.conn.send({"received_window": self.received_window, "elapsed": elapsed,
                            "latencies": self.latencies, "sent": self.sent, "received": self.received,
                            "active_pairs": len(senders),
                            # pairs whose last message in either direction never arrived (after the drain)
                            "stalled_pairs": sum(1 for a, b in senders if a.seq + b.seq > a.rx + b.rx),
                            "client_cpu": (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime),
                            "kinds": dict(self.kinds), "samples": self.samples})
            cmd = await self.command()
        await asyncio.gather(*(s.ws.close() for s in self.slots if s.ws is not None), return_exceptions=True)
        self.conn.send({"closed": True})


def client_process(cfg, conn):
    raise_nofile()
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    asyncio.run(Client(cfg, conn).run())


# --------------------------------------------------------------------------------------------
# one measurement

def percentile(sorted_values, q):
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, math.ceil(q / 100 * len(sorted_values)) - 1))
    return sorted_values[k]


def redis_calls(url):
    """{command: calls} from Redis' INFO commandstats (for Redis commands per delivered message;
    the primary's, with Sentinel; every primary's, added up, on a Cluster)."""
    from redis.cluster import RedisCluster

    from webchat_common.redis_store import open_client

    r = open_client(url)
    try:
        if isinstance(r, RedisCluster):
            per_node = list(r.info("commandstats", target_nodes=RedisCluster.PRIMARIES).values())  # {node: stats}
        else:
            per_node = [r.info("commandstats")]
    finally:
        r.close()
    calls = collections.defaultdict(int)
    for stats in per_node:
        for k, v in stats.items():
            calls[k.removeprefix("cmdstat_")] += v["calls"]
    return dict(calls)


def start_profiles(pids, args, tag):
    """py-spy record (sampling, --nonblocking so the process is not paused) on each pid for the window."""
    import subprocess

    out = Path(args.profile)
    out.mkdir(parents=True, exist_ok=True)
    procs = []
    for pid in pids:
        for fmt, ext in (("raw", "txt"), ("flamegraph", "svg")):
            procs.append(subprocess.Popen(
                [str(Path(sys.executable).with_name("py-spy")), "record", "--nonblocking", "--rate", "200",
                 "-d", str(int(args.duration)), "-p", str(pid), "-f", fmt, "-o", str(out / f"{tag}-{pid}.{ext}")],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            if not args.profile_svg:
                break
    return procs


def measure(variant_name, n, args, max_mode=False, active=None):
    """Start a variant, open n sockets, run the closed loop, stop everything; a result dict."""
    state = Path(tempfile.mkdtemp(prefix=f"chatbench-{variant_name}-"))
    kw = {}
    if max_mode:
        kw = {"replicas": 1, "worker_connections": n + 1000, "max_mode": True}
    ours = variant_name.startswith("webchat")  # webchat on any Redis topology
    if ours and args.worker_connections and not max_mode:
        kw = {"worker_connections": args.worker_connections}
    if ours:
        kw["env"] = dict(kv.split("=", 1) for kv in args.chat_env)
    variant = chat_servers.make_variant(variant_name, state, **kw)
    result = {"variant": variant_name, "n": n, "mode": "max" if max_mode else "load"}
    variant.start()
    procs = []
    try:
        names = [f"b{i:05d}" for i in range(n)]
        sids = seed_users(variant.redis_url, names)
        if ours and n >= 2:
            # the first pair logs in for real, through auth and the gateway
            for k, name in enumerate(names[:2]):
                sids[name] = real_login(variant.url, name + "r", source=f"127.77.1.{k + 2}")
            names[0], names[1] = names[0] + "r", names[1] + "r"
            sids[names[0]], sids[names[1]] = sids.pop("b00000"), sids.pop("b00001")
        time.sleep(0.5)
        workers = variant.workers()
        result["worker_nofile"] = [nofile_limit(p) for p in workers]
        rss_before = sum(rss_kib(p) for p in workers)
        clients = args.clients if not max_mode else max(args.clients, math.ceil(n / 7000))
        clients = max(1, min(clients, n // 2))
        per = math.ceil(n / clients / 2) * 2  # even: pairs stay inside one client process
        conns = []
        for c in range(clients):
            chunk = names[c * per:(c + 1) * per]
            if not chunk:
                break
            parent, child = mp.Pipe()
            cfg = {"users": [(u, sids[u]) for u in chunk], "protocol": variant.protocol, "ws_base": variant.ws_base,
                   "origin": variant.url, "offset": c * per, "nodes": variant.node_count, "window": args.window, "size": args.size,
                   "connect_concurrency": args.max_connect_concurrency if max_mode else args.connect_concurrency,
                   "connect_deadline": args.max_connect_time if max_mode else 600, "settle_max": args.settle_max,
                   "watch": args.watch if ours else 0}
            p = mp.Process(target=client_process, args=(cfg, child), daemon=True)
            p.start()
            procs.append(p)
            conns.append(parent)
        hellos = [c.recv() for c in conns]
        time.sleep(1.0)  # let the server settle after the handshakes before reading its memory
        rss_after = sum(rss_kib(p) for p in workers)
        connected = sum(h["connected"] for h in hellos)
        nodes = collections.Counter()
        for h in hellos:
            nodes.update(h["nodes"])
        result.update(
            connected=connected, failed=sum(h["failed"] for h in hellos),
            connect_errors=dict(sum((collections.Counter(h["errors"]) for h in hellos), collections.Counter())),
            first_error=next((h["first_error"] for h in hellos if h["first_error"]), None),
            nodes=dict(nodes), pairs=sum(h["pairs"] for h in hellos),
            same_node_pairs=sum(h["same_node_pairs"] for h in hellos), reopened=sum(h["reopened"] for h in hellos),
            connect_s=max(h["connect_s"] for h in hellos), settle_s=max(h["settle_s"] for h in hellos),
            rss_before_kib=rss_before, rss_after_kib=rss_after, workers=len(workers),
            rss_per_socket_kib=(rss_after - rss_before) / connected if connected else float("nan"),
        )
        if connected < 2:
            raise RuntimeError(f"{variant_name}: no sockets opened ({result['first_error']})")
        primaries = variant.redis_primary_pids()
        server_pids = workers + variant.other_pids() + [p for p in primaries if p not in variant.other_pids()]
        per_client_active = None if active is None else max(1, math.ceil(active / len(conns)))
        for c in conns:
            c.send(("go", args.warmup, args.duration, per_client_active))
        time.sleep(args.warmup)
        profilers = start_profiles(workers, args, f"{variant_name}-{n}") if args.profile else []
        calls0 = redis_calls(variant.redis_url)
        cpu0 = {p: cpu_seconds(p) for p in server_pids}
        sys0 = {p: cpu_seconds(p, "sys") for p in workers}
        t0 = time.monotonic()
        time.sleep(args.duration)
        cpu1 = {p: cpu_seconds(p) for p in server_pids}
        redis_cpu = [cpu1.get(p, 0) - cpu0.get(p, 0) for p in primaries]
        sys1 = {p: cpu_seconds(p, "sys") for p in workers}
        calls1 = redis_calls(variant.redis_url)
        wall = time.monotonic() - t0
        for p in profilers:
            p.wait(30)
        outs = [c.recv() for c in conns]
        delivered, elapsed = combine(outs, calls0, calls1, result)
        result.update(
            client_cpu_pct=100 * sum(o["client_cpu"] for o in outs) / elapsed,
            worker_cpu_pct=100 * sum(cpu1[p] - cpu0[p] for p in workers) / wall,
            worker_sys_share=sum(sys1[p] - sys0[p] for p in workers) / max(1e-9, sum(cpu1[p] - cpu0[p] for p in workers)),
            other_cpu_pct=100 * sum(cpu1[p] - cpu0[p] for p in variant.other_pids()) / wall,
            # CPU time per delivered message: less at the mercy of other load on the machine than msgs/s
            worker_us_per_msg=1e6 * sum(cpu1[p] - cpu0[p] for p in workers) / delivered if delivered else float("nan"),
            other_us_per_msg=1e6 * sum(cpu1[p] - cpu0[p] for p in variant.other_pids()) / delivered if delivered else float("nan"),
            redis_us_per_msg=1e6 * sum(redis_cpu) / delivered if delivered else float("nan"),
            # per primary (one entry on one Redis): how evenly a Cluster's shards share the work
            redis_us_per_msg_by_primary=[round(1e6 * c / delivered, 1) for c in redis_cpu] if delivered else [],
            client_us_per_msg=1e6 * sum(o["client_cpu"] for o in outs) / delivered if delivered else float("nan"),
            rss_end_kib=sum(rss_kib(p) for p in workers),
        )
    finally:
        stop_clients(conns, procs, 30)
        variant.stop()
    if not args.keep_state:
        shutil.rmtree(state, ignore_errors=True)
    return result


# --------------------------------------------------------------------------------------------
# report

COLS = [("variant", "{:<13}"), ("n", "{:>6}"), ("connected", "{:>6}"), ("pairs", "{:>5}"), ("msgs_per_s", "{:>8.0f}"),
        ("p50_ms", "{:>7.1f}"), ("p99_ms", "{:>7.1f}"), ("rss_per_socket_kib", "{:>7.1f}"),
        ("worker_cpu_pct", "{:>6.0f}"), ("other_cpu_pct", "{:>6.0f}"), ("client_cpu_pct", "{:>6.0f}"),
        ("worker_us_per_msg", "{:>7.0f}"), ("other_us_per_msg", "{:>7.0f}"), ("client_us_per_msg", "{:>7.0f}")]
HEAD = ["variant", "N", "open", "pairs", "msgs/s", "p50 ms", "p99 ms", "KiB/sk", "srv%", "ngx+r%", "cli%",
        "srv us", "ngx+r us", "cli us"]


def table(results):
    widths = [len(f.format(0 if "d" in f or "f" in f else "x")) for _, f in COLS]
    lines = [" ".join(h.rjust(w) if i else h.ljust(w) for i, (h, w) in enumerate(zip(HEAD, widths)))]
    for r in results:
        cells = []
        for key, fmt in COLS:
            v = r.get(key)
            cells.append(fmt.format(v) if v is not None else "-".rjust(len(fmt.format(0)) if "f" in fmt else 1))
        lines.append(" ".join(cells))
    return "\n".join(lines)


def medians(results):
    """One row per (mode, N, variant): the median of each figure over the rounds."""
    groups = collections.defaultdict(list)
    for r in results:
        if "msgs_per_s" in r:
            groups[(r["mode"], r["n"], r["variant"])].append(r)
    out = []
    for (mode, n, v), rs in groups.items():
        row = dict(rs[0])
        for key, _ in COLS:
            if isinstance(rs[0].get(key), float):
                row[key] = statistics.median(r[key] for r in rs)
        row["rounds"] = len(rs)
        out.append(row)
    return out


def ratios(results):
    out = []
    by = collections.defaultdict(dict)
    for r in results:
        if r.get("mode") == "load" and "msgs_per_s" in r:
            by[r["n"]][r["variant"]] = r
    for n, vs in sorted(by.items()):
        ours = vs.get("webchat")
        if not ours:
            continue
        for base in ("fsio-history", "fsio"):
            b = vs.get(base)
            if b:
                ok = ours["msgs_per_s"] >= 2.5 * b["msgs_per_s"] and ours["p99_ms"] <= b["p99_ms"]
                out.append(f"N={n}: webchat/{base} = {ours['msgs_per_s'] / b['msgs_per_s']:.2f}x msgs/s "
                           f"(target >= 2.5x), p99 {ours['p99_ms']:.0f} vs {b['p99_ms']:.0f} ms "
                           f"(target <=) -> {'MET' if ok else 'MISSED'}")
        for name in ("webchat-sentinel", "webchat-sentinel-async", "webchat-cluster", "webchat-cluster-async"):
            ha = vs.get(name)
            if ha:
                shards = ha.get("redis_us_per_msg_by_primary") or []
                out.append(f"N={n}: {name}/webchat = {ha['msgs_per_s'] / ours['msgs_per_s']:.2f}x msgs/s, "
                           f"p99 {ha['p99_ms']:.0f} vs {ours['p99_ms']:.0f} ms, Redis primary CPU "
                           f"{ha['redis_us_per_msg']:.0f} vs {ours['redis_us_per_msg']:.0f} us per delivered message"
                           + (f" (per primary: {', '.join(f'{x:.0f}' for x in shards)})" if len(shards) > 1 else ""))
        b = vs.get("inmem")
        if b:
            x = ours["msgs_per_s"] / b["msgs_per_s"]
            out.append(f"N={n}: webchat/inmem = {x:.2f}x msgs/s (target >= 0.5x) -> {'MET' if x >= 0.5 else 'MISSED'}")
    for r in results:
        if r.get("mode") == "max":
            out.append(f"max sockets, {r['variant']}: {r['connected']} of {r['n']} opened to one process "
                       f"(its fd limit {r.get('worker_nofile')}), {r['rss_per_socket_kib']:.1f} KiB RSS per socket"
                       + (" (target <= 40 KiB, >= 19,000 sockets)" if r["variant"] == "webchat" else ""))
    return "\n".join(out)


def add_load_args(ap, window, warmup, clients):
    """The closed loop's options, shared with bench/longpoll_bench.py (each its own defaults)."""
    ap.add_argument("--duration", type=float, default=10.0, help="measured seconds per run (default 10)")
    ap.add_argument("--warmup", type=float, default=warmup, help=f"seconds of load before measuring (default {warmup:g})")
    ap.add_argument("--window", type=int, default=window,
                    help=f"messages each client keeps in flight to its partner (default {window})")
    ap.add_argument("--size", type=int, default=64, help="bytes of message data (default 64)")
    ap.add_argument("--clients", type=int, default=clients, help=f"load-generator processes (default {clients})")
    ap.add_argument("--chat-env", action="append", default=["CHAT_RATE_LIMIT=100000", "CHAT_RATE_BURST=100000"],
                    metavar="KEY=VALUE", help="environment for webchat's services (default: the per-socket rate limit "
                    "raised out of the way, since the baselines have none)")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sockets", default="100,1000", help="comma-separated N for the load runs (default 100,1000); 0 skips them")
    ap.add_argument("--variants", default="webchat,fsio,fsio-history,inmem", help=f"from {','.join(chat_servers.VARIANTS)}")
    ap.add_argument("--rounds", type=int, default=1, help="repeat every load run this many times; ratios use medians")
    add_load_args(ap, window=1, warmup=3.0, clients=2)
    ap.add_argument("--connect-concurrency", type=int, default=200, help="handshakes in flight per client process")
    ap.add_argument("--worker-connections", type=int, default=0,
                    help="run webchat's chat processes with this gunicorn --worker-connections (default: as configured)")
    ap.add_argument("--max-sockets", action="store_true", help="also run the max-sockets mode (one process)")
    ap.add_argument("--max-only", action="store_true", help="run only the max-sockets mode")
    ap.add_argument("--max-n", type=int, default=0, help="sockets to try in max mode (default: fd limit - 1000)")
    ap.add_argument("--max-variants", default="webchat,inmem", help="variants for the max-sockets mode")
    ap.add_argument("--watch", type=int, default=10,
                    help="webchat: presence watch list of each socket, as a page sends for its contacts (default 10; "
                    "the baselines have no presence)")
    ap.add_argument("--settle-max", type=float, default=60,
                    help="after connecting, wait until no frame arrived for 1 s, at most this long (default 60)")
    ap.add_argument("--max-connect-time", type=float, default=150,
                    help="max mode: stop opening sockets after this many seconds and measure what is open (default 150)")
    ap.add_argument("--max-connect-concurrency", type=int, default=32, help="max mode: handshakes in flight per client process")
    ap.add_argument("--max-active", type=int, default=100, help="pairs that send during the max-sockets run (default 100)")
    ap.add_argument("--profile", metavar="DIR", help="py-spy record every chat worker during each measured window (raw stacks)")
    ap.add_argument("--profile-svg", action="store_true", help="with --profile: flame graphs too")
    ap.add_argument("--keep-state", action="store_true", help="keep each run's state directory (logs) under $TMPDIR")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args(argv)

    soft, hard = raise_nofile()
    print(f"# code under test: {code_version()}", flush=True)
    print(f"# {time.strftime('%Y-%m-%d %H:%M:%S %Z')}; {os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.2f}; "
          f"nofile {soft}/{hard}; webchat env {args.chat_env}, each socket watching {args.watch} users; window {args.window}, {args.size} B messages, {args.duration:.0f}+{args.warmup:.0f} s per run",
          flush=True)
    results = []
    ns = [] if args.max_only else [int(x) for x in args.sockets.split(",") if int(x) > 0]
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    for rnd in range(args.rounds):
        for n in ns:
            # rotate the order each round, so that no variant always runs first (or after the same one)
            for v in variants[rnd % len(variants):] + variants[:rnd % len(variants)]:
                t = time.monotonic()
                try:
                    r = measure(v, n, args)
                except Exception as exc:  # noqa: BLE001 - one failed variant does not hide the others
                    r = {"variant": v, "n": n, "mode": "load", "error": f"{type(exc).__name__}: {exc}"}
                r["run_s"] = time.monotonic() - t
                r["round"] = rnd + 1
                results.append(r)
                print(summary(r), flush=True)
    if args.max_sockets or args.max_only:
        n = args.max_n or (hard - 1000)
        for v in [v.strip() for v in args.max_variants.split(",") if v.strip()]:
            t = time.monotonic()
            try:
                r = measure(v, n, args, max_mode=True, active=args.max_active)
            except Exception as exc:  # noqa: BLE001
                r = {"variant": v, "n": n, "mode": "max", "error": f"{type(exc).__name__}: {exc}"}
            r["run_s"] = time.monotonic() - t
            results.append(r)
            print(summary(r), flush=True)
    print()
    print(table([r for r in results if "msgs_per_s" in r]))
    med = medians(results)
    if args.rounds > 1:
        print(f"\nmedians of {args.rounds} rounds:")
        print(table(med))
    print()
    print(ratios(med))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


def code_version():
    """Where the chat service is imported from, and its git commit (with "+changes" when the
    working tree differs), so that a figure can be tied to the code it measured."""
    import subprocess

    import chat_service

    where = Path(chat_service.__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "-C", str(where), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(where), "status", "--porcelain", "--", ".", "../../lib"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except OSError:
        head, dirty = "", ""
    return f"chat_service from {where} at {head or 'no git'}{' +uncommitted changes' if dirty else ''}"


def summary(r):
    if "error" in r:
        return f"{r['variant']:<13} N={r['n']:<6} {r['mode']}: FAILED {r['error']}"
    return (f"{r['variant']:<13} N={r['n']:<6} {r['mode']}: {r['connected']} open ({r['failed']} failed"
            f"{', ' + str(r['connect_errors']) if r['connect_errors'] else ''}) in {r['connect_s']:.1f}s, quiet after "
            f"{r['settle_s']:.1f}s more, on nodes "
            f"{sorted(r['nodes'].values())}, {r['pairs']} pairs ({r['reopened']} sockets reopened to balance, {r['same_node_pairs']} same-node, {r['active_pairs']} active); "
            f"{r['sent']} sent, {r['received']} received ({r['lost']} missing after the drain, {r['stalled_pairs']} pairs stalled); "
            f"{r['msgs_per_s']:.0f} msgs/s, p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms, max {r['max_ms']:.0f} ms; "
            f"RSS {r['rss_before_kib']}->{r['rss_after_kib']} KiB = {r['rss_per_socket_kib']:.1f} KiB/socket; "
            f"CPU workers {r['worker_cpu_pct']:.0f}% nginx+redis {r['other_cpu_pct']:.0f}% client {r['client_cpu_pct']:.0f}% "
            f"= {r['worker_us_per_msg']:.0f}/{r['other_us_per_msg']:.0f}/{r['client_us_per_msg']:.0f} us per message "
            f"(workers {100 * r['worker_sys_share']:.0f}% in the kernel; Redis alone {r['redis_us_per_msg']:.0f} us); "
            f"frames {r['kinds']}; Redis calls per message {r['redis_calls_per_msg']}" + (f"; samples {r['samples']}" if r["samples"] else "") + f" [{r['run_s']:.0f}s]")


if __name__ == "__main__":
    sys.exit(main())
