"""pytest fixtures shared by every test folder (``pytest.ini``: ``-p webchat_testing.pytest_plugin``):
a real Redis per session, emptied for each test, and the hypothesis profiles."""
import pytest
import redis

from . import RedisServer


@pytest.fixture(scope="session")
def redis_server():
    """One Redis for the session's unit tests, with no persistence (``persistent=False``): each
    test starts from FLUSHALL (``redis_url``), none restarts Redis expecting its data back, and
    an AOF would only add a write per command on the machine's shared disk.  What persistence
    guarantees is tested on the stack that runs with it (tests/test_faults.py)."""
    with RedisServer(persistent=False) as server:
        yield server


@pytest.fixture
def redis_url(redis_server):
    """A real, empty Redis for each test."""
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    return redis_server.url


def _hypothesis_profiles():
    """Property-based tests (hypothesis) run a bounded number of examples with no per-example
    deadline: the machines are shared and a real Redis or gateway round trip varies.  The
    ``thorough`` profile (``--hypothesis-profile=thorough``) runs ten times as many."""
    from hypothesis import HealthCheck, settings

    common = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                        HealthCheck.function_scoped_fixture])
    settings.register_profile("default", max_examples=150, **common)
    settings.register_profile("thorough", max_examples=1500, **common)
    settings.load_profile("default")


_hypothesis_profiles()
