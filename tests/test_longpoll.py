"""Chat without WebSockets: the long-poll transport (``GET /chat/api/events``, ``POST
/chat/api/messages``) through the gateway, across two chat processes (the gateway spreads the
polls of one tab over both), beside sockets; and its bad input.

The test stack polls for at most CHAT_POLL_TIMEOUT=3 s and keeps a client CHAT_POLL_GRACE=2 s
after its last poll."""
import http.client
import json
import os
import signal
import subprocess
import threading
import time
import uuid
from urllib.parse import urlencode, urlsplit

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from support.chat import Poller, history, holders, person, wait_online
from webchat_testing import wait_until


def events(who, **params):
    return who.browser.get("/chat/api/events", params=params, headers={"Accept": "application/json"})


def test_a_poll_sends_and_receives_like_a_socket(chat_stack):
    alice, bob = person(chat_stack), person(chat_stack)
    pa = Poller(alice)
    first = pa.poll()
    assert first[0]["type"] == "hello" and first[0]["user"] == alice.name
    assert first[0]["limits"]["max_frame"] == 8192
    assert first[-1]["type"] == "sync"
    sb = bob.connect()
    (ack,) = pa.send(type="message", receiver=bob.name, data="over http", cid="m1")
    assert ack["type"] == "ack" and ack["cid"] == "m1" and ack["delivered"] is True
    got = sb.expect("message", cid="m1")
    assert got["sender"] == alice.name and got["data"] == "over http"  # (bob's copy: his own id)
    sb.send(receiver=alice.name, data="over the socket", cid="b1")
    sb.expect("ack", cid="b1")
    msg = pa.until("message", cid="b1")
    assert msg["sender"] == bob.name and pa.last_id == msg["id"]
    assert pa.send(type="ping", cid="p") == [{"type": "pong", "cid": "p"}]
    # A message sent from a tab is stored like any other (it also names the tab): in history,
    # counted unread, editable.
    again = pa.send(type="message", receiver=bob.name, data="once more", cid="m2")[0]
    hist = history(alice, **{"with": bob.name})
    assert [m["id"] for m in hist.json()["messages"]] == [ack["id"], msg["id"], again["id"]]
    listing = bob.browser.get("/chat/api/conversations", headers={"Accept": "application/json"}).json()
    assert [c["unread"] for c in listing["conversations"] if c.get("with") == alice.name] == [1]
    (edited,) = pa.send(type="edit", **{"with": bob.name}, target=ack["id"], data="edited over http", cid="e1")
    assert edited["type"] == "ack" and edited["target"] == ack["id"]
    assert sb.expect("edit", target=got["id"])["message"]["data"] == "edited over http"


def test_an_empty_poll_waits_then_answers_its_last_id(chat_stack):
    alice = person(chat_stack)
    pa = Poller(alice)
    pa.poll()
    t0 = time.monotonic()
    assert pa.poll() == []
    assert 2.5 < time.monotonic() - t0 < 6
    res = events(alice, poll=pa.pid, **pa.positions())
    assert res.json()["last_id"] == pa.last_id and res.json()["rooms"] == pa.rooms


def node_pid(node):
    """The process id in a chat node's id (``<host>-<pid>-<random>``)."""
    return int(node.rsplit("-", 2)[1])


def test_a_tab_picked_up_by_another_process_loses_and_doubles_nothing(chat_stack, r):
    """Bob's socket sends while Alice's tab polls; the process holding her tab's client is
    killed (-9), and her next polls are picked up by another process from her last id: every
    message once, in order, one hello, and the users she watches still watched."""
    alice, bob = person(chat_stack), person(chat_stack)
    pa = Poller(alice)
    first = pa.poll()[0]["node"]
    sb = bob.connect_not_on(first)
    pa.send(type="watch", users=[bob.name], cid="w")
    pa.until("watching", cid="w")
    acked = []

    def send(n):
        for i in range(n):
            sb.send(receiver=alice.name, data=f"n{len(acked)}", cid=f"n{len(acked)}")
            acked.append(sb.expect("ack", cid=f"n{len(acked)}")["cid"])

    def poll_until_all():
        while len([f for f in pa.frames if f["type"] == "message"]) < len(acked):
            pa.poll(ok=(200, 502))  # (502: the poll that waited on the killed process)

    send(10)
    poll_until_all()
    os.kill(node_pid(first), signal.SIGKILL)
    send(10)
    poll_until_all()
    got = [f for f in pa.frames if f["type"] == "message"]
    assert [f["cid"] for f in got] == acked
    ids = [f["id"] for f in got]
    assert sorted(ids, key=lambda i: tuple(map(int, i.split("-")))) == ids and len(set(ids)) == len(ids)
    assert [f["type"] for f in pa.frames].count("hello") == 1
    assert holders(r, alice.name) - {first}, "another process holds her tab now"
    sb.close()
    told(pa, bob.name, online=False, timeout=15)
    wait_until(lambda: all(_workers(p.pid) for p in chat_stack.services["chat"].procs), timeout=15,
               what="a replacement worker")


def _workers(master_pid):
    return subprocess.run(["pgrep", "-P", str(master_pid)], capture_output=True, text=True).stdout.split()


def test_what_a_tab_was_queued_without_an_id_follows_it_to_another_process(chat_stack, r):
    """Bob reads Alice's messages (a ``read`` frame, no id: a replay cannot give it) while her
    tab is between two polls; when her next poll reaches the other process, the first hands
    the frame over.  (Her polls go straight to the chat service's port, each on a new
    connection, so they reach either process.)"""
    alice, bob = person(chat_stack), person(chat_stack)
    sb = bob.connect()
    pa = Poller(alice, direct=f"http://127.0.0.1:{chat_stack.services['chat'].port}")
    pa.poll()
    moved = 0
    for attempt in range(30):
        before = holders(r, alice.name)
        ack = pa.send(type="message", receiver=bob.name, data=f"read me {attempt}", cid=f"r{attempt}")[0]
        got = sb.expect("message", cid=f"r{attempt}")  # (in bob's ids; alice is told in hers)
        sb.send(type="read", **{"with": alice.name}, up_to=got["id"], cid=f"read{attempt}")
        sb.expect("read", cid=f"read{attempt}")
        time.sleep(0.1)  # the read frame is queued on her tab's process
        assert pa.until("read", up_to=ack["id"], timeout=5)["user"] == bob.name
        after = holders(r, alice.name)
        moved += bool(after - before)
        if moved >= 3:
            break
    assert moved >= 3, "her polls never changed process"
    assert [f["type"] for f in pa.frames].count("hello") == 1


def test_a_tab_in_rooms_moving_between_processes_gets_each_room_message_once(chat_stack, r):
    """A tab in the default room and a named one polls both processes (each poll on a new
    connection to the chat service's port): each process that picks it up resumes every room
    from the positions the last answer named, so each room message comes once, in order, and
    no room's older history comes again."""
    alice, bob = person(chat_stack), person(chat_stack)
    room = "lp" + uuid.uuid4().hex[:8]
    sb = bob.connect()
    sb.send(type="join", room=room, cid="bj")
    sb.expect("room", cid="bj")
    pa = Poller(alice, direct=f"http://127.0.0.1:{chat_stack.services['chat'].port}")
    hello = pa.poll()[0]
    pa.send(type="join", room=room, cid="j")
    pa.until("room", cid="j")
    acked, moved = [], 0
    for i in range(40):
        before = holders(r, alice.name)
        sb.send(room=room, data=f"r{i}", cid=f"r{i}")
        acked.append(sb.expect("ack", cid=f"r{i}")["id"])
        while not any(f.get("cid") == f"r{i}" for f in pa.frames):
            pa.poll()
        moved += bool(holders(r, alice.name) - before)
        if moved >= 3:
            break
    assert moved >= 3, "her polls never changed process"
    got = [f for f in pa.frames if f["type"] == "message"]
    assert [f["id"] for f in got] == acked and {f["room"] for f in got} == {room}
    assert [f["type"] for f in pa.frames].count("hello") == 1
    assert set(pa.rooms) == {hello["default_room"], room} and pa.rooms[room] == acked[-1]


def test_a_lost_answer_is_sent_again_from_the_last_id_the_tab_saw(chat_stack):
    alice, bob = person(chat_stack), person(chat_stack)
    pa = Poller(alice)
    pa.poll()
    sb = bob.connect()
    ids = []
    for i in range(6):
        sb.send(receiver=alice.name, data=f"x{i}", cid=f"x{i}")
        sb.expect("ack", cid=f"x{i}")
    got = []
    while len(got) < 6:
        got += [f for f in pa.poll() if f["type"] == "message"]
    assert [f["cid"] for f in got] == [f"x{i}" for i in range(6)]
    ids = [f["id"] for f in got]  # (in alice's copy)
    # The answer with the last three is "lost": the tab asks again from the third.
    again = []
    while len(again) < 3:
        again += [f for f in pa.poll(last_id=ids[2]) if f["type"] != "watching"]
        pa.last_id = ids[2] if not again else pa.last_id
    assert [f["id"] for f in again] == ids[3:]
    assert all(f["type"] == "message" for f in again)


def test_the_sender_s_other_tabs_get_the_message_and_the_sending_tab_its_ack(chat_stack):
    alice, bob = person(chat_stack), person(chat_stack)
    pa, other = Poller(alice), Poller(alice)
    pa.poll()
    other.poll()
    other_before = other.last_id
    sa = alice.connect()
    ack = pa.send(type="message", receiver=bob.name, data="from one tab", cid="t1")[0]
    assert sa.expect("message", cid="t1")["id"] == ack["id"]
    assert other.until("message", cid="t1")["id"] == ack["id"]
    # Live, the sending tab is not sent its own message, nor when its next poll is picked up
    # (here after the 2 s grace: a new client, which replays from the tab's last id).
    time.sleep(2.5)
    pa.poll()
    assert not [f for f in pa.frames if f["type"] == "message"]
    # Its other tab, picked up the same way, is sent it again.
    other.poll(last_id=other_before)
    assert [f["id"] for f in other.frames if f["type"] == "message"] == [ack["id"]]


def test_watch_join_and_presence_through_polls(chat_stack, r):
    alice, bob = person(chat_stack), person(chat_stack)
    pa = Poller(alice)
    pa.poll()
    assert pa.send(type="watch", users=[bob.name], cid="w") == []
    watching = pa.until("watching", cid="w")
    assert watching["offline"] == [bob.name] and watching["online"] == []
    sb = bob.connect()
    told(pa, bob.name, online=True)
    room = "lp" + alice.name[-6:]
    pa.send(type="join", room=room, cid="j")
    assert pa.until("room", cid="j")["action"] == "join"
    sb.send(type="join", room=room, cid="bj")
    sb.expect("room", cid="bj")
    sb.send(room=room, data="to the room", cid="r1")
    rid = sb.expect("ack", cid="r1")["id"]
    assert pa.until("message", cid="r1")["id"] == rid
    # Polls picked up by either process keep the watch: Bob's leaving is heard.
    for _ in range(4):
        pa.poll()
        sb.collect(0.01)  # (websocket-client answers the server's pings only while it reads)
    assert holders(r, bob.name)  # (still connected: the offline is his close's)
    sb.close()
    told(pa, bob.name, online=False, timeout=15)


def told(tab, user, online, timeout=10):
    """Poll until what ``tab`` was told last of ``user`` is ``online``: a ``presence`` change,
    or a ``watching`` answer (a tab picked up by another process is told the state whole)."""
    deadline = time.monotonic() + timeout
    state = None
    while True:
        for f in tab.frames:
            if f.get("type") == "presence" and f["user"] == user:
                state = f["online"]
            elif f.get("type") == "watching" and user in f["online"] + f["offline"]:
                state = user in f["online"]
        tab.frames.clear()
        if state is online:
            return
        assert time.monotonic() < deadline, f"{user} never {'online' if online else 'offline'} for the tab"
        tab.poll()


def test_a_tab_that_stops_polling_goes_offline(chat_stack):
    alice, bob = person(chat_stack), person(chat_stack)
    sb = bob.connect()
    sb.send(type="watch", users=[alice.name], cid="w")
    sb.expect("watching", cid="w")
    pa = Poller(alice)
    pa.poll()
    wait_online(sb, alice.name, online=True)
    # A poll left waiting, then its connection closed (the browser went away).
    u = urlsplit(chat_stack.url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=5)
    conn.request("GET", "/chat/api/events?" + urlencode({"poll": pa.pid, **pa.positions()}),
                 headers={"Cookie": alice.cookie, "Accept": "application/json"})
    time.sleep(0.5)
    t0 = time.monotonic()
    conn.sock.close()
    wait_online(sb, alice.name, online=False, timeout=10)
    # The closed connection is noticed at once: offline after the grace (2 s) and a presence
    # batch (0.25 s), not after the rest of the poll (2.5 s) and then the grace (4.75 s).
    assert time.monotonic() - t0 < 4


def test_one_poll_waits_per_tab_the_newer_takes_over(chat_stack):
    alice = person(chat_stack)
    pa = Poller(alice)
    pa.poll()
    answers = []
    older = threading.Thread(target=lambda: answers.append(events(alice, poll=pa.pid, **pa.positions()).json()))
    older.start()
    time.sleep(0.5)
    res = events(alice, poll=pa.pid, **pa.positions())
    older.join()
    assert res.status_code == 200
    # The older answers at once, empty: on the same process it was superseded, on the other
    # its client was taken over (a close frame tells it not to wait there again).
    assert answers and [f["type"] for f in answers[0]["frames"]] in ([], ["close"])
    assert answers[0]["last_id"] == pa.last_id and answers[0]["rooms"] == pa.rooms


def test_logging_out_ends_the_tab_s_poll(chat_stack):
    alice = person(chat_stack)
    pa = Poller(alice)
    pa.poll()
    answers = []
    waiting = threading.Thread(target=lambda: answers.append(events(alice, poll=pa.pid, **pa.positions())))
    waiting.start()
    time.sleep(0.5)
    assert alice.browser.logout().status_code == 303
    waiting.join()
    res = answers[0]
    if res.status_code == 200:  # the poll was waiting on a process that heard of the logout
        assert res.json()["frames"][-1] == {"type": "close", "code": 1008, "reason": "session ended: log in again"}
    else:
        assert res.status_code == 401
    assert events(alice, poll=pa.pid).status_code == 401


# ---- bad input and abuse --------------------------------------------------------------------

def test_polls_and_posts_need_a_session(chat_stack):
    stranger = person(chat_stack)
    stranger.browser.logout()
    assert events(stranger, poll="abcdefgh12").status_code == 401
    res = stranger.browser.post("/chat/api/messages?poll=abcdefgh12", json={"receiver": "x", "data": "y"},
                                headers={"Accept": "application/json"})
    assert res.status_code in (400, 401)  # (no session: no CSRF token either)


def test_a_post_without_the_csrf_token_is_refused_and_nothing_is_sent(chat_stack):
    alice, bob = person(chat_stack), person(chat_stack)
    pa = Poller(alice)
    sb = bob.connect()
    for csrf in (None, "forged-token"):
        res = pa.post({"receiver": bob.name, "data": "forged", "cid": "f"}, csrf=csrf)
        assert res.status_code == 400 and "security token" in res.json()["error"]
    with pytest.raises(TimeoutError):
        sb.expect("message", timeout=1)


@pytest.mark.parametrize("params, status", [
    ({}, 400),
    ({"poll": "short"}, 400),
    ({"poll": "x" * 65}, 400),
    ({"poll": "bad poll id!"}, 400),
    ({"poll": "abcdefgh12", "last_id": "12"}, 400),
    ({"poll": "abcdefgh12", "last_id": "1-2-3"}, 400),
])
def test_bad_poll_arguments_are_refused(chat_stack, params, status):
    alice = person(chat_stack)
    res = events(alice, **params)
    assert res.status_code == status and res.json()["error"]


@pytest.mark.parametrize("body, status, code", [
    (b"not json", 400, "bad_json"),
    (b"[1, 2]", 400, "bad_frame"),
    (b'{"receiver": "nobody-here-1", "data": "x"}', 404, "unknown_receiver"),
    (b'{"room": "never-joined", "data": "x"}', 403, "not_member"),
    (b'{"type": "teleport"}', 400, "bad_frame"),
    (b'{"data": "\\ud800", "receiver": "x"}', 400, "bad_unicode"),
    (b'{"type": "edit", "with": "x", "target": "1-1", "data": "y"}', 404, None),
])
def test_bad_frames_over_http_get_their_error(chat_stack, body, status, code):
    alice = person(chat_stack)
    res = Poller(alice).post(body)
    assert res.status_code == status, res.text
    answer = res.json()
    assert answer["error"] and answer["frames"][-1]["type"] == "error"
    if code:
        assert answer["code"] == code


def test_changing_someone_else_s_message_over_http_is_403(chat_stack):
    alice, bob = person(chat_stack), person(chat_stack)
    pa, pb = Poller(alice), Poller(bob)
    pa.send(type="message", receiver=bob.name, data="mine", cid="a")
    [theirs] = history(bob, **{"with": alice.name}).json()["messages"]  # (the message in bob's copy)
    for kind in ("edit", "delete"):
        res = pb.post({"type": kind, "with": alice.name, "target": theirs["id"], "data": "not yours", "cid": kind})
        assert res.status_code == 403 and res.json()["code"] == "not_author"
    hist = history(alice, **{"with": bob.name})
    assert [m["data"] for m in hist.json()["messages"]] == ["mine"]


def test_oversized_and_non_utf8_bodies_are_refused(chat_stack):
    alice = person(chat_stack)
    pa = Poller(alice)
    big = json.dumps({"receiver": "x", "data": "y" * 9000})
    assert pa.post(big).status_code == 413
    res = pa.post(b'{"receiver": "x", "data": "\xff\xfe"}')
    assert res.status_code == 400 and "UTF-8" in res.json()["error"]
    assert pa.post(b'{"type": "ping"}', pid="bad id").status_code == 400


def test_posting_too_fast_is_429_and_costs_nobody_else(chat_stack):
    alice, bob = person(chat_stack), person(chat_stack)
    pa, pb = Poller(alice), Poller(bob)
    codes = [pa.post({"type": "ping", "cid": i}).status_code for i in range(45)]
    assert codes.count(429) >= 5 and codes[0] == 200
    refused = pa.post({"type": "ping"})
    if refused.status_code == 429:
        assert refused.json()["code"] == "rate_limited"
    assert pb.post({"type": "ping", "cid": "b"}).status_code == 200


def test_too_many_tabs_polling_is_429(chat_stack):
    alice = person(chat_stack)
    tabs = [Poller(alice) for _ in range(8)]
    for t in tabs:
        t.poll()
    res = events(alice, poll="one-tab-too-many")
    assert res.status_code == 429 and "at most 8" in res.json()["error"]


def test_a_poll_id_names_a_tab_of_its_own_user_only(chat_stack):
    """Mallory polling with Alice's poll id gets her own tab, nothing of Alice's."""
    alice, bob, mallory = person(chat_stack), person(chat_stack), person(chat_stack)
    pa = Poller(alice)
    pa.poll()
    sb = bob.connect()
    sb.send(receiver=alice.name, data="for alice only", cid="secret")
    sb.expect("ack", cid="secret")
    pm = Poller(mallory, pid=pa.pid)
    frames = pm.poll()
    assert frames[0]["type"] == "hello" and frames[0]["user"] == mallory.name
    pm.poll()
    assert not [f for f in pm.frames if f.get("data") == "for alice only"]
    assert pa.until("message", cid="secret")["data"] == "for alice only"


@pytest.fixture(scope="module")
def posting_pair(chat_stack):
    """Mallory's tab posting anything, and Bob's socket, who must not notice."""
    mallory, bob = person(chat_stack), person(chat_stack)
    tab = Poller(mallory)
    tab.poll()
    yield tab, bob.connect(), bob.name


@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
          deadline=None)
@given(body=st.one_of(
    st.binary(max_size=200),
    st.text(max_size=200).map(str.encode),
    st.dictionaries(st.sampled_from(["type", "data", "cid", "receiver", "room", "users", "media", "with", "target",
                                     "up_to"]),
                    st.one_of(st.text(max_size=20), st.integers(), st.none(), st.lists(st.text(max_size=5), max_size=3),
                              st.sampled_from(["message", "read", "typing", "edit", "delete", "join", "leave", "watch",
                                               "lobby", "1-1", "0-0"])),
                    max_size=5).map(lambda d: json.dumps(d).encode())))
def test_any_body_posted_gets_a_defined_answer_through_the_gateway(posting_pair, body):
    """Any bytes, any text, any JSON object made of the frame's fields: a JSON answer, 200 or a
    4xx naming the error (never a 5xx), and the bystander's socket is undisturbed."""
    tab, sb, bob = posting_pair
    time.sleep(0.06)  # below the test stack's rate limit (20 frames/s per user)
    res = tab.post(body)
    answer = res.json()
    assert res.status_code == 200 or 400 <= res.status_code < 500, (res.status_code, answer)
    for f in answer.get("frames", []):
        assert f["type"] in {"ack", "error", "system", "pong"}, f
        if f["type"] == "error":
            assert f["code"] and f["error"] and f["code"] != "server_error"
    if res.status_code != 200:
        assert answer["error"]
    sb.send(type="ping", cid="bystander")
    assert sb.expect("pong", cid="bystander")
