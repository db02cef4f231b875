"""Every relative link in README.md and docs/ resolves: the file exists and, for `#anchor`, the heading does.

Docs move between pages as the project grows; a link that points nowhere is found here,
not by a reader. Links inside fenced code blocks are examples, not links, and are skipped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

import pytest

REPO = Path(__file__).resolve().parents[2]
PAGES = sorted([REPO / "README.md", *(REPO / "docs").rglob("*.md"), *(REPO / "deploy").rglob("*.md"),
                *(REPO / "charts").rglob("*.md")])

_INLINE = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_REFERENCE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$")
_HTML = re.compile(r"""(?:href|src)=["']([^"']+)["']""")
_EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)  # https:, mailto:, ...
_FENCE = re.compile(r"^\s{0,3}(```|~~~)")


@dataclass(frozen=True)
class Link:
    page: Path
    line: int
    target: str

    def __str__(self) -> str:
        return f"{self.page.relative_to(REPO)}:{self.line}: {self.target}"


def _prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) for every line outside fenced code blocks."""
    lines, fenced = [], False
    for number, line in enumerate(text.splitlines(), start=1):
        if _FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            lines.append((number, re.sub(r"`[^`]*`", "", line)))  # inline code is not a link either
    return lines


def links(page: Path) -> list[Link]:
    found = []
    for number, line in _prose_lines(page.read_text()):
        for pattern in (_INLINE, _REFERENCE, _HTML):
            found += [Link(page, number, match) for match in pattern.findall(line)]
    return found


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to dashes."""
    text = re.sub(r"`|\*|_(?=\W)|(?<=\W)_", "", heading.strip().lower())
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)  # a link in a heading keeps its text
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    slugs: set[str] = set()
    for _, line in _prose_lines(page.read_text()):
        heading = re.match(r"^\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$", line)
        if heading:
            slug, n = github_slug(heading.group(1)), 0
            while (slug if n == 0 else f"{slug}-{n}") in slugs:  # GitHub numbers repeated headings
                n += 1
            slugs.add(slug if n == 0 else f"{slug}-{n}")
    slugs |= set(re.findall(r"""<a\s+(?:name|id)=["']([^"']+)["']""", page.read_text()))
    return slugs


def broken(link: Link, root: Path = REPO) -> str | None:
    """Why the link does not resolve, or None."""
    if _EXTERNAL.match(link.target):
        return None
    path_part, _, anchor = link.target.partition("#")
    target = (link.page.parent / unquote(path_part)).resolve() if path_part else link.page
    if not target.exists():
        return "no such file"
    if root not in target.parents and target != root:
        return "points outside the repository"
    if anchor and target.suffix == ".md" and unquote(anchor).lower() not in anchors(target):
        return f"no heading #{anchor} in {target.relative_to(root)}"
    return None


def test_the_pages_exist_and_have_links() -> None:
    assert REPO / "README.md" in PAGES and len(PAGES) > 5
    assert sum(len(links(page)) for page in PAGES) > 10, "the link finder found (almost) nothing"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_resolves(page: Path) -> None:
    problems = [f"{link}: {why}" for link in links(page) if (why := broken(link))]
    assert not problems, "broken links:\n" + "\n".join(problems)


def test_readme_stays_a_front_page() -> None:
    size = (REPO / "README.md").stat().st_size
    assert size < 12 * 1024, f"README.md is {size} bytes; move reference material into docs/"


def test_the_checker_catches_a_broken_link_and_a_missing_anchor(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("# Title here\n[ok](#title-here) [bad](#nope) [gone](missing.md)\n```\n[code](x.md)\n```\n")
    found = [Link(page, 2, target) for target in ("#title-here", "#nope", "missing.md")]
    assert links(page) == found
    assert anchors(page) == {"title-here"}
    assert [broken(link, root=tmp_path) for link in found] == [None, "no heading #nope in page.md", "no such file"]
    assert broken(Link(page, 1, "../elsewhere.md"), root=tmp_path) in ("no such file", "points outside the repository")


@pytest.mark.parametrize(("heading", "slug"), [
    ("Install on a cluster", "install-on-a-cluster"),
    ("Quick start: `make dev`", "quick-start-make-dev"),
    ("Build, test, develop", "build-test-develop"),
    ("HA: leader election vs. Kopf peering", "ha-leader-election-vs-kopf-peering"),
])
def test_github_slugs(heading: str, slug: str) -> None:
    assert github_slug(heading) == slug
