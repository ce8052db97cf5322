"""Property-based tests of what chat reads from a client and writes back: ``parse_frame`` (any
text or bytes a socket delivers) and ``text_frame`` (every server frame).  The same frames go
through the real gateway in ``tests/test_chat_hostile.py``."""
import json

from hypothesis import example, given
from hypothesis import strategies as st

from chat_service.wire import (PRIVATE, Refused, format_id, parse_frame, parse_id, parse_rooms, payloads, positions_fields,
                               poll_id, text_frame, ws_frame)
from webchat_common.names import is_room_name

# Any JSON value, with every kind of string: lone surrogates included (Python's json writes
# them as \udXXX escapes, as a hostile client would).
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20)
lone_surrogates = st.integers(0xD800, 0xDFFF).map(chr)


def well_formed(text):
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def check(result):
    """The one contract: a frame (valid Unicode all through, a valid cid or none) or a refusal
    with a code and a sentence."""
    if isinstance(result, Refused):
        assert result.code in {"binary", "bad_json", "bad_frame", "bad_unicode"} and result.message
        assert result.cid is None
        return
    assert isinstance(result, dict)
    assert well_formed(json.dumps(result, ensure_ascii=False))
    cid = result.get("cid")
    assert cid is None or (isinstance(cid, (str, int)) and not isinstance(cid, bool) and len(str(cid)) <= 64)


@given(st.text())
@example('{"type":"ping","cid":"\\ud800"}')
@example('{"data":"\\udfff","receiver":"bob"}')
@example('{"\\ud800":1}')
@example("[" * 2000 + "]" * 2000)
@example('{"a":' * 2000 + "1" + "}" * 2000)
@example("1" * 5000)
def test_any_text_gives_a_frame_or_a_refusal(raw):
    check(parse_frame(raw))


@given(st.binary())
def test_any_bytes_are_refused_as_binary(raw):
    result = parse_frame(raw)
    assert isinstance(result, Refused) and result.code == "binary"


@given(json_values)
def test_any_json_value_gives_a_frame_or_a_refusal(value):
    raw = json.dumps(value)
    result = parse_frame(raw)
    check(result)
    if not isinstance(value, dict):
        assert isinstance(result, Refused)
    elif well_formed(json.dumps(value, ensure_ascii=False)) and "cid" not in value:
        assert result == value, "a well-formed object without a cid is taken as it is"


@given(st.dictionaries(st.sampled_from(["type", "data", "cid", "receiver", "room", "x"]), st.text(max_size=10)),
       st.sampled_from(["type", "data", "cid", "receiver", "room", "x"]), lone_surrogates)
def test_a_lone_surrogate_anywhere_is_refused(frame, field, surrogate):
    frame[field] = frame.get(field, "") + surrogate
    result = parse_frame(json.dumps(frame))
    assert isinstance(result, Refused) and result.code == "bad_unicode"


def test_surrogate_pairs_are_ordinary_text():
    assert parse_frame('{"data":"\\ud83d\\ude00","cid":"\\ud83d\\ude00"}') == {"data": "\U0001F600", "cid": "\U0001F600"}


def test_deep_nesting_is_refused_not_raised():
    for raw in ("[" * 2000 + "]" * 2000, '{"a":' * 2000 + "1" + "}" * 2000,
                '{"data":"x","extra":' + "[" * 100_000 + "]" * 100_000 + "}"):
        result = parse_frame(raw)
        assert isinstance(result, Refused) and result.code == "bad_json"


@given(st.dictionaries(st.text(max_size=8), json_values, max_size=5))
def test_every_server_frame_is_valid_utf8_json(obj):
    """text_frame never fails, whatever strings a frame carries (a client's cid, echoed)."""
    frame = text_frame(obj)
    payload = frame[2:] if frame[1] < 126 else frame[4:] if frame[1] == 126 else frame[10:]
    assert json.loads(payload.decode("utf-8")) == obj


@given(st.text(max_size=40))
@example("1-1\n")
@example("١-١")
def test_ids_are_ascii_digits_matched_whole(text):
    parsed = parse_id(text)
    ms, sep, seq = text.partition("-")
    plain = sep and 1 <= len(ms) <= 16 and 1 <= len(seq) <= 19 and (ms + seq).isascii() and (ms + seq).isdigit()
    assert (parsed is not None) == bool(plain)
    if parsed is not None:
        assert parsed == (int(ms), int(seq))


@given(st.lists(st.binary(max_size=70000), max_size=4))
@example([b"", b"x" * 125, b"x" * 126, b"x" * 65535, b"x" * 65536])
def test_a_long_poll_unwraps_exactly_the_frames_queued(parts):
    """What a socket is queued (one server frame, or several joined) is what a poll answers."""
    assert payloads(b"".join(ws_frame(0x1, p) for p in parts)) == parts


@given(st.one_of(st.text(max_size=80), st.none(), st.integers(), st.binary(max_size=10)))
@example("a" * 8)
@example("a" * 64)
@example("a" * 65)
@example("abcdefg\n")
@example("abcdefgh\n")
def test_a_poll_id_is_8_to_64_ascii_letters_digits_dash_or_underscore(text):
    ok = (isinstance(text, str) and 8 <= len(text) <= 64
          and all(c.isascii() and (c.isalnum() or c in "-_") for c in text))
    assert poll_id(text) == (text if ok else None)


room_names = st.from_regex(r"[A-Za-z0-9_-]{1,32}", fullmatch=True)
ids = st.tuples(st.integers(0, 10 ** 16 - 1), st.integers(0, 10 ** 19 - 1))


@given(st.one_of(st.text(max_size=120), st.text(alphabet="ab:,-0123456789", max_size=40), st.none(), st.integers()))
@example("lobby:1-2,lobby:3-4")
@example("lobby:1-2,")
@example("lobby1-2")
@example(":1-2")
@example("lobby:1-2\n")
@example("l\u00f6bby:1-2")
def test_any_rooms_text_gives_positions_or_none(text):
    """``rooms=`` is total: a dict of valid room names to ids, or None; never an exception."""
    got = parse_rooms(text, 51)
    if not isinstance(text, str):
        assert got is None
    if got is not None:
        assert all(is_room_name(room) and parse_id(format_id(mid)) == mid for room, mid in got.items())
        assert len(got) == (text.count(",") + 1 if text else 0), "every part is a room"
        assert parse_rooms(",".join(f"{room}:{format_id(mid)}" for room, mid in got.items()), 51) == got


@given(st.dictionaries(room_names, ids, max_size=51))
def test_positions_round_trip_through_the_rooms_text(positions):
    text = ",".join(f"{room}:{format_id(mid)}" for room, mid in positions.items())
    assert parse_rooms(text, 51) == positions
    assert positions_fields({PRIVATE: (1, 2), **positions}) == {
        "last_id": "1-2", "rooms": {room: format_id(mid) for room, mid in positions.items()}}


@given(st.lists(room_names, min_size=1, max_size=5, unique=True), ids)
def test_a_room_named_twice_or_too_many_rooms_are_refused(rooms, mid):
    text = ",".join(f"{room}:{format_id(mid)}" for room in rooms)
    assert parse_rooms(text + "," + f"{rooms[0]}:{format_id(mid)}", 51) is None
    assert parse_rooms(text, len(rooms) - 1) is None
    assert parse_rooms(text, len(rooms)) is not None
