"""Chat's own channels (``chat:u:``, ``chat:r:``, ``chat:p:``) are sharded channels: every way
chat publishes on them (the Lua scripts, the commands, the long-poll controls) is heard by
SSUBSCRIBE and never by a classic SUBSCRIBE, so a PUBLISH left anywhere fails here; and the
broker hears both kinds (``sessions:ended`` stays classic) on its one connection, and again
after that connection is killed."""
import json
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest

from chat_service.commands import Commands
from chat_service.poll import Polls, Sender
from chat_service.presence import Presence
from chat_service.store import Store
from chat_service.wire import text_frame
from webchat_common import keys

U, R, P = keys.chat_user_channel, keys.chat_room_channel, keys.chat_presence_channel
CHANNELS = [keys.chat_user_channel("alice"), keys.chat_user_channel("bob"), keys.chat_room_channel("lobby"),
            keys.chat_room_channel("den"), keys.chat_presence_channel("bob")]


@pytest.fixture
def heard(r):
    """Two listeners of every channel above: one with SSUBSCRIBE, one with SUBSCRIBE."""
    sharded, classic = r.pubsub(), r.pubsub()
    sharded.ssubscribe(*CHANNELS)
    classic.subscribe(*CHANNELS)
    for ps, kind in ((sharded, "ssubscribe"), (classic, "subscribe")):
        assert sorted(ps.get_message(timeout=1)["channel"] for _ in CHANNELS) == sorted(CHANNELS)
        assert ps.get_message(timeout=0.05) is None or pytest.fail(f"more than the {kind} confirmations")
    yield sharded, classic
    sharded.reset()
    classic.reset()


def drain(ps, quiet=0.3):
    """(type, channel, decoded frame) of every message on ``ps`` until it is quiet."""
    out = []
    while (m := ps.get_message(timeout=quiet)) is not None:
        data = m["data"]
        body = data.split(" ", 1)[1] if data[:1].isdigit() else data[2:] if data.startswith("- ") else data
        out.append((m["type"], m["channel"], json.loads(body)))
    return out


def test_every_publish_of_chat_is_sharded(app, r, heard):
    sharded, classic = heard
    cfg = app.config
    for name in ("alice", "bob"):
        r.hset(keys.user(name), mapping={"name": name, "password": "x"})
        r.zadd(keys.USERS, {name: 0})
    node = SimpleNamespace(cfg=cfg, redis=r, store=Store(r, cfg), conversations=app.extensions["chat_conversations"],
                           default_room=cfg["CHAT_DEFAULT_ROOM"], remove=lambda c: None)
    commands, polls = Commands(node), Polls(node)
    alice = Sender(polls, "alice", "tab-alice-1", {"lobby"})
    bob = Sender(polls, "bob", "tab-bob-1", {"lobby"})

    def run(sender, **frame):
        sender.frames.clear()
        commands.run(sender, frame)
        errors = [f for f in sender.frames if f["type"] == "error"]
        assert not errors, errors
        return sender.frames

    def expect(*wanted):
        """The (channel, frame type) of what was published since the last call, in order."""
        got = drain(sharded)
        assert all(kind == "smessage" for kind, _, _ in got)
        assert [(ch, f["type"]) for _, ch, f in got] == list(wanted)
        return [f for _, _, f in got]

    # SEND_MINE: the sender's other sockets (alice has two open); SEND_THEIRS: the receiver
    r.hset(keys.chat_sockets("alice"), "n1/0", 2)
    ack = run(alice, type="message", receiver="bob", data="hi")[0]
    expect((U("alice"), "message"), (U("bob"), "message"))
    # SEND_ROOM
    run(alice, type="message", room="lobby", data="all")
    expect((R("lobby"), "message"))
    # CHANGE: each person's copy, on their own channel
    run(alice, type="edit", target=ack["id"], data="hi!", **{"with": "bob"})
    expect((U("alice"), "edit"), (U("bob"), "edit"))
    # read marker: the reader's sockets and the other person's (commands.read)
    run(bob, type="message", receiver="alice", data="yo")
    (got,) = expect((U("alice"), "message"))
    run(alice, type="read", up_to=got["id"], **{"with": "bob"})
    expect((U("alice"), "read"), (U("bob"), "read"))
    # typing, private and in a room (commands.typing)
    run(alice, type="typing", **{"with": "bob"})
    run(Sender(polls, "alice", "tab-alice-2", {"lobby"}), type="typing", room="lobby")
    expect((U("bob"), "typing"), (R("lobby"), "typing"))
    # joining and leaving a room (commands.membership)
    run(alice, type="join", room="den")
    run(alice, type="leave", room="den")
    expect((U("alice"), "room"), (R("den"), "member"), (U("alice"), "room"), (R("den"), "member"))
    # a long-poll tab's watch list (poll.Sender.watch), and its frames handed over (poll.Polls._hand_over)
    run(alice, type="watch", users=["bob"])
    old = SimpleNamespace(user="alice", lower="alice", pid="tab-alice-1", out=[(None, text_frame({"type": "typing"}), None)],
                          expiry=None, closing=None, wake=lambda: None)
    polls._hand_over(old, 2)
    assert [f for f in expect((U("alice"), "poll"), (U("alice"), "poll"))][1]["frames"] == [{"type": "typing"}]
    # presence (SOCKET_OPEN, PRESENCE_DOWN; PRESENCE_UP shares their announce)
    presence = Presence(r, "n9", cfg)
    assert presence.admit("bob", 1)
    presence.closed("bob", 0)
    assert [f["online"] for f in expect((P("bob"), "presence"), (P("bob"), "presence"))] == [True, False]

    assert classic.get_message(timeout=0.3) is None, "a classic SUBSCRIBE hears none of chat's channels"


def test_chat_calls_no_classic_publish():
    """What the test above cannot run (a long-poll tab picked up: ``PollClient._start``) is
    checked in the source: chat publishes with SPUBLISH only."""
    src = Path(__file__).resolve().parents[1] / "chat_service"
    for path in src.glob("*.py"):
        text = path.read_text()
        assert ".publish(" not in text and "'PUBLISH'" not in text, path.name


# The broker needs gevent's sockets (its listener is a greenlet): it runs in a child process,
# monkey-patched, and prints what it saw.
_BROKER = textwrap.dedent('''
    from gevent import monkey
    monkey.patch_all()
    import json, sys, time
    import gevent, redis
    from chat_service.broker import Broker
    from webchat_common import keys

    U, R, P = keys.chat_user_channel, keys.chat_room_channel, keys.chat_presence_channel
    url = sys.argv[1]
    r = redis.Redis.from_url(url, decode_responses=True)
    wanted = {b"sessions:ended", U("bob").encode(), P("carol").encode()}
    heard, events = [], []
    broker = Broker({"REDIS_URL": url, "REDIS_SOCKET_TIMEOUT": 2.0, "CHAT_PUBSUB_HEALTH_INTERVAL": 0.5},
                    lambda: set(wanted), lambda ch: ch in wanted, lambda ch, data: heard.append([ch.decode(), data.decode()]),
                    lambda: events.append("lost"), lambda: events.append("back"), classic={b"sessions:ended"})

    def until(check, timeout=10):
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                raise SystemExit("timed out: " + json.dumps({"heard": heard, "events": events}))
            gevent.sleep(0.02)

    def subscriptions():
        return {"classic": dict(r.pubsub_numsub("sessions:ended", U("bob"), P("carol"))),
                "sharded": dict(r.pubsub_shardnumsub("sessions:ended", U("bob"), P("carol")))}

    def publish_all(n):
        r.spublish(U("bob"), f"bob {n}")
        r.spublish(P("carol"), f"carol {n}")
        r.publish("sessions:ended", f"ended {n}")
        r.publish(U("bob"), f"classic {n}")  # nobody hears a classic PUBLISH of a chat channel

    out = {}
    broker.subscribe(sorted(wanted), wait=True)
    out["first"] = subscriptions()
    publish_all(1)
    until(lambda: len(heard) >= 3)
    gevent.sleep(0.2)
    out["heard_first"], heard[:] = list(heard), []
    out["killed"] = r.client_kill_filter(_type="pubsub")
    until(lambda: events == ["lost", "back"])
    out["events"] = list(events)
    out["hears"] = [broker.hears(ch) for ch in sorted(wanted)]
    out["again"] = subscriptions()
    publish_all(2)
    until(lambda: len(heard) >= 3)
    gevent.sleep(0.2)
    out["heard_again"] = list(heard)
    wanted.discard(P("carol").encode())
    broker.unsubscribe([P("carol").encode()])
    until(lambda: r.pubsub_shardnumsub(P("carol"))[0][1] == 0)
    wanted.add(R("den").encode())
    broker.subscribe([R("den").encode()], wait=True)
    out["after"] = dict(r.pubsub_shardnumsub(P("carol"), R("den")))
    print(json.dumps(out))
''')


def test_the_broker_hears_both_kinds_and_resubscribes_both_after_a_kill(redis_url):
    done = subprocess.run([sys.executable, "-c", _BROKER, redis_url], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-3000:] + done.stdout[-1000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    both = {"classic": {"sessions:ended": 1, U("bob"): 0, P("carol"): 0},
            "sharded": {"sessions:ended": 0, U("bob"): 1, P("carol"): 1}}
    assert out["first"] == both, "each channel subscribed with its own kind"
    assert sorted(out["heard_first"]) == [[P("carol"), "carol 1"], [U("bob"), "bob 1"],
                                          ["sessions:ended", "ended 1"]]
    assert out["killed"] == 1, "one connection carries both kinds"
    assert out["events"] == ["lost", "back"] and out["hears"] == [True, True, True]
    assert out["again"] == both, "every wanted channel subscribed again, with its own kind"
    assert sorted(out["heard_again"]) == [[P("carol"), "carol 2"], [U("bob"), "bob 2"],
                                          ["sessions:ended", "ended 2"]]
    assert out["after"] == {P("carol"): 0, R("den"): 1}, "SUNSUBSCRIBE and SSUBSCRIBE after the reconnect"
