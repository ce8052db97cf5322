"""What a file is, from its first bytes, not its name.

Magic numbers are checked here for the types we serve inline (a dozen fixed signatures; a
library such as python-magic would add libmagic as a system dependency for no gain on this
list).  The rule:

1. content with a known signature is that type, whatever its name says (a PNG called
   ``photo.jpg`` is stored and served as a PNG);
2. a name that claims a signed type (``.png``, ``.mp4``, ``.pdf`` ...) whose content has no such
   signature is refused: a "picture" that is text is not stored;
3. UTF-8 text is SVG or HTML when it looks like it, else plain text;
4. anything else is an opaque download (``application/octet-stream``).

The stored extension is the detected type's, so nginx (which maps extensions to types) and
Flask agree on the ``Content-Type``.
"""
from dataclasses import dataclass


@dataclass(frozen=True)
class Kind:
    key: str
    mimetype: str
    ext: str
    #: Shown in the browser (True) or always sent as a download (False: html, svg, unknown).
    inline: bool
    label: str


KINDS = {k.key: k for k in (
    Kind("jpeg", "image/jpeg", "jpg", True, "JPEG image"),
    Kind("png", "image/png", "png", True, "PNG image"),
    Kind("gif", "image/gif", "gif", True, "GIF image"),
    Kind("webp", "image/webp", "webp", True, "WebP image"),
    Kind("mp3", "audio/mpeg", "mp3", True, "MP3 audio"),
    Kind("ogg", "audio/ogg", "ogg", True, "Ogg audio"),
    Kind("mp4", "video/mp4", "mp4", True, "MP4 video"),
    Kind("webm", "video/webm", "webm", True, "WebM video"),
    Kind("pdf", "application/pdf", "pdf", True, "PDF document"),
    Kind("txt", "text/plain", "txt", True, "text file"),
    Kind("html", "text/html", "html", False, "HTML page"),
    Kind("svg", "image/svg+xml", "svg", False, "SVG image"),
    Kind("bin", "application/octet-stream", "bin", False, "file"),
)}

IMAGE_KINDS = frozenset({"jpeg", "png", "gif", "webp"})
#: Types that have a signature: a name claiming one of these needs the signature.
SIGNED_KINDS = frozenset({"jpeg", "png", "gif", "webp", "mp3", "ogg", "mp4", "webm", "pdf"})
#: Extensions the gateway serves inline (the others get ``Content-Disposition: attachment``).
INLINE_EXTS = frozenset(k.ext for k in KINDS.values() if k.inline)

_CLAIMS = {
    "jpg": "jpeg", "jpeg": "jpeg", "jpe": "jpeg", "png": "png", "gif": "gif", "webp": "webp",
    "mp3": "mp3", "ogg": "ogg", "oga": "ogg", "opus": "ogg", "mp4": "mp4", "m4v": "mp4",
    "webm": "webm", "pdf": "pdf", "html": "html", "htm": "html", "svg": "svg",
}

#: Bytes of the file :func:`classify` needs to see.
SAMPLE_SIZE = 64 * 1024


class Refused(ValueError):
    """The content contradicts what the file claims to be."""


def claimed_kind(filename):
    ext = filename.rsplit(".", 1)[-1].lower() if "." in filename else ""
    return _CLAIMS.get(ext)


def sniff(head):
    """The signed type ``head`` starts with, or None."""
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head.startswith(b"ID3") or _mpeg_audio_frame(head):
        return "mp3"
    if head.startswith(b"OggS"):
        return "ogg"
    if head[4:8] == b"ftyp":
        return "mp4"
    if head.startswith(b"\x1a\x45\xdf\xa3") and b"webm" in head[:64]:
        return "webm"
    if head.startswith(b"%PDF-"):
        return "pdf"
    return None


def _mpeg_audio_frame(head):
    """An MPEG audio frame header: 11 sync bits, a valid version, layer and bitrate."""
    if len(head) < 4 or head[0] != 0xFF or head[1] & 0xE0 != 0xE0:
        return False
    version, layer, bitrate = (head[1] >> 3) & 3, (head[1] >> 1) & 3, head[2] >> 4
    return version != 1 and layer != 0 and bitrate not in (0, 15)


def _text(sample):
    """``sample`` decoded if it is UTF-8 text (a multi-byte character cut at the end is fine)."""
    if b"\x00" in sample:
        return None
    for cut in range(4):
        try:
            return sample[: len(sample) - cut].decode("utf-8")
        except UnicodeDecodeError:
            continue
    return None


_HTML_MARKS = ("<!doctype html", "<html", "<head", "<body", "<script", "<iframe", "<meta", "<object", "<embed")


def classify(sample, filename):
    """The :class:`Kind` of a file whose first bytes are ``sample`` and whose uploader called
    it ``filename``; raise :class:`Refused` when the name claims a type the content is not."""
    found = sniff(sample)
    if found:
        return KINDS[found]
    claimed = claimed_kind(filename)
    if claimed in SIGNED_KINDS:
        raise Refused(f"The file is named like a {KINDS[claimed].label} but its content is not one.")
    text = _text(sample)
    if text is None:
        return KINDS["bin"]
    head = text[:2048].lstrip("\ufeff \t\r\n").lower()
    if "<svg" in head:
        return KINDS["svg"]
    if claimed == "html" or head.startswith(_HTML_MARKS) or any(m in head for m in ("<script", "<html")):
        return KINDS["html"]
    return KINDS["txt"]
