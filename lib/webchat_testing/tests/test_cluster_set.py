"""``ClusterSet``, a Redis Cluster of real processes: keys spread over its three primaries, the
services' client (``open_client`` with a ``redis+cluster://`` URL) reaches them on blocking
pools, a write acknowledged by a replica (``WAIT 1``) survives a kill -9 of its primary and the
failover, the same client follows the failover by itself, stopping and starting the set
keeps every write, and a wiped set starts again empty."""
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from webchat_common.redis_store import CLUSTER_RETRIES
from webchat_testing.cluster import ClusterSet


def test_keys_spread_over_every_primary_on_blocking_pools(tmp_path):
    cluster = ClusterSet(tmp_path).start()
    try:
        client = cluster.client(max_connections=5, pool_timeout=1.5, health_check_interval=15)
        keys = [f"user:{i}" for i in range(60)]
        for key in keys:
            client.set(key, key)
        owners = {cluster.primary_of(key).port for key in keys}
        assert len(owners) == 3 and len(cluster.servers) == 6
        for key in keys:  # each key is on the primary of its slot, and only there
            node = redis.Redis(port=cluster.primary_of(key).port, decode_responses=True)
            assert node.get(key) == key
            node.close()
        primaries = client.get_primaries()
        assert {n.port for n in primaries} == owners
        for node in primaries:
            pool = node.redis_connection.connection_pool
            assert isinstance(pool, redis.BlockingConnectionPool)
            assert pool.max_connections == 5 and pool.timeout == 1.5
            assert pool.connection_kwargs["health_check_interval"] == 15
            assert pool.connection_kwargs["decode_responses"] is True
        assert client.retry.get_retries() == CLUSTER_RETRIES
        client.close()
        no_retry = cluster.client(retry=Retry(NoBackoff(), 0))  # the caller's retry is the client's
        assert no_retry.retry.get_retries() == 0 and no_retry.get(keys[0]) == keys[0]
        no_retry.close()
    finally:
        cluster.stop()


def test_writes_acknowledged_by_a_replica_survive_a_kill_and_a_restart(tmp_path):
    cluster = ClusterSet(tmp_path).start()
    try:
        client = cluster.client()
        keys = [f"k:{i}" for i in range(90)]
        by_primary = {}
        for key in keys:
            by_primary.setdefault(cluster.primary_of(key), []).append(key)
        assert len(by_primary) == 3
        for primary, owned in by_primary.items():
            # WAIT counts the replicas that hold this connection's writes: one connection.
            node = redis.Redis(port=primary.port, single_connection_client=True)
            for key in owned:
                node.set(key, key)
            assert node.wait(1, 5000) >= 1
            node.close()
        victim = keys[0]
        old = cluster.kill_primary(victim)
        new = cluster.wait_failover(old)
        assert new is not old and cluster.primary_of(victim) is new
        # The client made before the kill follows the failover (it re-reads the slot map).
        assert [client.get(key) for key in keys] == keys
        client.set("after", "yes")
        cluster.heal()  # the killed primary comes back as a replica of its successor
        assert cluster.primary_of(victim) is new
        assert cluster.synced(old)
        client.close()
    finally:
        cluster.stop()
    cluster.start()  # the same Cluster again, from each node's nodes.conf and AOF
    try:
        assert cluster.primary_of(victim) is new
        client = cluster.client()
        assert [client.get(key) for key in keys] == keys and client.get("after") == "yes"
        client.close()
    finally:
        cluster.stop()
    # A new ClusterSet over the same directory is the same Cluster on the same ports.
    again = ClusterSet(tmp_path)
    assert [s.port for s in again.servers] == [s.port for s in cluster.servers]
    again.start()
    try:
        assert again.client().get("after") == "yes"
    finally:
        again.stop()
    # Wiped, it comes back as the same Cluster (its slots where they were) with no data.
    again.wipe()
    again.start()
    try:
        client = again.client()
        assert again.primary_of(victim).port == new.port
        assert [client.get(key) for key in keys + ["after"]] == [None] * (len(keys) + 1)
        client.set("after", "again")
        assert client.get("after") == "again"
        client.close()
    finally:
        again.stop()
