"""What travels on the wire: message ids, the frames the server writes, the frames it reads.

Rule: every frame a client can send goes through :func:`parse_frame`, which is total (any
text or bytes gives a frame or a :class:`Refused`, never an exception), and every frame the
server builds goes through :func:`text_frame` or comes whole from Redis, so no encode path can
fail.  The frame table (types, fields, close codes) is in docs/chat.md.

The message frame, the one shape stored in history and sent to sockets::

    {"type": "message", "id": "<ms>-<seq>", "ts": <ms>, "sender": <name>,
     "receiver": <name> | "room": <room>, "data": <text>, "cid": <client id>?, "media": <name>?}

It is assembled in Redis by the send scripts (``scripts.SEND_MINE``, ``SEND_THEIRS``, ``SEND_ROOM``): the id,
``ts`` and the receiver's registered name are added there to the rest, which
:func:`message_tail` writes here.  Published on a user's or room's channel as
``"<id> <frame>"``; a control frame for a user's sockets (a room joined or left) as
``"- <frame>"`` (see :func:`split_published`).
"""
import json
import re

from webchat_common.names import is_room_name

#: A message id ``<ms>-<seq>``: ASCII digits only, matched whole.
ID_RE = re.compile(r"([0-9]{1,16})-([0-9]{1,19})")
ZERO = (0, 0)

#: A JSON escape of a UTF-16 surrogate (``\ud800``-``\udfff``): the frame may decode to a string
#: that is not valid Unicode (a lone surrogate), which could be neither stored nor sent on.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def parse_id(text):
    """``"<ms>-<seq>"`` as a comparable tuple, or None when it is not an id."""
    m = ID_RE.fullmatch(text) if isinstance(text, str) else None
    return (int(m.group(1)), int(m.group(2))) if m else None


#: A long-poll client's id (``poll=``): chosen by the client, one per tab.
POLL_ID_RE = re.compile(r"[A-Za-z0-9_-]{8,64}")


def poll_id(text):
    """The ``poll`` query argument if it is a valid poll id, else None."""
    return text if isinstance(text, str) and POLL_ID_RE.fullmatch(text) else None


def format_id(mid):
    return f"{mid[0]}-{mid[1]}"


#: The clock of a user's private messages, in a map of resume positions (:func:`parse_rooms`);
#: each room has its own, named by the room.  (No room name is empty.)
PRIVATE = ""


def parse_rooms(text, most):
    """A resume position per room, as a client sends it (``rooms=<room>:<id>,...``): a dict
    room -> id tuple, or None when the text is not that, names a room twice, or names more
    than ``most`` rooms.  ``""`` is no room.  Total: any ``str`` gives a dict or None."""
    if not isinstance(text, str):
        return None
    out = {}
    if text == "":
        return out
    parts = text.split(",")
    if len(parts) > most:
        return None
    for part in parts:
        room, sep, mid = part.partition(":")
        mid = parse_id(mid)
        if not sep or mid is None or not is_room_name(room) or room in out:
            return None
        out[room] = mid
    return out


def positions_fields(positions):
    """Positions (clock -> id) as a client is told them (``sync``, a long-poll's answer):
    ``{"last_id": the private one or None, "rooms": {room: id}}``."""
    last = positions.get(PRIVATE)
    return {"last_id": format_id(last) if last else None,
            "rooms": {clock: format_id(mid) for clock, mid in sorted(positions.items()) if clock != PRIVATE}}


def channel_owner(channel, prefix):
    """The name in ``channel`` (bytes, as pub/sub gives it) if it is a channel of ``prefix``
    (bytes: ``webchat_common.keys``'s channel prefixes; a channel is its prefix, a name, then
    "}"), else None."""
    if channel.startswith(prefix) and channel.endswith(b"}"):
        return channel[len(prefix):-1].decode()
    return None


def ws_frame(opcode, payload):
    """One unmasked, unfragmented server frame (RFC 6455 5.2): built here, once per message,
    instead of once per socket through wsproto."""
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, n))
    elif n < 65536:
        head = bytes((0x80 | opcode, 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 127)) + n.to_bytes(8, "big")
    return head + payload


def text_frame(obj):
    """A server frame (hello, ack, error, ...) as a WebSocket text frame.  ASCII JSON: whatever
    strings it carries (a client's ``cid``), the bytes are valid UTF-8 and encoding cannot fail."""
    return ws_frame(0x1, json.dumps(obj, separators=(",", ":")).encode())


#: The HTTP status of a refusal with this ``error`` code, where one is answered over HTTP (a
#: conversations API call, a frame posted by a long-poll tab); any other code: 400.
HTTP_STATUS = {
    "not_member": 403, "not_author": 403,
    "unknown_receiver": 404, "unknown_message": 404,
    "too_late": 409, "conflict": 409, "deleted": 409,
    "rate_limited": 429, "too_fast": 429,
    "server_error": 500, "unavailable": 503,
}


def http_status(code):
    return HTTP_STATUS.get(code, 400)


def error(code, message, cid=None):
    """An ``error`` frame: ``code`` for programs, ``message`` (a sentence) for people."""
    frame = {"type": "error", "code": code, "error": message}
    if cid is not None:
        frame["cid"] = cid
    return frame


def error_frame(code, message, cid=None):
    """:func:`error` as a WebSocket text frame."""
    return text_frame(error(code, message, cid))


def payloads(frames):
    """The payloads of server frames built by :func:`ws_frame` (one, or several joined): what a
    long-poll answers instead of the WebSocket bytes queued for every client alike."""
    out = []
    i, end = 0, len(frames)
    while i < end:
        n = frames[i + 1] & 0x7F
        i += 2
        if n == 126:
            n = int.from_bytes(frames[i:i + 2], "big")
            i += 2
        elif n == 127:
            n = int.from_bytes(frames[i:i + 8], "big")
            i += 8
        out.append(frames[i:i + n])
        i += n
    return out


PING_FRAME = ws_frame(0x9, b"")


def stored_json(obj):
    """A frame as it is stored (UTF-8 JSON, no spaces): a message, or a message as changed."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def message_tail(fields):
    """The part of a message frame its sender's process writes (``sender``, ``data``, ``cid``,
    ``media``, ``room``): a JSON object without its opening brace, which the send script
    completes (see the module docstring)."""
    return stored_json(fields)[1:]


def control_payload(frame):
    """What is published on a user's channel for their sockets to act on (a room joined or
    left): ``"- <frame>"``."""
    return "- " + json.dumps(frame, separators=(",", ":"))


def split_published(data):
    """A payload heard on a user's or room's channel: ``(id tuple, frame bytes, origin)`` for
    a stored message (``origin``: the token of the socket it must not go to, its sender's,
    when the payload names one: ``"<id>/<token> <frame>"``; else None), ``(None, frame bytes,
    None)`` for a control frame, or None for anything else."""
    head, _, body = data.partition(b" ")
    if head == b"-":
        return None, body, None
    head, _, origin = head.partition(b"/")
    mid = parse_id(head.decode("ascii", "replace"))
    return (mid, body, origin.decode("ascii", "replace") or None) if mid is not None else None


class Refused:
    """Why a frame was refused: an ``error`` frame's ``code``, its sentence and the frame's
    ``cid`` (when it has a valid one)."""

    __slots__ = ("code", "message", "cid")

    def __init__(self, code, message, cid=None):
        self.code, self.message, self.cid = code, message, cid


def parse_frame(raw):
    """An incoming WebSocket message as a frame (a dict with a valid ``cid`` or none), or the
    :class:`Refused` answer.  Total: any ``str`` or ``bytes`` gives one or the other, never an
    exception.  Refused: binary frames, anything that is not JSON, JSON nested deeper than the
    parser's recursion limit, JSON that is not an object, text that is not valid Unicode (a
    lone surrogate escape such as ``"\\ud800"``, which could be neither stored nor sent on), and a
    ``cid`` that is not a string or number of at most 64 characters."""
    if not isinstance(raw, str):
        return Refused("binary", "binary frames are not supported: send JSON text")
    try:
        msg = json.loads(raw)
    except ValueError:
        return Refused("bad_json", "not JSON: send a JSON object such as {\"receiver\": \"bob\", \"data\": \"hi\"}")
    except RecursionError:
        return Refused("bad_json", "JSON nested too deeply")
    if not isinstance(msg, dict):
        return Refused("bad_frame", "a frame must be a JSON object")
    if _SURROGATE_ESCAPE.search(raw):
        try:
            json.dumps(msg, ensure_ascii=False).encode()
        except (UnicodeEncodeError, RecursionError):
            return Refused("bad_unicode", "text must be valid Unicode: a lone surrogate escape (\\ud800-\\udfff) is not")
    cid = msg.get("cid")
    if cid is not None and not (isinstance(cid, (str, int)) and not isinstance(cid, bool) and len(str(cid)) <= 64):
        return Refused("bad_frame", "cid must be a string or number of at most 64 characters")
    return msg
