"""Fixtures of the chat service's unit tests: the app against a real Redis, and that Redis."""
import pytest

from chat_service import create_app
from chat_service.config import ChatTestConfig
from webchat_common import as_mapping


@pytest.fixture
def app(redis_url):
    return create_app(as_mapping(ChatTestConfig, REDIS_URL=redis_url, TRUSTED_PROXIES=0,
                                 CHAT_ALLOWED_ORIGINS="https://chat.example, http://other.example:8443/"))


@pytest.fixture
def r(app):
    return app.extensions["redis"]
