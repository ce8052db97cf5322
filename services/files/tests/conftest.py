"""Fixtures of the files service's tests: the ones every module uses come from ``files_testlib``
(shared with the integration tests), offered here so a test module needs no import for them."""
import pytest

from files_testlib import SAMPLES, Person
from files_testlib import app, gateway_app, media_root, people, r  # noqa: F401  (fixtures)


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
