"""Every relative link in the README, docs/, BENCHMARKS.md and experiments/*.md points at a
file of the repository, and a link to a heading of a Markdown page finds that heading."""

from __future__ import annotations

import os
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PAGES = sorted(
    [
        ROOT / "README.md",
        ROOT / "BENCHMARKS.md",
        *ROOT.glob("docs/**/*.md"),
        *ROOT.glob("experiments/*.md"),
    ]
)
LINK = re.compile(r"\]\(([^)\s]+)\)")


def anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    found = set()
    for line in page.read_text().splitlines():
        m = re.match(r"^#+ (.*)$", line)
        if m:
            found.add(re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-"))
    return found


def broken_links(page: Path) -> list[str]:
    broken = []
    for target in LINK.findall(page.read_text()):
        if re.match(r"^[a-z]+:", target):
            continue
        file, _, anchor = target.partition("#")
        dest = page if not file else Path(os.path.normpath(page.parent / file))
        if not dest.exists():
            broken.append(target)
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(target)
    return broken


def test_the_checker_finds_a_broken_link(tmp_path):
    page = tmp_path / "p.md"
    (tmp_path / "q.md").write_text("# A heading\n")
    page.write_text(
        "[ok](q.md#a-heading) [gone](nope.md) [bad anchor](q.md#other) [web](https://x.y)"
    )
    assert broken_links(page) == ["nope.md", "q.md#other"]


def test_every_link_resolves():
    broken = {str(p.relative_to(ROOT)): broken_links(p) for p in PAGES}
    assert {p: b for p, b in broken.items() if b} == {}


def test_the_docs_index_lists_every_page():
    index = (ROOT / "docs" / "index.md").read_text()
    listed = {
        Path(os.path.normpath(ROOT / "docs" / t.partition("#")[0])) for t in LINK.findall(index)
    }
    pages = {
        p for p in ROOT.glob("docs/**/*.md") if p.name != "index.md" or p.parent.name != "docs"
    }
    assert pages - listed == set()
