"""Redis with automatic failover (REDIS_TOPOLOGY=sentinel): the whole stack on a primary, two
replicas and three Sentinels, as real processes, through the gateway across two chat processes.

The primary is killed (SIGKILL) while people are connected and logged in: their sessions
survive, chat resumes within seconds by itself on the sockets they had open, and history keeps
what was acknowledged (under a steady stream of messages: ``tests/test_faults.py``, scenario
g).  An ``ack`` waits for a replica (CHAT_ACK_REPLICAS=1): when none confirms, the sender is
told ``unavailable``, and the same ``cid`` sent again is acknowledged with the first id.
"""
import os
import re
import signal
from pathlib import Path

from support.chat import Person, Poller, history, two_nodes
from webchat_common.redis_store import parse_sentinel_url
from webchat_testing import sentinel, wait_until

ROOT = Path(__file__).resolve().parent.parent

#: The failover takes the Sentinels' DOWN_AFTER_MS (1 s here) plus an election; chat must be
#: back well within this (a functional bound, not a speed goal).
RESUMES_WITHIN = 30


def history_of(reader, other, field="id"):
    """``field`` of every message of ``reader``'s copy of their conversation with ``other``."""
    res = history(reader, limit=100, **{"with": other.name})
    assert res.status_code == 200, res.text
    return [m[field] for m in res.json()["messages"]]


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
    assert refused["code"] == "unavailable" and "replica" in refused["error"], refused

    def acked():
        sa.send(receiver=bob.name, data="copied?", cid="w")
        f = sa.expect("ack", cid="w", timeout=3)
        return f
    ack = wait_until(acked, timeout=20, interval=0.3, what="the ack once the replica is back")
    assert ack["duplicate"] is True
    assert history_of(alice, bob) == [ack["id"]], "stored once, under the first id"
    assert history_of(bob, alice, "cid") == ["w"], "and once in the receiver's copy"
    sa.close()


def test_after_a_failover_people_are_logged_in_and_open_sockets_go_on(ha_stack):
    """The primary is killed with two people connected (on the two chat processes, the
    receiver also in a long-polling tab): once a replica is promoted, both are still logged
    in, their open sockets carry the next message live (the chat processes' pub/sub followed
    the new primary), the tab polls it, history holds what came before and after, and the old
    primary rejoins as a replica.  (Under a steady stream of
    messages, with every acknowledged one counted: the fault suite's scenario g.)"""
    alice, bob = Person(ha_stack), Person(ha_stack)
    sa, sb = two_nodes(alice, bob)
    sa.send(receiver=bob.name, data="before", cid="b")
    sa.expect("ack", cid="b")
    assert sb.expect("message")["cid"] == "b"
    tab = Poller(bob)  # bob's other tab, on long-polling
    tab.poll()
    ha_stack.redis.wait_failover(ha_stack.redis.kill_primary())
    try:
        def sent():
            sa.send(receiver=bob.name, data="after", cid="a")
            return sa.expect("ack", cid="a", timeout=3)
        wait_until(sent, timeout=RESUMES_WITHIN, interval=0.3, what="an ack after the failover")
        after = sb.expect("message", timeout=10, data="after")["id"]  # (in bob's copy)
        wait_until(lambda: [f for f in tab.poll(ok=(200, 503)) if f.get("id") == after], timeout=20,
                   what="the message on bob's long-poll tab")
        assert alice.browser.me()["user"] == alice.name and bob.browser.me()["user"] == bob.name
        assert history_of(bob, alice, "cid") == ["b", "a"]
    finally:
        ha_stack.redis.heal()
    for s in (sa, sb):
        s.close()


def test_the_local_setup_monitors_what_compose_and_kubernetes_do(ha_stack):
    """The local stack's Sentinels watch the primary under the name, and with the quorum, of
    redis/redis-ha.sh (compose and Kubernetes), so one REDIS_URL shape fits all three."""
    script = (ROOT / "redis" / "redis-ha.sh").read_text()
    default = lambda name: re.search(rf"^{name}=\$\{{{name}:-(\w+)\}}$", script, re.M).group(1)  # noqa: E731
    assert (sentinel.SERVICE, str(sentinel.QUORUM)) == (default("MASTER_NAME"), default("QUORUM"))
    assert parse_sentinel_url(ha_stack.redis.url).service == sentinel.SERVICE
    s = ha_stack.redis.sentinel()
    try:
        assert s.sentinel_master(sentinel.SERVICE)["quorum"] == sentinel.QUORUM
    finally:
        s.close()


def test_the_page_sends_through_a_failover(ha_page, ha_stack):
    """In the browser: a message sent while the primary has just died stays "sending" until
    the page's own resend (``unavailable`` means "send again with the same cid") is
    acknowledged by the new primary; the receiver's open page shows it once, and both pages
    stay logged in and connected."""
    from playwright.sync_api import expect

    # A request of a page's that reaches a service while no primary answers gets 503 (what the
    # services answer when Redis is away), which Chromium logs as a console error.
    ha_page.allow(r"status of 503")
    alice, bob = Person(ha_stack), Person(ha_stack)
    pa, pb = ha_page(alice), ha_page(bob)
    pa.click(f"#contacts li[data-user='{bob.name}']")
    pb.click(f"#contacts li[data-user='{alice.name}']")
    old = ha_stack.redis.kill_primary()
    try:
        pa.fill("#send-text", "sent while Redis fails over")
        pa.click("#send-form button")
        mine = pa.locator("#messages li.mine")
        expect(mine).to_have_count(1)
        expect(mine).to_have_class(re.compile(r"\bpending\b"))  # no primary to store it yet
        expect(mine).not_to_have_class(re.compile(r"\bpending\b"), timeout=30_000)  # acknowledged, after a resend
        got = pb.locator("#messages li", has_text="sent while Redis fails over")
        expect(got).to_have_count(1, timeout=10_000)
        for page in (pa, pb):
            expect(page.locator("#chat-status")).to_have_attribute("data-state", "online", timeout=20_000)
        assert ha_stack.redis.primary() is not old
        assert history_of(alice, bob) == [pa.locator("#messages li.mine").get_attribute("data-id")]
        assert len(history_of(bob, alice)) == 1
    finally:
        ha_stack.redis.heal()
