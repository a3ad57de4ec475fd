"""The documentation stands alone: it cites only documents inside the repository, and its links resolve.

* No tracked file outside ``tests/`` cites a document that is not in the repository or a machine path:
  see :data:`FORBIDDEN` (the equations and claims the code cites live in docs/theory.md).
* Every relative link ``[text](target)`` of README.md and docs/*.md points to an existing file, and a
  ``#fragment`` of a link to a Markdown file names one of that file's headings (GitHub's anchors).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

FORBIDDEN = {
    "a private specification (science.md)": re.compile(r"science\.md", re.IGNORECASE),
    "a private design note (design.md)": re.compile(r"design\.md", re.IGNORECASE),
    "a folder outside the repository (../shared)": re.compile(r"\.\./shared"),
    "an issue number": re.compile(r"\bissues?[ -]#?\d+", re.IGNORECASE),
    "a temporary path (/tmp/)": re.compile(r"/tmp/"),
    "a machine path (/work/)": re.compile(r"/work/"),
}

_SKIP_DIRS = {".git", ".venv", "tests", "results", "runs", "__pycache__", "build", "dist"}
_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
_FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)


def forbidden_citations(text: str) -> list[str]:
    """The kinds of :data:`FORBIDDEN` citation that ``text`` contains."""
    return [what for what, pattern in FORBIDDEN.items() if pattern.search(text)]


def tracked_files() -> list[Path]:
    """The repository's tracked files outside tests/ (every file of the source tree when git is unavailable)."""
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
        names = [n for n in out.decode().split("\0") if n]
    except (OSError, subprocess.CalledProcessError):
        names = [str(p.relative_to(ROOT)) for p in ROOT.rglob("*")
                 if p.is_file() and not _SKIP_DIRS & set(p.relative_to(ROOT).parts)
                 and not any(part.endswith(".egg-info") for part in p.parts)]
    return [ROOT / n for n in names if n.split("/")[0] != "tests" and (ROOT / n).is_file()]


def _text(path: Path) -> str | None:
    data = path.read_bytes()
    if b"\0" in data[:4096]:
        return None  # binary (figures)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def github_anchor(heading: str) -> str:
    """GitHub's anchor of a Markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def headings(markdown: str) -> set[str]:
    """The anchors of every heading of a Markdown text (headings inside code fences do not count)."""
    text = _FENCE.sub("", markdown)
    return {github_anchor(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.+?)\s*#*\s*$", text, re.MULTILINE)}


def broken_links(path: Path) -> list[str]:
    """The relative links of a Markdown file whose target file (or heading) does not exist."""
    bad = []
    for match in _LINK.finditer(_FENCE.sub("", path.read_text(encoding="utf-8"))):
        target = match.group(1)
        if re.match(r"[a-zA-Z][a-zA-Z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        file_part, _, fragment = target.partition("#")
        dest = path if not file_part else (path.parent / file_part)
        if not dest.exists():
            bad.append(target)
        elif fragment and dest.suffix == ".md" and fragment not in headings(dest.read_text(encoding="utf-8")):
            bad.append(target)
    return bad


def test_the_patterns_catch_each_kind_of_outside_citation():
    samples = {
        "a private specification (science.md)": "see science.md §3.2",
        "a private design note (design.md)": "targets (design.md §8)",
        "a folder outside the repository (../shared)": "as ../shared/lava.md says",
        "an issue number": "## Study (issue 5)",
        "a temporary path (/tmp/)": "run `/tmp/gx/run.py`",
        "a machine path (/work/)": "(`/work/shared/lava.md` §4)",
    }
    for what, text in samples.items():
        assert forbidden_citations(text) == [what], text
    assert forbidden_citations("the issue-2 target; Issues #12") == ["an issue number"]
    for clean in ("docs/theory.md §3.2", "docs/benchmarks.md, Targets", "an issue with the input bias",
                  "tmp_path / 'run'", "the network's own work"):
        assert forbidden_citations(clean) == [], clean


def test_no_tracked_file_outside_tests_cites_documents_outside_the_repository():
    files = tracked_files()
    assert ROOT / "README.md" in files and ROOT / "docs" / "theory.md" in files
    assert not any(p.is_relative_to(ROOT / "tests") for p in files)
    found = []
    for path in files:
        text = _text(path)
        if text is None:
            continue
        for lineno, line in enumerate(text.splitlines(), 1):
            for what in forbidden_citations(line):
                found.append(f"{path.relative_to(ROOT)}:{lineno}: {what}: {line.strip()[:100]}")
    assert not found, "cite docs/theory.md or another document of the repository instead:\n" + "\n".join(found)


def test_github_anchors_of_headings():
    assert github_anchor("Across backends and precisions (`neurorate study --config hardware`)") == \
        "across-backends-and-precisions-neurorate-study---config-hardware"
    assert github_anchor("5.3 What \"local\" can mean (`floss_mode=`)") == "53-what-local-can-mean-floss_mode"
    assert headings("# A\n```\n# not a heading\n```\n## B c\n") == {"a", "b-c"}


def test_broken_links_are_found(tmp_path):
    (tmp_path / "other.md").write_text("# Other page\n\n## A section\n")
    page = tmp_path / "page.md"
    page.write_text("[ok](other.md) [ok](other.md#a-section) [ok](#title) [web](https://example.org/x.md)\n"
                    "[missing](nothere.md) [bad anchor](other.md#no-such-section)\n"
                    "```\n[in a code block](ignored.md)\n```\n# Title\n")
    assert broken_links(page) == ["nothere.md", "other.md#no-such-section"]


@pytest.mark.parametrize("page", [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_links_of_readme_and_docs_point_to_existing_files(page):
    assert broken_links(page) == []
