"""Fault injection on the demo's stage caches and settings: a damaged stage record redoes its stage (it cannot vouch
for the folder) instead of crashing or reusing it; a frame skip the rendered folder cannot serve is refused at
start, naming the fields."""

import pytest

from latentwm.cli import main
from latentwm.demo.stages import RECORD, Stages


def test_a_damaged_stage_record_redoes_the_stage(tmp_path, capsys):
    calls = []

    def make():
        calls.append(1)
        (tmp_path / "a" / "out.txt").write_text("x")
        return {"ok": True}

    Stages().run("a", tmp_path / "a", {"x": 1}, (), make)
    (tmp_path / "a" / RECORD).write_text('{"key": "trunc')  # torn by hand or by a full disk
    assert Stages().run("a", tmp_path / "a", {"x": 1}, (), make) == {"ok": True} and len(calls) == 2
    out = capsys.readouterr().out
    assert "stage's record" in out and "redo: a (no record of what made this folder)" in out


@pytest.mark.parametrize(
    "flags,field", [(["--render-every", "3"], "demo.render_every"), (["--render-every", "0"], "demo.render_every")]
)
def test_bad_demo_stage_settings_are_one_line(tmp_path, capsys, flags, field):
    assert main(["demo", "--preset", "smoke", "--out-dir", str(tmp_path / "d"), *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith("latentwm demo: ") and err.count("\n") == 1
    assert field in err and not (tmp_path / "d").exists()
