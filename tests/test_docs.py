"""The documentation's links lead somewhere: every relative link and image in the repository's Markdown files
(README, docs/, the published reports) names a file that exists, and every report the results index lists is
there with its numbers."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: [text](target) and ![alt](target); the target ends at the first space or closing parenthesis.
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def markdown_files() -> list[Path]:
    """The repository's own Markdown: not the venv, nor what runs wrote into a top-level results/ folder."""
    skip = {".venv", ".git", "results", "node_modules", ".pytest_cache"}
    tops = [c for c in ROOT.iterdir() if c.name not in skip]
    return sorted([c for c in tops if c.suffix == ".md"] + [p for c in tops if c.is_dir() for p in c.rglob("*.md")])


def local_targets(md: Path) -> list[str]:
    text = md.read_text(encoding="utf-8")
    text = re.sub(r"```.*?```", "", text, flags=re.S)  # code blocks hold commands, not links
    return [t for t in LINK.findall(text) if not re.match(r"[a-z][a-z0-9+.-]*:|#", t)]


def test_link_pattern_finds_links_and_images():
    md = "see [a](docs/a.md#x), ![f](figures/f.png) and [web](https://x.org) or [t](b.md \"title\")"
    assert LINK.findall(md) == ["docs/a.md#x", "figures/f.png", "https://x.org", "b.md"]


def test_every_relative_link_in_the_docs_exists():
    files = markdown_files()
    assert ROOT / "README.md" in files and ROOT / "docs" / "results" / "README.md" in files
    broken = [f"{md.relative_to(ROOT)}: {target}" for md in files for target in local_targets(md)
              if not (md.parent / target.split("#", 1)[0]).exists()]
    assert not broken, "links to missing files:\n" + "\n".join(broken)


def test_the_results_index_lists_every_published_report():
    index = ROOT / "docs" / "results" / "README.md"
    listed = {(index.parent / t).resolve() for t in local_targets(index) if t.endswith("report.md")}
    published = {p.resolve() for p in (ROOT / "docs" / "results").rglob("report.md")}
    assert published <= listed, f"reports missing from the index: {sorted(map(str, published - listed))}"
    for report in published:  # each report carries its numbers beside it
        assert (report.parent / "numbers.csv").exists(), report
