"""The Space page and the docs hold together: every relative link in README.md and docs/*.md resolves (the file, and
the #anchor where one is given), README.md stays a page people read (≤ 12 KB), and no doc names a local path."""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README_MAX_BYTES = 12_000
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[[^\]\n]*(?:\[[^\]\n]*\][^\]\n]*)*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^(```|~~~)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
LOCAL_PATH = re.compile(r"(?<![\w.~-])(/work/|/tmp/|/root/|/home/|/Users/|/mnt/|/var/folders/|[A-Z]:\\\\)")


def prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks (links and headings there are code, not markdown)."""
    lines, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line.strip()):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(line)
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: markup dropped, lower case, punctuation and symbols removed, spaces to '-'."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading keeps its text
    text = text.replace("`", "").replace("*", "").lower()
    kept = "".join(ch for ch in text if ch in " -_" or unicodedata.category(ch)[0] in "LNM")
    return kept.replace(" ", "-")


def anchors(text: str) -> set[str]:
    found: set[str] = set()
    seen: dict[str, int] = {}
    for line in prose_lines(text):
        m = HEADING.match(line)
        if not m:
            continue
        base = slug(m.group(2))
        n = seen.get(base, 0)
        seen[base] = n + 1
        found.add(base if n == 0 else f"{base}-{n}")
    return found


def broken_links(path: Path, text: str | None = None) -> list[str]:
    """Every relative link of a markdown file that does not resolve: a missing file, or an anchor its target lacks."""
    text = path.read_text() if text is None else text
    problems = []
    for line in prose_lines(text):
        for target in LINK.findall(line):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto: …
                continue
            file_part, _, anchor = target.partition("#")
            resolved = (path.parent / file_part).resolve() if file_part else path
            if not resolved.exists():
                problems.append(f"{path.name}: {target} (no such file)")
                continue
            if anchor:
                if resolved.suffix != ".md":
                    problems.append(f"{path.name}: {target} (an anchor into a file that is not markdown)")
                elif anchor not in anchors(text if resolved == path else resolved.read_text()):
                    problems.append(f"{path.name}: {target} (no heading with that anchor)")
    return problems


def local_paths(text: str) -> list[str]:
    return [m.group(0) for m in LOCAL_PATH.finditer(text)]


def test_every_relative_link_resolves():
    problems = [p for path in DOCS for p in broken_links(path)]
    assert not problems, "\n".join(problems)
    links = sum(len(LINK.findall(line)) for path in DOCS for line in prose_lines(path.read_text()))
    assert links > 50  # the check looked at the docs' links, not at nothing


def test_the_docs_set_exists_and_the_readme_points_into_it():
    names = {p.name for p in DOCS}
    expected = {"api.md", "architecture.md", "methods.md", "toy-profile.md", "results.md", "benchmarks.md",
                "deploy.md", "evaluate.md"}
    assert expected <= names, expected - names
    readme = (ROOT / "README.md").read_text()
    for name in expected:
        assert f"(docs/{name}" in readme, f"README.md has no link to docs/{name}"
    assert "(docs/img/app.png)" in readme and (ROOT / "docs" / "img" / "app.png").is_file()


def test_results_keeps_the_sections_other_tables_join():
    headings = anchors((ROOT / "docs" / "results.md").read_text())
    assert {"text-encoders-and-binding", "flow-models", "guidance-distillation"} <= headings


def test_the_readme_is_a_page_people_read():
    size = len((ROOT / "README.md").read_bytes())
    assert size <= README_MAX_BYTES, f"README.md is {size} bytes; move detail into docs/ (at most {README_MAX_BYTES})"


def test_no_doc_names_a_local_path():
    found = {path.name: local_paths(path.read_text()) for path in DOCS}
    assert not any(found.values()), {k: v for k, v in found.items() if v}


def test_the_checks_can_fail(tmp_path):
    """Each check catches what it is for: a missing file, a missing anchor, an anchor into a non-markdown file, and a
    local path; while code blocks, web links and a heading's own anchor pass."""
    (tmp_path / "other.md").write_text("# Other page\n\n## A section — with `code`, punctuation & ünïcode\n")
    (tmp_path / "image.png").write_bytes(b"")
    page = tmp_path / "page.md"
    text = ("# Page\n\n## Duplicate\n\n## Duplicate\n\n"
            "[ok](other.md) [ok](other.md#a-section--with-code-punctuation--ünïcode) [ok](#duplicate-1) "
            "[ok](https://example.org/x) ![ok](image.png)\n"
            "```\n[not a link](missing-in-code.md)\n```\n"
            "[bad](missing.md) [bad](other.md#no-such-section) [bad](#nowhere) [bad](image.png#x)\n")
    page.write_text(text)
    problems = broken_links(page)
    assert [p.split(": ", 1)[1].split(" ")[0] for p in problems] == [
        "missing.md", "other.md#no-such-section", "#nowhere", "image.png#x"]
    assert local_paths("see /work/main/docs and /tmp/x.png") == ["/work/", "/tmp/"]
    assert local_paths("`assets/toy/sd` and https://example.org/tmp/x, ~/work/ too") == []
