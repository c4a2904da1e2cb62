"""Fault injection on the command line: a NaN learning rate is a bad config, refused at start in one line."""

import pytest

from latentwm.cli import main

def _run(argv):
    try:
        return main(argv)
    except SystemExit as e:  # what tyro's own error path does
        return e.code


@pytest.mark.parametrize("argv,field", [
    (["train", "--preset", "tiny", "--train.lr", "nan"], "train.lr"),
    (["train", "--preset", "tiny", "--train.lr", "inf"], "train.lr"),
    (["train-decoder", "--preset", "tiny", "--lr", "nan"], "decoder.lr"),
])
def test_nan_learning_rate_is_refused_in_one_line(tmp_path, capsys, argv, field):
    out = tmp_path / "run"
    flag = "--train.out-dir" if argv[0] == "train" else "--out-dir"
    code = _run([*argv, flag, str(out)])
    err = capsys.readouterr().err
    assert code == 2 and not out.exists()  # refused at start, nothing written
    assert err.startswith(f"latentwm {argv[0]}: ") and len(err.strip().splitlines()) == 1 and field in err
