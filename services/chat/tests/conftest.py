"""Fixtures of the chat service's unit tests: the app against a real Redis, and that Redis; a
real Redis Cluster for the broker's Cluster tests."""
import pytest

from chat_service import create_app
from chat_service.config import ChatTestConfig
from webchat_common import as_mapping
from webchat_testing.cluster import ClusterSet


@pytest.fixture
def app(redis_url):
    return create_app(as_mapping(ChatTestConfig, REDIS_URL=redis_url, TRUSTED_PROXIES=0,
                                 CHAT_ALLOWED_ORIGINS="https://chat.example, http://other.example:8443/"))


@pytest.fixture
def r(app):
    return app.extensions["redis"]


@pytest.fixture
def cluster(tmp_path):
    """A real Redis Cluster of its own for each test (three primaries, a replica each), which
    the test may kill nodes of or reshard."""
    cluster = ClusterSet(tmp_path / "cluster").start()
    try:
        yield cluster
    finally:
        cluster.stop()
