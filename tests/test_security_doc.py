"""SECURITY.md stays true: every test it names exists, every claim of the ASVS tables names a
test, no row is left to fill in, and the summary counts the tables.  Reads files only (no stack)."""
import ast
import re
from collections import Counter
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "SECURITY.md"

#: `path::test` or `path::Class::test` in backquotes (a parametrized id's [...] is not written).
REFERENCE = re.compile(r"`([\w./-]+\.py)::(\w+(?:::\w+)?)`")
STATUSES = ("Met", "Partly", "Not met", "Not applicable")
#: Every ASVS 4.0.3 V2/V3 requirement of Level 1 or 2 (2.8.7 is only "recommended" at L2).
ASVS_L1_L2 = (
    [f"2.1.{n}" for n in range(1, 13)] + [f"2.2.{n}" for n in range(1, 4)] + [f"2.3.{n}" for n in range(1, 4)]
    + [f"2.4.{n}" for n in range(1, 7)] + [f"2.5.{n}" for n in range(1, 8)] + [f"2.6.{n}" for n in range(1, 4)]
    + [f"2.7.{n}" for n in range(1, 7)] + [f"2.8.{n}" for n in range(1, 7)] + [f"2.9.{n}" for n in range(1, 4)]
    + [f"2.10.{n}" for n in range(1, 5)] + ["3.1.1"] + [f"3.2.{n}" for n in range(1, 5)]
    + [f"3.3.{n}" for n in range(1, 5)] + [f"3.4.{n}" for n in range(1, 6)] + [f"3.5.{n}" for n in range(1, 4)]
    + ["3.7.1"]
)


def table_rows(text):
    """Each table body row as a list of stripped cells (header and separator rows left out)."""
    rows = []
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if not line.startswith("|") or re.fullmatch(r"\|[\s:|-]+\|", line):
            continue
        if i + 1 < len(lines) and re.fullmatch(r"\|[\s:|-]+\|", lines[i + 1]):
            continue  # a header row
        rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows


def asvs_rows(text):
    """ID -> (status, test cell) for the rows of the ASVS tables (first cell like 2.1.1)."""
    found = {}
    for cells in table_rows(text):
        if re.fullmatch(r"\d+\.\d+\.\d+", cells[0]):
            assert len(cells) == 5, f"{cells[0]}: expected ID | Requirement | Status | How | Test"
            assert cells[0] not in found, f"{cells[0]} is in the tables twice"
            found[cells[0]] = (cells[2], cells[4])
    return found


@lru_cache
def definitions(path):
    """Names a test file defines: module-level functions, and ``Class::method``."""
    tree = ast.parse((ROOT / path).read_text(), filename=path)
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            names.add(node.name)
        elif isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    names.add(f"{node.name}::{item.name}")
    return names


def test_every_named_test_exists():
    refs = REFERENCE.findall(DOC.read_text())
    assert len(refs) > 50, "the references were not found: has the `path::name` form changed?"
    missing = []
    for path, name in sorted(set(refs)):
        if not (ROOT / path).is_file():
            missing.append(f"{path}::{name} (no such file)")
        elif not name.split("::")[-1].startswith("test") or name not in definitions(path):
            missing.append(f"{path}::{name} (no such test)")
    assert not missing, "SECURITY.md names tests that do not exist:\n" + "\n".join(missing)


def test_every_asvs_level_1_and_2_requirement_has_a_row_with_a_status():
    rows = asvs_rows(DOC.read_text())
    assert set(ASVS_L1_L2) <= set(rows), f"missing: {sorted(set(ASVS_L1_L2) - set(rows))}"
    bad = {rid: status for rid, (status, _) in rows.items() if status not in STATUSES}
    assert not bad, f"status must be one of {STATUSES}: {bad}"


def test_every_claim_names_a_test():
    """Met and Partly are claims about what the code does: each names the test that proves it."""
    unproven = [rid for rid, (status, tests) in asvs_rows(DOC.read_text()).items()
                if status in ("Met", "Partly") and not REFERENCE.search(tests)]
    assert not unproven, f"claimed without a test: {unproven}"


def test_the_summary_counts_the_tables():
    text = DOC.read_text()
    counts = Counter(status for status, _ in asvs_rows(text).values())
    m = re.search(r"\*\*Summary:\*\* (\d+) Met, (\d+) Partly, (\d+) Not met, (\d+) Not applicable "
                  r"\((\d+) requirements\)", text)
    assert m, "SECURITY.md has no summary line"
    stated = [int(n) for n in m.groups()]
    assert stated == [counts[s] for s in STATUSES] + [sum(counts.values())]


def test_no_row_is_left_todo():
    todo = [" | ".join(cells[:1]) for cells in table_rows(DOC.read_text())
            if any(re.search(r"\bTODO\b", cell) for cell in cells)]
    assert not todo, "rows still waiting for their test:\n" + "\n".join(todo)
