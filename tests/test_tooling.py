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


MAX_PARAMS = 8
WHY = re.compile(r"#\s*Many parameters:\s*\S.{20,}")
"""The comment a function with more than MAX_PARAMS parameters carries on the lines just above its `def` (or its
decorators): why the values do not belong in one config or value object."""


def wide_signatures(root: Path) -> list[str]:
    """`path:line name (n parameters)` of every function under `root` with more than MAX_PARAMS parameters (self
    and cls not counted, *args / **kwargs not counted) and no WHY comment above it."""
    import ast

    out = []
    for p in sorted(root.rglob("*.py")):
        lines = p.read_text().splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            a = node.args
            names = [x.arg for x in (*a.posonlyargs, *a.args, *a.kwonlyargs) if x.arg not in ("self", "cls")]
            if len(names) <= MAX_PARAMS:
                continue
            top = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            above = "\n".join(lines[max(0, top - 4) : top - 1])
            if not WHY.search(above):
                out.append(f"{p.relative_to(root.parent)}:{node.lineno} {node.name} ({len(names)} parameters)")
    return out


def test_signatures_stay_small():
    """No function in the package takes more than MAX_PARAMS parameters without a comment saying why: values that
    travel together are one config or value object (Conditions, PlanProblem, EvalOptions, ...)."""
    wide = wide_signatures(ROOT / "src" / "latentwm")
    assert not wide, "more than 8 parameters and no '# Many parameters: <why>' comment above:\n" + "\n".join(wide)


def test_signature_check_catches_a_wide_function(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    body = "    return 0\n"
    wide = "def f(self, a, b, c, d, e, f, g, h, i):\n" + body
    (pkg / "bad.py").write_text(wide + "\n\ndef ok(a, b, c, d, e, f, g, h, *args, **kw):\n" + body)
    (pkg / "why.py").write_text("# Many parameters: mirrors the file format's nine columns one to one\n" + wide)
    (pkg / "lazy.py").write_text("# Many parameters: yes\n" + wide)  # a reason must say something
    assert [w.split(":")[0] for w in wide_signatures(pkg)] == ["pkg/bad.py", "pkg/lazy.py"]
