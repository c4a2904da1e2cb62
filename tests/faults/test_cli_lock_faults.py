"""Every command that writes an out dir holds it: a second writer is refused in one line naming the holder."""

import os

import pytest

from latentwm.cli import main
from latentwm.io.lock import RunLock


@pytest.mark.parametrize(
    "argv",
    [
        ["generate", "--num-episodes", "1", "--max-steps", "5"],
        ["train", "--preset", "tiny", "--train.steps", "1"],
        ["train-decoder", "--preset", "tiny"],
        ["plan", "--preset", "tiny"],
        ["rl", "--preset", "tiny"],
        ["demo", "--preset", "smoke"],
    ],
)
def test_a_held_out_dir_is_refused_naming_the_holder(tmp_path, capsys, argv):
    out = tmp_path / "run"
    flag = "--train.out-dir" if argv[0] == "train" else "--out-dir"
    with RunLock(out, "latentwm other-run"):
        assert main([*argv, flag, str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"latentwm {argv[0]}: out dir {out} is in use by PID {os.getpid()}"), err
    assert "latentwm other-run" in err and "\n" not in err
    assert sorted(p.name for p in out.iterdir()) == [".lock"]  # nothing was written


def test_verify_names_a_missing_cache_in_one_line(tmp_path, capsys):
    assert main(["verify", str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("latentwm verify: ") and "not a latent cache" in err and "\n" not in err
