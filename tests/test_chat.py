"""Chat through the real gateway: two chat processes (gunicorn, gevent worker) behind nginx,
one real Redis or a Redis Cluster (every test runs on both: ``chat_stack`` in tests/conftest.py),
real WebSocket clients (websocket-client).

Through nginx the kernel's reuse-port balancing decides which chat process a socket lands on;
every socket's first frame (``hello``) names its node (``<host>-<pid>-<random>``), so tests
that need two processes reconnect until two people sit on different nodes.
"""
import json
import os
import signal
import socket
import subprocess
import threading
import time
import uuid

import pytest
import requests
import websocket
from websocket import ABNF

from support.chat import (Closed, ChatSock, Person, holders, kill_subscribers, person, shard_subscribers, two_nodes,
                          wait_online)
from support.web import tiny_png
from webchat_common import keys
from webchat_common.redis_store import open_client
from webchat_testing import wait_until
from webchat_testing.sessions import COOKIE

pytestmark = pytest.mark.timeout(120)


# ---- messages across processes ------------------------------------------------------------

def test_private_message_across_processes_with_server_set_sender(chat_stack):
    alice, bob = person(chat_stack), person(chat_stack)
    sa, sb = two_nodes(alice, bob)
    assert sa.node != sb.node
    assert sa.hello["user"] == alice.name and sb.hello["user"] == bob.name
    assert sb.watch(alice.name)["online"] == [alice.name]
    sa.send(receiver=bob.name, data="hello bob 👋", cid="m1", sender="mallory")
    ack = sa.expect("ack", cid="m1")
    got = sb.expect("message")
    assert got["sender"] == alice.name, "the server sets the sender; the client's is ignored"
    assert got["receiver"] == bob.name and got["data"] == "hello bob 👋"
    # Each person's copy numbers it with their own clock: the same message, the same cid.
    assert got["cid"] == "m1" and ack["cid"] == "m1" and isinstance(got["ts"], int)
    assert "mallory" not in json.dumps(got)
    # and back, the other way
    sb.send(receiver=alice.name, data="hi alice")
    back = sa.expect("message", sender=bob.name)
    assert back["sender"] == bob.name and back["data"] == "hi alice"
    sa.close()
    sb.close()


def test_a_message_sent_just_before_closing_is_delivered(chat_stack):
    alice, bob = person(chat_stack), person(chat_stack)
    sb = bob.connect()
    sa = alice.connect()
    sa.send(receiver=bob.name, data="send and go")
    sa.ws.close()  # at once, without waiting for the ack
    assert sb.expect("message")["data"] == "send and go"
    sb.close()


def test_handshake_refused_before_upgrade(chat_stack):
    alice, bob = person(chat_stack), person(chat_stack)
    for kwargs, status in (
        ({"who": bob.name}, 403),                    # someone else's address
        ({"origin": "http://evil.example"}, 403),   # a foreign page
        ({"origin": None}, 403),                    # no Origin at all
    ):
        with pytest.raises(websocket.WebSocketBadStatusException) as info:
            alice.open(**kwargs)
        assert info.value.status_code == status, kwargs
    with pytest.raises(websocket.WebSocketBadStatusException) as info:
        websocket.create_connection(alice.url(), origin=chat_stack.url, timeout=5)  # no cookie
    assert info.value.status_code == 401
    with pytest.raises(websocket.WebSocketBadStatusException) as info:
        websocket.create_connection(alice.url(), origin=chat_stack.url, cookie=f"{COOKIE}=" + "x" * 43,
                                    timeout=5)
    assert info.value.status_code == 401
    ok = alice.connect()  # and the right one works
    assert ok.hello["user"] == alice.name
    ok.close()


def test_offline_notice_then_delivery_on_connect(chat_stack):
    alice, bob = person(chat_stack), person(chat_stack)
    sa = alice.connect()
    sa.send(receiver=bob.name, data="are you there?", cid="x1")
    ack = sa.expect("ack", cid="x1")
    notice = sa.expect("system")
    assert notice["data"] == "receiver is offline" and notice["about"] == bob.name
    assert notice["sender"] == "system" and notice["id"] == ack["id"]
    sa.send(receiver=bob.name, data="second")
    sa.expect("system")
    sb = bob.connect(sync=False)
    first, second = sb.expect("message"), sb.expect("message")
    assert [first["data"], second["data"]] == ["are you there?", "second"]
    assert sb.expect("sync")["replayed"] == 2
    # Disconnect, miss one, connect again without a last id: exactly the missed one.
    assert sa.watch(bob.name)["online"] == [bob.name]
    sb.close()
    wait_online(sa, bob.name, online=False)
    sa.send(receiver=bob.name, data="while you were away")
    assert sa.expect("system")["data"] == "receiver is offline"
    sb = bob.connect(sync=False)
    frames = []
    while True:
        f = sb.recv()
        frames.append(f)
        if f["type"] == "sync":
            break
    assert [f["data"] for f in frames if f["type"] == "message"] == ["while you were away"]
    sa.close()
    sb.close()


def missed_while_away(chat_stack):
    """Bob, in a room with carol, saw p1 from alice and r1 from carol, then went away; four
    more came: private and room, interleaved.  Returns (people, sockets, room, his positions,
    their acks by cid)."""
    alice, bob, carol = person(chat_stack), person(chat_stack), person(chat_stack)
    room = "r" + uuid.uuid4().hex[:8]
    sb = bob.connect()
    sb.send(type="join", room=room)
    sb.expect("room", room=room, action="join")
    sa, sc = alice.connect(), carol.connect()
    sc.send(type="join", room=room)
    sc.expect("room", room=room)
    sa.send(receiver=bob.name, data="p1")
    p1 = sb.expect("message", data="p1")["id"]
    sc.send(room=room, data="r1")
    r1 = sb.expect("message", data="r1")["id"]
    sb.close()
    # Missed while away: private and room, interleaved; bob's presence may lag, so no notice check.
    sa.send(receiver=bob.name, data="p2", cid="p2")
    sc.send(room=room, data="r2", cid="r2")
    sa.send(receiver=bob.name, data="p3", cid="p3")
    sc.send(room=room, data="r3", cid="r3")
    acks = {}
    for s, cids in ((sa, ("p2", "p3")), (sc, ("r2", "r3"))):
        for cid in cids:
            acks[cid] = s.expect("ack", cid=cid)["id"]
    return (alice, bob, carol), (sa, sc), room, (p1, {room: r1}), acks


def by_clock(frames, room):
    """The data of the private messages, and of the room's, each in the order they came."""
    return [f["data"] for f in frames if "room" not in f], [f["data"] for f in frames if f.get("room") == room]


def replayed(sock):
    """The messages a socket is sent before its ``sync``, and the ``sync``."""
    frames = []
    while True:
        f = sock.recv()
        if f["type"] == "sync":
            return frames, f
        if f["type"] == "message":
            frames.append(f)


def test_reconnect_from_its_positions_gets_exactly_the_missed_messages(chat_stack):
    (alice, bob, carol), (sa, sc), room, (last, rooms), acks = missed_while_away(chat_stack)
    sb2 = bob.connect(last_id=last, rooms=rooms, sync=False)
    frames, sync = replayed(sb2)
    # Ids of a clock (the private messages', the room's) increase in the order Redis stored them.
    assert by_clock(frames, room) == (["p2", "p3"], ["r2", "r3"]), "missed ones, in id order per clock, once"
    assert [f["id"] for f in frames if f.get("room")] == [acks["r2"], acks["r3"]], "a room's ids are everyone's"
    # The sync names where the socket is now, per clock: what a client resumes from next.
    assert sync["last_id"] == [f["id"] for f in frames if "room" not in f][-1] and sync["rooms"][room] == acks["r3"]
    # Then live, with no duplicate of the replay.
    sa.send(receiver=bob.name, data="p4")
    live = sb2.expect("message")
    assert live["data"] == "p4"
    assert not [f for f in sb2.collect(0.5) if f.get("type") == "message"]
    for s in (sa, sc, sb2):
        s.close()


def test_a_room_given_no_position_is_replayed_from_the_start_of_its_history(chat_stack):
    """A client that resumes names a position per room; a room it names none for (an older
    client sends only ``last_id``) could have missed anything: it gets the room's whole kept
    history again (repeats, never a gap), and its private messages exactly."""
    (alice, bob, carol), (sa, sc), room, (last, rooms), acks = missed_while_away(chat_stack)
    sb2 = bob.connect(last_id=last, sync=False)
    frames, sync = replayed(sb2)
    assert by_clock(frames, room) == (["p2", "p3"], ["r1", "r2", "r3"])
    assert sync["rooms"][room] == acks["r3"]
    for s in (sa, sc, sb2):
        s.close()


def test_bad_positions_are_refused_before_the_upgrade(chat_stack):
    alice = person(chat_stack)
    for query in ("rooms=lobby", "rooms=lobby:1-2,lobby:3-4", "rooms=:1-2", "rooms=lo%20bby:1-2",
                  "rooms=" + ",".join(f"r{i}:1-2" for i in range(60)), "last_id=1-2&rooms=x:y"):
        with pytest.raises(websocket.WebSocketBadStatusException) as info:
            websocket.create_connection(alice.url() + "?" + query, cookie=alice.cookie, origin=chat_stack.url,
                                        timeout=5)
        assert info.value.status_code == 400, query


def test_gap_beyond_history_is_told(chat_stack):
    alice, bob = person(chat_stack), person(chat_stack)
    sb = bob.connect()
    sb.send(receiver=alice.name, data="since", cid="c")
    sb.expect("ack", cid="c")
    sb.close()
    # 1970: far beyond CHAT_HISTORY_AGE, and her clock issued an id since: some may be lost
    s = alice.connect(last_id="1-0", sync=False)
    gap = s.expect("system", code="history_gap")
    assert "could not be replayed" in gap["data"]
    assert s.expect("sync")["gap"] is True
    s.close()
    with pytest.raises(websocket.WebSocketBadStatusException) as info:
        alice.open(last_id="yesterday")
    assert info.value.status_code == 400


def test_room_messages_reach_every_member_once(chat_stack):
    people = [person(chat_stack) for _ in range(4)]
    room = "team" + uuid.uuid4().hex[:6]
    socks = [p.connect() for p in people]
    if len({s.node for s in socks}) < 2:
        socks[-1].close()
        socks[-1] = people[-1].connect_not_on(socks[0].node)
    members, outsider = socks[:3], socks[3]
    for s in members:
        s.send(type="join", room=room)
        s.expect("room", room=room, action="join")
    members[0].send(room=room, data="hello team", cid="t1")
    frames = [s.collect(1.0) for s in members]
    ack = next(f for f in frames[0] if f["type"] == "ack")  # the sender's echo may come first
    assert ack["cid"] == "t1" and ack["room"] == room
    for got in frames:  # the sender is a member too: it gets the message once, like everyone
        got = [f for f in got if f.get("type") == "message"]
        assert [(f["data"], f["id"], f["room"], f["sender"]) for f in got] == [
            ("hello team", ack["id"], room, people[0].name)]
    assert not [f for f in outsider.collect(0.3) if f.get("type") == "message"]
    outsider.send(room=room, data="let me in", cid="o1")
    assert outsider.expect("error", cid="o1")["code"] == "not_member"
    # the default room: everyone is in it
    outsider.send(room=outsider.hello["default_room"], data="hi all", cid="l1")
    outsider.expect("ack", cid="l1")
    for s in members:
        s.expect("message", data="hi all")
    # leaving stops delivery
    members[2].send(type="leave", room=room)
    members[2].expect("room", room=room, action="leave")
    members[0].send(room=room, data="after leave")
    members[1].expect("message", data="after leave")
    assert not [f for f in members[2].collect(0.5) if f.get("data") == "after leave"]
    for s in socks:
        s.close()


# ---- presence -----------------------------------------------------------------------------

def test_presence_on_and_off_across_processes(chat_stack, r):
    alice, bob, carol = person(chat_stack), person(chat_stack), person(chat_stack)
    sa = alice.connect()
    assert sa.watch(bob.name, cid="w1") == {
        "type": "watching", "online": [], "offline": [bob.name], "unknown": [], "cid": "w1"}
    sc = carol.connect()  # watches nobody: hears nothing about bob
    sb = bob.connect_not_on(sa.node)  # (its tries flap bob on and off: drain them)
    flips = [f["online"] for f in sa.collect(1.5) if f.get("type") == "presence" and f["user"] == bob.name]
    assert flips and flips[-1] is True
    # names are matched without case; the answer gives each as registered
    assert sb.watch(alice.name.upper(), carol.name)["online"] == [alice.name, carol.name]
    # a second socket of bob, then closing one: still online; closing both: offline
    sb2 = bob.connect()
    sb.close()
    assert not [f for f in sa.collect(1.5) if f.get("type") == "presence" and f["user"] == bob.name]
    sb2.close()
    wait_online(sa, bob.name, online=False, timeout=5)
    assert not [f for f in sc.collect(0.5) if f.get("type") == "presence"], "presence goes to watchers only"
    # a new list replaces the old one: bob is no longer watched, nor heard by any process
    assert sa.watch(carol.name)["online"] == [carol.name]
    bobs = keys.chat_presence_channel(bob.name)
    wait_until(lambda: shard_subscribers(r, bobs)[bobs] == 0, timeout=5, what="bob's presence channel left")
    sb = bob.connect()
    assert not [f for f in sa.collect(1.5) if f.get("type") == "presence" and f["user"] == bob.name]
    for s in (sa, sb, sc):
        s.close()
    # every watcher gone: no process listens to anyone's presence channel any more
    chans = [keys.chat_presence_channel(p.name) for p in (alice, bob, carol)]
    wait_until(lambda: shard_subscribers(r, *chans) == dict.fromkeys(chans, 0), timeout=5, what="presence channels left")


def test_watch_bad_input_and_limits(chat_stack):
    alice, bob = person(chat_stack), person(chat_stack)
    sa = alice.connect()
    for users in (None, bob.name, [1, 2], [bob.name, "no spaces"], ["../etc"], [{"name": bob.name}]):
        sa.send(type="watch", users=users, cid="bad")
        err = sa.expect("error", cid="bad")
        assert err["code"] == "bad_watch" and err["error"], users
    limit = sa.hello["limits"]["watch"]
    sa.send(type="watch", users=[f"u{i}" for i in range(limit + 1)], cid="many")
    assert sa.expect("error", cid="many")["code"] == "bad_watch"
    # unknown names are answered as such (and not watched); the user's own name is ignored
    ghost = "ghost" + uuid.uuid4().hex[:8]
    w = sa.watch(bob.name, ghost, alice.name, bob.name.upper())
    assert (w["online"], w["offline"], w["unknown"]) == ([], [bob.name], [ghost])
    sb = bob.connect()
    wait_online(sa, bob.name, timeout=5)
    sb.send(receiver=alice.name, data="still fine")
    assert sa.expect("message")["data"] == "still fine"
    sa.close()
    sb.close()


def _worker_pids(master_pid):
    out = subprocess.run(["pgrep", "-P", str(master_pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def test_sigkilled_process_leaves_no_ghost_online(chat_stack, r):
    alice, bob = person(chat_stack), person(chat_stack)
    sa = alice.connect()
    sa.watch(bob.name)
    sb = bob.connect_not_on(sa.node)
    flips = [f["online"] for f in sa.collect(1.5) if f.get("type") == "presence" and f["user"] == bob.name]
    assert flips and flips[-1] is True
    os.kill(sb.pid, signal.SIGKILL)  # the worker that holds bob's socket: no cleanup at all
    killed = time.monotonic()
    off = wait_online(sa, bob.name, online=False, timeout=15)
    took = time.monotonic() - killed
    assert off and took < 3 * 3, f"ghost for {took:.1f}s with a 3 s TTL"
    assert not holders(r, bob.name), "no process holds bob"
    # gunicorn replaced the worker; the stack still has two chat processes
    wait_until(lambda: all(_worker_pids(p.pid) for p in chat_stack.services["chat"].procs if p.poll() is None),
               timeout=15, what="replacement worker")
    sa.close()


# ---- bad input, limits --------------------------------------------------------------------

def test_bad_input_gets_error_frames_and_the_connection_stays(chat_stack):
    alice, bob = person(chat_stack), person(chat_stack)
    sa, sb = alice.connect(), bob.connect()
    cases = [
        ("not json at all", "bad_json"),
        (json.dumps(["a", "list"]), "bad_frame"),
        (json.dumps({"receiver": bob.name}), "bad_frame"),                     # no data
        (json.dumps({"receiver": bob.name, "data": 5}), "bad_frame"),
        (json.dumps({"data": "to nobody"}), "bad_frame"),                      # no receiver or room
        (json.dumps({"receiver": bob.name, "room": "x", "data": "both"}), "bad_frame"),
        (json.dumps({"receiver": bob.name, "data": "   "}), "empty_data"),
        (json.dumps({"receiver": bob.name, "data": ""}), "empty_data"),
        (json.dumps({"receiver": "nobody-" + uuid.uuid4().hex[:8], "data": "hi"}), "unknown_receiver"),
        (json.dumps({"receiver": "../../etc", "data": "hi"}), "unknown_receiver"),
        (json.dumps({"type": "teleport"}), "bad_frame"),
        (json.dumps({"type": "join", "room": "no spaces"}), "bad_room"),
        (json.dumps({"type": "watch", "users": "everyone"}), "bad_watch"),
    ]
    for raw, code in cases:
        sa.send_raw(raw)
        err = sa.expect("error")
        assert err["code"] == code, raw
        assert err["error"], "a human-readable reason"
    sa.send_raw(b"\x00\x01binary", opcode=ABNF.OPCODE_BINARY)
    assert sa.expect("error")["code"] == "binary"
    # still connected, and messages flow both ways
    sa.send(receiver=bob.name, data="still here")
    assert sb.expect("message")["data"] == "still here"
    sb.send(receiver=alice.name, data="me too")
    assert sa.expect("message", sender=bob.name)["data"] == "me too"
    sa.close()
    sb.close()


def test_frame_too_large_closes_1009_and_others_are_unaffected(chat_stack):
    alice, bob = person(chat_stack), person(chat_stack)
    sa, sb = alice.connect(), bob.connect()
    sa.send(receiver=bob.name, data="x" * 9000)  # CHAT_MAX_FRAME=8192 in the test stack
    closed = sa.expect_close()
    assert closed.code == 1009
    sb.send(receiver=bob.name, data="to myself")  # bob is fine
    assert sb.expect("message")["data"] == "to myself"
    sb.close()


def test_flooding_gets_error_frames_then_1008(chat_stack):
    alice, bob = person(chat_stack), person(chat_stack)
    sa, sb = alice.connect(), bob.connect()
    for i in range(80):  # burst 30, 20/s, 5 strikes
        try:
            sa.send(receiver=bob.name, data=f"flood {i}")
        except (websocket.WebSocketConnectionClosedException, BrokenPipeError, ConnectionResetError):
            break
    frames, code = [], None
    try:
        while True:
            frames.append(sa.recv(8))
    except Closed as exc:
        code, reason = exc.code, exc.reason
    assert any(f.get("code") == "rate_limited" for f in frames if f["type"] == "error")
    assert code == 1008 and "rate" in reason
    got = [f for f in sb.collect(1.5) if f.get("type") == "message"]
    # The burst (30) and what the bucket refilled (20/s) while the server read the flood got
    # through; then 5 refusals closed the socket, so most of the 80 never counted.
    assert 25 <= len(got) <= 60, "the burst got through, the rest was refused"
    carol = person(chat_stack)
    sc = carol.connect()
    sc.send(receiver=bob.name, data="not affected")
    assert sb.expect("message", data="not affected")
    sb.close()
    sc.close()


def test_slow_reader_is_closed_and_nobody_else_waits(chat_stack):
    """Bob reads nothing (tiny receive buffer): what is sent to him piles up in his bounded
    send queue until the server closes his socket.  Carol, whom the same senders write to at
    the same time, gets every message."""
    bob, carol = person(chat_stack), person(chat_stack)
    senders = [person(chat_stack) for _ in range(5)]
    # Straight to the chat port (its processes share it), so only the kernel buffers of this
    # one TCP connection lie between the server and bob: nginx's would take megabytes to fill.
    chat_port = chat_stack.services["chat"].port
    raw = websocket.create_connection(f"ws://127.0.0.1:{chat_port}/chat/{bob.name}", cookie=bob.cookie,
                                      origin=f"http://127.0.0.1:{chat_port}", timeout=5,
                                      sockopt=((socket.SOL_SOCKET, socket.SO_RCVBUF, 4096),))
    ChatSock(raw)  # the hello, then never another read
    sc = carol.connect()
    ss = [p.connect() for p in senders]
    big = "y" * 7000
    stop = threading.Event()
    sent_to_carol = []

    def pump(s, n):
        i = 0
        while not stop.is_set():
            try:
                s.send(receiver=bob.name, data=big)
                s.send(receiver=carol.name, data=f"{n}-{i}")
            except Exception:  # noqa: BLE001
                return
            sent_to_carol.append(f"{n}-{i}")
            i += 1
            s.collect(0.12)  # read acks; stays under the rate limit

    threads = [threading.Thread(target=pump, args=(s, n), daemon=True) for n, s in enumerate(ss)]
    for t in threads:
        t.start()
    carol_got = []
    deadline = time.monotonic() + 45
    while time.monotonic() < deadline and chat_stack_conn_alive(chat_stack, bob.name):
        carol_got += [f["data"] for f in sc.collect(0.3) if f.get("type") == "message"]
    bob_closed = not chat_stack_conn_alive(chat_stack, bob.name)
    stop.set()
    for t in threads:
        t.join(5)
    carol_got += [f["data"] for f in sc.collect(1.0) if f.get("type") == "message"]
    assert bob_closed, "the slow reader was never closed"
    logs = "".join(p.read_text() for p in chat_stack.log_dir.glob("chat-*.log"))
    assert f"slow consumer {bob.name}" in logs, "closed for its send queue, not something else"
    assert sorted(carol_got) == sorted(sent_to_carol), "carol got every message, once"
    assert len(sent_to_carol) > 30
    raw.close()
    for s in ss + [sc]:
        s.close()


def chat_stack_conn_alive(stack, name):
    client = open_client(stack.redis.url, decode_responses=True)
    try:
        return bool(holders(client, name))
    finally:
        client.close()


def test_keepalive_pings_below_the_gateway_timeout(chat_stack):
    alice = person(chat_stack)
    s = alice.connect()
    s.collect(9)  # CHAT_PING_INTERVAL=4 in the test stack; the client answers with pongs
    assert s.pings >= 2
    s.send(type="ping", cid=7)
    assert s.expect("pong")["cid"] == 7, "the socket survived its idle time"
    s.close()


# ---- session end, restarts ----------------------------------------------------------------

def test_logout_closes_the_socket(chat_stack):
    alice = person(chat_stack)
    s = alice.connect()
    other = alice.connect()
    cookie = alice.cookie
    assert alice.browser.logout().status_code == 303
    for sock in (s, other):
        closed = sock.expect_close(timeout=5)
        assert closed.code == 1008 and "session" in closed.reason
    with pytest.raises(websocket.WebSocketBadStatusException) as info:
        websocket.create_connection(alice.url(), cookie=cookie, origin=chat_stack.url, timeout=5)
    assert info.value.status_code == 401


def test_expired_session_closes_the_socket(chat_stack, r):
    """A session that disappears without the logout announcement (TTL expiry) closes too."""
    alice = person(chat_stack)
    s = alice.connect()
    from webchat_common.sessions import session_key
    r.delete(session_key(alice.browser.sid))
    closed = s.expect_close(timeout=8)  # CHAT_SESSION_CHECK_INTERVAL=2
    assert closed.code == 1008


def test_pubsub_reconnect_catches_every_socket_up(chat_stack, r):
    alice, bob = person(chat_stack), person(chat_stack)
    sa, sb = two_nodes(alice, bob)
    sent = []
    for i in range(30):
        if i == 5:
            assert kill_subscribers(r) >= 1  # every chat process loses its subscriber
        sa.send(receiver=bob.name, data=f"m{i}")
        sent.append(f"m{i}")
        time.sleep(0.02)
    got = []
    deadline = time.monotonic() + 15
    while len(got) < len(sent) and time.monotonic() < deadline:
        try:
            f = sb.recv(1)
        except TimeoutError:
            continue
        if f.get("type") == "message":
            got.append(f["data"])
    assert got == sent, "every message exactly once, in order, after the subscriber came back"
    logs = "".join(p.read_text() for p in chat_stack.log_dir.glob("chat-*.log"))
    assert "pub/sub connection lost" in logs and "pub/sub back: caught up" in logs
    bobs = keys.chat_user_channel(bob.name)
    assert shard_subscribers(r, bobs)[bobs] >= 1
    # presence too: a change made while the subscriber was away is not lost
    carol = person(chat_stack)
    sc = carol.connect()
    assert sa.watch(carol.name)["online"] == [carol.name]
    assert kill_subscribers(r) >= 1
    sc.close()
    wait_online(sa, carol.name, online=False, timeout=10)
    carols = keys.chat_presence_channel(carol.name)
    assert shard_subscribers(r, carols)[carols] >= 1
    sa.close()
    sb.close()


def test_sigterm_closes_with_1012_and_clients_resume_elsewhere(chat_stack):
    alice, bob = person(chat_stack), person(chat_stack)
    sa, sb = two_nodes(alice, bob)
    sa.send(receiver=bob.name, data="before")
    sb.expect("message", data="before")
    procs = [p for p in chat_stack.services["chat"].procs if p.poll() is None]
    victim = next(p for p in procs if sb.pid in _worker_pids(p.pid))
    victim.send_signal(signal.SIGTERM)
    try:
        closed = sb.expect_close(timeout=15)
        assert closed.code == 1012 and closed.reason
        # Messages sent while bob is away are not lost.
        sa.send(receiver=bob.name, data="during")
        sa.expect("ack")
        deadline = time.monotonic() + 20
        resumed = None
        while resumed is None and time.monotonic() < deadline:
            try:
                resumed = bob.connect(**sb.positions(), sync=False)
            except (websocket.WebSocketBadStatusException, ConnectionError, OSError,
                    websocket.WebSocketException):
                time.sleep(0.2)
        assert resumed is not None and resumed.node == sa.node
        assert resumed.expect("message")["data"] == "during"
        assert resumed.expect("sync")["replayed"] == 1
        victim.wait(30)
    finally:
        # Put the second chat process back for the other tests.
        svc = chat_stack.services["chat"]
        svc.procs.remove(victim)
        chat_stack.start_service(svc, 1)
        chat_stack.wait_service(svc)
    sa.close()
    resumed.close()


def test_chat_page_is_served(chat_stack):
    alice = person(chat_stack)
    page = alice.browser.get("/chat/")
    assert page.status_code == 200
    assert f'<span id="chat-user">{alice.name}</span>' in page.text
    js = alice.browser.get("/chat/static/chat/socket.js")
    assert js.status_code == 200 and "last_id" in js.text
    assert requests.get(chat_stack.url + "/chat/", timeout=5, allow_redirects=False,
                        headers={"Accept": "text/html"}).status_code == 302


def test_chat_metrics_are_exported(chat_stack):
    alice, bob = person(chat_stack), person(chat_stack)
    sa, sb = two_nodes(alice, bob)
    sa.send(receiver=bob.name, data="counted")
    sb.expect("message")
    for s in (sa, sb):  # each process refuses one frame, so any scrape shows it
        s.send_raw("not json")
        s.expect("error")
    port = chat_stack.services["chat"].port
    names = ("webchat_chat_open_sockets", "webchat_chat_messages_in_total", "webchat_chat_messages_out_total",
             "webchat_chat_delivery_seconds_bucket", 'webchat_chat_frames_refused_total{reason="bad_json"}')
    # A scrape reaches one of the two processes (each sums its own workers).
    for _ in range(10):
        text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text  # as the cluster scrapes
        if all(n in text for n in names):
            break
    else:
        raise AssertionError("chat metrics missing: " + ", ".join(n for n in names if n not in text))
    assert requests.get(chat_stack.url + "/metrics", timeout=5).status_code == 404
    sa.close()
    sb.close()


def test_joining_a_room_from_one_socket_brings_the_others_on_other_processes(chat_stack):
    alice, bob = person(chat_stack), person(chat_stack)
    room = "tabs" + uuid.uuid4().hex[:6]
    b1 = bob.connect()
    b2 = bob.connect_not_on(b1.node)  # bob's second tab, on the other process
    sa = alice.connect()
    sa.send(type="join", room=room)
    sa.expect("room", room=room)
    b1.send(type="join", room=room)
    b1.expect("room", room=room, action="join")
    b2.expect("room", room=room, action="join")  # told, and following
    sa.send(room=room, data="both tabs")
    for s in (b1, b2):
        assert s.expect("message", room=room)["data"] == "both tabs"
    b2.send(type="leave", room=room)
    b1.expect("room", room=room, action="leave")
    sa.send(room=room, data="nobody of bob")
    assert not [f for s in (b1, b2) for f in s.collect(0.7) if f.get("type") == "message"]
    for s in (sa, b1, b2):
        s.close()


def test_redis_restart_is_survived(chat_stack):
    """Redis goes away and comes back empty (its data lost: wiped while it was down; a restart
    with its AOF keeps everything, tests/test_faults.py): open sockets of sessions that no
    longer exist are closed, and chat works again by itself."""
    alice = person(chat_stack)
    s = alice.connect()
    chat_stack.redis.stop()
    try:
        chat_stack.redis.wipe()
        time.sleep(1.5)
    finally:
        chat_stack.redis.start()
    closed = s.expect_close(timeout=15)
    assert closed.code in (1008, 1011)
    # everything again, across both processes (scripts reloaded, pub/sub resubscribed)
    carol, dave = Person(chat_stack), Person(chat_stack)
    deadline = time.monotonic() + 20
    while True:
        try:
            sc, sd = two_nodes(carol, dave)
            break
        except (websocket.WebSocketException, Closed, TimeoutError, OSError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    sc.send(receiver=dave.name, data="after the restart")
    assert sd.expect("message", timeout=10)["data"] == "after the restart"
    sc.close()
    sd.close()


def test_a_shared_file_is_readable_by_the_conversation_only(chat_stack):
    alice, bob, carol, dave = (person(chat_stack) for _ in range(4))
    up = alice.browser.post("/media/", files={"file": ("cat.png", tiny_png(1, 1))},
                            headers={"X-CSRF-Token": alice.browser.me()["csrf_token"], "Accept": "application/json"})
    assert up.status_code == 201, up.text
    name = up.json()["name"]
    get = lambda p: p.browser.http.get(chat_stack.url + "/media/" + name, timeout=5)  # noqa: E731
    assert get(bob).status_code == 404, "not shared yet"
    sa, sb, sc = alice.connect(), bob.connect(), carol.connect()
    sa.send(receiver=bob.name, data="look", media=name, cid="m")
    sa.expect("ack", cid="m")
    got = sb.expect("message")
    assert got["media"] == name and got["data"] == "look"
    shown = get(bob)
    assert shown.status_code == 200 and shown.content == tiny_png(1, 1)
    assert get(carol).status_code == 404
    # Only the owner may share it: carol cannot hand alice's file to herself or anyone.
    sc.send(receiver=carol.name, data="mine now", media=name, cid="x")
    assert sc.expect("error", cid="x")["code"] == "bad_media"
    assert get(carol).status_code == 404
    # In a named room: its members at the time can read it; not in the default room.
    room = "pics" + uuid.uuid4().hex[:6]
    for s in (sa, sc):
        s.send(type="join", room=room)
        s.expect("room", room=room)
    sa.send(room=room, data="for the room", media=name, cid="r")
    sc.expect("message", room=room)
    assert get(carol).status_code == 200
    assert get(dave).status_code == 404
    sa.send(room=sa.hello["default_room"], data="everyone?", media=name, cid="l")
    assert sa.expect("error", cid="l")["code"] == "bad_media"
    sa.send(receiver=bob.name, data="x", media="../../etc/passwd", cid="t")
    assert sa.expect("error", cid="t")["code"] == "bad_media"
    for s in (sa, sb, sc):
        s.close()
