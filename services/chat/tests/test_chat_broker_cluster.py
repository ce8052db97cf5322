"""The broker on a real Redis Cluster (``ClusterSet``: three primaries, a replica each): a
connection per primary, each sharded channel subscribed on the primary of its slot (one
SSUBSCRIBE per slot), the classic channel on one connection only; a primary killed (-9) or a
slot moved to another primary costs one ``on_lost`` / ``on_back``, and the channels are heard
again on their new owner while the other shards' channels are heard throughout; an
unsubscribe reaches the shard that holds the channel.

The broker runs in a child process under gevent (as in test_chat_channels.py), driven by
JSON lines on its stdin; it prints each message it hears, ``lost`` and ``back``, and the
answer to each command (which channels it hears, which shard holds which)."""
import json
import subprocess
import sys
import tempfile
import textwrap
import threading
import time

import redis
from redis.crc import key_slot

from webchat_common import keys
from webchat_testing import wait_until

CLASSIC = "sessions:ended"

_CHILD = textwrap.dedent('''
    from gevent import monkey
    monkey.patch_all()
    import json, logging, sys
    import gevent
    from gevent.fileobject import FileObjectPosix
    from chat_service.broker import Broker

    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    CLASSIC = b"sessions:ended"
    wanted = {CLASSIC}

    def emit(**event):
        sys.stdout.write(json.dumps(event) + "\\n")
        sys.stdout.flush()

    broker = Broker({"REDIS_URL": sys.argv[1], "REDIS_SOCKET_TIMEOUT": 2.0, "CHAT_PUBSUB_HEALTH_INTERVAL": 0.5},
                    lambda: set(wanted), lambda ch: ch in wanted,
                    lambda ch, data: emit(ev="message", ch=ch.decode(), data=data.decode()),
                    lambda: emit(ev="lost"), lambda: emit(ev="back"), classic={CLASSIC})

    def run(cmd):
        try:
            chans = [c.encode() for c in cmd["chans"]]
            if cmd["cmd"] == "subscribe":
                wanted.update(chans)
                broker.subscribe(chans, wait=True, timeout=10)
            elif cmd["cmd"] == "unsubscribe":
                wanted.difference_update(chans)
                broker.unsubscribe(chans)
            emit(ev="done", id=cmd["id"], ok=True,
                 hears={c.decode(): broker.hears(c) for c in sorted(wanted)},
                 shards={name: sorted(c.decode() for c in s.chans) for name, s in broker.shards.items()})
        except Exception as exc:
            emit(ev="done", id=cmd["id"], ok=False, error=f"{exc.__class__.__name__}: {exc}")

    for line in FileObjectPosix(sys.stdin.fileno(), "rb"):
        gevent.spawn(run, json.loads(line))
''')


class BrokerProcess:
    """The child above: :meth:`call` sends a command and returns its answer; :meth:`wait`
    waits (with a timeout) until the events printed so far satisfy a condition."""

    def __init__(self, url):
        self.stderr = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen([sys.executable, "-c", _CHILD, url], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.stderr, text=True, bufsize=1)
        self.events = []
        self.cond = threading.Condition()
        self.calls = 0
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            with self.cond:
                self.events.append(json.loads(line))
                self.cond.notify_all()

    def wait(self, check, what, timeout=20.0):
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                value = check(self.events)
                if value:
                    return value
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    raise AssertionError(f"timed out waiting for {what}; last events: {self.events[-20:]}\n"
                                         f"broker's log: {self.log()[-3000:]}")
                self.cond.wait(min(left, 0.5))

    def call(self, cmd, chans=(), timeout=20.0):
        self.calls += 1
        n = self.calls
        self.proc.stdin.write(json.dumps({"cmd": cmd, "chans": list(chans), "id": n}) + "\n")
        self.proc.stdin.flush()
        reply = self.wait(lambda evs: next((e for e in evs if e["ev"] == "done" and e["id"] == n), None),
                          f"the answer to {cmd} {list(chans)}", timeout)
        assert reply["ok"], reply
        return reply

    def state(self):
        return self.call("state")

    def heard(self, since=0):
        """(channel, data) of every message heard, from event ``since`` on."""
        with self.cond:
            return [(e["ch"], e["data"]) for e in self.events[since:] if e["ev"] == "message"]

    def wait_heard(self, pairs, since=0, timeout=20.0):
        pairs = set(pairs)
        self.wait(lambda evs: pairs <= set(self.heard(since)), f"messages {sorted(pairs)}", timeout)

    def lost_back(self):
        with self.cond:
            return [e["ev"] for e in self.events if e["ev"] in ("lost", "back")]

    def mark(self):
        with self.cond:
            return len(self.events)

    def log(self):
        self.stderr.seek(0)
        return self.stderr.read()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        try:
            self.proc.stdin.close()
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.stderr.close()


def _node(port):
    return redis.Redis(port=port, socket_timeout=2, decode_responses=True)


def _name(server):
    return f"127.0.0.1:{server.port}"


def channels_by_primary(cluster, per_primary):
    """``per_primary`` user channels in distinct slots for each primary: {server: [channel]}."""
    by = {p: [] for p in cluster.primaries()}
    assert len(by) == 3
    i = 0
    while any(len(chans) < per_primary for chans in by.values()):
        ch = keys.chat_user_channel(f"user{i}")
        owner = cluster.primary_of(ch)
        if len(by[owner]) < per_primary and key_slot(ch.encode()) not in {key_slot(c.encode()) for c in by[owner]}:
            by[owner].append(ch)
        i += 1
    return by


def shard_subscribers(server, ch):
    with _node(server.port) as r:
        return dict(r.pubsub_shardnumsub(ch))[ch]


def classic_subscribers(cluster):
    """Subscribers of the classic channel over every running node (each counts its own)."""
    total = 0
    for server in cluster.servers:
        if server.pid is not None:
            with _node(server.port) as r:
                total += dict(r.pubsub_numsub(CLASSIC))[CLASSIC]
    return total


def subscribe_all(b, by):
    chans = [ch for group in by.values() for ch in group]
    reply = b.call("subscribe", chans + [CLASSIC])
    assert all(reply["hears"][ch] for ch in chans + [CLASSIC]), reply
    for server, group in by.items():
        assert set(group) <= set(reply["shards"][_name(server)]), (server.port, reply["shards"])
    return reply


def home_of_classic(reply):
    homes = [name for name, chans in reply["shards"].items() if CLASSIC in chans]
    assert len(homes) == 1, reply["shards"]
    return homes[0]


def test_channels_of_every_primary_are_confirmed_and_heard_and_the_classic_one_once(cluster):
    by = channels_by_primary(cluster, 3)  # three slots per primary: one SSUBSCRIBE per slot
    with BrokerProcess(cluster.url) as b:
        reply = subscribe_all(b, by)
        assert len(reply["shards"]) == 3, "a connection per primary"
        home_of_classic(reply)
        for owner, group in by.items():
            for ch in group:
                assert {s.port: shard_subscribers(s, ch) for s in by} == {s.port: int(s is owner) for s in by}, ch
        assert classic_subscribers(cluster) == 1, "the classic channel is subscribed on one connection only"

        pub = cluster.client()
        for group in by.values():
            for ch in group:
                pub.spublish(ch, f"to {ch}")
        b.wait_heard((ch, f"to {ch}") for group in by.values() for ch in group)
        mark = b.mark()
        with _node(next(iter(by)).port) as r:  # a PUBLISH reaches every node of a Cluster
            r.publish(CLASSIC, "ended 1")
            r.publish(CLASSIC, "ended 2")
        b.wait_heard([(CLASSIC, "ended 2")], since=mark)
        assert [m for m in b.heard(mark) if m[0] == CLASSIC] == [(CLASSIC, "ended 1"), (CLASSIC, "ended 2")]
        assert b.lost_back() == []
        pub.close()


def test_a_primary_killed_costs_one_lost_and_back_and_its_channels_come_back_on_the_promoted_replica(cluster):
    by = channels_by_primary(cluster, 1)
    with BrokerProcess(cluster.url) as b:
        home = home_of_classic(subscribe_all(b, by))
        # Kill the primary whose connection also carries the classic channel.
        victim = next(s for s in by if _name(s) == home)
        (victim_ch,) = by[victim]
        others = [ch for s, group in by.items() if s is not victim for ch in group]
        pub = cluster.client()
        old = cluster.kill_primary(victim_ch)
        assert old is victim
        b.wait(lambda evs: any(e["ev"] == "lost" for e in evs), "on_lost")

        # Meanwhile the other shards' channels are heard, and the classic channel on another one.
        mark = b.mark()
        for ch in others:
            pub.spublish(ch, "during")
        live = next(s for s in by if s is not victim)
        with _node(live.port) as r:
            r.publish(CLASSIC, "ended during")
        b.wait_heard([(ch, "during") for ch in others] + [(CLASSIC, "ended during")], since=mark)

        new = cluster.wait_failover(old)
        b.wait(lambda evs: any(e["ev"] == "back" for e in evs), "on_back", timeout=30)
        assert b.lost_back() == ["lost", "back"]
        reply = b.state()
        assert all(reply["hears"].values()), reply
        assert victim_ch in reply["shards"][_name(new)], reply["shards"]
        assert _name(old) not in reply["shards"], "the dead primary's connection is closed"
        assert home_of_classic(reply) != _name(old)
        assert shard_subscribers(new, victim_ch) == 1

        mark = b.mark()
        pub.spublish(victim_ch, "after the failover")
        for ch in others:
            pub.spublish(ch, "after")
        b.wait_heard([(victim_ch, "after the failover")] + [(ch, "after") for ch in others], since=mark)
        pub.close()


def test_a_slot_moved_to_another_primary_is_resubscribed_there(cluster):
    by = channels_by_primary(cluster, 2)
    with BrokerProcess(cluster.url) as b:
        subscribe_all(b, by)
        source, target = list(by)[:2]
        moving, staying = by[source]
        assert cluster.move_slot(key_slot(moving.encode()), target) is source
        b.wait(lambda evs: [e["ev"] for e in evs if e["ev"] in ("lost", "back")] == ["lost", "back"],
               "on_lost then on_back")
        reply = b.state()
        assert all(reply["hears"].values()), reply
        assert moving in reply["shards"][_name(target)] and moving not in reply["shards"][_name(source)]
        assert staying in reply["shards"][_name(source)], "the other slots of the source stay there"
        assert (shard_subscribers(source, moving), shard_subscribers(target, moving)) == (0, 1)
        assert shard_subscribers(source, staying) == 1

        pub = cluster.client()
        mark = b.mark()
        for group in by.values():
            for ch in group:
                pub.spublish(ch, "after the move")
        b.wait_heard([(ch, "after the move") for group in by.values() for ch in group], since=mark)
        assert b.lost_back() == ["lost", "back"]
        pub.close()


def test_an_unsubscribe_reaches_the_shard_of_its_channel(cluster):
    by = channels_by_primary(cluster, 2)
    with BrokerProcess(cluster.url) as b:
        subscribe_all(b, by)
        dropped = [group[0] for group in by.values()]
        reply = b.call("unsubscribe", dropped)
        assert not any(ch in chans for chans in reply["shards"].values() for ch in dropped)
        for server, (drop, keep) in by.items():
            wait_until(lambda: shard_subscribers(server, drop) == 0, timeout=10, what=f"SUNSUBSCRIBE of {drop}")
            assert shard_subscribers(server, keep) == 1
        assert all(reply["hears"][keep] for _, keep in by.values())

        # On each shard's one connection, a message to the dropped channel published before
        # one to the kept channel would be heard before it.
        pub = cluster.client()
        mark = b.mark()
        for drop, keep in by.values():
            pub.spublish(drop, "not heard")
            pub.spublish(keep, "heard")
        b.wait_heard([(keep, "heard") for _, keep in by.values()], since=mark)
        assert not [m for m in b.heard(mark) if m[1] == "not heard"]

        again = dropped[0]
        assert b.call("subscribe", [again])["hears"][again]
        mark = b.mark()
        pub.spublish(again, "heard again")
        b.wait_heard([(again, "heard again")], since=mark)
        assert b.lost_back() == []
        pub.close()
