"""Hostile frames and hostile numbers of sockets, through the real gateway: whatever one user
sends, they get a defined answer (an ``error`` frame or a documented close code), and nobody
else on the same chat process notices."""
import json
import threading
import time
import uuid

import pytest
import websocket
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from support.chat import ChatSock, Closed, Person
from webchat_common import keys

pytestmark = pytest.mark.timeout(180)


class Bystanders:
    """Pairs of users on one chat process exchanging messages without pause, in threads: each
    message must be acknowledged and delivered, and no socket may close, whatever happens to
    the other users of that process."""

    def __init__(self, stack, node, pairs=3):
        self.socks = []
        for _ in range(pairs):
            a, b = Person(stack), Person(stack)
            self.socks.append((a.connect_on(node), b.connect_on(node), b.name))
        self.errors = []
        self.sent = 0
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._talk, args=pair, daemon=True) for pair in self.socks]

    def _talk(self, sa, sb, bob):
        i = 0
        try:
            while not self.stop.is_set():
                cid = f"b{i}"
                sa.send(receiver=bob, data=f"steady {i}", cid=cid)
                sa.expect("ack", cid=cid)
                assert sb.expect("message", cid=cid)["data"] == f"steady {i}"
                self.sent += 1
                i += 1
                time.sleep(0.05)  # below the test stack's rate limit (20/s)
        except Exception as exc:  # noqa: BLE001 - reported by check()
            self.errors.append(repr(exc))

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(10)
        for sa, sb, _ in self.socks:
            sa.close()
            sb.close()

    def check(self):
        assert not self.errors, f"a bystander was disturbed: {self.errors}"
        assert self.sent > 0


def answered(sock, raw, timeout=5.0):
    """Send ``raw`` and a ping after it: every frame the server sent in between (the answer to
    ``raw``), up to the pong, which proves the socket is still open and in order."""
    sock.send_raw(raw)
    cid = "sentinel-" + uuid.uuid4().hex[:8]
    sock.send(type="ping", cid=cid)
    frames = []
    while True:
        f = sock.recv(timeout)
        if f.get("type") == "pong" and f.get("cid") == cid:
            return frames
        frames.append(f)


HOSTILE = [
    ('{"type":"ping","cid":"\\ud800"}', "bad_unicode"),
    ('{"receiver":"%(bob)s","data":"\\ud800"}', "bad_unicode"),
    ('{"room":"lobby","data":"x\\udfffy","cid":"c1"}', "bad_unicode"),
    ('{"\\udc00":"key","receiver":"%(bob)s","data":"hi"}', "bad_unicode"),
    ("[" * 2000 + "]" * 2000, "bad_json"),
    ('{"":' * 1600 + "1" + "}" * 1600, "bad_json"),  # (within the test stack's 8 KiB frames)
    ('{"type":"join","room":"lobby\\n"}', "bad_room"),
    ('{"type":"join","room":"party\\n"}', "bad_room"),
    ('{"receiver":"%(bob)s\\n","data":"hi"}', "unknown_receiver"),
    ('{"type":"watch","users":["%(bob)s\\n"]}', "bad_watch"),
    ('{"receiver":"%(bob)s","data":"hi","media":"AAAAAAAAAAAAAAAAAAAAAA.png\\n"}', "bad_media"),
]


def test_hostile_frames_get_an_error_and_nobody_else_notices(chat_stack):
    """Lone surrogates (which once closed every socket of the process: the bad text failed
    the batch of sends it joined), deep nesting, names with a trailing newline."""
    mallory, bob = Person(chat_stack), Person(chat_stack)
    sm = mallory.connect()
    sb = bob.connect()
    to_bob = []
    with Bystanders(chat_stack, sm.node) as others:
        for raw, code in HOSTILE:
            for _ in range(2):
                frames = answered(sm, raw % {"bob": bob.name})
                errors = [f for f in frames if f["type"] == "error"]
                assert [e["code"] for e in errors] == [code], (raw[:60], frames)
                assert errors[0]["error"]
            # (the test stack's rate limit: 20 frames/s, burst 30; bob reads meanwhile, which
            # also answers the server's pings)
            to_bob += [f for f in sb.collect(0.3) if f.get("type") == "message"]
        time.sleep(0.5)
        others.check()
    to_bob += [f for f in sb.collect(0.5) if f.get("type") == "message"]
    assert not to_bob, "nothing reached bob"
    sm.send(receiver=bob.name, data="still here", cid="ok")
    assert sm.expect("ack", cid="ok")
    assert sb.expect("message", cid="ok")["data"] == "still here"
    sm.close()
    sb.close()


@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
          deadline=None)
@given(raw=st.one_of(
    st.text(max_size=200),
    st.dictionaries(st.sampled_from(["type", "data", "cid", "receiver", "room", "users", "media", "with", "target",
                                     "up_to"]),
                    st.one_of(st.text(max_size=20), st.integers(), st.none(), st.lists(st.text(max_size=5), max_size=3),
                              st.sampled_from(["message", "read", "typing", "edit", "delete", "join", "watch", "lobby",
                                               "1-1", "0-0"])),
                    max_size=5).map(json.dumps),
    st.binary(max_size=100)))
def test_any_frame_gets_a_defined_answer_through_the_gateway(hostile_pair, raw):
    """Any text, any JSON object made of the frame's fields, any bytes: answered (or silently
    accepted) in order, the socket stays open, and the other user's socket too."""
    sm, sb, bob = hostile_pair
    time.sleep(0.15)  # two frames per example, below the test stack's rate limit (20/s)
    if isinstance(raw, bytes):
        sm.send_raw(raw, opcode=websocket.ABNF.OPCODE_BINARY)
        raw = ""
    frames = answered(sm, raw)
    kinds = {f["type"] for f in frames}
    # (a room joined: the socket hears the room's own "member" frame of its join too)
    assert kinds <= {"error", "ack", "system", "pong", "watching", "room", "member", "message", "presence", "read",
                     "typing", "edit", "delete"}, frames
    for f in frames:
        if f["type"] == "error":
            assert f["code"] and f["error"]
            assert f["code"] != "server_error", f
    sb.send(type="ping", cid="bystander")
    assert sb.expect("pong", cid="bystander")


def keep_alive(socks):
    """Read what is waiting on each socket (websocket-client answers the server's pings only
    while it reads): an idle test socket would be closed for a missed pong (1001)."""
    for s in socks:
        s.collect(0.01)


def test_one_user_cannot_open_unlimited_sockets(chat_stack, r):
    """CHAT_MAX_SOCKETS_PER_USER (8 in the test stack) over both chat processes: the next
    socket is closed with 4029 and a reason; others are unaffected; closing one makes room."""
    mallory, bob = Person(chat_stack), Person(chat_stack)
    socks = [mallory.connect() for _ in range(8)]
    for _ in range(20):  # make sure the 8 sit on both processes: the cap is across them
        if len({s.node for s in socks}) == 2:
            break
        socks.pop().close()
        time.sleep(0.2)
        socks.append(mallory.connect())
    assert len({s.node for s in socks}) == 2
    keep_alive(socks)
    for _ in range(4):
        with pytest.raises(Closed) as refused:  # closed before its hello
            ChatSock(mallory.open())
        assert refused.value.code == 4029 and "at most 8" in refused.value.reason
    keep_alive(socks)
    sb = bob.connect()
    sb.send(receiver=mallory.name, data="hello all of you", cid="x")
    assert sb.expect("ack", cid="x")
    for s in socks:
        assert s.expect("message", cid="x")
    counts = r.hgetall(keys.chat_sockets(mallory.name))
    assert sum(map(int, counts.values())) == 8, counts
    socks.pop().close()
    again = None
    for _ in range(30):
        try:
            again = mallory.connect()
            break
        except Closed as exc:
            assert exc.code == 4029
            time.sleep(0.2)
    assert again is not None, "a closed socket makes room for a new one"
    for s in socks + [again, sb]:
        s.close()


def test_a_resent_cid_is_stored_once(chat_stack, r):
    """A client that lost an ack (its socket dropped) sends the message again with the same
    cid: it is acknowledged with the first id (``duplicate``) and the receiver gets it once."""
    alice, bob = Person(chat_stack), Person(chat_stack)
    sa, sb = alice.connect(), bob.connect()
    sa.send(receiver=bob.name, data="once", cid="m1")
    first = sa.expect("ack", cid="m1")
    assert "duplicate" not in first
    sa.close()
    sa = alice.connect()
    sa.send(receiver=bob.name, data="once", cid="m1")
    again = sa.expect("ack", cid="m1")
    assert again["duplicate"] is True and again["id"] == first["id"] and again["receiver"] == bob.name
    sa.send(type="join", room="dups")
    sa.expect("room", room="dups")
    sa.send(room="dups", data="room once", cid="m1")  # another conversation: another message
    room_ack = sa.expect("ack", cid="m1")
    assert "duplicate" not in room_ack
    sa.send(room="dups", data="room once", cid="m1")
    assert sa.expect("ack", cid="m1")["id"] == room_ack["id"]
    got = [f for f in sb.collect(1.0) if f.get("type") == "message"]
    assert [f["cid"] for f in got] == ["m1"]
    assert r.xlen(keys.chat_pm(alice.name, bob.name)) == r.xlen(keys.chat_pm(bob.name, alice.name)) == 1
    sa.close()
    sb.close()
