"""What the fault suite (``tests/test_faults.py``) shares with ``tests/conftest.py``: its stack's
settings and where its figures are collected for the terminal summary."""
import pytest

#: The fault stack's chat settings: production defaults except what makes failures show quickly
#: (pub/sub health check every second, pings every 4 s, presence TTL 3 s).
FAULT_ENV = {
    "CHAT_PRESENCE_TTL": "3",
    "CHAT_SESSION_CHECK_INTERVAL": "2",
    "CHAT_PUBSUB_HEALTH_INTERVAL": "1",
    "CHAT_PING_INTERVAL": "4",
    "CHAT_HISTORY_AGE": "3600",
}

#: The fault suite's figures, one line per scenario, printed again at the end of the run by
#: ``pytest_terminal_summary`` in tests/conftest.py, whether or not output is captured.
FAULT_FIGURES = pytest.StashKey[list]()
