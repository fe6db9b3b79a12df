"""The repository stands alone: no code, comment or document cites a text a reader of it cannot open.

Notes kept outside the repository (spec sections, "official-behaviour.md", "paper.md", "anchors.md", the
parity notes' sections) and numbered work items ("issue 3") mean nothing to a reader; a fact is stated, or a
file of the repository named (the parity vectors' provenance is tests/data/parity/README.md).
"""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCANNED = ("src", "docs", "bench", "scripts", "configs", "examples", "tests", "README.md")
TEXT_SUFFIXES = {".py", ".md", ".yaml", ".yml", ".toml", ".sh", ".txt", ".html", ".js", ".css", ".cfg", ".ini"}

CITATION = re.compile(
    r"§\s*\d"  # a section number of some other text: "spec §5", "anchors §3", "README §8"
    r"|\b(?:official-behaviour|paper|anchors|style)\.md\b"  # the spec notes, by file name
    r"|\bparity README\b"
    r"|\bissues?\s+#?\d+"  # a numbered work item of this project
    r"|\.\./shared\b|\bshared/(?:spec|parity|data|hooks)\b",  # the notes' folder beside the repository
    re.IGNORECASE,
)


def scanned_files() -> list[Path]:
    files = []
    for name in SCANNED:
        path = REPO / name
        candidates = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        files += [p for p in candidates if p.suffix in TEXT_SUFFIXES and "__pycache__" not in p.parts]
    return [p for p in files if p != Path(__file__).resolve()]


def citations(text: str) -> list[tuple[int, str]]:
    return [(n, line.strip()) for n, line in enumerate(text.splitlines(), 1) if CITATION.search(line)]


def test_the_pattern_finds_each_kind_of_citation():
    cited = ["(spec §5.4)", "anchors §2.2", "see official-behaviour.md", "paper.md §3", "Spec: anchors.md",
             "parity README §6", "(issue 3)", "Issue #7", "../shared/spec", "shared/parity/README.md §2", "README §8"]
    fine = ["tests/data/parity/README.md", "the paper's Table 6", "Eq. 4-5", "an issue of IOPaint", "§ alone",
            "shared_cfg_input=True", "a shared/cached tensor"]
    assert [line for line in cited if not CITATION.search(line)] == []
    assert [line for line in fine if CITATION.search(line)] == []


def test_no_file_cites_a_text_outside_the_repository():
    files = scanned_files()
    assert len(files) > 100 and REPO / "README.md" in files
    found = [f"{path.relative_to(REPO)}:{n}: {line}" for path in files
             for n, line in citations(path.read_text(encoding="utf-8", errors="replace"))]
    assert found == [], "cite the fact or a file of the repository instead:\n" + "\n".join(found)


SECTION_POINTER = re.compile(r"([\w./-]+\.md),\s*\"([^\"]+)\"")  # docs/training.md, "The small model"


def headings(markdown: Path) -> list[str]:
    return [line.lstrip("#").strip() for line in markdown.read_text(encoding="utf-8").splitlines()
            if line.startswith("#")]


def test_every_pointer_to_a_section_names_a_file_and_heading_that_exist():
    broken, checked = [], 0
    for path in scanned_files():
        text = " ".join(path.read_text(encoding="utf-8", errors="replace").split())
        for name, section in SECTION_POINTER.findall(text):
            target = next((p for p in (REPO / name, path.parent / name) if p.is_file()), None)
            checked += 1
            if target is None or not any(h.startswith(section) for h in headings(target)):
                broken.append(f"{path.relative_to(REPO)}: {name}, \"{section}\"")
    assert checked > 5 and broken == [], "\n".join(broken)
