"""The names people and programs give the system, each matched whole.

A rule here is the only copy: auth checks new user names with it, chat checks receivers,
rooms and shared media with it, the files service checks stored media names with it.  Each
pattern is applied with ``fullmatch`` (``$`` would also accept a trailing newline:
``"lobby\\n"``), and the ``is_*`` functions accept only ``str``.
"""
import re

#: A user name: 1-32 ASCII letters, digits, ``_`` or ``-``; unique regardless of case.
USER_NAME = re.compile(r"[A-Za-z0-9_-]{1,32}")
#: A chat room name: the same alphabet and length as a user name.
ROOM_NAME = re.compile(r"[A-Za-z0-9_-]{1,32}")
#: A stored media name (made by the files service): 22 URL-safe base64 characters (128 random
#: bits) and an extension of 2-4 lower-case letters or digits.  The two parts are also the
#: gateway's (``gateway/render.py`` puts them in its media location).
MEDIA_STEM = r"[A-Za-z0-9_-]{22}"
MEDIA_EXT = r"[a-z0-9]{2,4}"
MEDIA_NAME = re.compile(MEDIA_STEM + r"\." + MEDIA_EXT)


def is_user_name(value):
    return isinstance(value, str) and USER_NAME.fullmatch(value) is not None


def is_room_name(value):
    return isinstance(value, str) and ROOM_NAME.fullmatch(value) is not None


def is_media_name(value):
    return isinstance(value, str) and MEDIA_NAME.fullmatch(value) is not None
