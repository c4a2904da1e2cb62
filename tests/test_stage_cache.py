"""Stage caches (`demo/stages.py`) and fixed step counts: a stage is reused when its settings and inputs match,
redone with everything downstream when they do not, continued when interrupted; and a run's stages do the same steps
on a slow machine as on a fast one."""

import json

import pytest

from latentwm.demo.stages import RECORD, Stages


def _pipeline(root, st, a_setting=1, b_setting=2, calls=None, fail_b=False):
    calls = [] if calls is None else calls

    def make(name, fail=False):
        def f():
            calls.append(name)
            (root / name / "work.txt").write_text(name)
            if fail:
                raise RuntimeError("killed")
            return {"value": name}

        return f

    a = st.run("a", root / "a", {"x": a_setting}, (), make("a"))
    b = st.run("b", root / "b", {"y": b_setting}, ("a",), make("b", fail_b))
    c = st.run("c", root / "c", {"z": (1, 2)}, ("b",), make("c"))
    return a, b, c, calls


def test_unchanged_settings_reuse_every_stage(tmp_path, capsys):
    a, b, c, calls = _pipeline(tmp_path, Stages())
    assert calls == ["a", "b", "c"] and c == {"value": "c"}
    st = Stages()
    assert _pipeline(tmp_path, st)[:3] == (a, b, c) and _pipeline(tmp_path, Stages())[3] == []
    assert st.reused == ["a", "b", "c"] and st.made == []
    rec = json.loads((tmp_path / "b" / RECORD).read_text())
    assert rec["done"] and rec["settings"] == {"y": 2} and set(rec["inputs"]) == {"a"} and rec["seconds"] >= 0
    assert "reused: a" in capsys.readouterr().out


def test_a_changed_setting_redoes_its_stage_and_everything_after_it(tmp_path, capsys):
    _pipeline(tmp_path, Stages())
    (tmp_path / "b" / "stale.bin").write_text("from the old settings")
    st = Stages()
    *_, calls = _pipeline(tmp_path, st, b_setting=3)
    assert calls == ["b", "c"] and st.reused == ["a"] and st.made == ["b", "c"]
    assert not (tmp_path / "b" / "stale.bin").exists()  # emptied: nothing of the old settings is resumed
    out = capsys.readouterr().out
    assert "redo: b (settings changed: y: 2 → 3)" in out and "redo: c (its input changed: b)" in out


def test_redo_names_a_stage_and_an_interrupted_stage_continues(tmp_path, capsys):
    _pipeline(tmp_path, Stages())
    *_, calls = _pipeline(tmp_path, Stages(redo=frozenset({"b", "c"})))
    assert calls == ["b", "c"] and "asked to redo it" in capsys.readouterr().out
    # a stage killed mid-way keeps its folder (its own resume logic continues it) and is not marked done
    with pytest.raises(RuntimeError, match="killed"):
        _pipeline(tmp_path, Stages(), b_setting=5, fail_b=True)
    rec = json.loads((tmp_path / "b" / RECORD).read_text())
    assert rec["done"] is False and (tmp_path / "b" / "work.txt").exists()
    st = Stages()
    *_, calls = _pipeline(tmp_path, st, b_setting=5)
    assert calls == ["b", "c"] and "resume: b (interrupted before" in capsys.readouterr().out


def test_a_folder_without_a_record_is_redone_and_settings_must_be_json(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "old.txt").write_text("made by something else")
    *_, calls = _pipeline(tmp_path, Stages())
    assert calls == ["a", "b", "c"] and not (tmp_path / "a" / "old.txt").exists()
    with pytest.raises(TypeError, match="JSON-able"):
        Stages().run("x", tmp_path / "x", {"f": object()}, (), dict)
    with pytest.raises(RuntimeError, match="needs"):
        Stages().run("y", tmp_path / "y", {}, ("a",), dict)


def test_an_input_made_again_redoes_what_depends_on_it(tmp_path, capsys):
    """Same settings everywhere, but stage a was made again (its record was lost): b and c were made from the old
    output of a, so they are redone too."""
    _pipeline(tmp_path, Stages())
    (tmp_path / "a" / RECORD).unlink()
    *_, calls = _pipeline(tmp_path, Stages())
    assert calls == ["a", "b", "c"] and "redo: b (its input changed: a)" in capsys.readouterr().out
