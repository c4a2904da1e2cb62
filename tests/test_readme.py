from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _commands():
    text = (ROOT / "README.md").read_text()
    blocks = text.split("```")
    return [b.strip().removeprefix("bash").strip() for b in blocks[1::2]][:2]


def test_readme_starts_with_the_two_setup_commands():
    demo, tests = _commands()
    assert demo.endswith("latentwm demo")
    assert "pytest" in tests


def test_ci_runs_the_readme_test_command_verbatim():
    _, tests = _commands()
    ci = (ROOT / ".ci" / "run").read_text()
    assert tests in ci.splitlines()
