"""Conversations that last and follow the person, through the gateway across two chat
processes: history pages, every socket of the sender in sync, read markers, typing, edit and
delete, the conversation list, and the bad input of each."""
import json
import time

import pytest

from support.chat import history, person, two_nodes
from webchat_common import keys


def conversations(who):
    res = who.browser.get("/chat/api/conversations", headers={"Accept": "application/json"})
    assert res.status_code == 200, res.text
    return res.json()["conversations"]


def send(sock, cid, **frame):
    """Send a message and return its ack."""
    sock.send(cid=cid, **frame)
    return sock.expect("ack", cid=cid)


def ack_and(sock, kind, **match):
    """The ``ack`` of what ``sock`` just sent and the ``kind`` frame it also gets (its own
    message, an edit), in either order: the ack comes from the socket's process, the other
    frame through Redis."""
    got = {}
    while len(got) < 2:
        f = sock.recv()
        if f["type"] == "ack" and f.get("cid") == match.get("cid", f.get("cid")):
            got["ack"] = f
        elif f["type"] == kind and all(f.get(k) == v for k, v in match.items() if k != "cid" or kind == "message"):
            got[kind] = f
    return got["ack"], got[kind]


def all_pages(who, limit, **where):
    """Every kept message of a conversation, paging back from the newest."""
    got, before, pages = [], None, 0
    while True:
        params = dict(where, limit=limit)
        if before:
            params["before"] = before
        res = history(who, **params)
        assert res.status_code == 200, res.text
        body = res.json()
        got = body["messages"] + got
        pages += 1
        if not body["more"]:
            return got, pages
        before = body["messages"][0]["id"]


def test_history_pages_back_with_no_gap_and_no_duplicate(chat_stack):
    alice, bob = person(chat_stack), person(chat_stack)
    sa, sb = two_nodes(alice, bob)
    acks = []
    for i in range(23):
        if i % 3 == 2:
            acks.append(send(sb, f"b{i}", receiver=alice.name, data=f"from bob {i}"))
        else:
            acks.append(send(sa, f"a{i}", receiver=bob.name, data=f"from alice {i}"))
    final = send(sa, "fin", receiver=bob.name, data="final")
    frame = sb.expect("message", cid="fin")
    acks.append(final)
    got, pages = all_pages(alice, 5, **{"with": bob.name})
    assert [m["cid"] for m in got] == [a["cid"] for a in acks], "every message once, oldest first, both directions"
    assert pages == 5
    # alice's copy: her messages with the ids of her acks, bob's with ids of her own clock
    assert [m["id"] for m in got if m["sender"] == alice.name] == [a["id"] for a in acks if a["cid"][0] != "b"]
    ids = [m["id"] for m in got]
    assert len(set(ids)) == len(ids) and sorted(ids, key=lambda i: tuple(map(int, i.split("-")))) == ids
    # the same shape as the message frame, and the same messages from the other side, in his ids
    theirs, _ = all_pages(bob, 7, **{"with": alice.name.upper()})
    assert theirs[-1] == frame
    strip = [{k: v for k, v in m.items() if k not in ("id", "ts")} for m in got]
    assert [{k: v for k, v in m.items() if k not in ("id", "ts")} for m in theirs] == strip
    # the newest page by default, and the read markers of both people (sending moves one's own)
    body = history(alice, **{"with": bob.name}).json()
    assert body["more"] is False and len(body["messages"]) == 24 and body["with"] == bob.name
    # bob's marker is at his last message (sending moved it), told in alice's ids: the last of
    # hers before it
    last_from_bob = max(i for i, a in enumerate(acks) if a["receiver"] == alice.name)
    read_by_bob = [a for a in acks[:last_from_bob] if a["receiver"] == bob.name][-1]["id"]
    assert body["read"] == {alice.name: final["id"], bob.name: read_by_bob}
    # a message that arrives while paging does not shift the pages (they are cut by id)
    first = history(alice, limit=10, **{"with": bob.name}).json()
    send(sb, "late", receiver=alice.name, data="late")
    second = history(alice, limit=10, before=first["messages"][0]["id"], **{"with": bob.name}).json()
    assert [m["cid"] for m in second["messages"] + first["messages"]] == [a["cid"] for a in acks[-20:]]


def test_history_is_only_for_the_people_of_the_conversation(chat_stack):
    alice, bob, carol = person(chat_stack), person(chat_stack), person(chat_stack)
    sa = alice.connect()
    send(sa, "x", receiver=bob.name, data="between us")
    # carol asking for alice gets her own (empty) conversation with alice, never alice and bob's
    body = history(carol, **{"with": alice.name}).json()
    assert body["messages"] == [] and body["more"] is False
    # a room needs membership; the default room is everyone's
    sa.send(type="join", room="secret-room", cid="j")
    sa.expect("room", cid="j")
    send(sa, "r", room="secret-room", data="members only")
    assert history(carol, room="secret-room").status_code == 403
    assert [m["data"] for m in history(alice, room="secret-room").json()["messages"]] == ["members only"]
    assert history(carol, room="lobby").status_code == 200
    sa.send(type="leave", room="secret-room", cid="l")
    sa.expect("room", cid="l")
    assert history(alice, room="secret-room").status_code == 403, "a member who left reads no more"
    # bad input: each a clear 4xx with a JSON error
    for params, status in [
        ({"with": "nobody-" + alice.name[:8]}, 404), ({}, 400), ({"with": bob.name, "room": "lobby"}, 400),
        ({"with": "bad name!"}, 404), ({"room": "bad room!"}, 400), ({"with": bob.name, "before": "12"}, 400),
        ({"with": bob.name, "before": "1-2-3"}, 400), ({"with": bob.name, "limit": "0"}, 400),
        ({"with": bob.name, "limit": "101"}, 400), ({"with": bob.name, "limit": "²"}, 400),
        ({"with": bob.name, "limit": "9" * 60}, 400),
    ]:
        res = history(alice, **params)
        assert res.status_code == status, (params, res.status_code, res.text)
        assert "error" in res.json()
    visitor = chat_stack.url + "/chat/api/history?with=" + bob.name
    import requests
    assert requests.get(visitor, timeout=5).status_code == 401
    assert requests.get(chat_stack.url + "/chat/api/conversations", timeout=5).status_code == 401


def test_every_socket_of_the_sender_gets_its_message_and_resumes_exactly(chat_stack):
    alice, bob = person(chat_stack), person(chat_stack)
    a1, sb = two_nodes(alice, bob)
    a2 = alice.connect_not_on(a1.node)
    a3 = alice.connect_on(a1.node)  # another of alice's sockets on the sending one's process
    ack = send(a1, "m1", receiver=bob.name, data="to every device")
    other = a2.expect("message", id=ack["id"])
    same_node = a3.expect("message", id=ack["id"])
    theirs = sb.expect("message", cid="m1")  # (bob's copy: an id of his own clock)
    assert other == same_node and other["cid"] == "m1" and other["sender"] == alice.name
    assert {k: v for k, v in theirs.items() if k not in ("id", "ts")} == {
        k: v for k, v in other.items() if k not in ("id", "ts")}
    # the sending socket has the ack (same id), not a second copy
    assert not [f for f in a1.collect(0.5) if f.get("type") == "message"]
    a3.close()
    # a2 goes away; two messages later it comes back with its last id and gets exactly those
    assert a2.last_id == other["id"]
    a2.close()
    send(a1, "m2", receiver=bob.name, data="two")
    send(sb, "m3", receiver=alice.name, data="three")
    m3 = a1.expect("message", cid="m3")["id"]  # (in alice's ids)
    back = alice.connect(**a2.positions(), sync=False)
    got = [back.expect("message")["cid"] for _ in range(2)]
    sync = back.expect("sync")
    assert got == ["m2", "m3"] and sync["replayed"] == 2 and sync["last_id"] == m3
    assert not [f for f in back.collect(0.5) if f.get("type") == "message"], "nothing twice"


def test_read_markers_move_forward_and_reach_both_people(chat_stack):
    alice, bob = person(chat_stack), person(chat_stack)
    a1, sb = two_nodes(alice, bob)
    a2 = alice.connect_not_on(a1.node)
    theirs = [send(sb, f"b{i}", receiver=alice.name, data=f"m{i}")["id"] for i in range(3)]
    ids = [a1.expect("message", cid=f"b{i}")["id"] for i in range(3)]  # the same, in alice's copy
    [conv] = [c for c in conversations(alice) if c.get("with") == bob.name]
    assert conv["unread"] == 3 and conv["read_up_to"] is None and conv["last"]["id"] == ids[-1]
    a1.send(type="read", cid="r1", up_to=ids[1], **{"with": bob.name})
    mine = a1.expect("read", cid="r1")
    assert mine == {"type": "read", "user": alice.name, "with": bob.name, "up_to": ids[1], "unread": 1, "cid": "r1"}
    assert a2.expect("read", up_to=ids[1])["unread"] == 1, "the reader's other sockets update their counts"
    told = sb.expect("read", user=alice.name)
    assert told["up_to"] == theirs[1] and "unread" not in told, "bob is told in his own ids"
    # stored: the count survives a reload and follows alice to any device
    [conv] = [c for c in conversations(alice) if c.get("with") == bob.name]
    assert conv["unread"] == 1 and conv["read_up_to"] == ids[1]
    assert history(bob, **{"with": alice.name}).json()["read"][alice.name] == theirs[1]
    assert history(alice, **{"with": bob.name}).json()["read"] == {alice.name: ids[1], bob.name: None}
    # never back: an older id answers the marker as it is, to this socket only
    a1.send(type="read", cid="r2", up_to=ids[0], **{"with": bob.name})
    assert a1.expect("read", cid="r2")["up_to"] == ids[1]
    assert not [f for f in sb.collect(0.5) if f.get("type") == "read"]
    # bad input
    carol = person(chat_stack)
    sc = carol.connect()
    other = send(sc, "c", receiver=bob.name, data="carol's")["id"]
    for frame, code in [
        ({"up_to": other, "with": bob.name}, "unknown_message"),      # another conversation's message
        ({"up_to": "99-1", "with": bob.name}, "unknown_message"),
        ({"up_to": 5, "with": bob.name}, "bad_frame"),
        ({"up_to": ids[2]}, "bad_frame"),
        ({"up_to": ids[2], "with": "nobody-" + bob.name[:8]}, "unknown_receiver"),
        ({"up_to": ids[2], "room": "not-joined"}, "not_member"),
        ({"up_to": ids[2], "room": ["lobby"]}, "bad_room"),
    ]:
        a1.send(type="read", cid="bad", **frame)
        assert a1.expect("error", cid="bad")["code"] == code, frame


def test_typing_is_passed_on_limited_and_not_stored(chat_stack):
    alice, bob, carol = person(chat_stack), person(chat_stack), person(chat_stack)
    sa, sb = two_nodes(alice, bob)
    sa.send(type="typing", **{"with": bob.name})
    got = sb.expect("typing")
    assert got["user"] == alice.name and got["with"] == alice.name and got["expires_in"] > 0
    sa.send(type="typing", cid="t2", **{"with": bob.name})
    assert sa.expect("error", cid="t2")["code"] == "too_fast"
    assert history(bob, **{"with": alice.name}).json()["messages"] == [], "typing is never stored"
    # a room: its members hear it (the typist's own sockets too, to ignore)
    sc = carol.connect()
    for s in (sa, sb, sc):
        s.send(type="join", room="typers", cid="j")
        s.expect("room", cid="j")
    sa.collect(2.1)  # (reading: the socket answers the server's pings meanwhile)
    sa.send(type="typing", room="typers")
    assert sb.expect("typing", room="typers")["user"] == alice.name
    assert sc.expect("typing", room="typers")["user"] == alice.name
    # above CHAT_TYPING_MAX_MEMBERS (3 in the tests) it is not sent
    dave = person(chat_stack)
    sd = dave.connect()
    sd.send(type="join", room="typers", cid="j")
    sd.expect("room", cid="j")
    sa.collect(2.1)  # (reading: the socket answers the server's pings meanwhile)
    sa.send(type="typing", room="typers")
    assert not [f for f in sb.collect(1.0) if f.get("type") == "typing"]
    sa.send(type="typing", cid="t3", room="elsewhere")
    assert sa.expect("error", cid="t3")["code"] == "not_member"


def test_edit_and_delete_reach_everyone_and_history(chat_stack):
    alice, bob = person(chat_stack), person(chat_stack)
    a1, sb = two_nodes(alice, bob)
    a2 = alice.connect_not_on(a1.node)
    ack = send(a1, "m", receiver=bob.name, data="helo")
    mid = ack["id"]
    bid = before_edit = sb.expect("message", cid="m")["id"]  # the message in bob's copy
    a1.send(type="edit", target=mid, data="hello", cid="e1", **{"with": bob.name})
    eack, ev = ack_and(a1, "edit", cid="e1", target=mid)
    assert eack["target"] == mid and eack["with"] == bob.name
    for s in (a1, a2):
        if s is not a1:
            ev = s.expect("edit", target=mid)
        assert ev["id"] == eack["id"] and ev["message"]["data"] == "hello" and ev["message"]["id"] == mid
        assert ev["message"]["edited"] >= ev["message"]["ts"]
    # bob's copy changes too, in his ids
    ev = sb.expect("edit", target=bid)
    assert ev["message"]["data"] == "hello" and ev["message"]["id"] == bid and ev["message"]["edited"] >= ev["message"]["ts"]
    [shown] = history(bob, **{"with": alice.name}).json()["messages"]
    assert shown["data"] == "hello" and shown["id"] == bid and "edited" in shown
    # only the author; nothing else changes
    sb.send(type="edit", target=bid, data="mine now", cid="x", **{"with": alice.name})
    assert sb.expect("error", cid="x")["code"] == "not_author"
    sb.send(type="delete", target=bid, cid="y", **{"with": alice.name})
    assert sb.expect("error", cid="y")["code"] == "not_author"
    # a socket that was away gets the change in order when it resumes
    late = bob.connect(last_id=before_edit, rooms=sb.rooms, sync=False)
    assert late.expect("edit", target=bid)["message"]["data"] == "hello"
    # delete: a tombstone everywhere
    a1.send(type="delete", target=mid, cid="d1", **{"with": bob.name})
    a1.expect("ack", cid="d1")
    gone = sb.expect("delete", target=bid)["message"]
    assert gone["deleted"] is True and "data" not in gone and gone["id"] == bid
    [shown] = history(alice, **{"with": bob.name}).json()["messages"]
    assert shown["deleted"] is True and "data" not in shown
    [conv] = [c for c in conversations(bob) if c.get("with") == alice.name]
    assert conv["last"]["deleted"] is True
    for frame, code in [
        ({"type": "edit", "target": mid, "data": "again"}, "deleted"),
        ({"type": "delete", "target": mid}, "deleted"),
        ({"type": "edit", "target": "1-1", "data": "x"}, "unknown_message"),
        ({"type": "edit", "target": eack["id"], "data": "x"}, "unknown_message"),   # a change is not a message
        ({"type": "edit", "target": mid, "data": ""}, "empty_data"),
        ({"type": "edit", "target": mid, "data": 5}, "bad_frame"),
        ({"type": "edit", "target": None, "data": "x"}, "bad_frame"),
    ]:
        a1.send(cid="bad", **frame, **{"with": bob.name})
        assert a1.expect("error", cid="bad")["code"] == code, frame
    # a message of another conversation cannot be reached through this one
    carol = person(chat_stack)
    other = send(a1, "c", receiver=carol.name, data="to carol")["id"]
    a1.send(type="edit", target=other, data="x", cid="o", **{"with": bob.name})
    assert a1.expect("error", cid="o")["code"] == "unknown_message"
    # too late: CHAT_EDIT_WINDOW is 4 s in the tests
    a1.collect(4.2)
    a1.send(type="edit", target=other, data="x", cid="late", **{"with": carol.name})
    assert a1.expect("error", cid="late")["code"] == "too_late"


def test_conversation_list_newest_first_with_rooms(chat_stack):
    alice, bob, carol = person(chat_stack), person(chat_stack), person(chat_stack)
    sa = alice.connect()
    sb, sc = bob.connect(), carol.connect()
    send(sb, "1", receiver=alice.name, data="from bob")
    sa.send(type="join", room="listed", cid="j")
    sa.expect("room", cid="j")
    send(sa, "2", room="listed", data="in the room")
    send(sc, "3", receiver=alice.name, data="from carol")
    listing = conversations(alice)
    where = [c.get("with") or c.get("room") for c in listing]
    assert where[:3] == [carol.name, "listed", bob.name]
    assert "lobby" in where, "the default room is listed too"
    by = {c.get("with") or c.get("room"): c for c in listing}
    assert by[carol.name]["unread"] == 1 and by["listed"]["unread"] == 0, "one's own message is read"
    assert by[bob.name]["last"]["data"] == "from bob"
    assert not [c for c in conversations(carol) if c.get("with") == bob.name], "only one's own conversations"


@pytest.mark.parametrize("frame", [{"type": "typing"}, {"type": "read", "up_to": "1-1"},
                                   {"type": "delete", "target": "1-1"}])
def test_new_frames_need_exactly_one_conversation(chat_stack, frame):
    alice = person(chat_stack)
    sa = alice.connect()
    sa.send(cid="q", **frame, **{"with": alice.name, "room": "lobby"})
    assert sa.expect("error", cid="q")["code"] == "bad_frame"


def test_room_members_are_listed_to_members_and_follow_joins_and_leaves(chat_stack):
    alice, bob, carol = person(chat_stack), person(chat_stack), person(chat_stack)
    sa, sb = two_nodes(alice, bob)
    room = "crew-" + alice.name[:8]
    for s in (sa, sb):
        s.send(type="join", room=room, cid="j")
        s.expect("room", cid="j")
    res = alice.browser.get("/chat/api/members", params={"room": room}, headers={"Accept": "application/json"})
    assert res.status_code == 200 and sorted(res.json()["members"]) == sorted([alice.name, bob.name])
    assert res.json()["more"] is False
    assert carol.browser.get("/chat/api/members", params={"room": room}).status_code == 403
    assert carol.browser.get("/chat/api/members").status_code == 400
    assert carol.browser.get("/chat/api/members", params={"room": "bad room"}).status_code == 400
    lobby = carol.browser.get("/chat/api/members", params={"room": "lobby"}, headers={"Accept": "application/json"})
    assert lobby.status_code == 200 and 0 < len(lobby.json()["members"]) <= 200, "everyone registered (the first 200)"
    # a join and a leave reach the members' sockets, on both processes
    sc = carol.connect()
    sc.send(type="join", room=room, cid="j")
    sc.expect("room", cid="j")
    for s in (sa, sb):
        got = s.expect("member", user=carol.name)
        assert got == {"type": "member", "action": "join", "room": room, "user": carol.name}
    sc.send(type="leave", room=room, cid="l")
    sc.expect("room", cid="l")
    assert sb.expect("member", user=carol.name, action="leave")["room"] == room


def test_an_edit_reaches_the_other_copy_only_as_that_message(chat_stack, r):
    """A message from before each person had a copy has the same id in both (the migration
    copied it, with ``p``: the id in the sender's copy); an edit of it changes both.  An entry
    of the other copy that merely has the same id (another clock's) is another message: it is
    left alone."""
    alice, bob, carol = person(chat_stack), person(chat_stack), person(chat_stack)
    mid = f"{int(time.time() * 1000)}-1"

    def plant(owner, other, sender, data, sent_as=None):
        frame = {"type": "message", "id": mid, "ts": int(mid.split("-")[0]), "sender": sender.name,
                 "receiver": (other if sender is owner else owner).name, "data": data}
        fields = {"f": json.dumps(frame)}
        if sent_as:
            fields["p"] = sent_as
        r.xadd(keys.chat_pm(owner.name, other.name), fields, id=mid)
        r.zadd(keys.chat_convs(owner.name), {other.name: int(mid.split("-")[0])})

    plant(alice, bob, alice, "old", sent_as=None)
    plant(bob, alice, alice, "old", sent_as=mid)       # (as the migration copies it)
    plant(alice, carol, alice, "to carol")
    plant(carol, alice, carol, "carol's own")          # same id, carol's message: no p
    sa = alice.connect()
    for other, text in ((bob, "old, edited"), (carol, "to carol, edited")):
        sa.send(type="edit", target=mid, data=text, cid=other.name, **{"with": other.name})
        assert sa.expect("ack", cid=other.name)["target"] == mid
    [theirs] = history(bob, **{"with": alice.name}).json()["messages"]
    assert theirs["data"] == "old, edited" and theirs["id"] == mid
    [hers] = history(carol, **{"with": alice.name}).json()["messages"]
    assert hers["data"] == "carol's own" and "edited" not in hers
    [mine] = history(alice, **{"with": carol.name}).json()["messages"]
    assert mine["data"] == "to carol, edited"
    sa.close()
