"""Redis persistence is chosen once and is the same in the three ways to run the stack.

The rule (docs/durability.md): Redis keeps an append-only file with ``appendfsync everysec``
in the local stack (``make run``, the integration tests; every server of its Sentinel setup
too), in docker-compose.yml, in k8s/base/redis.yaml, and in redis/redis-ha.sh (compose and
Kubernetes with Sentinel).  These checks read the compose and Kubernetes files and the script
as text and the local stack's :class:`RedisServer` command lines, and fail when one of them differs from the others
or from what the document says; the last two run a real redis-server to show what the setting
keeps through a kill -9 and a graceful restart.
"""
import re
import shlex
from pathlib import Path

import redis
import yaml

from localstack import Stack
import webchat_testing as testing
from webchat_testing import RedisServer

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "durability.md"


def persistence(argv):
    """``{"appendonly": ..., "appendfsync": ...}`` from a redis-server command line (the last
    occurrence wins, as in Redis); missing options are None (Redis' defaults: ``appendonly no``,
    ``appendfsync everysec``: we want both written out)."""
    found = {"appendonly": None, "appendfsync": None}
    for i, arg in enumerate(argv[:-1]):
        if arg.startswith("--") and arg[2:] in found:
            found[arg[2:]] = argv[i + 1]
    return found


def server_argv(shell_command):
    """The redis-server arguments of a container's ``sh -c`` command (after ``exec redis-server``)."""
    words = shlex.split(shell_command)
    start = words.index("redis-server")
    return words[start:]


def compose_redis_argv():
    doc = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    command = doc["services"]["redis"]["command"]
    assert command[:2] == ["sh", "-c"], command
    return server_argv(command[2])


def k8s_redis_argv():
    docs = list(yaml.safe_load_all((ROOT / "k8s" / "base" / "redis.yaml").read_text()))
    sts = next(d for d in docs if d and d["kind"] == "StatefulSet")
    container = next(c for c in sts["spec"]["template"]["spec"]["containers"] if c["name"] == "redis")
    command = container["command"]
    assert command[:2] == ["sh", "-c"], command
    return server_argv(command[2])


def local_stack_argvs(tmp_path, topology="single"):
    """The local stack's Redis command lines, one per server (three with Sentinel)."""
    stack = Stack(tmp_path, redis_topology=topology)  # not started: only the command lines are read
    servers = stack.redis.servers if topology == "sentinel" else [stack.redis]
    return [s.args() for s in servers]


def redis_ha_script_argv():
    """The redis-server command line redis/redis-ha.sh (compose and Kubernetes with Sentinel) execs."""
    line = next(ln for ln in (ROOT / "redis" / "redis-ha.sh").read_text().splitlines()
                if ln.strip().startswith("exec redis-server") and "--sentinel" not in ln)
    return server_argv(line)


def documented_setting():
    """The setting docs/durability.md declares: its line ``Setting: `appendonly yes`, `appendfsync X` ``."""
    m = re.search(r"^Setting: `appendonly (\w+)`, `appendfsync (\w+)`", DOC.read_text(), re.M)
    assert m, "docs/durability.md must state its setting on a line 'Setting: `appendonly ...`, `appendfsync ...`'"
    return {"appendonly": m.group(1), "appendfsync": m.group(2)}


def test_the_three_ways_to_run_persist_as_documented(tmp_path):
    expected = documented_setting()
    assert expected == {"appendonly": "yes", "appendfsync": testing.APPENDFSYNC}
    (single,) = local_stack_argvs(tmp_path / "single")
    places = {
        "local stack (RedisServer)": persistence(single),
        "docker-compose.yml": persistence(compose_redis_argv()),
        "k8s/base/redis.yaml": persistence(k8s_redis_argv()),
        "redis/redis-ha.sh (compose and Kubernetes with Sentinel)": persistence(redis_ha_script_argv()),
    }
    for i, argv in enumerate(local_stack_argvs(tmp_path / "ha", "sentinel")):
        places[f"local stack with Sentinel (SentinelSet), server {i}"] = persistence(argv)
    for where, found in places.items():
        assert found == expected, f"{where}: {found}, docs/durability.md says {expected}"


def test_the_check_can_fail():
    """The parser sees a missing or different setting."""
    assert persistence(["redis-server", "--appendonly", "yes"]) == {"appendonly": "yes", "appendfsync": None}
    assert persistence(server_argv("exec redis-server /c --appendonly yes --appendfsync always"))["appendfsync"] == "always"
    assert persistence(RedisServer(persistent=False).args())["appendonly"] == "no"


def _write_acknowledged(r, n):
    pipe = r.pipeline(transaction=False)
    for i in range(n):
        pipe.set(f"k{i}", i)
    assert all(pipe.execute())


def test_kill_9_keeps_every_acknowledged_write(tmp_path):
    """With the AOF, a write Redis answered is in the kernel's page cache before the answer
    left (Redis 7: ``flushAppendOnlyFile`` before the replies): SIGKILL right after the
    answer loses nothing.  (Without persistence the same kill loses everything.)"""
    server = RedisServer(data_dir=str(tmp_path / "aof")).start()
    r = redis.Redis(port=server.port)
    try:
        _write_acknowledged(r, 2000)
        server.kill()
        server.start()
        assert r.dbsize() == 2000 and r.get("k1999") == b"1999"
    finally:
        r.close()
        server.stop()
    ephemeral = RedisServer(data_dir=str(tmp_path / "none"), persistent=False).start()
    r = redis.Redis(port=ephemeral.port)
    try:
        _write_acknowledged(r, 10)
        ephemeral.kill()
        ephemeral.start()
        assert r.dbsize() == 0
    finally:
        r.close()
        ephemeral.stop()


def test_graceful_restart_keeps_the_data_on_the_same_port(tmp_path):
    server = RedisServer(data_dir=str(tmp_path)).start()
    port = server.port
    r = redis.Redis(port=port)
    try:
        _write_acknowledged(r, 100)
        server.restart()
        assert server.port == port and r.dbsize() == 100
        server.stop()
        server.wipe()
        server.start()
        assert r.dbsize() == 0
    finally:
        r.close()
        server.stop()
