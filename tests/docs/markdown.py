"""Reading the project's Markdown the way the doc tests need: code spans, code blocks, tables,
headings and links, each with the line it is on (failures name the doc and the line)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

_FENCE = re.compile(r"^\s*(```|~~~)")
_SPAN = re.compile(r"(`+)(.+?)\1", re.S)
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def documents() -> list[Path]:
    """Every Markdown document of the project: the root's, docs/ and tests/."""
    found = sorted(ROOT.glob("*.md")) + sorted((ROOT / "docs").rglob("*.md"))
    found += sorted((ROOT / "tests").rglob("*.md"))
    return found


def relative(path: Path) -> str:
    return str(path.relative_to(ROOT))


def split_cells(line: str) -> list[str]:
    """The cells of a Markdown table row (``\\|`` is a literal bar, as GitHub reads it)."""
    inner = line.strip()
    inner = inner[1:] if inner.startswith("|") else inner
    inner = inner[:-1] if inner.endswith("|") and not inner.endswith("\\|") else inner
    return [cell.strip().replace("\\|", "|") for cell in re.split(r"(?<!\\)\|", inner)]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", lambda m: m.group(1) or "", heading)
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


@dataclass
class Table:
    start: int  # 1-based line of the header row
    end: int  # 1-based line of the last row
    header: list[str]
    rows: list[tuple[int, list[str]]] = field(default_factory=list)


@dataclass
class Doc:
    path: Path

    @cached_property
    def name(self) -> str:
        return relative(self.path)

    @cached_property
    def lines(self) -> list[str]:
        return self.path.read_text(encoding="utf-8").splitlines()

    @cached_property
    def _in_fence(self) -> list[bool]:
        inside, marks = False, []
        for line in self.lines:
            if _FENCE.match(line):
                marks.append(True)
                inside = not inside
            else:
                marks.append(inside)
        return marks

    def prose_lines(self) -> list[tuple[int, str]]:
        """(line number, text) of every line outside code blocks."""
        return [(i + 1, t) for i, t in enumerate(self.lines) if not self._in_fence[i]]

    def code_block_lines(self) -> list[tuple[int, str]]:
        """(line number, text) of every line inside a code block."""
        return [
            (i + 1, t)
            for i, t in enumerate(self.lines)
            if self._in_fence[i] and not _FENCE.match(t)
        ]

    def code(self) -> list[tuple[int, str]]:
        """Every code span (a span may wrap onto the next line of its paragraph) and every
        line of a code block, with the line it starts on, in the order of the doc."""
        found = self.code_block_lines()
        paragraph: list[int] = []
        for i, text in enumerate([*self.lines, ""]):
            row = text.lstrip().startswith("|")
            if i < len(self.lines) and not self._in_fence[i] and text.strip() and not row:
                paragraph.append(i)
                continue
            if row and not self._in_fence[i]:
                found += [(i + 1, m.group(2).strip()) for m in _SPAN.finditer(text)]
            if paragraph:
                joined = "\n".join(self.lines[k] for k in paragraph)
                for m in _SPAN.finditer(joined):
                    line = paragraph[joined.count("\n", 0, m.start())] + 1
                    found.append((line, " ".join(m.group(2).split())))
                paragraph = []
        return sorted(found, key=lambda item: item[0])

    def links(self) -> list[tuple[int, str]]:
        return [(n, m.group(1)) for n, text in self.prose_lines() for m in _LINK.finditer(text)]

    def headings(self) -> list[tuple[int, int, str]]:
        """(line number, level, text) of every heading."""
        found = []
        for n, text in self.prose_lines():
            if m := _HEADING.match(text):
                found.append((n, len(m.group(1)), m.group(2)))
        return found

    def anchors(self) -> set[str]:
        return {slug(text) for _, _, text in self.headings()}

    def tables(self) -> list[Table]:
        tables: list[Table] = []
        lines = self.lines
        i = 0
        while i < len(lines):
            is_head = (
                not self._in_fence[i]
                and lines[i].lstrip().startswith("|")
                and i + 1 < len(lines)
                and re.match(r"^\s*\|?\s*:?-{3,}", lines[i + 1])
            )
            if not is_head:
                i += 1
                continue
            table = Table(start=i + 1, end=i + 2, header=split_cells(lines[i]))
            i += 2
            while i < len(lines) and lines[i].lstrip().startswith("|"):
                table.rows.append((i + 1, split_cells(lines[i])))
                table.end = i + 1
                i += 1
            tables.append(table)
        return tables

    def section(self, title: str) -> tuple[int, int]:
        """The (first, last) line numbers of the section under the heading ``title``."""
        heads = self.headings()
        for k, (n, level, text) in enumerate(heads):
            if text == title:
                later = [m for m, lv, _ in heads[k + 1 :] if lv <= level]
                return n, (later[0] - 1 if later else len(self.lines))
        raise AssertionError(f"{self.name} has no heading {title!r}")

    def tables_in(self, title: str) -> list[Table]:
        first, last = self.section(title)
        return [t for t in self.tables() if first <= t.start <= last]


def all_docs() -> list[Doc]:
    return [Doc(path) for path in documents()]
