"""The Redis key table (docs/redis-keys.md) names every key the code builds (one table, kept true)."""
import inspect
import re
from pathlib import Path

from webchat_common import keys, sessions

KEYS_DOC = Path(__file__).resolve().parents[3] / "docs" / "redis-keys.md"


def documented_keys():
    text = KEYS_DOC.read_text()
    section = text.split("# Redis keys", 1)[1].split("\n## ", 1)[0]
    return [row.split("|")[1].strip() for row in section.splitlines() if row.startswith("| ") and "---" not in row]


def built_prefixes():
    """What each key builder returns for a placeholder argument, up to the placeholder."""
    found = {sessions.KEY_PREFIX, sessions.ENDED_CHANNEL}
    for name, obj in vars(keys).items():
        if name.startswith("_"):
            continue
        if isinstance(obj, str) and name.isupper():
            found.add(obj)
        elif inspect.isfunction(obj) and obj.__module__ == keys.__name__:
            args = ["PLACEHOLDER"] * len(inspect.signature(obj).parameters)
            found.add(obj(*args).split("placeholder")[0].split("PLACEHOLDER")[0])
    return found


def test_every_key_is_in_the_redis_keys_table():
    rows = documented_keys()
    assert rows, "docs/redis-keys.md has a Redis keys table"
    for prefix in sorted(built_prefixes()):
        assert any(re.sub(r"<[^>]*>", "", row.split(" ")[0]).startswith(prefix) or row.startswith(prefix)
                   for row in rows), f"{prefix!r} is not in the Redis keys table of docs/redis-keys.md"
