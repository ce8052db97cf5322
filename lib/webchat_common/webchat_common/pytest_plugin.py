"""pytest fixtures shared by the services' unit tests (load with ``-p webchat_common.pytest_plugin``)."""
import pytest
import redis

from .testing import RedisServer


@pytest.fixture(scope="session")
def redis_server():
    with RedisServer() as server:
        yield server


@pytest.fixture
def redis_url(redis_server):
    """A real, empty Redis for each test."""
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    return redis_server.url
