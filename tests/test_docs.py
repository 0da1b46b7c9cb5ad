"""The manual stays true: generated tables match their sources, links resolve, no history in code or docs.

- Every marked table in docs/ is what ``python -m benchmarks.render_docs`` renders from
  benchmarks/results/*.json (and the module map from the docstrings): a hand-edited number fails.
- Every relative link of README.md and docs/*.md resolves to a file inside the repository, and a
  ``#anchor`` into a Markdown file names one of its headings (GitHub's slugs).
- No issue numbers (``#12``, ``issue 12``) and no "this session" in swclip/, appkit/, pages/, train/,
  benchmarks/, docs/ or README.md: comments and docs say what and why, as of now.
"""

import re
import sys
from pathlib import Path

import pytest

from benchmarks import render_docs

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
MANUAL = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]
HISTORY_ROOTS = ["swclip", "appkit", "pages", "train", "benchmarks", "docs", "README.md"]
TEXT_SUFFIXES = {".py", ".md", ".sh", ".yaml", ".yml", ".toml", ".txt", ".cfg"}
# an issue reference: "#12" (not a colour such as "#000" in quotes, not an anchor "x#12"), "issue 12",
# "issue #12", "issues 3"; and the phrase "this session"
HISTORY = re.compile(r"(?<![\w&#/'\":])#\d{1,4}\b|\bissues?[ -]?#?\d+\b|\bthis session\b", re.IGNORECASE)


# --------------------------------------------------------------------------------------------- generated tables


def first_difference(old: str, new: str) -> str:
    a, b = old.splitlines(), new.splitlines()
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return f"line {i + 1}:\n  committed: {x}\n  rendered:  {y}"
    return f"length differs: {len(a)} committed lines, {len(b)} rendered"


@pytest.mark.parametrize("file", sorted({f for f, _ in render_docs.TABLES.values()}))
def test_generated_tables_match_their_sources(file):
    old = (DOCS / file).read_text()
    new, names = render_docs.render_text(old, file)
    missing = sorted(n for n, (f, _) in render_docs.TABLES.items() if f == file and n not in names)
    assert not missing, f"docs/{file} lacks the markers of {missing}"
    assert old == new, (
        f"docs/{file} differs from what `python -m benchmarks.render_docs` renders; "
        f"run it and commit the result. First difference at {first_difference(old, new)}"
    )


def test_render_rewrites_only_between_markers():
    text = "above\n<!-- table:figures -->\nstale | 1 |\n<!-- /table:figures -->\nbelow\n"
    new, names = render_docs.render_text(text, "benchmarks.md")
    assert names == ["figures"]
    assert new.startswith("above\n<!-- table:figures -->\n") and new.endswith("<!-- /table:figures -->\nbelow\n")
    assert "stale" not in new and "| B = 256 |" in new
    with pytest.raises(KeyError, match="unknown table"):
        render_docs.render_text("<!-- table:nope -->\n<!-- /table:nope -->", "benchmarks.md")


# --------------------------------------------------------------------------------------------- links

LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
INLINE_CODE = re.compile(r"`[^`\n]*`")


def github_slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for line in FENCE.sub("", path.read_text()).splitlines():
        m = re.match(r"#{1,6}\s+(.*)", line)
        if m:
            slug = github_slug(m.group(1))
            n = seen.get(slug, 0)
            seen[slug] = n + 1
            out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def links(path: Path) -> list[str]:
    text = INLINE_CODE.sub("", FENCE.sub("", path.read_text()))
    return LINK.findall(text)


def broken_links(path: Path) -> list[str]:
    bad = []
    for target in links(path):
        if re.match(r"[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto:
            continue
        file, _, anchor = target.partition("#")
        dest = (path.parent / file).resolve() if file else path.resolve()
        try:
            dest.relative_to(ROOT)
        except ValueError:
            bad.append(f"{target}: outside the repository")
            continue
        if not dest.exists():
            bad.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            bad.append(f"{target}: no heading #{anchor} in {dest.relative_to(ROOT)}")
    return bad


@pytest.mark.parametrize("path", MANUAL, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve_inside_the_repository(path):
    bad = broken_links(path)
    assert not bad, f"{path.relative_to(ROOT)}: broken links:\n" + "\n".join(bad)


def test_link_checker_catches_broken_links(tmp_path, monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# Title\n\n## Some heading (`x`)\n\n```\n# not a heading\n```\n")
    page = tmp_path / "README.md"
    page.write_text(
        "[ok](docs/a.md#some-heading-x) [gone](docs/b.md) [anchor](docs/a.md#not-a-heading) [out](../x.md) "
        "[web](https://example.org) `[code](nowhere.md)` [self](#title-missing)\n"
    )
    bad = broken_links(page)
    assert [b.split(":")[0] for b in bad] == ["docs/b.md", "docs/a.md#not-a-heading", "../x.md", "#title-missing"]
    assert github_slug("Semivariogram-weighted negatives (`semivariogram`, two variants)") == (
        "semivariogram-weighted-negatives-semivariogram-two-variants"
    )


# --------------------------------------------------------------------------------------------- history


def history_hits() -> list[str]:
    hits = []
    for name in HISTORY_ROOTS:
        base = ROOT / name
        files = [base] if base.is_file() else sorted(p for p in base.rglob("*") if p.suffix in TEXT_SUFFIXES)
        for p in files:
            if not p.is_file() or any(part.startswith(".") or part == "__pycache__" for part in p.parts[-3:]):
                continue
            for i, line in enumerate(p.read_text(errors="replace").splitlines(), 1):
                for m in HISTORY.finditer(line):
                    hits.append(f"{p.relative_to(ROOT)}:{i}: {m.group(0)!r} in {line.strip()[:100]}")
    return hits


def test_history_pattern():
    for text in ("see #12", "(issue 12)", "Issue #3 fixed", "issues 4", "in this session", "issue-11 goals"):
        assert HISTORY.search(text), text
    for text in ('color="#000"', "page.md#12-x", "step 12", "# 12 GPUs", "&#12;", "tissue 12"):
        assert not HISTORY.search(text), text


def test_no_history_in_code_or_docs():
    hits = history_hits()
    assert not hits, f"{len(hits)} history reference(s) (issue numbers, 'this session'):\n" + "\n".join(hits)
