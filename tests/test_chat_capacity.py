"""A chat process takes no more clients than its memory holds (``chat_service.capacity``): the
cap derived from a cgroup memory limit, and a process at its cap refusing one more socket or
long-poll tab before the upgrade (503, ``Retry-After``) while its clients carry on."""
import json
import time

import pytest
import requests
import websocket

from chat_service.capacity import max_clients, memory_limit
from chat_service.config import ChatConfig
from webchat_testing.sessions import COOKIE, plant_session

MIB = 1024 * 1024
DEFAULTS = {k: getattr(ChatConfig, k) for k in ("CHAT_MAX_CLIENTS", "CHAT_PROCESS_MEMORY_MIB", "CHAT_CLIENT_MEMORY_KIB")}


@pytest.mark.parametrize("content, limit", [
    ("max\n", None),                       # cgroup v2: no limit
    ("268435456\n", 256 * MIB),            # cgroup v2 or v1: 256 MiB
    ("9223372036854771712\n", None),       # cgroup v1: "no limit" is a huge number
    ("garbage\n", None),
])
def test_the_memory_limit_is_read_from_the_cgroup(tmp_path, content, limit):
    f = tmp_path / "memory.max"
    f.write_text(content)
    assert memory_limit([str(tmp_path / "missing"), str(f)]) == limit


def test_no_cgroup_file_means_no_limit(tmp_path):
    assert memory_limit([str(tmp_path / "none")]) is None


def test_the_cap_is_the_memory_share_of_a_process_over_a_client_s_memory():
    # 256 MiB, one process: (256 - 64) MiB / 48 KiB
    assert max_clients(DEFAULTS, limit=256 * MIB, processes=1) == 4096
    # two processes share the pod's limit
    assert max_clients(DEFAULTS, limit=256 * MIB, processes=2) == (128 - 64) * 1024 // 48
    # a number set wins; no limit and no number: no cap
    assert max_clients({**DEFAULTS, "CHAT_MAX_CLIENTS": 7}, limit=256 * MIB, processes=1) == 7
    assert max_clients(DEFAULTS, limit=0, processes=1) == 0
    # a limit below the process's own memory still lets one client in (and the probes tell)
    assert max_clients(DEFAULTS, limit=32 * MIB, processes=1) == 1


@pytest.fixture
def full_chat(gunicorn, redis_url):
    """One chat process (gevent, as deployed) that takes at most 2 clients, reached directly."""
    g = gunicorn(app="chat_service:create_app()", worker_class="gevent", workers=1, name="chat",
                 CHAT_MAX_CLIENTS="2", TRUSTED_PROXIES="0")
    import redis

    r = redis.Redis.from_url(redis_url)
    people = {}
    for name in ("ann", "ben", "cat"):
        r.hset(f"user:{name}", mapping={"name": name, "password": "x"})
        people[name] = plant_session(r, name, ttl=300)
    yield g, people


def open_socket(g, name, sid):
    return websocket.create_connection(f"ws://127.0.0.1:{g.port}/chat/{name}", cookie=f"{COOKIE}={sid}",
                                       origin=g.url, timeout=5)


def until(ws, kind):
    while True:
        frame = json.loads(ws.recv())
        if frame["type"] == kind:
            return frame


def test_a_full_process_refuses_the_next_client_before_the_upgrade(full_chat):
    g, people = full_chat
    ann = open_socket(g, "ann", people["ann"])
    assert json.loads(ann.recv())["type"] == "hello"
    ben = open_socket(g, "ben", people["ben"])
    assert json.loads(ben.recv())["type"] == "hello"
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        open_socket(g, "cat", people["cat"])
    assert refused.value.status_code == 503
    assert refused.value.resp_headers.get("retry-after") == "2"
    res = requests.get(g.url + "/chat/api/events", params={"poll": "cat-tab-0001"}, timeout=10,
                       cookies={COOKIE: people["cat"]}, headers={"Accept": "application/json"})
    assert res.status_code == 503 and "memory" in res.json()["error"]
    # Those in carry on; one leaving makes room.
    ann.send(json.dumps({"type": "message", "receiver": "ben", "data": "still fine", "cid": "1"}))
    assert until(ann, "ack")["cid"] == "1"
    assert until(ben, "message")["data"] == "still fine"
    ann.close()
    for _ in range(50):
        try:
            cat = open_socket(g, "cat", people["cat"])
            break
        except websocket.WebSocketBadStatusException:
            time.sleep(0.1)
    else:
        raise AssertionError("no room after a client left")
    assert json.loads(cat.recv())["type"] == "hello"
    cat.close()
    ben.close()
