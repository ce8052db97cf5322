"""chat_service.migrate against a real Redis: one stream per private conversation becomes a copy
per person, with ids unchanged, once, and no chat request is served before it."""
import json
import threading

import pytest

from chat_service import migrate
from webchat_common import keys
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
    assert r.smembers(migrate.DONE) == {"private-copies"}
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
