"""chat_service.migrate against a real Redis: one stream per private conversation becomes a copy
per person, with ids unchanged, once; the keys of before hash tags are renamed; and no chat
request is served before it."""
import functools
import json
import threading

import pytest
from hypothesis import given, strategies as st

from chat_service import migrate
from webchat_common import keys
from webchat_common.names import ROOM_NAME, USER_NAME
from webchat_testing.sessions import login_client


def frame(mid, sender, receiver, data):
    return json.dumps({"type": "message", "id": mid, "ts": int(mid.split("-")[0]), "sender": sender,
                       "receiver": receiver, "data": data})


def old_conversation(r):
    """What the version before wrote: alice and bob's stream, an edit, the global clock."""
    dm = keys.chat_dm_v1("alice", "bob")
    r.xadd(dm, {"f": frame("1000-1", "alice", "bob", "hi bob")}, id="1000-1")
    r.xadd(dm, {"f": frame("1000-2", "bob", "alice", "hi alice"), "o": "p.tab-of-bob"}, id="1000-2")
    edited = json.dumps({**json.loads(frame("1000-1", "alice", "bob", "hi, bob")), "edited": 1001})
    r.xadd(dm, {"f": json.dumps({"type": "edit", "id": "1001-3", "target": "1000-1", "message": json.loads(edited)}),
                "e": "1"}, id="1001-3")
    r.hset(keys.chat_edits(dm), "1000-1", edited)
    r.pexpire(dm, 3_600_000)
    r.hset(keys.CHAT_CLOCK, mapping={"ms": 1001, "seq": 3})
    for name in ("alice", "bob"):
        r.hset(keys.user(name), mapping={"name": name, "password": "x"})


def test_each_person_gets_a_copy_with_the_ids_unchanged(r):
    old_conversation(r)
    migrate.run(r)
    mine, theirs = keys.chat_pm("alice", "bob"), keys.chat_pm("bob", "alice")
    assert [e[0] for e in r.xrange(mine)] == [e[0] for e in r.xrange(theirs)] == ["1000-1", "1000-2", "1001-3"]
    # p (the id in the sender's copy) on what the other person sent; a tab's token on one's own
    assert [sorted(e[1]) for e in r.xrange(mine)] == [["f"], ["f", "p"], ["e", "f"]]
    assert r.xrange(mine)[1][1]["p"] == "1000-2"
    assert [sorted(e[1]) for e in r.xrange(theirs)] == [["f", "p"], ["f", "o"], ["e", "f"]]
    for copy in (mine, theirs):
        assert json.loads(r.hget(keys.chat_edits(copy), "1000-1"))["data"] == "hi, bob"
        assert 0 < r.pttl(copy) <= 3_600_000
    # each person's clock goes on above every migrated id
    for name in ("alice", "bob"):
        assert r.hgetall(keys.chat_user_clock(name)) == {"ms": "1001", "seq": "3"}
    assert r.smembers(migrate.DONE) == {"private-copies", "hash-tags"}
    # once: a second run changes nothing, and a stream written afterwards is not copied
    r.xadd(keys.chat_dm_v1("alice", "bob"), {"f": frame("1002-4", "alice", "bob", "late")}, id="1002-4")
    migrate.run(r)
    assert r.xlen(mine) == 3


def test_a_copy_cut_short_is_finished_not_doubled(r):
    old_conversation(r)
    r.xadd(keys.chat_pm("alice", "bob"), {"f": frame("1000-1", "alice", "bob", "hi bob")}, id="1000-1")
    migrate.private_copies(r)
    assert [e[0] for e in r.xrange(keys.chat_pm("alice", "bob"))] == ["1000-1", "1000-2", "1001-3"]


def test_one_process_migrates_while_the_others_wait(r):
    old_conversation(r)
    r.set(migrate.LOCK, "private-copies", ex=600)  # another process is at it
    with pytest.raises(migrate.Migrating):
        migrate.run(r, wait=0.3)
    done = threading.Event()
    waiter = threading.Thread(target=lambda: (migrate.run(r, wait=5), done.set()))
    waiter.start()
    assert not done.wait(0.3), "it waits for the lock's holder"
    migrate.private_copies(r)  # (the holder finishes)
    r.sadd(migrate.DONE, "private-copies")
    r.delete(migrate.LOCK)
    waiter.join(5)
    assert done.is_set() and r.xlen(keys.chat_pm("bob", "alice")) == 3


def test_no_chat_request_is_served_from_the_old_layout(app, r):
    old_conversation(r)
    client = app.test_client()
    login_client(client, r, "bob")
    body = client.get("/chat/api/history", query_string={"with": "alice"}).get_json()
    assert [m["data"] for m in body["messages"]] == ["hi, bob", "hi alice"]
    assert body["read"] == {"bob": None, "alice": None}
    # Redis busy with another process's migration for longer than a request may wait: 503
    app.extensions.pop("chat_migrated")
    r.srem(migrate.DONE, "private-copies")
    r.set(migrate.LOCK, "private-copies", ex=600)
    migrate.WAIT, wait = 0.2, migrate.WAIT
    try:
        res = client.get("/chat/api/history", query_string={"with": "alice"})
    finally:
        migrate.WAIT = wait
    assert res.status_code == 503 and "upgraded" in res.get_json()["error"]


def untagged_layout(r):
    """What the version before hash tags wrote, one key of each kind: {old name: new name}."""
    made = {
        "chat:pm:alice:bob": keys.chat_pm("alice", "bob"),
        "chat:edits:pm:alice:bob": keys.chat_edits(keys.chat_pm("alice", "bob")),
        "chat:clock:user:alice": keys.chat_user_clock("alice"),
        "chat:room:Lobby-2": keys.chat_room("Lobby-2"),
        "chat:edits:room:Lobby-2": keys.chat_edits(keys.chat_room("Lobby-2")),
        "chat:clock:room:Lobby-2": keys.chat_room_clock("Lobby-2"),
        "chat:members:Lobby-2": keys.chat_members("Lobby-2"),
        "chat:convs:alice": keys.chat_convs("alice"),
        "chat:read:alice": keys.chat_read("alice"),
        "chat:cursors:alice": keys.chat_cursors("alice"),
        "chat:rooms:alice": keys.chat_rooms("alice"),
        "chat:sockets:alice": keys.chat_sockets("alice"),
        "chat:rate:alice": keys.chat_rate("alice"),
        "chat:poll:alice:tab-1": keys.chat_poll("alice", "tab-1"),
        "chat:typing:alice:tab-1": keys.chat_typing("alice", "tab-1"),
        "chat:cid:alice:chat:u:bob:c:1{x}": keys.chat_cid("alice", "c:1{x}", receiver="bob"),
        "chat:cid:alice:chat:r:Lobby-2:c2": keys.chat_cid("alice", "c2", room="Lobby-2"),
    }
    for old in made:
        kind = old.split(":")[1]
        if kind in ("pm", "room"):
            r.xadd(old, {"f": frame("1000-1", "alice", "bob", old)}, id="1000-1")
        elif kind == "convs":
            r.zadd(old, {"bob": 1000})
        elif kind in ("members", "rooms"):
            r.sadd(old, old)
        elif kind in ("cid", "typing"):
            r.set(old, old, ex=300)
        else:
            r.hset(old, "f", old)
    return made


def test_the_keys_of_before_the_tags_are_renamed_and_the_others_kept(r):
    r.sadd(migrate.DONE, "private-copies")
    made = untagged_layout(r)
    kept = ["chat:nodes", "chat:node:n1/1", "chat:cursor:alice", "chat:dm:alice:bob", "chat:clock"]
    for key in kept:
        r.set(key, "kept")
    for i in range(30):  # more than a batch of keys to keep, before and after the ones to rename
        r.set(f"chat:node:other{i}", "kept")
    types = {old: r.type(old) for old in made}
    migrate.STEPS, steps = tuple((name, functools.partial(step, batch=7) if name == "hash-tags" else step)
                                  for name, step in migrate.STEPS), migrate.STEPS
    try:
        migrate.run(r)
    finally:
        migrate.STEPS = steps
    for old, new in made.items():
        assert not r.exists(old), old
        assert r.type(new) == types[old], new
    assert r.xrange(keys.chat_pm("alice", "bob"))[0][1]["f"] == frame("1000-1", "alice", "bob", "chat:pm:alice:bob")
    assert r.hget(keys.chat_read("alice"), "f") == "chat:read:alice"
    assert 0 < r.ttl(keys.chat_cid("alice", "c2", room="Lobby-2")) <= 300, "renamed with its expiry"
    assert r.mget(kept) == ["kept"] * len(kept)
    assert r.smembers(migrate.DONE) == {"private-copies", "hash-tags"}


def test_a_key_whose_new_name_exists_is_left_alone(r):
    r.sadd(migrate.DONE, "private-copies")
    r.hset("chat:read:alice", "@bob", "1-1")
    r.hset(keys.chat_read("alice"), "@bob", "2-2")
    migrate.hash_tags(r)
    assert r.hgetall(keys.chat_read("alice")) == {"@bob": "2-2"}
    assert r.hgetall("chat:read:alice") == {"@bob": "1-1"}, "nothing lost: left for its owner to expire"


names = st.from_regex(USER_NAME, fullmatch=True)
rooms = st.from_regex(ROOM_NAME, fullmatch=True)


@given(names, names, rooms, st.text(min_size=1, max_size=64))
def test_every_name_of_before_maps_to_the_name_of_now(a, b, room, cid):
    """Whatever the names (and a cid, which the client chose), the old name of each kind of key
    maps to the name this version builds, and a name of this version maps to nothing."""
    lo, ro = a.lower(), room
    pairs = [
        (f"chat:pm:{lo}:{b.lower()}", keys.chat_pm(a, b)),
        (f"chat:edits:pm:{lo}:{b.lower()}", keys.chat_edits(keys.chat_pm(a, b))),
        (f"chat:edits:room:{ro}", keys.chat_edits(keys.chat_room(room))),
        (f"chat:clock:user:{lo}", keys.chat_user_clock(a)),
        (f"chat:clock:room:{ro}", keys.chat_room_clock(room)),
        (f"chat:room:{ro}", keys.chat_room(room)),
        (f"chat:members:{ro}", keys.chat_members(room)),
        (f"chat:read:{lo}", keys.chat_read(a)),
        (f"chat:poll:{lo}:{b}", keys.chat_poll(a, b)),
        (f"chat:cid:{lo}:chat:u:{b.lower()}:{cid}", keys.chat_cid(a, cid, receiver=b)),
        (f"chat:cid:{lo}:chat:r:{ro}:{cid}", keys.chat_cid(a, cid, room=room)),
    ]
    for old, new in pairs:
        assert migrate.tagged_name(old) == new
        assert migrate.tagged_name(new) is None
