"""Fault injection on run logs: a resumed run must not leave rows past its resume step in metrics.jsonl."""

import json

from latentwm.engine.logging import RunLogger, read_metrics


def _run(out, steps, resume_at=None):
    log = RunLogger(out, tensorboard=True)
    if resume_at is not None:
        log.truncate_after(resume_at)
    for s in steps:
        log.scalars(s, {"loss": 1.0 / s}, prefix="train/")
        if s % 4 == 0:
            log.scalars(s, {"error": 0.5}, prefix="eval/")
    return log


def test_truncate_after_drops_rows_past_the_resumed_step(tmp_path):
    """Before: a run killed at step 7 and resumed from its step-4 checkpoint logged steps 5..7 twice, so the curves
    in metrics.jsonl (what reports plot) went backwards."""
    killed = _run(tmp_path, range(1, 8))
    killed._jsonl.write('{"step": 8, "time": 1, "train/lo')  # torn by the kill
    killed._jsonl.flush()
    log = _run(tmp_path, range(5, 10), resume_at=4)
    log.close()
    rows = read_metrics(tmp_path / "metrics.jsonl")
    steps = [r["step"] for r in rows]
    assert steps == sorted(steps) and [r["step"] for r in rows if "train/loss" in r] == list(range(1, 10))
    assert [r["step"] for r in rows if "eval/error" in r] == [4, 8]
    assert all(json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines())  # no torn line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.jsonl", "tb"]  # no temp file left


def test_truncate_after_keeps_everything_up_to_the_step_and_reports_what_it_dropped(tmp_path):
    log = _run(tmp_path, range(1, 7))
    before = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert log.truncate_after(6) == 0 and (tmp_path / "metrics.jsonl").read_text().splitlines() == before
    assert log.truncate_after(2) == 5  # rows of steps 3, 4 (train + eval), 5, 6
    assert (tmp_path / "metrics.jsonl").read_text().splitlines() == before[:2]  # kept rows are kept verbatim
    assert log.truncate_after(0) == 2 and (tmp_path / "metrics.jsonl").read_text() == ""
    log.scalars(1, {"loss": 1.0})  # the logger keeps writing to the rewritten file
    log.close()
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl")] == [1]
    off = RunLogger(tmp_path / "other", enabled=False)  # ranks other than 0 log nothing and truncate nothing
    assert off.truncate_after(3) == 0 and not (tmp_path / "other").exists()
