"""Numbers in the docs carry their origin, the docs describe the product as it is, and they
stay readable: every table of measured numbers says when (a date), on which code (a commit
of this repository) and how (the command that measures it again); no history of how the
product was built; no line too long to read or review."""

from __future__ import annotations

import re
import subprocess
from functools import cache

import pytest

from tests.docs.markdown import ROOT, Doc, Table, all_docs

DOCS = all_docs()

# a cell that is a measurement: a number, maybe with its unit, interval or spread
NUMBER = re.compile(
    r"^[*~≈<>+\-−]*\s*\d[\d,.]*\s*"
    r"(%|ms|s|min|h|MB|MiB|GB|KB|GFLOP|req/s|x|×)?\s*"
    r"(±\s*[\d.]+|\[[^\]]*\])?\**$"
)
DATE = re.compile(r"\b20\d\d-[01]\d-[0-3]\d\b")
COMMIT = re.compile(r"\bcommit\s+`?([0-9a-f]{7,40})\b")
COMMAND = re.compile(r"`((?:[A-Z_]+=\S+ )*(?:make|\.venv/bin/|nice |prodclass |python )[^`]*)`")
WINDOW = 12  # lines around a table where its origin is written


def numeric_share(table: Table) -> tuple[int, int]:
    cells = [c for _, row in table.rows for c in row[1:]]  # the first column names the row
    return sum(bool(NUMBER.match(c.replace("**", ""))) for c in cells), len(cells)


def measured_tables(doc: Doc) -> list[Table]:
    """Tables whose cells are mostly numbers: measurements (a table of defaults or limits
    has numbers here and there, not in most cells)."""
    found = []
    for table in doc.tables():
        numbers, cells = numeric_share(table)
        if numbers >= 4 and numbers >= 0.4 * cells:
            found.append(table)
    return found


def origin(doc: Doc, table: Table) -> str:
    """The text around a table, within its section: where its origin is written."""
    heads = [n for n, _, _ in doc.headings()]
    first = max([table.start - WINDOW, *[n + 1 for n in heads if n < table.start]])
    last = min([table.end + WINDOW, *[n - 1 for n in heads if n > table.end]])
    before = doc.lines[first - 1 : table.start - 1]
    after = doc.lines[table.end : last]
    return "\n".join(before + after)


@cache
def shallow_clone() -> bool:
    answer = subprocess.run(
        ["git", "rev-parse", "--is-shallow-repository"], cwd=ROOT, capture_output=True, text=True
    )
    return answer.returncode != 0 or answer.stdout.strip() != "false"


def is_commit(sha: str) -> bool:
    found = subprocess.run(
        ["git", "cat-file", "-e", f"{sha}^{{commit}}"], cwd=ROOT, capture_output=True
    )
    return found.returncode == 0


def test_the_detection_finds_the_measured_tables():
    """At least the tables the project is known to measure are found (so the check below
    cannot pass by finding none)."""
    found = {doc.name: len(measured_tables(doc)) for doc in DOCS}
    assert found["docs/models.md"] >= 3, found  # cost growth, ablation, retrieval
    assert found["docs/deployment.md"] >= 2, found  # replicas, cache sizes
    assert found["docs/monitoring.md"] >= 1, found  # shadow cost


def test_a_measured_table_is_told_apart_from_one_without_its_origin(tmp_path):
    table = (
        "| clients | p50 ms | req/s |\n|---|---|---|\n| 1 | 38.9 | 25.1 |\n| 4 | 70.8 | 13.9 |\n"
    )
    bare = tmp_path / "bare.md"
    bare.write_text(f"# Load\n\nWhat the API answers:\n\n{table}")
    dated = tmp_path / "dated.md"
    dated.write_text(
        "# Load\n\nMeasured 2026-12-02 at commit d70420d with "
        f"`.venv/bin/python bench/shadow_latency.py --clients 1`:\n\n{table}"
    )
    (found,) = measured_tables(Doc(bare))
    around = origin(Doc(bare), found)
    assert not (DATE.search(around) or COMMIT.search(around) or COMMAND.search(around))
    (found,) = measured_tables(Doc(dated))
    around = origin(Doc(dated), found)
    assert DATE.search(around) and COMMIT.search(around) and COMMAND.search(around)


@pytest.mark.parametrize("doc", DOCS, ids=lambda d: d.name)
def test_every_table_of_measured_numbers_says_when_on_which_commit_and_how(doc: Doc):
    problems = []
    for table in measured_tables(doc):
        around = origin(doc, table)
        missing = [
            what
            for what, pattern in (("a date", DATE), ("a commit", COMMIT), ("a command", COMMAND))
            if not pattern.search(around)
        ]
        if missing:
            problems.append(f"{doc.name}:{table.start}: a measured table without {missing}")
        for sha in COMMIT.findall(around):
            if not shallow_clone() and not is_commit(sha):
                problems.append(f"{doc.name}:{table.start}: {sha} is no commit of this repository")
    assert not problems, "\n".join(problems)


# What a product doc does not say: how the product was built, or about whose machine.
HISTORY = [
    r"\bfound and fixed\b",
    r"\bolder clients\b",
    r"\bbefore: ",
    r"; now\b",
    r"\bas before\b",
    r"\bmeasured again\b",
    r"\bthis machine\b",
    r"\bthis CPU\b",
    r"\bthis 2-core\b",
    r"\bCI machines\b",
    r"\bout of reach\b",
    r"\bnot a family of this build\b",
]


def test_the_docs_describe_the_product_not_its_history():
    problems = []
    for doc in DOCS:
        for number, line in enumerate(doc.lines, 1):
            for pattern in HISTORY:
                if m := re.search(pattern, line, re.I):
                    problems.append(f"{doc.name}:{number}: {m.group(0)!r}")
    assert not problems, "\n".join(problems)


MAX_LINE = 800  # a table row; prose wraps near 100
MAX_CELL = 400


def test_lines_and_table_cells_stay_readable():
    problems = []
    for doc in DOCS:
        for number, line in enumerate(doc.lines, 1):
            if len(line) > MAX_LINE:
                problems.append(f"{doc.name}:{number}: a line of {len(line)} characters")
        for table in doc.tables():
            for number, cells in table.rows:
                for cell in cells:
                    if len(cell) > MAX_CELL:
                        problems.append(f"{doc.name}:{number}: a cell of {len(cell)} characters")
    assert not problems, "\n".join(problems)


# The promotion rule and its margins are stated in one place; the other docs link to it.
RULE_HOME = "docs/models.md"


def test_the_promotion_rule_is_stated_in_one_place():
    home = Doc(ROOT / RULE_HOME)
    assert "promotion-on-evidence" in home.anchors()
    problems = [
        f"{doc.name}:{number}: restates the promotion rule; link {RULE_HOME}#promotion-on-evidence"
        for doc in DOCS
        if doc.name != RULE_HOME
        for number, line in enumerate(doc.lines, 1)
        if re.search(r"min_improvement|max_class_drop|beats? (it|the champion)", line)
    ]
    assert not problems, "\n".join(problems)
