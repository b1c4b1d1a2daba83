"""Every `THEORY.md §n` (or `THEORY.md section n`) cited anywhere in the repository resolves to a heading
`## n.` of docs/THEORY.md, and every citation of CONVENTIONS.md names a file that exists."""
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
THEORY = ROOT / "docs" / "THEORY.md"
CITATION = re.compile(r"THEORY\.md[,:]?\s*(?:§|sections?\s+)([0-9][0-9§,\s\-–and]*)")


def _tracked_text_files():
    out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    for name in out:
        path = ROOT / name
        if path.suffix in {".py", ".md", ".cu", ".cuh", ".toml", ".txt"} and path.is_file() and path != THEORY:
            yield path


def _sections(spec: str) -> set[int]:
    """'3-4' -> {3, 4}; '2, §4' -> {2, 4}."""
    found = set()
    for a, b in re.findall(r"(\d+)\s*(?:[-–]\s*(\d+))?", spec):
        lo, hi = int(a), int(b or a)
        found.update(range(lo, hi + 1))
    return found


def test_theory_page_has_numbered_sections():
    headings = re.findall(r"^## (\d+)\. ", THEORY.read_text(), re.M)
    assert headings == [str(i) for i in range(1, len(headings) + 1)] and len(headings) >= 4


def test_every_theory_citation_resolves():
    headings = {int(n) for n in re.findall(r"^## (\d+)\. ", THEORY.read_text(), re.M)}
    cited, missing = 0, []
    for path in _tracked_text_files():
        for i, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            for m in CITATION.finditer(line):
                for n in _sections(m.group(1)):
                    cited += 1
                    if n not in headings:
                        missing.append(f"{path.relative_to(ROOT)}:{i}: THEORY.md §{n}")
    assert cited >= 10, "the citation pattern finds too little: is it still right?"
    assert not missing, "citations without a heading in docs/THEORY.md:\n" + "\n".join(missing)


def test_no_unnumbered_theory_reference_points_elsewhere():
    """The page is docs/THEORY.md; no file points at a THEORY.md in another folder."""
    for path in _tracked_text_files():
        text = path.read_text(errors="replace")
        for m in re.finditer(r"[\w./-]*THEORY\.md", text):
            assert m.group(0) in ("THEORY.md", "docs/THEORY.md", "../docs/THEORY.md"), (path, m.group(0))
