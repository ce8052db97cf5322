"""``REDIS_URL`` in its Sentinel form (``redis+sentinel://``) and its Cluster form
(``redis+cluster://``): parsed whole or refused with a reason, and turned into a client of the
primary on a blocking pool like the single-Redis one.  (The failover itself, with real
Sentinels: tests/test_sentinel.py; the Cluster client on a real Cluster:
lib/webchat_testing/tests/test_cluster_set.py.)"""
import string
from urllib.parse import quote

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from webchat_common.redis_store import (CLUSTER_PORT, SENTINEL_PORT, SENTINEL_TIMEOUT, BlockingSentinelPool, ClusterURL,
                                        SentinelURL, is_cluster_url, is_sentinel_url, open_client, parse_cluster_url,
                                        parse_sentinel_url)

hosts = st.one_of(
    st.text(string.ascii_letters + string.digits + ".-_", min_size=1, max_size=30),
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(lambda a: f"[{a}]"),
)
ports = st.one_of(st.none(), st.integers(1, 65535))
secrets_ = st.one_of(st.none(), st.text(min_size=1, max_size=20))


def authority(hosts, username, password):
    auth = ""
    if username or password is not None:
        auth = quote(username or "", safe="") + (":" + quote(password, safe="") if password is not None else "") + "@"
    return auth + ",".join(h if p is None else f"{h}:{p}" for h, p in hosts)


def build(sentinels, service, db, username, password):
    return (f"redis+sentinel://{authority(sentinels, username, password)}/{quote(service, safe='')}"
            + ("" if db is None else f"/{db}"))


@given(st.lists(st.tuples(hosts, ports), min_size=1, max_size=4), st.text(min_size=1, max_size=20),
       st.one_of(st.none(), st.integers(0, 15)), st.one_of(st.none(), st.text(min_size=1, max_size=10)), secrets_)
def test_a_sentinel_url_round_trips(sentinels, service, db, username, password):
    parsed = parse_sentinel_url(build(sentinels, service, db, username, password))
    expect = tuple((h.strip("[]"), SENTINEL_PORT if p is None else p) for h, p in sentinels)
    assert parsed == SentinelURL(expect, service, db or 0, username, password)


@given(st.text(max_size=80))
@example("h:65536/s")
@example("[::1/s")
@example("h:1:2/s")
@example("h/s/-1")
@example("h/s/١")
def test_any_text_is_parsed_or_refused_with_a_reason(rest):
    try:
        parsed = parse_sentinel_url("redis+sentinel://" + rest)
    except ValueError as exc:
        assert str(exc)
        return
    assert parsed.sentinels and parsed.service
    assert all(0 < port < 65536 and host for host, port in parsed.sentinels)


@pytest.mark.parametrize("url, reason", [
    ("redis+sentinel://h", "names the monitored service"),
    ("redis+sentinel://h:0/webchat", "port"),
    ("redis+sentinel://h:x/webchat", "port"),
    ("redis+sentinel://,h/webchat", "address"),
    ("redis+sentinel://h/webchat/zero", "database"),
    ("redis+sentinel://h/webchat?db=1", "no query"),
    ("redis+sentinel://h/webchat/0/1", "names the monitored service"),
])
def test_bad_sentinel_urls_say_what_is_wrong(url, reason):
    with pytest.raises(ValueError, match=reason):
        parse_sentinel_url(url)
    with pytest.raises(ValueError, match=reason):
        open_client(url)


def test_only_the_sentinel_scheme_is_a_sentinel_url():
    assert is_sentinel_url("redis+sentinel://h/s") and is_sentinel_url("REDIS+SENTINEL://h/s")
    assert not is_sentinel_url("redis://h:6379/0") and not is_sentinel_url("rediss://h/0")


def test_a_sentinel_client_is_the_primary_on_a_blocking_pool():
    """Nothing is contacted until a command runs; the pool blocks at its size, and the
    password and database go to the Redis connections."""
    client = open_client("redis+sentinel://:pw@a:1,b/webchat/3", max_connections=7, pool_timeout=2.5,
                         socket_timeout=1.0, decode_responses=True)
    pool = client.connection_pool
    assert isinstance(pool, BlockingSentinelPool) and pool.is_master and pool.service_name == "webchat"
    assert pool.max_connections == 7 and pool.timeout == 2.5
    assert pool.connection_kwargs["db"] == 3 and pool.connection_kwargs["password"] == "pw"
    sentinels = pool.sentinel_manager.sentinels
    assert [(s.connection_pool.connection_kwargs["host"], s.connection_pool.connection_kwargs["port"])
            for s in sentinels] == [("a", 1), ("b", SENTINEL_PORT)]
    assert all(s.connection_pool.connection_kwargs["password"] == "pw" for s in sentinels)
    assert all(s.connection_pool.connection_kwargs["socket_timeout"] == 1.0 for s in sentinels)


def test_sentinel_queries_time_out_even_when_the_caller_sets_no_timeout():
    sentinels = open_client("redis+sentinel://a/webchat").connection_pool.sentinel_manager.sentinels
    assert sentinels[0].connection_pool.connection_kwargs["socket_timeout"] == SENTINEL_TIMEOUT


@given(st.lists(st.tuples(hosts, ports), min_size=1, max_size=6), st.sampled_from(["", "/", "/0"]),
       st.one_of(st.none(), st.text(min_size=1, max_size=10)), secrets_)
def test_a_cluster_url_round_trips(nodes, path, username, password):
    parsed = parse_cluster_url(f"redis+cluster://{authority(nodes, username, password)}{path}")
    expect = tuple((h.strip("[]"), CLUSTER_PORT if p is None else p) for h, p in nodes)
    assert parsed == ClusterURL(expect, username, password)


@given(st.text(max_size=80))
@example("h:65536")
@example("[::1")
@example("h:1:2")
@example("h/1")
@example("h/0/")
@example("h,")
@example("h:١")
def test_any_text_is_a_cluster_url_or_refused_with_a_reason(rest):
    try:
        parsed = parse_cluster_url("redis+cluster://" + rest)
    except ValueError as exc:
        assert str(exc)
        return
    assert parsed.nodes
    assert all(0 < port < 65536 and host for host, port in parsed.nodes)


@pytest.mark.parametrize("url, reason", [
    ("redis+cluster://", "bad Cluster node address"),
    ("redis+cluster://h,,k", "bad Cluster node address"),
    ("redis+cluster://h:0", "bad Cluster node port"),
    ("redis+cluster://h:x", "bad Cluster node port"),
    ("redis+cluster://[::1", r"\[IPV6\]:PORT"),
    ("redis+cluster://h/1", "only database 0"),
    ("redis+cluster://h/0/x", "only database 0"),
    ("redis+cluster://h?read_from_replicas=1", "no query or fragment"),
    ("redis+cluster://h#x", "no query or fragment"),
    ("redis://h", "starts with redis\\+cluster://"),
])
def test_bad_cluster_urls_say_what_is_wrong(url, reason):
    """Refused before any node is contacted (these hosts do not exist)."""
    with pytest.raises(ValueError, match=reason):
        parse_cluster_url(url)
    if is_cluster_url(url):
        with pytest.raises(ValueError, match=reason):
            open_client(url)


def test_only_the_cluster_scheme_is_a_cluster_url():
    assert is_cluster_url("redis+cluster://h") and is_cluster_url("REDIS+CLUSTER://h:1,k:2/")
    assert not is_cluster_url("redis://h:6379/0") and not is_cluster_url("redis+sentinel://h/s")

