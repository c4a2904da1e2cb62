"""The project's standard tooling, enforced by the test command CI runs: ruff's lint rules (pycodestyle, pyflakes,
bugbear, import sorting, pyupgrade) and ruff's formatter over src/, tests/ and benchmarks/; mypy over the packages
pyproject.toml's [tool.mypy] names (config, model, objectives, planning)."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("args", [["check", "."], ["format", "--check", "."]], ids=["lint", "format"])
def test_ruff(args):
    pytest.importorskip("ruff")
    proc = subprocess.run([sys.executable, "-m", "ruff", *args], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]


@pytest.mark.slow
def test_mypy():
    """No arguments: the files and settings are pyproject.toml's [tool.mypy] (about 2 minutes)."""
    pytest.importorskip("mypy")
    proc = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]


def test_the_source_carries_no_history():
    """Comments say what the code does and why, not which issue or date produced it; the design document the code
    cites is the repository's own docs/design.md."""
    pattern = re.compile(r"\b[Ii]ssues? ?#?\d+\b|\b20\d\d-\d\d-\d\d\b|\bDESIGN\.md\b")
    hits = [
        f"{p.relative_to(ROOT)}:{i}: {line.strip()[:100]}"
        for p in sorted((ROOT / "src" / "latentwm").rglob("*.py"))
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert not hits, "\n".join(hits)
