"""Hostile input to the files service (issue 9): uploaders' file names, Range headers, link
expiries and media names; whatever is sent, a clear answer and never a 5xx."""
import re
import unicodedata

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from markupsafe import escape

from files_service import store

# ---- original file names ---------------------------------------------------------------------


def assert_safe_original(name):
    """What the media list may show and a download may be called."""
    assert isinstance(name, str) and 0 < len(name) <= store.ORIGINAL_MAX, name
    assert "/" not in name and "\\" not in name, name
    assert all(unicodedata.category(c)[0] not in "CZ" or c == " " for c in name), ascii(name)
    assert name == name.strip(" ."), name


@pytest.mark.parametrize("raw,kept", [
    (b"..\\..\\evil.txt", "evil.txt"),            # the report: werkzeug kept "....evil.txt"
    (b"C:\\Users\\x\\report.txt", "report.txt"),
    (b"../../etc/passwd", "passwd"),
    (b"a/b\\c/d.txt", "d.txt"),
    (b"..", "file"),
    (b"../", "file"),
    (b"  .hidden.txt. ", "hidden.txt"),
    (b"bell\x07tab\tnul.txt", "belltabnul.txt"),
    ("caf\u00e9 \u202egnp.exe".encode(), "caf\u00e9 gnp.exe"),     # right-to-left override dropped
    (b"%22quoted%22.txt", '"quoted".txt'),          # a browser's escaped quote
])
def test_uploaded_names_keep_only_their_last_part(people, raw, kept):
    alice = people("alice")
    resp = alice.upload_raw(raw, b"plain text\n")
    assert resp.status_code == 201, resp.json
    assert resp.json["original_name"] == kept
    listed = alice.client.get("/media/").json["media"]
    assert [m["original_name"] for m in listed] == [kept]
    page = alice.client.get("/media/", headers={"Accept": "text/html"}).get_data(as_text=True)
    assert f">{escape(kept)}</a>" in page


def test_a_long_name_is_cut_and_keeps_its_extension(people):
    alice = people("alice")
    resp = alice.upload_raw(b"x" * 1000 + b".txt", b"plain text\n")
    assert resp.status_code == 201
    name = resp.json["original_name"]
    assert len(name) == store.ORIGINAL_MAX and name.endswith(".txt")


@given(st.text())
@example("..\\..\\evil.txt")
@example("\ud800.txt")
@example("." * 300)
@example("a" * 300 + "." + "b" * 20)
@example(" \u3000 ")
def test_clean_original_makes_a_safe_name_of_any_text(text):
    name = store.clean_original(text)
    assert_safe_original(name)
    assert store.clean_original(name) == name
    last = re.split(r"[\\/]", text)[-1]
    stem, dot, ext = last.rpartition(".")
    if (dot and stem.strip(" .") and ext and ext.isprintable() and ext == ext.strip(" .") and len(ext) < 16
            and "".join(c for c in stem if c.isprintable()).strip(" .")):
        assert name.endswith("." + ext), (text, name)


@given(st.binary(max_size=300))
@example(b"..\\..\\evil.txt")
@example(b"\xff\xfe.txt")
@example(b'a"b.txt')
@example(b"a\r\n\r\nb.txt")
@example(b"\\")
def test_any_bytes_as_a_file_name_are_stored_safely_or_refused(people, raw):
    alice = people("alice")
    resp = alice.upload_raw(raw, b"x")
    assert resp.status_code in (201, 400), resp.status_code
    if resp.status_code == 201:
        assert_safe_original(resp.json["original_name"])
    else:
        assert resp.json["error"]


# ---- Range on GET /media/<name> (the service alone: send_from_directory) -------------------


def expected_range(spec, size):
    """The single byte range ``spec`` (``(first, last)``, ``(first, None)`` or ``(None, suffix)``)
    of a ``size``-byte file, as RFC 9110 defines it: ``(start, end)``, or "416"."""
    first, last = spec
    if first is None:
        return "416" if last == 0 else (max(0, size - last), size - 1)
    if first >= size:
        return "416"
    return first, size - 1 if last is None else min(last, size - 1)


def assert_consistent(resp, data):
    """200 with the whole file, 206 with the bytes its Content-Range names, or 416; never 5xx."""
    assert resp.status_code in (200, 206, 416), resp.status_code
    if resp.status_code == 200:
        assert resp.data == data and "Content-Range" not in resp.headers
    elif resp.status_code == 416:
        assert resp.headers["Content-Range"] == f"bytes */{len(data)}"
    else:
        m = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+)", resp.headers["Content-Range"])
        start, end, total = map(int, m.groups())
        assert total == len(data) and start <= end < total
        assert resp.data == data[start:end + 1] and int(resp.headers["Content-Length"]) == len(resp.data)


POSITIONS = st.one_of(st.integers(0, 2000), st.integers(0, 10**30))
RANGE_SPECS = st.one_of(st.tuples(POSITIONS, POSITIONS).filter(lambda t: t[0] <= t[1]),
                        st.tuples(POSITIONS, st.none()), st.tuples(st.none(), POSITIONS))


@given(RANGE_SPECS)
@example((0, 1))
@example((None, 0))
@example((10**30, None))
def test_a_single_range_is_served_as_rfc_9110_says(alice_file, spec):
    alice, url, data = alice_file
    first, last = spec
    header = f"bytes={'' if first is None else first}-{'' if last is None else last}"
    resp = alice.client.get(url, headers={"Range": header})
    assert_consistent(resp, data)
    want = expected_range(spec, len(data))
    if want == "416":
        assert resp.status_code == 416, header
    else:
        assert resp.status_code == 206 and resp.headers["Content-Range"] == f"bytes {want[0]}-{want[1]}/{len(data)}"


HEADER_TEXT = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=80)
RANGE_TEXT = st.one_of(HEADER_TEXT, st.builds(lambda a, b: a + b, st.sampled_from(
    ["bytes=", "bytes=0-", "bytes=-", "bytes=0-1,", "bytes=1-0", "BYTES=", "bytes = ", "bytes=0-1, 5-", "items="]),
    HEADER_TEXT))


@given(RANGE_TEXT)
@example("bytes=" + "9" * 5000 + "-")
@example("bytes=0-1,2-3")
@example("bytes=-" + "9" * 40)
@example("bytes=²-")
def test_any_range_header_is_200_206_or_416(alice_file, header):
    alice, url, data = alice_file
    assert_consistent(alice.client.get(url, headers={"Range": header}), data)


# ---- link expiries and media names ---------------------------------------------------------


@given(st.text())
@example("²")
@example("9" * 5000)
@example("-1")
def test_any_link_expiry_is_a_redirect_or_the_file(gateway_alice, exp):
    alice, name = gateway_alice
    resp = alice.client.get(f"/media/{name}", query_string={"exp": exp, "sig": "x"})
    assert resp.status_code in (200, 302), resp.status_code


@pytest.mark.parametrize("suffix", ["\n", "\r\n", "%0A", "\x00", " "])
def test_a_media_name_with_anything_after_it_is_not_that_file(alice_file, suffix):
    alice, url, _ = alice_file
    resp = alice.client.get("/", environ_overrides={"PATH_INFO": url + suffix})
    assert resp.status_code in (400, 404) and resp.json["error"]
