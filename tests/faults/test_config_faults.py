"""Fault injection on the command line: a NaN learning rate is a bad config, refused at start in one line."""

import pytest

from latentwm.cli import main


def _run(argv):
    try:
        return main(argv)
    except SystemExit as e:  # what tyro's own error path does
        return e.code


@pytest.mark.parametrize(
    "argv,field",
    [
        (["train", "--preset", "tiny", "--train.lr", "nan"], "train.lr"),
        (["train", "--preset", "tiny", "--train.lr", "inf"], "train.lr"),
        (["train-decoder", "--preset", "tiny", "--lr", "nan"], "decoder.lr"),
    ],
)
def test_nan_learning_rate_is_refused_in_one_line(tmp_path, capsys, argv, field):
    out = tmp_path / "run"
    flag = "--train.out-dir" if argv[0] == "train" else "--out-dir"
    code = _run([*argv, flag, str(out)])
    err = capsys.readouterr().err
    assert code == 2 and not out.exists()  # refused at start, nothing written
    assert err.startswith(f"latentwm {argv[0]}: ") and len(err.strip().splitlines()) == 1 and field in err


def test_a_state_cost_without_a_state_probe_names_the_flag(tmp_path):
    """`latentwm plan --plan.state-weight 1` on a run without a saved state probe: one clear error, not a crash later
    (and a saved one next to the checkpoint is found)."""
    import dataclasses

    from latentwm.config import ConfigError, PlanConfig, PlanRunConfig
    from latentwm.planning.evaluate import _state_probe_path

    cfg = PlanRunConfig(
        checkpoint=str(tmp_path / "train" / "checkpoints" / "best.pt"),
        plan=dataclasses.replace(PlanConfig(), state_weight=1.0),
    )
    with pytest.raises(ConfigError, match="--state-probe"):
        _state_probe_path(cfg)
    assert _state_probe_path(cfg, required=False) is None  # text goals' pose reading is optional
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "state_probe.safetensors").write_bytes(b"")
    assert _state_probe_path(cfg) == tmp_path / "train" / "state_probe.safetensors"


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "--preset", "tiny", "--train.out-dir", " "],
        ["generate", "--out-dir", ""],
        ["plan", "--out-dir", ""],
        ["demo", "--preset", "smoke", "--out-dir", ""],
    ],
)
def test_an_empty_output_folder_is_refused(tmp_path, capsys, monkeypatch, argv):
    """An empty out dir would write the run into the current directory: refused at start, in one line."""
    monkeypatch.chdir(tmp_path)
    code = _run(argv)
    err = capsys.readouterr().err
    assert code == 2 and list(tmp_path.iterdir()) == []
    assert err.startswith(f"latentwm {argv[0]}: ") and "out_dir is empty" in err


@pytest.mark.parametrize("text", ["", "   "])
def test_an_empty_goal_sentence_is_refused_like_imagine_refuses_it(tmp_path, capsys, text):
    """`plan --goal-text ""` exited 0 and dropped the text-goal rows; leaving the flag out means image goals only."""
    out = tmp_path / "plan"
    code = _run(["plan", "--checkpoint", "x", "--episodes-dir", "y", "--goal-text", text, "--out-dir", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and not out.exists()
    assert err.startswith("latentwm plan: ") and "plan.goal_text is empty" in err
    assert len(err.strip().splitlines()) == 1


def test_arguments_that_are_not_utf8_are_refused_in_one_line(tmp_path, capsys):
    """Non-UTF-8 bytes in --text or an out path (surrogate-escaped by Python) crashed in the tokenizer / TensorBoard."""
    bad = b"push \xff\xfe left".decode("utf-8", "surrogateescape")
    code = _run(["imagine", "--text", bad, "--out-dir", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("latentwm imagine: ") and "not valid UTF-8" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    "flags",
    [
        ["--data.batch-size", "1000000000"],
        ["--data.batch-size", "100000"],
        ["--model.width", "1000000", "--model.heads", "4"],
    ],
)
def test_a_run_that_cannot_fit_in_memory_is_refused_before_it_allocates(tmp_path, capsys, monkeypatch, flags):
    """Such runs grew until the kernel killed them (no message) or died in an allocation traceback: the lower bound
    on their memory is checked against what the machine has, first (here: a machine with 24 GiB available)."""
    from latentwm.train import memory

    monkeypatch.setattr(memory, "available_memory", lambda device: 24 * 2**30)
    code = _run(
        [
            "train",
            "--preset",
            "tiny",
            "--data.cache-dir",
            str(tmp_path / "none"),
            "--train.out-dir",
            str(tmp_path / "run"),
            *flags,
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("latentwm train: ") and len(err.strip().splitlines()) == 1
    assert "needs at least" in err and "GiB available" in err


def test_the_memory_bound_never_refuses_what_fits():
    """Calibration: measured peaks (benchmarks/RESULTS.md) stay above the bound: cpu preset 1.8 GB, small at
    batch 32 15.4 GB."""
    from latentwm.config import get_preset
    from latentwm.train.memory import memory_lower_bound

    assert memory_lower_bound(get_preset("cpu")) < 1.8e9
    assert memory_lower_bound(get_preset("small").replace(data__batch_size=32)) < 15.4e9
