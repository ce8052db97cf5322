"""Chat's store on a real Redis Cluster (``ClusterSet``: three primaries, a replica each), with
people and a room whose keys are on different primaries: every call works on one slot, a
batch of sends waits (``WAIT``) on each shard it wrote to, for that shard's own replica; a
send after a slot moved is refused once and the next ones go to the new owner; scripts a
primary forgot are loaded again.  (The whole chat suite runs on a Cluster too, through the
gateway: tests/conftest.py.)"""
import os
import signal

import gevent
import pytest
from redis.exceptions import RedisError

from chat_service import create_app
from chat_service.config import ChatTestConfig
from chat_service.store import NotReplicated, Store
from chat_service.presence import Presence
from chat_service.conversations import Place
from chat_service.wire import PRIVATE, ZERO
from webchat_common import as_mapping, keys


def on_distinct_primaries(cluster, key_of, prefix, count=3):
    """``count`` names (``prefix`` + a number) whose ``key_of(name)`` are on distinct primaries."""
    found, seen = [], set()
    for i in range(500):
        name = f"{prefix}{i}"
        port = cluster.primary_of(key_of(name)).port
        if port not in seen:
            seen.add(port)
            found.append(name)
            if len(found) == count:
                return found
    raise AssertionError("no names spread over the primaries")


@pytest.fixture
def chat(cluster):
    app = create_app(as_mapping(ChatTestConfig, REDIS_URL=cluster.url, CHAT_ACK_REPLICAS=1, CHAT_ACK_TIMEOUT=0.5))
    r = app.extensions["redis"]
    people = on_distinct_primaries(cluster, keys.chat_read, "p")
    for name in people:
        r.hset(keys.user(name), mapping={"name": name, "password": "x"})
    room = on_distinct_primaries(cluster, keys.chat_room, "room", count=1)[0]
    return app, r, Store(r, app.config), people, room


def send_all(store, people, room, tag):
    """One message from each person to the next, and one from each in the room, all at once
    (so in one batch): {what: the send's answer or its error}."""
    jobs = {}
    for i, sender in enumerate(people):
        receiver = people[(i + 1) % len(people)]
        jobs[(sender, receiver)] = gevent.spawn(store.send_private, sender, receiver,
                                                {"sender": sender, "data": f"{tag} to {receiver}"}, f"{tag}-{i}", "s.1")
        jobs[(sender, room)] = gevent.spawn(store.send_room, sender, room, {"sender": sender, "data": tag}, f"{tag}-r{i}")
    gevent.joinall(list(jobs.values()))
    return {k: (job.value if job.successful() else job.exception) for k, job in jobs.items()}


def test_every_call_runs_on_one_slot_and_waits_for_its_own_shard(cluster, chat):
    app, r, store, people, room = chat
    sent = send_all(store, people, room, "one")
    assert not [v for v in sent.values() if isinstance(v, Exception)], sent
    for (sender, to), _ in sent.items():
        if to != room:
            assert r.xlen(keys.chat_pm(sender, to)) == 1 and r.xlen(keys.chat_pm(to, sender)) == 1
    assert r.xlen(keys.chat_room(room)) == 3
    # the room's message moved each sender's read marker, in the sender's slot
    assert all(r.hget(keys.chat_read(p), "#" + room) for p in people)
    # replay, history, the list, read markers: each call on one slot, the pipelines spanning them
    a, b = people[0], people[1]
    entries, gap, issued = store.replay(a, {PRIVATE: ZERO, room: ZERO})
    assert not gap and len(entries) == 2 + 3 and set(issued) == {PRIVATE, room}
    conversations = app.extensions["chat_conversations"]
    fields, frames = conversations.history(a, b, None, None, 10)
    assert len(frames) == 1 and fields["with"] == b
    listing = conversations.listing(a, [room])
    assert {c.get("with") or c.get("room") for c in listing} == {b, people[2], room}
    mine = r.xrange(keys.chat_pm(b, a))[0][0]
    assert conversations.read(Place(b, peer=a), tuple(map(int, mine.split("-")))) == (True, mine, 0)
    # a shard whose replica stops answering: its sends are not acknowledged, the others' are
    replica_port = next(v["port"] for k, v in r.get_redis_connection(
        r.get_node_from_key(keys.chat_pm(a, "x"))).info("replication").items() if k.startswith("slave"))
    replica = next(s for s in cluster.servers if s.port == replica_port)
    os.kill(replica.pid, signal.SIGSTOP)
    try:
        sent = send_all(store, people, room, "two")
    finally:
        os.kill(replica.pid, signal.SIGCONT)
    # a's shard took a's copy of what a sent and of what people[2] sent a (and the room's
    # messages if the room is there too); a's read marker of the room is not the send's
    shard = cluster.primary_of(keys.chat_read(a))
    expected = {(a, people[1]), (people[2], a)}
    if cluster.primary_of(keys.chat_room(room)) is shard:
        expected |= {(p, room) for p in people}
    assert {k for k, v in sent.items() if isinstance(v, NotReplicated)} == expected, sent
    assert all(not isinstance(v, Exception) for k, v in sent.items() if k not in expected), sent


def test_a_send_after_its_slot_moved_is_refused_once_then_goes_to_the_new_owner(cluster, chat):
    app, r, store, people, room = chat
    a, b = people[0], people[1]
    store.send_private(a, b, {"sender": a, "data": "before"}, "c1", "s.1")
    slot = r.keyslot(keys.chat_read(a))
    target = next(p for p in cluster.primaries() if p is not cluster.primary_of(keys.chat_read(a)))
    cluster.move_slot(slot, target)
    answers = []
    for i in range(3):
        try:
            answers.append(store.send_private(a, b, {"sender": a, "data": f"after {i}"}, f"c2-{i}", "s.1")[0])
        except RedisError as exc:
            answers.append(exc)
    assert len([x for x in answers if isinstance(x, Exception)]) <= 1, answers
    assert not isinstance(answers[-1], Exception)
    assert cluster.primary_of(keys.chat_pm(a, b)) is target
    assert r.xlen(keys.chat_pm(a, b)) == 1 + len([x for x in answers if not isinstance(x, Exception)])


def test_scripts_a_primary_forgot_are_loaded_again(cluster, chat):
    app, r, store, people, room = chat
    a, b = people[0], people[1]
    store.send_private(a, b, {"sender": a, "data": "first"}, "c1", "s.1")
    r.script_flush()  # every primary forgets every script, as a restarted one or a promoted replica has
    assert store.send_private(a, b, {"sender": a, "data": "second"}, "c2", "s.1")[4] is False
    r.script_flush()
    entries, _, _ = store.replay(b, {PRIVATE: ZERO, room: ZERO})  # a pipeline of scripts
    assert [e[1] for e in entries] and len(entries) == 2
    r.script_flush()
    assert Presence(r, "n1/1", app.config).admit(a, 1)  # a pipeline of a script and a command
