"""benchmarks/RESULTS.md: every row of the "Latest numbers" table links a dated entry that exists (GitHub's anchor
of its heading), so the table never points at a removed or renamed measurement."""

import re
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "RESULTS.md"


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a markdown heading: lower case, punctuation and symbols dropped (letters, digits,
    spaces, hyphens and underscores kept), spaces turned into hyphens."""
    kept = "".join(ch for ch in heading.strip().lower() if ch.isalnum() or ch in " -_")
    return kept.replace(" ", "-")


def test_github_anchor():
    assert github_anchor("bench_generate — Push-T episodes/s (2026-12-06 08:49)") == (
        "bench_generate--push-t-episodess-2026-12-06-0849"
    )


def test_every_latest_row_links_an_entry():
    text = RESULTS.read_text()
    anchors = {github_anchor(m.group(1)) for m in re.finditer(r"^#{2,3} (.+)$", text, re.M)}
    table = text.split("## Latest numbers", 1)[1].split("\n## ", 1)[0]
    links = re.findall(r"\]\(#([^)]+)\)", table)
    assert len(links) >= 10, "the Latest numbers table has its rows"
    missing = [a for a in links if a not in anchors]
    assert not missing, missing
