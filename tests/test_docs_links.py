"""The documentation's links hold: every relative link in README.md, SECURITY.md and docs/*.md
points to a file that exists, every ``#anchor`` to a heading of its target (GitHub's anchor
rules), and README.md links every docs/*.md.  Reads files only (no stack)."""
import re
import sys
import unicodedata
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = sorted((ROOT / "docs").glob("*.md"))
FILES = [ROOT / "README.md", ROOT / "SECURITY.md", *DOCS]

FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.M | re.S)
CODE_SPAN = re.compile(r"(`+)(?!`).*?(?<!`)\1(?!`)", re.S)
#: [text](target) or [text](target "title"); images too.  Reference-style links are not used.
LINK = re.compile(r"\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.+?)[ \t#]*$", re.M)


def blank(m):
    return re.sub(r"[^\n]", " ", m.group(0))


def prose(text):
    """The text with fenced code blocks and code spans blanked out (links and headings there are
    not real); same length and lines as the text."""
    return CODE_SPAN.sub(blank, FENCE.sub(blank, text))


def slug(heading):
    """GitHub's anchor for a heading: the rendered text lower-cased, every character that is not a
    letter, mark, digit, connector (``_``), space or ``-`` dropped, each space turned into ``-``."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text only
    text = re.sub(r"<[^>]+>", "", text).replace("`", "").lower()
    kept = "".join(c for c in text if c in " -" or unicodedata.category(c)[0] in "LMN" or unicodedata.category(c) == "Pc")
    return kept.replace(" ", "-")


def anchors(path):
    """Every anchor a Markdown file has: its headings' slugs, repeated ones suffixed -1, -2, ..."""
    seen = {}
    found = set()
    for m in HEADING.finditer(FENCE.sub(blank, path.read_text())):
        base = slug(m.group(2))
        n = seen.get(base, 0)
        seen[base] = n + 1
        found.add(base if n == 0 else f"{base}-{n}")
    return found


def links(path):
    """(line, target) of every link in a Markdown file, outside code."""
    text = prose(path.read_text())
    return [(text.count("\n", 0, m.start()) + 1, m.group(1)) for m in LINK.finditer(text)]


def problems(path):
    """What is wrong with one file's relative links."""
    bad = []
    for line, target in links(path):
        if re.match(r"[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto: ...
            continue
        where = f"{path.relative_to(ROOT)}:{line}: ({target})"
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / unquote(file_part)).resolve() if file_part else path
        if not dest.exists():
            bad.append(f"{where} no such file")
            continue
        if not str(dest).startswith(str(ROOT)):
            bad.append(f"{where} leaves the repository")
            continue
        if anchor and dest.suffix == ".md" and unquote(anchor) not in anchors(dest):
            bad.append(f"{where} no heading #{anchor} in {dest.relative_to(ROOT)}")
    return bad


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_and_anchor_exists(path):
    assert path.exists()
    bad = problems(path)
    assert not bad, "broken links:\n" + "\n".join(bad)


def test_the_readme_links_every_doc():
    linked = {(ROOT / unquote(t.partition("#")[0])).resolve() for _, t in links(ROOT / "README.md")}
    missing = [str(p.relative_to(ROOT)) for p in DOCS if p.resolve() not in linked]
    assert not missing, f"README.md does not link: {missing}"


def test_the_checker_finds_broken_links(tmp_path, monkeypatch):
    """The checks above can fail: a missing file, a missing heading and GitHub's slugs."""
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    (tmp_path / "a.md").write_text(
        "# Runbook: chat is slow / messages are missing\n\n## Client → server\n\n## Client → server\n\n"
        "```sh\n# not a heading\n```\n\n"
        "[ok](#runbook-chat-is-slow--messages-are-missing) [ok](#client--server-1) [ok](b.md#every-service-webchat_commonconfigconfig)\n"
        "[bad](missing.md) [bad](b.md#nope) [bad](#not-a-heading) `[code](ignored.md)` [web](https://example.com/x.md)\n")
    (tmp_path / "b.md").write_text("# Every service (`webchat_common.config.Config`)\n")
    bad = problems(tmp_path / "a.md")
    assert len(bad) == 3, bad
    assert "missing.md" in bad[0] and "#nope" in bad[1] and "#not-a-heading" in bad[2]
