import pytest

from latentwm.cli import main


def test_help_lists_the_commands(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for cmd in ("demo", "generate", "encode", "train", "rollout", "plan", "eval", "train-decoder", "rl"):
        assert f"  {cmd} " in out


def test_command_help_shows_fields(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--preset", "tiny", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for f in ("--model.width", "--train.steps", "--objective.bootstrap-fraction", "--data.cache-dir"):
        assert f in out


def test_unknown_preset_is_rejected(capsys):
    assert main(["train", "--preset", "huge"]) == 2
    assert "unknown preset 'huge'" in capsys.readouterr().err


def test_bad_value_names_the_field(capsys):
    assert main(["train", "--preset", "tiny", "--model.width", "-8"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("latentwm train: model.width must be > 0") and err.count("\n") == 1  # one line


def test_action_dim_mismatch_is_rejected(capsys):
    assert main(["train", "--preset", "tiny", "--data.env-action-dim", "7"]) == 2
    err = capsys.readouterr().err
    assert "model.action_dim" in err and err.count("\n") == 1


def test_unknown_command(capsys):
    assert main(["fly"]) == 2
    assert "not a latentwm command" in capsys.readouterr().err


def test_print_config_shows_the_resolved_config_and_runs_nothing(tmp_path, capsys):
    import json

    out = tmp_path / "run"
    argv = ["train", "--preset", "tiny", "--train.steps", "7", "--train.out-dir", str(out), "--print-config"]
    assert main(argv) == 0
    cfg = json.loads(capsys.readouterr().out)
    assert cfg["preset"] == "tiny" and cfg["train"]["steps"] == 7 and cfg["train"]["out_dir"] == str(out)
    assert not out.exists()  # nothing ran, not even the out-dir lock
    assert main(["train", "--preset", "tiny", "--train.steps", "0", "--print-config"]) == 2  # still validated
    assert "train.steps" in capsys.readouterr().err
