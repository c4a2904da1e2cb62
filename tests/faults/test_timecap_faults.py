"""Fault injection: a wall-clock cap must never silently shorten a run. Before, `pretrain-encoder --max-minutes`
and `train-decoder --max-minutes` stopped early and saved their result as if finished (the demo then went on with an
encoder trained for 250 of its 4000 steps on a busy machine); now the run checkpoints, says so in one line and exits
non-zero, and `--resume` finishes the same steps."""

import time

from latentwm.cli import main
from tests.faults.fault_helpers import SlowClock
from tests.test_pretrain_encoder import TINY_FLAGS, _episodes


def test_a_capped_pretraining_stops_with_an_error_and_resumes_to_its_steps(tmp_path, monkeypatch, capsys):
    episodes = _episodes(tmp_path / "episodes")
    out = tmp_path / "run"
    flags = [
        "pretrain-encoder",
        "--data-dir",
        str(episodes),
        "--out-dir",
        str(out),
        *TINY_FLAGS[:-2],
        "--steps",
        "4",
        "--log-every",
        "1",
        "--ckpt-every",
        "100",
    ]
    monkeypatch.setattr(time, "monotonic", SlowClock())
    assert main([*flags, "--max-minutes", "1.5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # below the progress bars
    assert err.startswith("latentwm pretrain-encoder: ") and "time cap (1.5 min)" in err
    assert "at step 1 of 4" in err and "--resume" in err and "remaining 3 steps" in err
    assert not (out / "encoder").exists()  # no result from a capped run
    assert any((out / "checkpoints").iterdir())
    monkeypatch.undo()
    assert main([*flags, "--resume"]) == 0
    assert "after 4 steps" in capsys.readouterr().out and (out / "encoder" / "pretrain.json").exists()
