"""Redis with automatic failover (REDIS_TOPOLOGY=sentinel): the whole stack on a primary, two
replicas and three Sentinels, as real processes, through the gateway across two chat processes.

The primary is killed (SIGKILL) while people chat and are logged in: their sessions survive,
chat resumes within seconds by itself, and every message that was acknowledged reaches its
receiver once, in order, and stays in history.  An ``ack`` waits for the replica
(CHAT_ACK_REPLICAS=1): when no replica confirms, the sender is told ``unavailable``
and the same ``cid`` sent again is acknowledged with the first id.
"""
import os
import signal
import threading
import time

from support.chat import Closed, Person, two_nodes
from webchat_testing import wait_until

#: The failover takes the Sentinels' DOWN_AFTER_MS (1 s here) plus an election; chat must be
#: back well within this (a functional bound, not a speed goal).
RESUMES_WITHIN = 30


def reconnect(who, stop, last_id=None):
    """A new socket of ``who`` (from ``last_id``), trying until the stack takes it."""
    while not stop.is_set():
        try:
            return who.connect(last_id=last_id, sync=False)
        except Exception:  # noqa: BLE001 - refused, reset or 503 while Redis fails over
            time.sleep(0.3)
    return None


class Receiver(threading.Thread):
    """Reads a person's socket and records every message id it is sent; a socket that is
    closed is replaced by one that resumes from the last id received."""

    def __init__(self, who, sock):
        super().__init__(daemon=True)
        self.who, self.sock = who, sock
        self.ids, self.reconnects = [], 0
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            try:
                f = self.sock.recv(0.5)
            except TimeoutError:
                continue
            except Closed:
                self.reconnects += 1
                self.sock = reconnect(self.who, self.stop, self.ids[-1] if self.ids else None)
                continue
            if f.get("type") == "message":
                self.ids.append(f["id"])


class Sender(threading.Thread):
    """Sends messages one after the other, each until it is acknowledged: an ``unavailable``
    error, no answer or a closed socket means "send it again with the same cid"."""

    def __init__(self, who, sock, to):
        super().__init__(daemon=True)
        self.who, self.sock, self.to = who, sock, to
        self.acked = {}        # cid -> id
        self.ack_times = []    # monotonic time of each ack
        self.refused = []      # error frames other than unavailable (none expected)
        self.stop = threading.Event()

    def acks_after(self, moment):
        return sum(1 for t in self.ack_times if t > moment)

    def run(self):
        i = 0
        while not self.stop.is_set():
            cid = f"m{i}"
            mid = self.until_acked(cid)
            if mid is None:
                return
            self.acked[cid] = mid
            self.ack_times.append(time.monotonic())
            i += 1
            time.sleep(0.02)

    def until_acked(self, cid):
        while not self.stop.is_set():
            try:
                self.sock.send(receiver=self.to, data=cid, cid=cid)
                deadline = time.monotonic() + 5
                while time.monotonic() < deadline:
                    f = self.sock.recv(max(0.01, deadline - time.monotonic()))
                    if f.get("cid") != cid:
                        continue
                    if f["type"] == "ack":
                        return f["id"]
                    if f["type"] == "error":
                        if f["code"] != "unavailable":
                            self.refused.append(f)
                        time.sleep(0.2)
                        break
            except TimeoutError:
                continue
            except (Closed, OSError, Exception):  # noqa: BLE001 - the socket is gone: a new one
                self.sock = reconnect(self.who, self.stop)
        return None


def history_ids(reader, other):
    res = reader.browser.get("/chat/api/history", params={"with": other.name, "limit": 100},
                             headers={"Accept": "application/json"})
    assert res.status_code == 200, res.text
    return [m["id"] for m in res.json()["messages"]]


def test_an_ack_waits_for_the_replica(ha_stack):
    """With the replicas stopped (SIGSTOP: connected, silent), a message is stored on the
    primary but not acknowledged: the sender gets ``unavailable``.  Sent again with the same
    cid once they are back, it is acknowledged with the first id, and stored once."""
    alice, bob = Person(ha_stack), Person(ha_stack)
    sa = alice.connect()
    primary = ha_stack.redis.primary()
    replicas = [s for s in ha_stack.redis.servers if s is not primary]
    for replica in replicas:
        os.kill(replica.pid, signal.SIGSTOP)
    try:
        sa.send(receiver=bob.name, data="copied?", cid="w")
        refused = sa.expect("error", cid="w", timeout=10)
    finally:
        for replica in replicas:
            os.kill(replica.pid, signal.SIGCONT)
    assert refused["code"] == "unavailable", refused

    def acked():
        sa.send(receiver=bob.name, data="copied?", cid="w")
        f = sa.expect("ack", cid="w", timeout=3)
        return f
    ack = wait_until(acked, timeout=20, interval=0.3, what="the ack once the replica is back")
    assert ack["duplicate"] is True
    ids = history_ids(bob, alice)
    assert ids == [ack["id"]], "stored once, under the first id"
    sa.close()


def test_a_failover_keeps_sessions_and_every_acknowledged_message(ha_stack):
    alice, bob = Person(ha_stack), Person(ha_stack)
    sa, sb = two_nodes(alice, bob)
    rx, tx = Receiver(bob, sb), Sender(alice, sa, bob.name)
    rx.start()
    tx.start()
    try:
        wait_until(lambda: len(tx.acked) >= 20, timeout=30, what="messages before the failover")
        old = ha_stack.redis.kill_primary()
        killed = time.monotonic()
        ha_stack.redis.wait_failover(old)
        wait_until(lambda: tx.acks_after(killed) >= 20, timeout=60, what="messages after the failover")
    finally:
        tx.stop.set()
        tx.join(10)
    resumed = min(t for t in tx.ack_times if t > killed) - killed
    assert resumed < RESUMES_WITHIN, f"chat came back {resumed:.1f} s after the primary died"
    assert not tx.refused, tx.refused

    # Sessions live on the promoted replica: both are still logged in, with the same cookies.
    assert alice.browser.me()["user"] == alice.name
    assert bob.browser.me()["user"] == bob.name

    acked = list(tx.acked.values())
    wait_until(lambda: set(acked) <= set(rx.ids), timeout=20, what="bob to get every acknowledged message")
    assert len(rx.ids) == len(set(rx.ids)), "a message reached bob twice"
    assert rx.ids == sorted(rx.ids, key=lambda i: tuple(map(int, i.split("-")))), "out of order"
    stored = history_ids(bob, alice)
    assert set(acked) <= set(stored), "an acknowledged message is not in history"

    # The chat processes' pub/sub follows the new primary: a message now reaches bob's open
    # socket live, without a reconnect.
    reconnects = rx.reconnects
    sa2 = alice.connect()
    sa2.send(receiver=bob.name, data="live", cid="live")
    live = sa2.expect("ack", cid="live", timeout=10)["id"]
    wait_until(lambda: live in rx.ids, timeout=10, what="the live message")
    assert rx.reconnects == reconnects
    rx.stop.set()
    rx.join(5)
    sa2.close()

    # The old primary comes back as a replica of the new one (the Sentinels reconfigure it),
    # so the next failover has a replica to promote.
    old.start()
    wait_until(lambda: ha_stack.redis.synced(old), timeout=30, what="the old primary to rejoin as a replica")
