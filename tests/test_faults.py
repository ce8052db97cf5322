"""Faults under a steady stream of chat messages: nothing acknowledged is lost, nothing is
delivered twice, and messages flow again within a bound.

The rule: for each fault below, users who resume as docs/chat.md says (on any close,
reconnect with backoff to ``/chat/<user>?last_id=<id>&rooms=<room>:<id>,...``, its positions:
the highest id received of its private messages and of each room, and re-send every message
not yet acknowledged with the same ``cid``; an ``error`` ``unavailable`` means "not
stored, send again later") never lose an acknowledged message, never see a message twice,
never get a re-sent ``cid`` stored twice, stay logged in, and are sending and receiving again
within :data:`RECOVERY_BOUND` seconds of the fault.

One stack of its own (real Redis with its AOF as ``make run`` runs it, two chat replicas under
gunicorn, auth, files, nginx; ``localstack.Stack``). Per scenario, :data:`USERS` fresh users in
one named room each run a :class:`ResumingClient` thread that sends a private message to the
next user (every :data:`ROOM_EVERY`-th to the room) every :data:`SEND_INTERVAL` seconds, through
the gateway. After a warm-up, one fault:

a. kill -9 of one chat gunicorn worker (its master starts another);
b. kill -9 of a whole chat replica (master and worker), then start it again;
c. SIGTERM of each chat replica in turn, each started again before the next;
d. Redis stopped gracefully (SIGTERM) and started again;
e. kill -9 of Redis, started again;
f. ``nginx -s reload``;
g. kill -9 of the Redis primary of a stack on Redis with failover (``REDIS_TOPOLOGY=sentinel``:
   the Sentinels promote a replica; chat acknowledges only what a replica holds), on a stack of
   its own (the ``ha_stack`` fixture);
h. kill -9 of the Redis Cluster primary that holds the scenario room's stream, on a stack on a
   Redis Cluster (``REDIS_TOPOLOGY=cluster``: the other nodes promote its replica; chat
   acknowledges only what a replica of the shard that took the write holds), started again
   once its replica is promoted, on a stack of its own (the ``cluster_stack`` fixture).

Then sending goes on until every client has been sending and receiving since the fault,
stops, every client waits for its acks, every receiver for its messages, and the figures are
counted from what the clients saw and what Redis stored. Each scenario prints one line (in
the terminal summary, whatever ``-s``): sent, acknowledged, delivered, lost, duplicated,
seconds to recover.

Every wait has a timeout, and the stack is stopped at the end whatever happened.
"""
import json
import os
import random
import signal
import subprocess
import threading
import time
import uuid
from collections import defaultdict

import pytest
import websocket
from websocket import ABNF

from support.chat import Person
from webchat_common import keys
from webchat_common.redis_store import open_client
from webchat_testing import wait_until

pytestmark = pytest.mark.timeout(180)

#: Users per scenario, and how often each sends (6 users at 0.05 s: 120 messages a second in
#: all, so that some are in flight at the moment of each fault).
USERS = 6
SEND_INTERVAL = 0.05
#: Every ROOM_EVERY-th message goes to the scenario's room (delivered to all USERS members).
ROOM_EVERY = 4
#: Seconds of traffic before the fault, and after everyone flows again.
WARMUP = 2.0
AFTER = 2.0
#: Client reconnect backoff: base * 2**attempt, capped, times a random factor in [0.5, 1].
BACKOFF_BASE, BACKOFF_CAP = 0.1, 1.0
#: On a drop, the message acknowledged within this many seconds before it is sent again as if
#: its ack had been lost (ResumingClient._drop).
ACK_LOST_WITHIN = 2.0
#: Re-send delay after an ``unavailable`` error frame, seconds.
RETRY_UNAVAILABLE = 0.3
#: Seconds from a fault until every client is sending and receiving again. The slowest
#: step any scenario needs is a chat worker booting (scenario a: the master's listener keeps
#: taking its share of new connections while the new worker imports the app: 1-3 s on the
#: shared 2 cores) or Redis starting and the chat pub/sub reconnecting (d, e: well under 1 s
#: plus the 1 s health interval used here), then a client's backoff (at most 1 s) and its
#: first round trip. 10 s leaves room for a loaded machine; a fault that breaks resuming
#: (a client never coming back) is far above it.
RECOVERY_BOUND = 10.0


def parse_id(text):
    ms, seq = text.split("-")
    return int(ms), int(seq)


class Closed(Exception):
    pass


class Outgoing:
    """A message the client made: its frame, and whether it waits to be (re)sent."""

    __slots__ = ("cid", "frame", "due", "sends")

    def __init__(self, cid, frame, due):
        self.cid = cid
        self.frame = frame
        self.due = due      # monotonic time to (re)send at; None while sent and not answered
        self.sends = 0


class ResumingClient:
    """One user's chat client in a thread of its own, resuming as the docs say.

    It keeps its positions, the highest message id it received per clock (its private
    messages' and each room's, as a ``sync`` named them or a message moved them), and the
    messages not yet acknowledged (``pending``, by ``cid``). On any close or failed handshake
    it reconnects with backoff to ``?last_id=...&rooms=...``; once connected it re-sends every
    pending message with its
    ``cid``. An ``unavailable`` error re-sends that message after :data:`RETRY_UNAVAILABLE`.
    Everything it saw is kept, with monotonic timestamps, for the scenario's figures."""

    def __init__(self, person, peers, room, tag):
        self.person = person
        self.name = person.name
        self.peers = peers
        self.room = room
        self.tag = tag
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.sending = False
        self.ws = None
        self.node = None
        self.synced = False
        self.positions = {}                    # clock ("" private, else the room) -> highest id seen
        self.n = 0
        self.next_send = 0.0
        self.attempt = 0
        self.pending = {}                      # cid -> Outgoing
        self.made = {}                         # cid -> (receiver or None, room or None)
        self.frames = {}                       # cid -> the frame sent
        self.ack_lost = 0                      # acks counted as lost in a drop (see _drop)
        self.acks = defaultdict(list)          # cid -> [(id, duplicate, t)]
        self.seen = set()                      # (clock, id) received: a room's, or "" for private
        self.got = set()                       # (sender, cid) received: one message, whoever's copy
        self.received = []                     # (id, sender, cid, t, room or None)
        self.seen_twice = []                   # ids received again
        self.out_of_order = []                 # (id, its clock's position before it)
        self.disruptions = []                  # (t, what)
        self.refusals = []                     # handshake HTTP statuses
        self.errors = []                       # error frames other than unavailable
        self.resent = 0
        self.unavailable = 0
        self.connects = 0
        self.thread = threading.Thread(target=self._run, name=f"client-{self.name}", daemon=True)

    # ---- the thread ---------------------------------------------------------------------

    def start(self):
        self.thread.start()

    def stop(self, timeout=10):
        self.stopping.set()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), f"{self.name}'s client thread did not stop"

    def _run(self):
        while not self.stopping.is_set():
            if self.ws is None and not self._connect():
                self.stopping.wait(self._backoff())
                continue
            try:
                self._turn()
            except (Closed, websocket.WebSocketException, OSError) as exc:
                self._drop(f"closed: {exc}")
            except Exception as exc:  # noqa: BLE001 - a bug in this client: shown, not hidden
                with self.lock:
                    self.errors.append(f"client crashed: {exc!r}")
                raise
        if self.ws is not None:
            try:
                self.ws.close(timeout=1)
            except Exception:  # noqa: BLE001 - closing a socket that may be dead
                pass

    def _backoff(self):
        delay = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** self.attempt) * random.uniform(0.5, 1.0)
        self.attempt += 1
        return delay

    def _disrupted(self, what):
        with self.lock:
            self.disruptions.append((time.monotonic(), what))

    def _drop(self, what):
        """The socket is gone: everything unacknowledged is re-sent once connected again.
        So is the message acknowledged last, if that was less than :data:`ACK_LOST_WITHIN`
        seconds ago, as if its ack had been lost with the connection (it can be: the ack was
        written but never reached the client), so that every disrupted client exercises the
        server's ``cid`` de-duplication: the re-send must be acknowledged with the first
        message's id and stored nowhere again."""
        self._disrupted(what)
        try:
            self.ws.close(timeout=0.2)
        except Exception:  # noqa: BLE001
            pass
        self.ws = None
        self.synced = False
        now = time.monotonic()
        with self.lock:
            for out in self.pending.values():
                if out.due is None:
                    out.due = 0.0
            recent = [(acks[-1][2], cid) for cid, acks in self.acks.items()
                      if cid not in self.pending and acks[-1][2] > now - ACK_LOST_WITHIN]
            if recent:
                cid = max(recent)[1]
                again = self.pending[cid] = Outgoing(cid, self.frames[cid], 0.0)
                again.sends = 1  # its next send is a re-send
                self.ack_lost += 1

    def _connect(self):
        with self.lock:
            at = {clock: "%d-%d" % mid for clock, mid in self.positions.items()}
        try:
            ws = self.person.open(last_id=at.pop("", None), rooms=at, timeout=3)
        except websocket.WebSocketBadStatusException as exc:
            with self.lock:
                self.refusals.append(exc.status_code)
            self._disrupted(f"handshake refused {exc.status_code}")
            return False
        except (websocket.WebSocketException, OSError) as exc:
            self._disrupted(f"connect failed: {exc!r}")
            return False
        self.ws = ws
        try:
            hello = self._recv(3.0)
            if not hello or hello.get("type") != "hello":
                raise Closed(f"first frame {hello!r}")
        except (Closed, websocket.WebSocketException, OSError) as exc:
            self._drop(f"no hello: {exc}")
            return False
        self.node = hello["node"]
        self.connects += 1
        self.attempt = 0
        with self.lock:
            for out in self.pending.values():
                out.due = 0.0
        return True

    def _recv(self, timeout):
        """The next text frame as a dict, None after ``timeout``; Closed when the socket is."""
        self.ws.settimeout(max(0.001, timeout))
        try:
            op, frame = self.ws.recv_data_frame(control_frame=True)
        except websocket.WebSocketTimeoutException:
            return None
        except websocket.WebSocketConnectionClosedException as exc:
            raise Closed(str(exc)) from None
        if op == ABNF.OPCODE_TEXT:
            return json.loads(frame.data)
        if op == ABNF.OPCODE_CLOSE:
            data = frame.data
            code = int.from_bytes(data[:2], "big") if len(data) >= 2 else 1005
            raise Closed(f"{code} {data[2:].decode('utf-8', 'replace')}")
        return None  # ping (answered by websocket-client), pong

    def _turn(self):
        now = time.monotonic()
        if self.sending and now >= self.next_send:
            self._make(now)
            self.next_send = max(self.next_send + SEND_INTERVAL, now)
        with self.lock:
            due = [o for o in self.pending.values() if o.due is not None and o.due <= now]
        for out in due:
            out.due = None
            out.sends += 1
            if out.sends > 1:
                self.resent += 1
            self.ws.send(json.dumps(out.frame))
        wait = 0.05
        if self.sending:
            wait = min(wait, self.next_send - now)
        frame = self._recv(wait)
        if frame is not None:
            self._handle(frame)

    def _make(self, now):
        self.n += 1
        cid = f"{self.tag}-{self.name}-{self.n}"
        if self.n % ROOM_EVERY == 0:
            frame = {"type": "message", "room": self.room, "data": f"room {self.n}", "cid": cid}
            target = (None, self.room)
        else:
            receiver = self.peers[self.n % len(self.peers)]
            frame = {"type": "message", "receiver": receiver, "data": f"to {receiver} {self.n}", "cid": cid}
            target = (receiver, None)
        with self.lock:
            self.made[cid] = target
            self.frames[cid] = frame
            self.pending[cid] = Outgoing(cid, frame, now)

    def _handle(self, f):
        kind = f.get("type")
        now = time.monotonic()
        with self.lock:
            if kind == "message":
                mid = parse_id(f["id"])
                clock = f.get("room", "")
                at = self.positions.get(clock)
                if (clock, f["id"]) in self.seen:
                    self.seen_twice.append(f["id"])
                else:
                    self.seen.add((clock, f["id"]))
                    self.got.add((f["sender"], f.get("cid")))
                    if at and mid < at:
                        self.out_of_order.append((f["id"], at))
                    self.received.append((f["id"], f["sender"], f.get("cid"), now, f.get("room")))
                if not at or mid > at:
                    self.positions[clock] = mid
            elif kind == "ack":
                cid = f.get("cid")
                self.acks[cid].append((f["id"], bool(f.get("duplicate")), now))
                self.pending.pop(cid, None)
            elif kind == "error":
                out = self.pending.get(f.get("cid"))
                if f.get("code") == "unavailable" and out is not None:
                    self.unavailable += 1
                    self.disruptions.append((now, "unavailable"))
                    out.due = now + RETRY_UNAVAILABLE
                else:
                    self.errors.append(f)
            elif kind == "sync":
                self.synced = True
                named = {"": f["last_id"], **f["rooms"]}
                for clock, mid in named.items():
                    mid = parse_id(mid) if mid else None
                    if mid and (clock not in self.positions or mid > self.positions[clock]):
                        self.positions[clock] = mid

    # ---- read by the scenario (under the lock) --------------------------------------------

    def flowing_since(self, t0, until=float("inf")):
        """When this client was sending and receiving again after a fault at ``t0``: the later
        of its first ack and its first received message after its last disruption in
        ``[t0, until)`` (``t0`` itself when none; ``until``: the next fault); None while it is
        not yet."""
        with self.lock:
            after = max([t for t, _ in self.disruptions if t0 <= t < until], default=t0)
            ack = min((t for acks in self.acks.values() for _, _, t in acks if t > after), default=None)
            got = min((t for _, _, _, t, _ in self.received if t > after), default=None)
        if ack is None or got is None or self.ws is None:
            return None
        return max(ack, got)


# ---- the stack and the faults --------------------------------------------------------------

def worker_pids(master_pid):
    """The pids of a gunicorn master's workers (its children)."""
    out = subprocess.run(["pgrep", "-P", str(master_pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def chat_masters(stack):
    return [p for p in stack.services["chat"].procs if p.poll() is None]


def master_of(stack, worker_pid):
    return next((m for m in chat_masters(stack) if worker_pid in worker_pids(m.pid)), None)


def busiest_worker(stack, clients):
    """The chat worker pid that holds most clients' sockets, and its master."""
    count = defaultdict(int)
    for c in clients:
        if c.node:
            count[int(c.node.split("-")[-2])] += 1
    for pid, _ in sorted(count.items(), key=lambda kv: -kv[1]):
        master = master_of(stack, pid)
        if master is not None:
            return pid, master
    raise AssertionError(f"no client sits on a live chat worker: {dict(count)}")


def wait_serving(stack, master, probe, timeout=40):
    """Until a socket opened through the gateway lands on a worker of ``master``."""
    def lands():
        s = probe.connect(sync=False)
        try:
            return s.pid in worker_pids(master.pid)
        finally:
            s.close()
    wait_until(lands, timeout=timeout, interval=0.05, what=f"chat master {master.pid} serving")


def restart_replica(stack, old, probe):
    """Start the replica whose master was ``old`` again (same slot, name and metrics directory)
    and wait until it serves sockets."""
    svc = stack.services["chat"]
    slot = svc.procs.index(old)
    new = stack.start_service(svc, slot)
    svc.procs.remove(new)
    svc.procs[slot] = new
    wait_serving(stack, new, probe)
    return new


def fault_kill_worker(stack, clients, probe):
    pid, master = busiest_worker(stack, clients)
    t = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: [w for w in worker_pids(master.pid) if w != pid], timeout=30, what="a new worker")
    wait_serving(stack, master, probe)
    return [t]


def fault_kill_replica(stack, clients, probe):
    _, master = busiest_worker(stack, clients)
    t = time.monotonic()
    os.killpg(master.pid, signal.SIGKILL)  # the master and its worker: one process group
    master.wait(10)
    time.sleep(1.0)
    restart_replica(stack, master, probe)
    return [t]


def fault_sigterm_each(stack, clients, probe):
    times = []
    for master in list(chat_masters(stack)):
        times.append(time.monotonic())
        master.send_signal(signal.SIGTERM)
        master.wait(40)  # drain 1 s, then gunicorn's graceful stop
        restart_replica(stack, master, probe)
    return times


def redis_down_for_a_second(how):
    """A fault that stops Redis ``how`` (``"stop"``: SIGTERM, ``"kill"``: kill -9) and starts
    it again a second later, on the same port and data."""
    def fault(stack, clients, probe):
        t = time.monotonic()
        getattr(stack.redis, how)()
        time.sleep(1.0)
        stack.redis.start()
        return [t]
    return fault


def fault_nginx_reload(stack, clients, probe):
    conf = stack.state_dir / "nginx" / "nginx.conf"
    t = time.monotonic()
    subprocess.run(stack.nginx_args(conf, "-s", "reload"), check=True, capture_output=True, timeout=10)
    return [t]


def fault_redis_failover(stack, clients, probe):
    """kill -9 of the primary, until a replica is promoted (the clients have been trying all
    along).  With Sentinel: the one primary; the test starts it again afterwards (two replicas:
    the new primary still has one).  On a Cluster: the primary of the scenario room's stream,
    which every client writes to (the scenario's sessions and private copies are spread over
    the shards by their slots); once its replica is promoted, the killed node is started again and
    rejoins as the new primary's replica, as a supervisor would restart it: with one replica
    per primary, the shard has none until then, and chat acknowledges none of its writes
    (CHAT_ACK_REPLICAS=1)."""
    t = time.monotonic()
    if stack.redis_topology == "cluster":
        stack.redis.wait_failover(stack.redis.kill_primary(keys.chat_room(clients[0].room)))
        stack.redis.heal()
    else:
        stack.redis.wait_failover(stack.redis.kill_primary())
    return [t]


SCENARIOS = {
    "a": ("kill -9 of a chat worker", fault_kill_worker),
    "b": ("kill -9 of a chat replica, started again", fault_kill_replica),
    "c": ("SIGTERM of each chat replica in turn", fault_sigterm_each),
    "d": ("Redis restart (SIGTERM, start)", redis_down_for_a_second("stop")),
    "e": ("kill -9 of Redis, started again", redis_down_for_a_second("kill")),
    "f": ("nginx -s reload", fault_nginx_reload),
}
#: Each on a stack with Redis failover of its own (the fixture named): the primary killed.
FAILOVERS = {
    "g": ("kill -9 of the Redis primary, Sentinel failover", "ha_stack"),
    "h": ("kill -9 of a Redis Cluster primary (the room's), Cluster failover, started again", "cluster_stack"),
}


# ---- one scenario ----------------------------------------------------------------------------

def stored_messages(stack, names, room):
    """Every message Redis holds in the scenario's conversations and room: (whose: the owner of
    a private copy, or "#<room>", id, sender, cid)."""
    r = open_client(stack.redis.url, decode_responses=True)
    try:
        out = []
        streams = [(a, keys.chat_pm(a, b)) for a in names for b in names if a != b] + [("#" + room, keys.chat_room(room))]
        for whose, stream in streams:
            for mid, fields in r.xrange(stream):
                f = json.loads(fields["f"])
                out.append((whose, mid, f["sender"], f.get("cid")))
        return out
    finally:
        r.close()


def figures(clients, stored, fault_times):
    by_name = {c.name: c for c in clients}
    everyone = list(by_name)
    sent = sum(len(c.made) for c in clients)
    acked, lost = {}, []
    for c in clients:
        for cid, acks in c.acks.items():
            acked[(c.name, cid)] = acks[0][0]
    delivered = 0
    for (sender, cid), mid in acked.items():
        receiver, room = by_name[sender].made[cid]
        to = everyone if room else [receiver]
        missing = [n for n in to if (sender, cid) not in by_name[n].got]
        if missing:
            lost.append((sender, cid, mid, missing))
        else:
            delivered += 1
    # (whose copy: a person's, or "#<room>"; sender, cid) -> every id it was given there: a
    # private message has one id in each person's copy, a room message one for everyone
    ids_of = defaultdict(set)
    for c in clients:
        for cid, acks in c.acks.items():
            _, room = c.made[cid]
            ids_of[("#" + room if room else c.name, c.name, cid)].update(a[0] for a in acks)
        for mid, sender, cid, _, room in c.received:
            ids_of[("#" + room if room else c.name, sender, cid)].add(mid)
    for whose, mid, sender, cid in stored:
        ids_of[(whose, sender, cid)].add(mid)
    stored_twice = {k: sorted(v) for k, v in ids_of.items() if len(v) > 1}
    seen_twice = {c.name: c.seen_twice for c in clients if c.seen_twice}
    recover = []
    for t0, until in zip(fault_times, fault_times[1:] + [float("inf")]):
        flows = [c.flowing_since(t0, until) for c in clients]
        recover.append(None if None in flows else max(flows) - t0)
    return {
        "sent": sent,
        "acknowledged": len(acked),
        "delivered": delivered,
        "lost": lost,
        "seen_twice": seen_twice,
        "stored_twice": stored_twice,
        "duplicated": sum(len(v) for v in seen_twice.values()) + sum(len(v) - 1 for v in stored_twice.values()),
        "recover": recover,
        "unacknowledged": {c.name: sorted(c.pending) for c in clients if c.pending},
        "out_of_order": {c.name: c.out_of_order for c in clients if c.out_of_order},
        "errors": {c.name: c.errors for c in clients if c.errors},
        # 401/403: no valid session (the others, 502/503, are a replica or Redis being away).
        "refusals": {c.name: [r for r in c.refusals if r in (401, 403)] for c in clients
                     if any(r in (401, 403) for r in c.refusals)},
        "handshake_5xx": sum(1 for c in clients for r in c.refusals if r >= 500),
        "disrupted": sum(1 for c in clients if any(t >= fault_times[0] for t, _ in c.disruptions)),
        "closes": sum(1 for c in clients for t, what in c.disruptions
                      if t >= fault_times[0] and what.startswith("closed")),
        "ack_lost": sum(c.ack_lost for c in clients),
        "resent": sum(c.resent for c in clients),
        "unavailable": sum(c.unavailable for c in clients),
        "duplicate_acks": sum(1 for c in clients for acks in c.acks.values() for a in acks if a[1]),
    }


def line(letter, title, fig):
    rec = fig["recover"]
    worst = "never" if None in rec else f"{max(rec):.1f} s"
    steps = "" if len(rec) == 1 else " (" + ", ".join("never" if r is None else f"{r:.1f}" for r in rec) + ")"
    return (f"{letter}. {title}: sent {fig['sent']}, acknowledged {fig['acknowledged']}, "
            f"delivered {fig['delivered']}, lost {len(fig['lost'])}, duplicated {fig['duplicated']}, "
            f"recovered in {worst}{steps} [clients disrupted {fig['disrupted']}/{USERS}, sockets closed "
            f"{fig['closes']}, handshakes 5xx {fig['handshake_5xx']}, unavailable {fig['unavailable']}, "
            f"re-sent {fig['resent']} (of them acknowledged before {fig['ack_lost']}; answered duplicate "
            f"{fig['duplicate_acks']})]")


@pytest.mark.parametrize("letter", sorted(SCENARIOS))
def test_fault(fault_stack, letter, report):
    run_scenario(fault_stack, letter, *SCENARIOS[letter], report)


@pytest.mark.parametrize("letter", sorted(FAILOVERS))
def test_fault_redis_failover(letter, request, report):
    title, fixture = FAILOVERS[letter]
    stack = request.getfixturevalue(fixture)
    try:
        run_scenario(stack, letter, title, fault_redis_failover, report)
    finally:
        stack.redis.heal()


def run_scenario(stack, letter, title, fault, report):
    tag = letter + uuid.uuid4().hex[:4]
    persons = [Person(stack, f"f{tag}u{i}") for i in range(USERS)]
    probe = Person(stack, f"f{tag}probe")
    room = f"faults-{tag}"
    for p in persons:
        s = p.connect()
        s.send(type="join", room=room, cid="join")
        s.expect("room", room=room, action="join")
        s.close()
    names = [p.name for p in persons]
    clients = [ResumingClient(p, [n for n in names if n != p.name], room, tag) for p in persons]
    for c in clients:
        c.start()
    try:
        wait_until(lambda: all(c.synced for c in clients), timeout=30, what="every client connected")
        start = time.monotonic()
        for i, c in enumerate(clients):
            c.next_send = start + i * SEND_INTERVAL / USERS
            c.sending = True
        time.sleep(WARMUP)
        fault_times = fault(stack, clients, probe)
        # Messages flow again for everyone (judged below; here only waited for, bounded).
        try:
            wait_until(lambda: all(c.flowing_since(fault_times[-1]) for c in clients),
                       timeout=RECOVERY_BOUND * 3, interval=0.1, what="messages flowing again")
        except TimeoutError:
            pass
        time.sleep(AFTER)
        for c in clients:
            c.sending = False
        # Every client gets its acks, every receiver its messages (bounded; judged below).
        for cond, what in ((lambda: not any(c.pending for c in clients), "every message acknowledged"),
                           (lambda: all_delivered(clients), "every acknowledged message delivered")):
            try:
                wait_until(cond, timeout=20, interval=0.1, what=what)
            except TimeoutError:
                pass
    finally:
        for c in clients:
            c.stop()
    fig = figures(clients, stored_messages(stack, names, room), fault_times)
    report(line(letter, title, fig))

    assert fig["disrupted"] or letter == "f", "the fault disturbed no client: it tested nothing"
    assert not fig["lost"], f"acknowledged but never delivered (sender, cid, id, missing at): {fig['lost'][:10]}"
    assert not fig["seen_twice"], f"a resuming client saw a message twice: {fig['seen_twice']}"
    assert not fig["stored_twice"], f"a re-sent cid was stored twice ((sender, cid): ids): {fig['stored_twice']}"
    assert not fig["out_of_order"], f"ids went back for a client: {fig['out_of_order']}"
    # Sessions survive every fault, Redis restarts included (AOF): no handshake was refused for
    # want of a session, and everyone is still logged in.
    assert not fig["refusals"], f"handshakes refused for want of a session: {fig['refusals']}"
    for p in persons:
        me = p.browser.get("/api/me")
        assert me.status_code == 200 and me.json()["user"] == p.name, f"{p.name} was logged out: {me.status_code}"
    assert not fig["unacknowledged"], f"never acknowledged although re-sent on every reconnect: {fig['unacknowledged']}"
    assert not fig["errors"], f"error frames other than unavailable: {fig['errors']}"
    assert None not in fig["recover"], f"messages never flowed again for some client: {fig['recover']}"
    assert max(fig["recover"]) <= RECOVERY_BOUND, f"recovery took {fig['recover']} s (bound {RECOVERY_BOUND} s)"


def all_delivered(clients):
    by_name = {c.name: c for c in clients}
    for c in clients:
        with c.lock:
            acked = list(c.acks)
        for cid in acked:
            receiver, room = c.made[cid]
            for n in (by_name if room else [receiver]):
                if (c.name, cid) not in by_name[n].got:
                    return False
    return True
