"""Type detection from content (files_service.detect) and link signing."""
import hashlib
import base64

import pytest

from files_service import detect, signing
from webchat_testing.media import SAMPLES


@pytest.mark.parametrize("filename", sorted(SAMPLES))
def test_each_sample_is_recognised_from_its_content(filename):
    data, mimetype = SAMPLES[filename]
    assert detect.classify(data[: detect.SAMPLE_SIZE], filename).mimetype == mimetype


def test_content_wins_over_a_wrong_but_harmless_name():
    png = SAMPLES["pic.png"][0]
    assert detect.classify(png, "holiday.jpg").key == "png"
    assert detect.classify(png, "no-extension").key == "png"


@pytest.mark.parametrize("name", ["fake.png", "fake.JPG", "fake.gif", "fake.webp", "fake.mp3", "fake.mp4", "fake.pdf"])
def test_text_named_like_a_signed_type_is_refused(name):
    with pytest.raises(detect.Refused):
        detect.classify(b"just some text, not a picture\n", name)


def test_html_and_svg_are_recognised_even_when_named_txt():
    assert detect.classify(b"  <!DOCTYPE html><p>hi", "a.txt").key == "html"
    assert detect.classify(b"<?xml version='1.0'?><svg></svg>", "a.txt").key == "svg"
    assert detect.classify(b"hello <script>x</script>", "a.md").key == "html"
    assert not detect.KINDS["html"].inline and not detect.KINDS["svg"].inline


def test_binary_junk_and_scripts_are_opaque_or_plain_text():
    assert detect.classify(bytes(range(256)), "x.dat").key == "bin"
    assert detect.classify(b"alert(1)\n", "evil.js").key == "txt"  # text/plain + nosniff: never runs


def test_text_cut_in_the_middle_of_a_character_is_still_text():
    data = "é".encode() * 10
    assert detect.classify(data[:-1], "a.txt").key == "txt"


def test_mpeg_frame_without_id3_is_mp3_but_not_random_ff_bytes():
    assert detect.sniff(b"\xff\xfb\x90\x64" + bytes(10)) == "mp3"
    assert detect.sniff(b"\xff\xff\xff\xff") is None


def test_signature_is_nginx_secure_link_md5_of_the_documented_string():
    sig = signing.signature("/media/a.png", "SID", 1700000000, "s3cret")
    raw = hashlib.md5(b"1700000000/media/a.pngSID s3cret").digest()
    assert sig == base64.urlsafe_b64encode(raw).decode().rstrip("=")
    assert "=" not in sig and "+" not in sig and "/" not in sig


def test_expiry_is_within_the_ttl_and_stable_for_half_of_it():
    for now in range(1000, 1200):
        exp = signing.expiry(120, now)
        assert now + 60 < exp <= now + 120
    assert signing.expiry(120, 1200) == signing.expiry(120, 1259)
