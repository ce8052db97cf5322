"""Unit tests of the chat service against a real redis-server: the Lua scripts (ids, storage,
replay and gap detection, presence), the Origin rule and the handshake refusals."""
import json
import time

import pytest
from prometheus_client import REGISTRY

from chat_service import scripts
from chat_service.accounts import Accounts
from chat_service.presence import Presence
from chat_service.store import look_back
from chat_service.wire import ZERO, format_id, parse_id, ws_frame
from webchat_common import keys, origin_allowed
from webchat_testing.sessions import login_client


def register(r, name):
    r.hset(keys.user(name), mapping={"name": name, "password": "x"})


def send_private(r, receiver, data="hi", sender="alice", maxlen=1000, age_ms=3_600_000, cid=None, window=300):
    """A private message as the store sends it: SEND_MINE, then SEND_THEIRS.  Returns [id in
    the sender's copy, ts, receiver's name, online, duplicate, id in the receiver's copy]."""
    tail = json.dumps({"sender": sender, "data": data})[1:]
    channel = keys.chat_user_channel(receiver)
    dedup = [keys.chat_cid(sender, cid, receiver=receiver)] if cid is not None else []
    name = Accounts(r).name(receiver) or receiver
    mid, ts, name, duplicate = r.register_script(scripts.SEND_MINE)(
        keys=[keys.chat_user_clock(sender), keys.chat_pm(sender, receiver), keys.chat_convs(sender),
              keys.chat_read(sender), keys.chat_sockets(sender), *dedup],
        args=[tail, maxlen, age_ms, keys.chat_user_channel(sender), window, "node.1", name, ""])
    rid, online = r.register_script(scripts.SEND_THEIRS)(
        keys=[keys.chat_user_clock(receiver), keys.chat_pm(receiver, sender), keys.chat_convs(receiver),
              keys.chat_sockets(receiver)],
        args=[tail, maxlen, age_ms, channel, look_back(mid) if duplicate else "", mid, sender, name])
    return [mid, ts, name, online, duplicate, rid]


def send_room(r, room, data="hi", maxlen=1000, cid=None, window=300):
    tail = json.dumps({"room": room, "sender": "alice", "data": data})[1:]
    channel = keys.chat_room_channel(room)
    dedup = [keys.chat_cid("alice", cid, room=room)] if cid is not None else []
    return r.register_script(scripts.SEND_ROOM)(
        keys=[keys.chat_room_clock(room), keys.chat_room(room), *dedup],
        args=[tail, maxlen, 3_600_000, channel, window])


def test_a_cid_sent_again_is_stored_once(r):
    register(r, "bob")
    first = send_private(r, "bob", "one", cid="c1")
    again = send_private(r, "bob", "one", cid="c1")
    assert again[:3] == first[:3] and first[4] == 0 and again[4] == 1
    assert again[5] == first[5], "the receiver's copy is made once: found by its p"
    assert r.xlen(keys.chat_pm("alice", "bob")) == r.xlen(keys.chat_pm("bob", "alice")) == 1
    other = send_private(r, "bob", "two", cid="c2")
    assert other[0] != first[0] and other[4] == 0
    # the same cid to someone else, or in a room, is another message
    register(r, "carol")
    assert send_private(r, "carol", "one", cid="c1")[4] == 0
    room_first = send_room(r, "lobby", cid="c1")
    assert send_room(r, "lobby", cid="c1") == [room_first[0], room_first[1], 1]
    assert r.xlen(keys.chat_room("lobby")) == 1
    # without a cid nothing is remembered
    send_private(r, "bob", "same")
    send_private(r, "bob", "same")
    assert r.xlen(keys.chat_pm("alice", "bob")) == r.xlen(keys.chat_pm("bob", "alice")) == 4


def test_the_receiver_s_copy_is_made_once_if_the_first_send_stopped_before_it(r):
    """A send whose second call never ran (the process died between them) is sent again with
    its cid: the sender's copy answers with the first id, and the receiver's copy is made then,
    once; asked again, it finds the entry by its p."""
    register(r, "bob")
    theirs = keys.chat_pm("bob", "alice")
    first = send_private(r, "bob", "one", cid="c1")
    r.delete(theirs)  # (as if the second call had never run)
    again = send_private(r, "bob", "one", cid="c1")
    assert again[0] == first[0] and again[4] == 1 and r.xlen(theirs) == 1
    [(rid, fields)] = r.xrange(theirs)
    assert rid == again[5] and fields["p"] == first[0]
    assert send_private(r, "bob", "one", cid="c1")[5] == rid and r.xlen(theirs) == 1
    # a message of the look back that is not it is not taken for it
    find = r.register_script(scripts.FIND_SENT)
    assert find(keys=[theirs], args=[first[0], look_back(first[0])]) == rid
    assert find(keys=[theirs], args=["1-1", "0-0"]) is None


def test_a_cid_is_remembered_for_the_window_only(r):
    register(r, "bob")
    first = send_private(r, "bob", cid="c1", window=1)
    assert 0 < r.ttl(keys.chat_cid("alice", "c1", receiver="bob")) <= 1
    time.sleep(1.1)
    later = send_private(r, "bob", cid="c1", window=1)
    assert later[0] != first[0] and later[4] == 0


def presence(r, node, ttl_ms=3000, cap=10):
    return Presence(r, node, {"CHAT_PRESENCE_TTL": ttl_ms / 1000, "CHAT_MAX_SOCKETS_PER_USER": cap})


def open_socket(r, node, user, mine, cap=3):
    return int(presence(r, node, cap=cap).admit(user, mine))


def counted(name):
    return REGISTRY.get_sample_value(name) or 0


def listen(r, *users):
    """A connection hearing ``users``' presence channels (sharded: SSUBSCRIBE)."""
    ps = r.pubsub()
    ps.ssubscribe(*(keys.chat_presence_channel(u) for u in users))
    for _ in users:
        assert ps.get_message(timeout=1)["type"] == "ssubscribe"
    return ps


def heard(ps, timeout=0.3):
    """The presence frames published on ``ps`` until it is quiet for ``timeout``."""
    out = []
    while (m := ps.get_message(timeout=timeout)) is not None:
        out.append((json.loads(m["data"])["user"], json.loads(m["data"])["online"]))
    return out


def test_the_socket_cap_counts_every_process(r):
    ps = listen(r, "bob")
    assert open_socket(r, "n1", "bob", 1) == 1
    assert open_socket(r, "n1", "bob", 2) == 1
    assert open_socket(r, "n2", "bob", 1) == 1
    assert open_socket(r, "n2", "bob", 2) == 0, "2 on n1 + 2 on n2 > 3"
    assert open_socket(r, "n3", "bob", 1) == 0
    assert not r.exists(keys.chat_node("n3/0")), "a process holding none of bob's sockets does not list him"
    assert r.hgetall(keys.chat_sockets("bob")) == {"n1/0": "2", "n2/0": "1"}, "a refusal changes nothing"
    assert heard(ps) == [("bob", True)], "online is announced by the first socket only"
    assert open_socket(r, "n1", "carol", 1) == 1, "per user"
    # n1 closes one (as Node.remove records it): room for one more on n2
    presence(r, "n1").closed("bob", 1)
    assert open_socket(r, "n2", "bob", 2) == 1


def test_ids_increase_per_clock_private_messages_one_each_room_its_own(r):
    register(r, "Bob")
    register(r, "carol")
    ids = {"private": [], "lobby": [], "team": []}
    for i in range(60):
        if i % 3 == 0:
            mid, ts, name, online, duplicate, _ = send_private(r, "bob" if i % 2 else "carol", f"p{i}")
            assert name in ("Bob", "carol") and online == 0
            clock = "private"
        else:
            clock = "lobby" if i % 3 == 1 else "team"
            mid, ts, duplicate = send_room(r, clock, f"r{i}")
        ids[clock].append(parse_id(mid))
        assert int(ts) == ids[clock][-1][0]
    for clock, made in ids.items():
        assert made == sorted(made) and len(set(made)) == 20, clock
    # a room's counter is its own: 20 messages, 20 steps
    assert ids["team"][-1][1] - ids["team"][0][1] == 19
    assert set(r.hkeys(keys.chat_room_clock("team"))) == {"ms", "seq"}


def test_a_room_s_first_clock_id_is_above_its_stream_s_last_entry(r):
    """A room whose stream was written before rooms had clocks of their own (by the one
    global clock) goes on above its last entry: XADD needs it, and so do clients' positions."""
    ahead = int(time.time() * 1000) + 60_000
    r.xadd(keys.chat_room("old"), {"f": "{}"}, id=f"{ahead}-987654")
    mid = parse_id(send_room(r, "old")[0])
    assert mid > (ahead, 987654)
    assert parse_id(send_room(r, "old")[0]) > mid


def test_clock_never_goes_back(r):
    register(r, "bob")
    r.hset(keys.chat_user_clock("alice"), "ms", str(int(time.time() * 1000) + 60_000))  # as if the clock jumped back
    first = parse_id(send_private(r, "bob")[0])
    second = parse_id(send_private(r, "bob")[0])
    assert second > first and first[0] >= int(time.time() * 1000) + 59_000


def test_private_message_is_stored_as_the_frame_and_published(r):
    register(r, "bob")
    ps = r.pubsub()
    ps.ssubscribe(keys.chat_user_channel("bob"))
    assert ps.get_message(timeout=1)["type"] == "ssubscribe"
    mid, ts, name, online, duplicate, rid = send_private(r, "BOB", 'quote " and <tag> and ünïcode')
    # each person's copy holds the frame with an id of their own clock
    (sid, fields), = r.xrange(keys.chat_pm("alice", "bob"))
    assert sid == mid and json.loads(fields["f"]) == {
        "type": "message", "id": mid, "ts": int(ts), "receiver": "bob", "sender": "alice",
        "data": 'quote " and <tag> and ünïcode'}
    (theirs, tfields), = r.xrange(keys.chat_pm("bob", "alice"))
    frame = json.loads(tfields["f"])
    assert theirs == rid and frame["id"] == rid and frame["ts"] == parse_id(rid)[0]
    assert {k: v for k, v in frame.items() if k not in ("id", "ts")} == {
        "type": "message", "receiver": "bob", "sender": "alice", "data": 'quote " and <tag> and ünïcode'}
    assert tfields["p"] == mid, "the receiver's entry keeps the sender's id"
    # the receiver hears their copy's frame
    msg = ps.get_message(timeout=1)
    assert msg["type"] == "smessage" and msg["data"] == rid + " " + tfields["f"]
    for copy in (keys.chat_pm("alice", "bob"), keys.chat_pm("bob", "alice")):
        assert 0 < r.pttl(copy) <= 3_600_000


def test_accounts_give_registered_names_and_keep_only_the_found(r):
    accounts = Accounts(r)
    register(r, "Bob")
    assert accounts.names(["bob", "GHOST"]) == {"bob": "Bob", "ghost": None}
    register(r, "ghost")  # registered after a miss: found next time
    assert accounts.name("Ghost") == "ghost"
    r.delete(keys.user("bob"))  # (accounts are never deleted: a found name is not asked again)
    assert accounts.name("BOB") == "Bob"




def test_a_dead_process_sockets_stop_counting_once_swept(r):
    presence(r, "n1", 200, cap=3).admit("bob", 3)
    assert open_socket(r, "n2", "bob", 1) == 0
    time.sleep(0.3)  # n1 died without a word: its chat:nodes entry expired
    presence(r, "n2").sweep()
    assert open_socket(r, "n2", "bob", 1) == 1
    assert r.hgetall(keys.chat_sockets("bob")) == {"n2/0": "1"}


def test_online_flag_and_presence_follow_sockets(r):
    register(r, "bob")
    ps = listen(r, "Bob", "carol")
    n1, n2 = presence(r, "n1"), presence(r, "n2")
    assert n1.admit("Bob", 1) and n1.admit("carol", 1)
    assert send_private(r, "bob")[3] == 1
    assert n2.admit("Bob", 1), "a second process: no second online"
    n1.closed("Bob", 0)
    assert send_private(r, "bob")[3] == 1, "still on n2"
    n2.closed("Bob", 0)
    n2.closed("Bob", 0)  # (a second close of the same socket: no second offline)
    assert send_private(r, "bob")[3] == 0
    assert heard(ps) == [("Bob", True), ("carol", True), ("Bob", False)], "each change once, on the user's own channel"
    assert r.smembers(keys.chat_node("n1/0")) == {"carol"} and r.smembers(keys.chat_node("n2/0")) == set()


def test_a_beat_is_one_command_whatever_the_users(r):
    node = presence(r, "n1", 60_000)
    for i in range(50):
        node.admit(f"u{i}", 1)
    node.beat(lambda: [], lambda user: True)  # (the first beat loads the script)
    before = r.info("commandstats")
    node.beat(lambda: pytest.fail("a beat reads the users only after a renewal"), lambda user: True)
    after = r.info("commandstats")
    calls = {k: v["calls"] - before.get(k, {"calls": 0})["calls"] for k, v in after.items()}
    # one script call (TIME, ZSCORE, ZADD inside it), and the INFO of this test: nothing per user
    assert {k: n for k, n in calls.items() if n} == {
        "cmdstat_evalsha": 1, "cmdstat_time": 1, "cmdstat_zscore": 1, "cmdstat_zadd": 1, "cmdstat_info": 1}
    assert r.zscore(keys.CHAT_NODES, "n1/0") > time.time() * 1000 + 50_000


def test_sweep_drops_the_users_of_a_dead_process_once(r):
    dead, alive, other = presence(r, "dead", 300), presence(r, "alive", 60_000), presence(r, "other", 60_000)
    for user in ("bob", "dave"):
        dead.admit(user, 1)
    for user in ("carol", "dave"):
        alive.admit(user, 1)
    other.admit("erin", 1)
    ps = listen(r, "bob", "carol", "dave")
    assert alive.sweep() == 0, "nobody is dead yet"
    time.sleep(0.4)  # "dead" stopped beating (SIGKILL)
    swept = counted("webchat_chat_presence_swept_total")
    assert [alive.sweep(), other.sweep()] == [1, 0], "one sweeper claims the dead process"
    assert counted("webchat_chat_presence_swept_total") == swept + 1
    assert heard(ps) == [("bob", False)], "dave is still held by a live process"
    assert [r.exists(keys.chat_sockets(u)) for u in ("bob", "carol", "dave")] == [0, 1, 1]
    assert not r.exists(keys.chat_node("dead/0")) and set(r.zrange(keys.CHAT_NODES, 0, -1)) == {"alive/0", "other/0"}


def test_a_sweeper_that_dies_leaves_the_claim_to_another(r):
    dead = presence(r, "dead", 200)
    dead.admit("bob", 1)
    time.sleep(0.3)
    claimed = r.register_script(scripts.NODES_DEAD)(keys=[keys.CHAT_NODES], args=[10, 200])
    assert claimed == ["dead/0"]  # (and its sweeper dies here, before sweeping)
    assert presence(r, "alive", 60_000).sweep() == 0, "claimed: leased to its sweeper"
    time.sleep(0.3)
    assert presence(r, "alive", 60_000).sweep() == 1, "the lease expired: swept by another"
    assert r.zrange(keys.CHAT_NODES, 0, -1) == []


def test_a_late_process_holds_its_users_again_under_a_new_id(r):
    late, sweeper = presence(r, "late", 200), presence(r, "sweeper", 60_000)
    held = [("bob", 2), ("carol", 1)]
    for user, n in held:
        late.admit(user, n)
    ps = listen(r, "bob", "carol")
    time.sleep(0.3)  # late missed its beats: taken for dead and swept
    assert sweeper.sweep() == 2
    renewed = counted("webchat_chat_presence_renewed_total")
    late.beat(lambda: held, lambda user: True)
    assert late.holder == "late/1" and counted("webchat_chat_presence_renewed_total") == renewed + 1
    got = heard(ps)
    assert sorted(got[:2]) == [("bob", False), ("carol", False)] and got[2:] == [("bob", True), ("carol", True)]
    assert r.hgetall(keys.chat_sockets("bob")) == {"late/1": "2"}
    # a write made under the old id while the renewal ran is removed by the next beat
    r.hset(keys.chat_sockets("carol"), "late/0", 1)
    r.sadd(keys.chat_node("late/0"), "carol")
    late.beat(lambda: held, lambda user: True)
    assert r.hgetall(keys.chat_sockets("carol")) == {"late/1": "1"} and late.retired == []
    assert not r.exists(keys.chat_node("late/0"))
    assert heard(ps) == []


def test_redis_restarted_empty_gets_the_users_back(r):
    node = presence(r, "n1", 60_000)
    node.admit("bob", 1)
    ps = listen(r, "bob")
    r.flushall()
    node.beat(lambda: [("bob", 1)], lambda user: True)
    assert heard(ps) == [("bob", True)]
    assert r.hgetall(keys.chat_sockets("bob")) == {"n1/1": "1"} and r.zscore(keys.CHAT_NODES, "n1/1")


def replay(r, user, since):
    """REPLAY_PRIVATE: the private conversations after ``since``; returns (what was read per
    stream, the last private id issued)."""
    res = r.register_script(scripts.REPLAY_PRIVATE)(keys=[keys.chat_convs(user), keys.chat_user_clock(user)],
                                                    args=[since, 1000, keys.chat_pm(user, "")])
    return res[:-1], res[-1]


def replay_room(r, room, since):
    """REPLAY_ROOM: the room after ``since`` ("$": nothing); returns what was read and its last
    id issued."""
    return r.register_script(scripts.REPLAY_ROOM)(keys=[keys.chat_room(room), keys.chat_room_clock(room)],
                                                  args=[since, 1000])


def test_replay_reads_after_the_cursor_and_reports_trimmed_history(r):
    register(r, "bob")
    sent = [send_private(r, "bob", f"m{i}", maxlen=10) for i in range(300)]
    ids = [s[5] for s in sent]  # bob's copy's ids
    # MAXLEN ~ trims whole stream nodes: the oldest are gone, the newest kept.
    kept = [sid for sid, _ in r.xrange(keys.chat_pm("bob", "alice"))]
    assert kept[-1] == ids[-1] and kept[0] != ids[0]
    [(boundary, entries, start)], issued = replay(r, "bob", ids[0])
    assert boundary == kept[0] and parse_id(boundary) > parse_id(ids[0]), "trimmed after the cursor: a gap"
    assert [e[0] for e in entries] == kept and start == ids[0] and issued == ids[-1]
    [(boundary, entries, _)], issued = replay(r, "bob", ids[-3])
    assert [e[0] for e in entries] == ids[-2:] and parse_id(boundary) < parse_id(ids[-3])
    # the sender's replay reads their own copy, in their own ids
    mine = [s[0] for s in sent]
    [(_, entries, _)], issued = replay(r, "alice", mine[-3])
    assert [e[0] for e in entries] == mine[-2:] and issued == mine[-1]
    register(r, "carol")
    to_carol = send_private(r, "carol")
    [(boundary, entries, _)], issued = replay(r, "carol", "0-0")
    assert boundary == "0-0" and len(entries) == 1, "never trimmed: no gap"
    # a conversation whose last message is older than the cursor's ms is not read at all
    later = parse_id(issued)[0] + 1000
    res, issued = replay(r, "carol", f"{later}-0")
    assert res == [] and issued == to_carol[5], "the last id carol's clock issued"
    # A room: "$" reads nothing; a missing stream is empty; the last id is the room's clock's
    # (or, before its first message under it, its stream's last entry's)
    assert replay_room(r, "nowhere", "$") == ["0-0", [], "$", "0-0"]
    assert replay_room(r, "nowhere", "0-0") == ["0-0", [], "0-0", "0-0"]
    first, _, _ = send_room(r, "team")
    second, _, _ = send_room(r, "team")
    boundary, entries, start, last = replay_room(r, "team", first)
    assert [e[0] for e in entries] == [second] and last == second
    r.xadd(keys.chat_room("legacy"), {"f": "{}"}, id="5-5")
    assert replay_room(r, "legacy", "$")[3] == "5-5"


def test_cursor_only_moves_forward_per_clock(r):
    cur = r.register_script(scripts.CURSOR_MAX)
    k = keys.chat_cursors("bob")
    assert cur(keys=[k], args=[60, "@", "100-5", "#lobby", "90-1"]) == 2
    assert cur(keys=[k], args=[60, "@", "100-4", "#lobby", "90-2"]) == 1
    assert cur(keys=[k], args=[60, "@", "99-9"]) == 0
    assert cur(keys=[k], args=[60, "@", "101-0"]) == 1
    assert r.hgetall(k) == {"@": "101-0", "#lobby": "90-2"} and 0 < r.ttl(k) <= 60


def test_ids_parse_and_compare():
    assert parse_id("1700000000000-12") == (1700000000000, 12)
    assert parse_id("1700000000000-12") > parse_id("1700000000000-9") > parse_id("1699999999999-99")
    for bad in ("", "12", "a-1", "1-2-3", "-1-2", None, 5, "1" * 20 + "-1"):
        assert parse_id(bad) is None
    assert format_id((5, 6)) == "5-6" and ZERO < (0, 1)


def test_server_frames_are_valid_websocket_frames():
    assert ws_frame(1, b"hi") == b"\x81\x02hi"
    assert ws_frame(1, b"x" * 200)[:4] == b"\x81\x7e\x00\xc8"
    assert ws_frame(1, b"x" * 70000)[:2] == b"\x81\x7f" and int.from_bytes(ws_frame(1, b"x" * 70000)[2:10], "big") == 70000


def test_origin_rule():
    allowed = {"https://chat.example"}
    assert origin_allowed("http://127.0.0.1:8080", "127.0.0.1:8080", allowed)
    assert origin_allowed("https://gw.example", "gw.example", allowed)
    assert origin_allowed("https://chat.example/", "gw.example", allowed)
    assert not origin_allowed("http://evil.example", "gw.example", allowed)
    assert not origin_allowed("http://gw.example.evil", "gw.example", allowed)
    assert not origin_allowed(None, "gw.example", allowed)
    assert not origin_allowed("null", "gw.example", allowed)
    assert not origin_allowed("file://gw.example", "gw.example", allowed)


WS_HEADERS = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
              "Sec-WebSocket-Version": "13"}


def login(client, r, name):
    """Plant a session as auth would write it (the contract in webchat_common.sessions)."""
    login_client(client, r, name, csrf="t")


@pytest.mark.parametrize("who, origin, status", [
    (None, "http://localhost", 401),
    ("alice", "http://localhost", None),  # the right user and origin get past the hook
    ("mallory", "http://localhost", 403),
    ("alice", "http://evil.example", 403),
    ("alice", None, 403),
    ("alice", "http://other.example:8443", None),
])
def test_handshake_is_refused_before_the_upgrade(app, r, who, origin, status):
    client = app.test_client()
    if who:
        login(client, r, who)
    headers = dict(WS_HEADERS)
    if origin:
        headers["Origin"] = origin
    if status is None:
        # Past the checks, flask-sock tries to take over the socket, which the test client
        # does not have: that error proves the hook let it through.
        with pytest.raises(RuntimeError, match="Cannot obtain socket"):
            client.get("/chat/alice", headers=headers, environ_overrides={"wsgi.url_scheme": "ws"})
    else:
        resp = client.get("/chat/alice", headers=headers, environ_overrides={"wsgi.url_scheme": "ws"})
        assert resp.status_code == status
        assert resp.json["error"]


def test_chat_page_needs_login(app, r):
    client = app.test_client()
    assert client.get("/chat/", headers={"Accept": "text/html"}).status_code == 302
    login(client, r, "alice")
    page = client.get("/chat/", headers={"Accept": "text/html"})
    assert page.status_code == 200 and b'<span id="chat-user">alice</span>' in page.data
    for module in ("main", "socket", "api", "view"):
        js = client.get(f"/chat/static/chat/{module}.js")
        assert js.status_code == 200 and js.mimetype == "text/javascript", module  # (modules need a JS type)


@pytest.mark.parametrize("kind", ["subscribe", "ssubscribe"])
def test_pubsub_never_reconnects_inside_a_subscribe(app, r, kind):
    """A socket greenlet's SUBSCRIBE or SSUBSCRIBE on a dropped pub/sub connection raises and
    leaves the connection closed: only the dispatcher reconnects (redis-py's own PubSub would
    reconnect and resubscribe right there, reading the socket the dispatcher reads)."""
    import redis as redis_lib

    from chat_service.transport import PubSub

    client = redis_lib.Redis.from_url(app.config["REDIS_URL"],
                                      retry=redis_lib.retry.Retry(redis_lib.backoff.NoBackoff(), 0))
    ps = PubSub(client.connection_pool)
    subscribe = getattr(ps, kind)
    subscribe("chat:u:someone")
    assert ps.get_message(timeout=1)["type"] == kind
    assert r.client_kill_filter(_type="pubsub") == 1
    with pytest.raises(redis_lib.ConnectionError):
        for _ in range(3):  # the first write may still fit in the dead socket's buffer
            subscribe("chat:u:other")
            ps.get_message(timeout=0.5)
    numsub = r.pubsub_numsub if kind == "subscribe" else r.pubsub_shardnumsub
    assert numsub("chat:u:someone")[0][1] == 0, "not reconnected and resubscribed behind our back"
    ps.reset()
    client.close()


def test_a_send_that_cannot_be_encoded_fails_alone(app):
    """Text that is not valid Unicode fails in its sender's greenlet, before it joins the
    batch of sends that one pipeline runs for every socket of the process (where it once
    failed the whole batch: every socket waiting on it closed)."""
    from chat_service.store import Store

    store = Store(app.extensions["redis"], app.config)
    with pytest.raises(UnicodeEncodeError):
        store.send_room("mallory", "lobby", {"sender": "mallory", "data": "\ud800"}, None)
    assert store.sends == [], "nothing queued for the batch"
