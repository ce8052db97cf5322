"""redis/redis-ha.sh for real: three Redis servers and three Sentinels started by the script on
loopback addresses (127.0.0.2-4 and 127.0.0.5-7, one port for each kind, as pods with their own
addresses), with the local redis-server (7.0; the images run 7.4).  The configs it writes parse
and do what the Sentinel setup needs: replication with the password (masterauth), Sentinels that
require the password and find each other (quorum 2 of 3), a handed-over primary (the preStop
hook), a failover after a crash of the primary (which the Sentinels must agree on), and
restarts that follow the current primary instead of coming back as a second one, including a
restart of everything at once after a failover, in the worst order (the Sentinels keep their
state on their volume, a Redis server waits for them and for the primary they name).  The
password is never on a command line nor in a server's environment."""
import signal
import subprocess
import time
from pathlib import Path

import pytest

from redis_setup import (
    REDIS_HA_SCRIPT,
    assert_password_kept_private,
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
        self.set_password(PASSWORD)
        self.procs = {}
        # How long a starting Redis server waits for the Sentinels, then for its primary
        # (START_WAIT): none for the first starts of these tests (the servers start first).
        self.start_wait = 0

    def set_password(self, password):
        """The Secret's file (a rotation: the pods get the new file when they restart)."""
        self.password = password
        if self.password_file.exists():
            self.password_file.chmod(0o600)
        self.password_file.write_text(password)
        self.password_file.chmod(0o400)

    def env(self, name, host):
        # Names are the loopback addresses (as pod names, stable across restarts); the pod's
        # ordinal picks its own from the list, as in Kubernetes.  Each has its own folders
        # (CONF_DIR, DATA_DIR), kept across its restarts as a pod's volume is.
        return script_env(self.tmp, name, self.password_file, REDIS_HOSTS=" ".join(REDIS), SENTINEL_HOSTS=" ".join(SENTINELS),
                          REDIS_PORT=self.redis_port, SENTINEL_PORT=self.sentinel_port, BIND_ADDRESS=host,
                          START_WAIT=self.start_wait)

    def spawn(self, role, ordinal):
        """Start the script, without waiting for the server (it may wait for others first)."""
        name = f"{'redis' if role == 'redis' else 'redis-sentinel'}-{ordinal}"
        host = (REDIS if role == "redis" else SENTINELS)[ordinal]
        log = open(self.tmp / f"{name}.log", "a")
        self.procs[name] = subprocess.Popen(["sh", str(REDIS_HA_SCRIPT), role], env=self.env(name, host),
                                            stdout=log, stderr=subprocess.STDOUT)
        return name, host

    def start(self, role, ordinal):
        name, host = self.spawn(role, ordinal)
        self.wait_up(role, ordinal)
        return self.procs[name]

    def wait_up(self, role, ordinal, timeout=30):
        host = (REDIS if role == "redis" else SENTINELS)[ordinal]
        port = self.redis_port if role == "redis" else self.sentinel_port
        wait_for(f"{role} {ordinal} to answer", lambda: cli(host, port, self.password, "PING") == "PONG", timeout=timeout)

    def stop(self, name, sig=signal.SIGTERM):
        proc = self.procs.pop(name)
        proc.send_signal(sig)
        proc.wait(timeout=30)

    def pre_stop(self, ordinal):
        return subprocess.run(["sh", str(REDIS_HA_SCRIPT), "pre-stop"], env=self.env(f"redis-{ordinal}", REDIS[ordinal]),
                              capture_output=True, text=True, timeout=60)

    def log(self, name):
        return (self.tmp / f"{name}.log").read_text()

    def sentinel_primary(self, ordinal):
        return cli(SENTINELS[ordinal], self.sentinel_port, self.password, "SENTINEL", "get-master-addr-by-name", "webchat").split()

    def sentinel_conf(self, ordinal):
        """A Sentinel's config file: in its DATA_DIR (its volume)."""
        return Path(self.env(f"redis-sentinel-{ordinal}", "")["DATA_DIR"]) / "sentinel.conf"

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

    # The config files, which hold the password, are the owner's only (a Sentinel's is in its
    # DATA_DIR, which it rewrites: it keeps the mode).
    checked = 0
    for name in c.procs:
        env = c.env(name, "")
        for f in [*Path(env["CONF_DIR"]).glob("*.conf"), *Path(env["DATA_DIR"]).glob("*.conf")]:
            checked += 1
            assert f.stat().st_mode & 0o077 == 0, f"{f} is readable by others"
    assert checked == 6


@pytest.mark.parametrize("source", ["file", "environment"])
@pytest.mark.parametrize("role", ["redis", "sentinel"])
def test_the_password_is_never_on_a_command_line_nor_in_the_servers_environment(role, source, tmp_path):
    """The password from the Secret's file (Kubernetes) or from REDIS_PASSWORD (compose) reaches
    the server through its config file only (redis_setup.assert_password_kept_private)."""
    assert_password_kept_private(REDIS_HA_SCRIPT, role, "redis-0" if role == "redis" else "redis-sentinel-0",
                                 PASSWORD, source, tmp_path)


# --- a restart of everything at once after a failover ---


def sentinel_flags(c, ordinal, kind):
    """The flags of every replica ("replicas") or other Sentinel ("sentinels") a Sentinel knows."""
    words = cli(SENTINELS[ordinal], c.sentinel_port, c.password, "SENTINEL", kind, "webchat").split()
    return [words[k + 1] for k, word in enumerate(words[:-1]) if word == "flags"]


def settled(c, primary):
    """Every Sentinel names ``primary``, which is the primary and counts both replicas as good
    for ``min-replicas-to-write`` (each has acknowledged it within the allowed lag: a replica's
    link is up on its side a moment before); every other server replicates it (link up) and
    every Sentinel knows the two replicas and the two other Sentinels, all up."""
    rp = c.redis_port
    if not all(c.sentinel_primary(i) == [primary, str(rp)] for i in range(3)):
        return False
    own = info(primary, rp, c.password)
    if own.get("role") != "master" or int(own.get("min_slaves_good_slaves", "2")) < 2:
        return False
    for r in REDIS:
        if r != primary:
            replica = info(r, rp, c.password)
            if (replica.get("role"), replica.get("master_host"), replica.get("master_link_status")) != ("slave", primary, "up"):
                return False
    for i in range(3):
        for kind in ("replicas", "sentinels"):
            flags = sentinel_flags(c, i, kind)
            if len(flags) != 2 or [f for f in flags if "down" in f or "disconnected" in f]:
                return False
    return True


def start_settled(c):
    """Three servers (redis-0 the primary) and three Sentinels, started and knowing each other."""
    for i in range(3):
        c.start("redis", i)
    for i in range(3):
        c.start("sentinel", i)
    wait_for("the replicas in sync, the Sentinels knowing everyone", lambda: settled(c, REDIS[0]), timeout=30)


def start_and_fail_over(c):
    """Three servers, three Sentinels, a write; the primary redis-0 crashes (kill -9: no
    handover) and the Sentinels promote a replica; a write on the new primary, copied to the
    other replica.  Returns the new primary."""
    rp = c.redis_port
    start_settled(c)
    assert cli(REDIS[0], rp, c.password, "SET", "before", "1") == "OK"
    # Both replicas hold it before the crash (replication is asynchronous: without this the
    # kill may come first, and the write is lost as Redis documents, not by the script).
    assert cli(REDIS[0], rp, c.password, "WAIT", "2", "5000") == "2"
    c.stop("redis-0", signal.SIGKILL)
    new = wait_for("a failover", lambda: all(c.sentinel_primary(i)[0] != REDIS[0] for i in range(3)) and c.sentinel_primary(0)[0], timeout=40)
    (other,) = [r for r in REDIS[1:] if r != new]
    wait_for("every Sentinel to agree, the other replica to follow the new primary",
             lambda: all(c.sentinel_primary(i)[0] == new for i in range(3))
             and info(other, rp, c.password).get("master_host") == new
             and info(other, rp, c.password).get("master_link_status") == "up", timeout=30)
    assert cli(new, rp, c.password, "SET", "after", "1") == "OK"
    assert cli(new, rp, c.password, "WAIT", "1", "5000") == "1"
    # What each Sentinel learned is in its file (it rewrites it at the switch).
    for i in range(3):
        wait_for(f"redis-sentinel-{i}'s file to name {new}",
                 lambda: f"sentinel monitor webchat {new} {rp} 2" in c.sentinel_conf(i).read_text())
    return new


def stop_everything(c):
    for name in list(c.procs):
        c.stop(name)


@pytest.mark.parametrize("order", ["sentinels-last", "primary-late"])
def test_a_full_restart_after_a_failover_keeps_the_writes_made_since(cluster, order):
    """Everything stops at once after a failover, and starts again in the worst order: the stale
    old primary (redis-0: the first of REDIS_HOSTS, without the write made after the failover)
    first.  "sentinels-last": every Redis server, then the Sentinels.  "primary-late": the
    Sentinels in parallel with redis-0, the new primary more than down-after-milliseconds (5 s)
    later, as a StatefulSet starting its pods one at a time may do.  The Sentinels restart from
    their files; the servers ask them: the new primary stays the primary, with the write, and
    the old one becomes its replica."""
    c = cluster
    rp = c.redis_port
    new = start_and_fail_over(c)
    stop_everything(c)

    c.start_wait = 20
    late = REDIS.index(new)
    c.spawn("redis", 0)
    if order == "sentinels-last":
        time.sleep(1)
        for i in (1, 2):
            c.spawn("redis", i)
        time.sleep(3)
        for i in range(3):
            c.spawn("sentinel", i)
    else:
        for i in range(3):
            c.spawn("sentinel", i)
        for i in range(3):
            c.wait_up("sentinel", i)
        (other,) = {1, 2} - {late}
        c.spawn("redis", other)
        time.sleep(8)
        c.spawn("redis", late)
    for i in range(3):
        c.wait_up("sentinel", i)
    for i in range(3):
        c.wait_up("redis", i, timeout=45)
    wait_for(f"the Sentinels and servers to settle on {new}", lambda: settled(c, new), timeout=60)
    for r in REDIS:
        assert cli(r, rp, c.password, "GET", "after") == "1", f"{r} lost the write made after the failover"
        assert cli(r, rp, c.password, "GET", "before") == "1", r
    for i in range(3):
        assert script_lines(c, f"redis-sentinel-{i}")[-1].endswith(f"monitors {new} (its config of an earlier run)")
    assert script_lines(c, "redis-0")[-1].endswith(f"starts as a replica of {new}")


def script_lines(c, name):
    """What the script said in a server's log (the redis-server's lines left out)."""
    return [line for line in c.log(name).splitlines() if line.startswith("redis-ha.sh:")]


def test_a_sentinel_restarted_alone_keeps_its_state_and_follows_a_failover_it_missed(cluster):
    """A Sentinel restarts from its file (the same id: the others see no new Sentinel), and a
    failover made while it was down reaches it from the others (a higher config epoch)."""
    c = cluster
    rp = c.redis_port
    start_settled(c)
    myid = cli(SENTINELS[2], c.sentinel_port, c.password, "SENTINEL", "myid")
    assert len(myid) == 40

    # Restarted alone: it monitors the same primary, from its own file.
    c.stop("redis-sentinel-2")
    c.start("sentinel", 2)
    assert f"monitors {REDIS[0]} (its config of an earlier run)" in c.log("redis-sentinel-2")
    assert c.sentinel_primary(2) == [REDIS[0], str(rp)]
    assert cli(SENTINELS[2], c.sentinel_port, c.password, "SENTINEL", "myid") == myid

    # Down while the primary crashes: the two others fail over (2 of 3) ...
    c.stop("redis-sentinel-2")
    c.stop("redis-0", signal.SIGKILL)
    new = wait_for("a failover", lambda: c.sentinel_primary(0)[0] if c.sentinel_primary(0)[0] != REDIS[0] else None, timeout=40)
    assert f"sentinel monitor webchat {REDIS[0]} " in c.sentinel_conf(2).read_text(), "its file still names the old primary"
    # ... and it learns of it when it comes back, though its file named the old primary.
    c.start("sentinel", 2)
    wait_for("the restarted Sentinel to follow the failover", lambda: c.sentinel_primary(2) == [new, str(rp)], timeout=30)
    c.start("redis", 0)
    wait_for("redis-0 back as a replica of the new primary", lambda: settled(c, new), timeout=60)
    assert cli(SENTINELS[2], c.sentinel_port, c.password, "SENTINEL", "myid") == myid
    assert len(sentinel_flags(c, 0, "sentinels")) == 2, "no duplicate of the restarted Sentinel"


def test_a_rotated_password_reaches_sentinels_that_restart_from_their_files(cluster):
    """A new password in the Secret's file, everything restarted: a Sentinel whose file holds
    the old one (requirepass, auth-pass, and the hash it writes as "user default") takes the
    new one, for its clients, the servers and the other Sentinels; the old one is gone."""
    c = cluster
    rp, sp = c.redis_port, c.sentinel_port
    start_settled(c)
    old = c.password
    assert old in c.sentinel_conf(0).read_text()
    stop_everything(c)

    c.set_password("test-rotated-password-not-a-secret")
    c.start_wait = 20
    for i in range(3):
        c.spawn("sentinel", i)
    for i in range(3):
        c.start("redis", i)
    for i in range(3):
        c.wait_up("sentinel", i)
    for i in range(3):
        assert "its config of an earlier run" in c.log(f"redis-sentinel-{i}")
    wait_for("the Sentinels to reach the servers and each other with the new password", lambda: settled(c, REDIS[0]), timeout=60)
    assert cli(SENTINELS[0], sp, c.password, "SENTINEL", "ckquorum", "webchat").startswith("OK 3 usable")
    for i in range(3):
        assert cli(SENTINELS[i], sp, old, "PING") != "PONG" and cli(REDIS[i], rp, old, "PING") != "PONG", "the old password is refused"
        text = c.sentinel_conf(i).read_text()
        assert old not in text and c.password in text
        assert c.sentinel_conf(i).stat().st_mode & 0o077 == 0
