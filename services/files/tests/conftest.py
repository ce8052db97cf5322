"""Fixtures of the files service's tests: the app (run alone, or configured as behind the
gateway), a real Redis and a media directory per test, and logged-in people.  The sample files
and the uploader they use are in :mod:`webchat_testing.media`."""
import pytest
import redis

from files_service import FilesTestConfig, create_app
from webchat_common import as_mapping
from webchat_testing.media import SAMPLES, Person


@pytest.fixture
def media_root(tmp_path):
    return tmp_path / "media"


@pytest.fixture
def app(redis_url, media_root):
    return create_app(as_mapping(FilesTestConfig, REDIS_URL=redis_url, MEDIA_ROOT=str(media_root)))


@pytest.fixture
def gateway_app(redis_url, media_root):
    """The service configured as behind the gateway (signed links, X-Accel-Redirect)."""
    return create_app(as_mapping(FilesTestConfig, REDIS_URL=redis_url, MEDIA_ROOT=str(media_root),
                                 MEDIA_GATEWAY=True, MEDIA_URL_SECRET="test-secret", MEDIA_URL_TTL=60))


@pytest.fixture
def r(redis_url):
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


@pytest.fixture
def people(app, r):
    return lambda name: Person(app, r, name)


@pytest.fixture
def alice_file(people):
    """alice, logged in, and a text file she uploaded: ``(alice, url, data)``."""
    alice = people("alice")
    data = bytes(range(256)) * 4 + b"end"
    body = alice.upload("data.bin", data).json
    return alice, body["url"], data


@pytest.fixture
def gateway_alice(gateway_app, r):
    """alice on the service configured for the gateway, and a picture she uploaded:
    ``(alice, name)``."""
    alice = Person(gateway_app, r, "alice")
    return alice, alice.upload("a.png", SAMPLES["pic.png"][0]).json["name"]
