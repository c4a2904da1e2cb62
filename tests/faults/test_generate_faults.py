"""Fault injection on `latentwm generate`: a folder made with other settings is refused, not mixed into."""

import json

import pytest

from latentwm.cli import main

pytest.importorskip("gym_pusht")

BASE = ["--num-episodes", "1", "--max-steps", "4", "--image-size", "32", "--seed", "3"]


def _generate(out, *extra):
    return main(["generate", "pusht", "--out-dir", str(out), *BASE, *extra])


def test_generate_into_a_folder_made_with_other_settings_is_refused(tmp_path, capsys):
    """Before: episodes of 4 steps at 32 px and of 6 steps at 48 px landed side by side in one folder."""
    out = tmp_path / "eps"
    assert _generate(out) == 0
    before = sorted(p.name for p in out.iterdir())
    capsys.readouterr()
    assert _generate(out, "--num-episodes", "2", "--max-steps", "6", "--image-size", "48") == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("latentwm generate: ")
    assert str(out) in err and "max_steps" in err and "image_size" in err and "seed" not in err
    assert sorted(p.name for p in out.iterdir()) == before  # nothing written
    for flags, field in (
        (["--seed", "4"], "seed"),
        (["--mix.goal", "0.2", "--mix.scripted", "0.6"], "mix"),
        (["--mix.noise", "3", "9"], "mix"),
    ):
        assert _generate(out, *flags) == 2
        assert f"{field} " in capsys.readouterr().err


def test_generate_may_grow_a_folder_with_the_same_settings(tmp_path):
    out = tmp_path / "eps"
    assert _generate(out) == 0
    assert _generate(out, "--num-episodes", "2") == 0
    assert sorted(p.name for p in out.glob("episode_*.npz")) == ["episode_000000.npz", "episode_000001.npz"]
    recorded = json.loads((out / "generate.json").read_text())
    assert recorded["num_episodes"] == 2 and recorded["max_steps"] == 4 and recorded["image_size"] == 32
    assert _generate(out) == 0  # asking for fewer reads the first ones; the record keeps the largest count
    assert json.loads((out / "generate.json").read_text())["num_episodes"] == 2


def test_generate_checks_a_folder_made_before_settings_were_recorded(tmp_path, capsys):
    out = tmp_path / "eps"
    assert _generate(out) == 0
    (out / "generate.json").unlink()  # as written by an older version
    assert _generate(out, "--image-size", "48") == 2
    assert "image_size" in capsys.readouterr().err
    assert _generate(out, "--num-episodes", "2") == 0 and (out / "generate.json").exists()


def test_a_mix_that_does_not_sum_to_one_is_refused(tmp_path, capsys):
    assert _generate(tmp_path / "eps", "--mix.goal", "0.9") == 2
    err = capsys.readouterr().err
    assert err.startswith("latentwm generate: ") and "sum to 1" in err and not (tmp_path / "eps").exists()


def test_a_record_without_the_policy_mix_is_other_settings(tmp_path, capsys):
    """A generate.json missing a setting (written by another version) cannot vouch for its episodes."""
    out = tmp_path / "eps"
    assert _generate(out) == 0
    rec = json.loads((out / "generate.json").read_text())
    del rec["mix"]
    (out / "generate.json").write_text(json.dumps(rec))
    assert _generate(out, "--num-episodes", "2") == 2
    assert "mix not recorded there" in capsys.readouterr().err
