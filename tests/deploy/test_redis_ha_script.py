"""redis/redis-ha.sh for real: three Redis servers and three Sentinels started by the script on
loopback addresses (127.0.0.2-4 and 127.0.0.5-7, one port for each kind, as pods with their own
addresses), with the local redis-server (7.0; the images run 7.4).  The configs it writes parse
and do what the Sentinel setup needs: replication with the password (masterauth), Sentinels that
require the password and find each other (quorum 2 of 3), a handed-over primary (the preStop
hook), a failover after a crash of the primary (which the Sentinels must agree on), and
restarts that follow the current primary instead of coming back as a second one.  The
password is never on a command line nor in a server's environment."""
import signal
import subprocess
from pathlib import Path

import pytest

from redis_setup import (
    REDIS_HA_SCRIPT,
    cli,
    free_port,
    info,
    redis_server_binary,
    script_env,
    wait_for,
)

PASSWORD = "test-redis-password-not-a-secret"
REDIS = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
SENTINELS = ["127.0.0.5", "127.0.0.6", "127.0.0.7"]


class Cluster:
    def __init__(self, tmp_path):
        redis_server_binary()
        self.tmp = tmp_path
        self.redis_port, self.sentinel_port = free_port(), free_port()
        self.password_file = tmp_path / "password"
        self.password_file.write_text(PASSWORD)
        self.password_file.chmod(0o400)
        self.procs = {}

    def env(self, name, host):
        # Names are the loopback addresses (as pod names, stable across restarts); the pod's
        # ordinal picks its own from the list, as in Kubernetes.
        return script_env(self.tmp, name, self.password_file, REDIS_HOSTS=" ".join(REDIS), SENTINEL_HOSTS=" ".join(SENTINELS),
                          REDIS_PORT=self.redis_port, SENTINEL_PORT=self.sentinel_port, BIND_ADDRESS=host)

    def start(self, role, ordinal):
        name = f"{'redis' if role == 'redis' else 'redis-sentinel'}-{ordinal}"
        host = (REDIS if role == "redis" else SENTINELS)[ordinal]
        log = open(self.tmp / f"{name}.log", "a")
        self.procs[name] = subprocess.Popen(["sh", str(REDIS_HA_SCRIPT), role], env=self.env(name, host),
                                            stdout=log, stderr=subprocess.STDOUT)
        port = self.redis_port if role == "redis" else self.sentinel_port
        wait_for(f"{name} to answer", lambda: cli(host, port, PASSWORD, "PING") == "PONG")
        return self.procs[name]

    def stop(self, name):
        proc = self.procs.pop(name)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)

    def pre_stop(self, ordinal):
        return subprocess.run(["sh", str(REDIS_HA_SCRIPT), "pre-stop"], env=self.env(f"redis-{ordinal}", REDIS[ordinal]),
                              capture_output=True, text=True, timeout=60)

    def log(self, name):
        return (self.tmp / f"{name}.log").read_text()

    def sentinel_primary(self, ordinal):
        return cli(SENTINELS[ordinal], self.sentinel_port, PASSWORD, "SENTINEL", "get-master-addr-by-name", "webchat").split()

    def close(self):
        for proc in self.procs.values():
            proc.kill()
            proc.wait()


@pytest.fixture
def cluster(tmp_path):
    c = Cluster(tmp_path)
    yield c
    c.close()


def test_the_script_runs_a_sentinel_setup_that_fails_over_and_restarts_right(cluster):
    c = cluster
    rp, sp = c.redis_port, c.sentinel_port
    for i in range(3):
        c.start("redis", i)
    # redis-0 is the first primary, the others replicate it with the password (masterauth).
    for i in (1, 2):
        wait_for(f"redis-{i} in sync", lambda: info(REDIS[i], rp, PASSWORD).get("master_link_status") == "up")
    assert info(REDIS[0], rp, PASSWORD)["role"] == "master"
    assert info(REDIS[0], rp, PASSWORD)["connected_slaves"] == "2"
    for i in (1, 2):
        replica = info(REDIS[i], rp, PASSWORD)
        assert (replica["role"], replica["master_host"], replica["master_link_status"]) == ("slave", REDIS[0], "up")
    assert "NOAUTH" in cli(REDIS[0], rp, None, "GET", "x"), "the servers require the password"
    assert cli(REDIS[0], rp, PASSWORD, "CONFIG", "GET", "min-replicas-to-write").split() == ["min-replicas-to-write", "1"]
    assert cli(REDIS[0], rp, PASSWORD, "CONFIG", "GET", "appendfsync").split() == ["appendfsync", "everysec"]
    assert cli(REDIS[0], rp, PASSWORD, "SET", "k", "v") == "OK"

    for i in range(3):
        c.start("sentinel", i)
    assert "NOAUTH" in cli(SENTINELS[0], sp, None, "SENTINEL", "masters"), "the Sentinels require the password"
    # They find each other (hello messages through the primary, each authenticated with its requirepass).
    wait_for("a quorum of Sentinels",
             lambda: cli(SENTINELS[0], sp, PASSWORD, "SENTINEL", "ckquorum", "webchat").startswith("OK 3 usable"), timeout=30)
    for i in range(3):
        assert c.sentinel_primary(i) == [REDIS[0], str(rp)]

    # The preStop hook of the primary hands the role over; the Sentinels agree on the new one.
    proc = c.pre_stop(0)
    assert proc.returncode == 0, proc.stderr
    assert info(REDIS[0], rp, PASSWORD)["role"] == "slave", "pre-stop returns once the role is handed over"
    new = wait_for("a new primary", lambda: c.sentinel_primary(0)[0] if c.sentinel_primary(0)[0] != REDIS[0] else None)
    assert new in REDIS[1:]
    wait_for("every Sentinel to agree", lambda: all(c.sentinel_primary(i)[0] == new for i in range(3)))
    assert info(new, rp, PASSWORD)["role"] == "master"
    assert cli(new, rp, PASSWORD, "GET", "k") == "v"

    # redis-0 restarts (its config file is written anew): it asks the Sentinels and follows the
    # new primary instead of starting as a second one.
    c.stop("redis-0")
    c.start("redis", 0)
    assert f"a replica of {new}" in c.log("redis-0")
    wait_for("redis-0 to replicate the new primary", lambda: info(REDIS[0], rp, PASSWORD).get("master_link_status") == "up")
    assert info(REDIS[0], rp, PASSWORD)["master_host"] == new

    # A Sentinel that restarts (a new pod: a new config file) monitors the current primary.
    c.stop("redis-sentinel-2")
    c.start("sentinel", 2)
    assert f"monitors {new}" in c.log("redis-sentinel-2")
    assert c.sentinel_primary(2) == [new, str(rp)]

    # The new primary crashes (no handover): the Sentinels must agree that it is down (2 of 3,
    # asking each other with the password) before one of them promotes a replica.
    c.procs[f"redis-{REDIS.index(new)}"].send_signal(signal.SIGKILL)
    c.procs[f"redis-{REDIS.index(new)}"].wait()
    third = wait_for("a failover after the crash", lambda: c.sentinel_primary(0)[0] if c.sentinel_primary(0)[0] != new else None, timeout=40)
    assert third in REDIS and info(third, rp, PASSWORD)["role"] == "master"
    assert cli(third, rp, PASSWORD, "GET", "k") == "v"
    for i in range(3):
        others = cli(SENTINELS[i], sp, PASSWORD, "SENTINEL", "sentinels", "webchat").split()
        flags = [others[k + 1] for k, word in enumerate(others[:-1]) if word == "flags"]
        assert len(flags) == 2 and not [f for f in flags if "s_down" in f or "disconnected" in f], \
            f"redis-sentinel-{i} sees the others as {flags}"

    # The config files, which hold the password, are the owner's only.
    for name in c.procs:
        for f in Path(c.env(name, "")["CONF_DIR"]).glob("*.conf"):
            assert f.stat().st_mode & 0o077 == 0, f"{f} is readable by others"


@pytest.mark.parametrize("source", ["file", "environment"])
@pytest.mark.parametrize("role", ["redis", "sentinel"])
def test_the_password_is_never_on_a_command_line_nor_in_the_servers_environment(role, source, tmp_path):
    """What the script execs, recorded by a redis-server that writes down its arguments and its
    environment (redis-server's own /proc/PID/cmdline and environ show its process title, not
    them).  The password comes from the Secret's file (Kubernetes) or from REDIS_PASSWORD
    (compose, which the script removes from the environment)."""
    password_file = tmp_path / "password"
    password_file.write_text(PASSWORD)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "exec"
    (bin_dir / "redis-server").write_text(f'#!/bin/sh\nprintf "%s\\0" "$@" > {record}.args\nenv -0 > {record}.env\n')
    (bin_dir / "redis-server").chmod(0o755)
    (bin_dir / "redis-cli").write_text("#!/bin/sh\nexit 1\n")  # no Sentinel to ask
    (bin_dir / "redis-cli").chmod(0o755)
    env = script_env(tmp_path, "redis-0" if role == "redis" else "redis-sentinel-0", password_file)
    env["PATH"] = f"{bin_dir}:{env['PATH']}"
    if source == "environment":
        env["PASSWORD_FILE"] = str(tmp_path / "missing")
        env["REDIS_PASSWORD"] = PASSWORD
    proc = subprocess.run(["sh", str(REDIS_HA_SCRIPT), role], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    args = Path(f"{record}.args").read_bytes()
    environ = Path(f"{record}.env").read_bytes()
    assert args.split(b"\0")[0].endswith(b".conf") and PASSWORD.encode() not in args
    assert PASSWORD.encode() not in environ and b"REDIS_PASSWORD=" not in environ
    conf = Path(args.split(b"\0")[0].decode())
    assert f"requirepass {PASSWORD}" in conf.read_text()
    assert conf.stat().st_mode & 0o077 == 0, "the config file is the owner's only"
