"""``SentinelSet``, the local stack's Redis with failover (``REDIS_TOPOLOGY=sentinel``): its
Sentinels promote a replica when the primary is killed, and stopping and starting the set
again (``make run`` stopped and run again) keeps what was written after a failover."""
import redis

from webchat_testing.sentinel import SentinelSet


def test_a_failover_and_a_restart_keep_every_write(tmp_path):
    ha = SentinelSet(tmp_path).start()
    try:
        client = ha.client()
        client.set("before", "1")
        old = ha.kill_primary()
        new = ha.wait_failover(old)
        assert new is not old and ha.primary() is new
        client.set("after", "2")  # the same client, through the Sentinels, on the new primary
        assert redis.Redis(port=new.port).get("after") == b"2"
        client.close()
    finally:
        ha.stop()
    # Started again (the killed server's older data included), the set keeps the promoted
    # server as primary: nothing written after the failover is synced away.
    ha.start()
    try:
        assert ha.primary() is new
        client = ha.client()
        assert client.get("before") == "1" and client.get("after") == "2"
        assert all(ha.synced(s) for s in ha.servers if s is not new)
        client.close()
    finally:
        ha.stop()
