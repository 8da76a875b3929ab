"""Every relative link in the project's Markdown leads somewhere: the file exists, and a ``#anchor`` names a
heading of that file as GitHub slugs it (the README's summary links into docs/RESULTS.md by section)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation other than ``-`` and ``_`` dropped, spaces to ``-``."""
    text = re.sub(r"[`*]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(md: Path) -> set[str]:
    text = FENCE.sub("", md.read_text())
    return {slug(m.group(1)) for m in re.finditer(r"^#{1,6} +(.+?) *$", text, re.M)}


def documents() -> list[Path]:
    docs = [ROOT / "README.md", ROOT / "bench" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    return [d for d in docs if d.exists()] + sorted((ROOT / "reports").rglob("*.md"))


def broken_links(md: Path) -> list[str]:
    bad = []
    for target in LINK.findall(FENCE.sub("", md.read_text())):
        if re.match(r"[a-z]+:", target):           # http(s), mailto: not checked here (no network)
            continue
        path, _, anchor = target.partition("#")
        dest = (md.parent / path).resolve() if path else md
        if not dest.exists():
            bad.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            bad.append(f"{target}: no heading with that anchor in {path or md.name}")
    return bad


def test_slug_matches_githubs_anchors():
    assert slug("Ablations (Tables IV and V)") == "ablations-tables-iv-and-v"
    assert slug("Masking experiments (Fig. 5 and Algorithm 2)") == "masking-experiments-fig-5-and-algorithm-2"
    assert slug("Why mouth_reenact stays near chance") == "why-mouth_reenact-stays-near-chance"
    assert slug("A web page: `mrl serve`") == "a-web-page-mrl-serve"


def test_a_broken_link_is_found(tmp_path):
    (tmp_path / "other.md").write_text("# Title\n\n## A section, here\n")
    md = tmp_path / "doc.md"
    md.write_text("[ok](other.md#a-section-here) [gone](missing.md) [bad](other.md#nowhere) [web](https://x.org)\n"
                  "```\n[in code](not-checked.md)\n```\n")
    assert broken_links(md) == ["missing.md: no such file", "other.md#nowhere: no heading with that anchor in other.md"]


@pytest.mark.parametrize("md", documents(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(md):
    assert broken_links(md) == []


def test_the_readme_summary_links_every_results_section():
    """docs/RESULTS.md keeps the experiments; each of its sections is reachable from the README or its contents."""
    readme = (ROOT / "README.md").read_text()
    results = ROOT / "docs" / "RESULTS.md"
    sections = [slug(h) for h in re.findall(r"^## +(.+?) *$", FENCE.sub("", results.read_text()), re.M)]
    assert sections, "docs/RESULTS.md has no sections"
    contents = results.read_text().split("\n## ", 1)[0]
    assert all(f"(#{s})" in contents for s in sections), "docs/RESULTS.md's contents list misses a section"
    assert "docs/RESULTS.md" in readme
