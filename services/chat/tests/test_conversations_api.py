"""The conversations' JSON API in-process against a real Redis: any query string a client can
send to ``/chat/api/history`` gives an answer with a status and JSON (never a 500), and a
conversation is only ever one of the asker's own."""
import json

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from webchat_common import keys
from webchat_testing.sessions import login_client

params = st.dictionaries(st.sampled_from(["with", "room", "before", "limit", "other"]),
                         st.text(max_size=40) | st.sampled_from(["bob", "lobby", "1-1", "50", "0", "101"]),
                         max_size=4)


def register(r, name):
    r.hset(keys.user(name), mapping={"name": name, "password": "x"})
    r.zadd(keys.USERS, {name: 1})


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(params)
@example({"with": "bob", "limit": "²"})
@example({"with": "bob", "before": "9" * 40 + "-1"})
@example({"room": "lobby", "with": ""})
def test_any_query_gets_an_answer(app, r, query):
    register(r, "alice")
    register(r, "bob")
    client = app.test_client()
    login_client(client, r, "alice")
    res = client.get("/chat/api/history", query_string=query)
    assert res.status_code in (200, 400, 403, 404), (query, res.status_code)
    body = json.loads(res.data)
    if res.status_code == 200:
        assert isinstance(body["messages"], list) and isinstance(body["more"], bool)
        assert set(body["read"]) <= {"alice", "bob"}
    else:
        assert body["error"]


def test_a_conversation_is_named_from_the_asker(app, r):
    for name in ("alice", "bob", "carol"):
        register(r, name)
    r.xadd(keys.chat_pm("alice", "bob"), {"f": json.dumps({"type": "message", "id": "5-1", "data": "private"})},
           id="5-1")
    client = app.test_client()
    login_client(client, r, "carol")
    for who in ("alice", "bob", "ALICE"):
        body = client.get("/chat/api/history", query_string={"with": who}).get_json()
        assert body["messages"] == [], who
    login_client(client, r, "alice")
    assert [m["data"] for m in client.get("/chat/api/history?with=Bob").get_json()["messages"]] == ["private"]


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(st.lists(st.text(max_size=40) | st.sampled_from(["alice", "BOB", "nobody"]), max_size=120))
def test_people_any_names(app, r, names):
    register(r, "alice")
    register(r, "bob")
    r.hset(keys.user("bob"), "avatar", "A" * 22 + ".png")
    client = app.test_client()
    login_client(client, r, "alice")
    res = client.get("/chat/api/people", query_string=[("name", n) for n in names])
    if len(names) > 100:
        assert res.status_code == 400 and res.get_json()["error"]
        return
    assert res.status_code == 200
    people = res.get_json()["people"]
    expected = {n for n in ("alice", "bob") if any(x.lower() == n for x in names)}
    assert set(people) == expected
    if "bob" in people:
        assert people["bob"] == {"avatar": "A" * 22 + ".png"}
    if "alice" in people:
        assert people["alice"] == {"avatar": None}
