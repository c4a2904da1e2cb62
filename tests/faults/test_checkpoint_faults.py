"""Fault injection on checkpoints: crafted pickles, state that would not load safely."""

import os
import time

import numpy as np
import pytest
import torch
from fault_helpers import rewrite_manifest

from latentwm.config import get_preset
from latentwm.engine import checkpoint as ckpt
from latentwm.model.dynamics import DynamicsModel


class _RunsCode:
    """Unpickling this calls open(marker, "w"): proof that loading executed code."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _tiny_run(root):
    """A loadable dynamics checkpoint of the tiny preset under root/checkpoints."""
    cfg = get_preset("tiny").replace(train__out_dir=str(root))
    model = DynamicsModel(cfg.model)
    state = {"model": model.state_dict(), "ema": model.state_dict(), "step": 1, "config": cfg.to_dict()}
    return ckpt.save_checkpoint(root / "checkpoints", 1, state)


@pytest.mark.parametrize("victim", ["state.pt", "rng_rank0.pt"])
def test_crafted_pickle_is_refused_and_never_runs(tmp_path, victim):
    path = _tiny_run(tmp_path / "run")
    marker = tmp_path / "pwned"
    payload = torch.load(path / victim, weights_only=True)
    payload["evil"] = _RunsCode(marker)
    torch.save(payload, path / victim)
    rewrite_manifest(path)
    ckpt.verify(path)  # the manifest matches: only the loader stands in the way
    with pytest.raises(ckpt.CheckpointError, match=f"{victim}.*other than tensors and plain data") as e:
        ckpt.load_checkpoint(path)
    assert "references io.open" in str(e.value) and "Unpickl" not in str(e.value)
    with pytest.raises(ckpt.CheckpointError, match="other than tensors"):
        ckpt.load_world_model(tmp_path / "run")
    assert not marker.exists()


def test_saved_state_loads_with_weights_only(tmp_path):
    """numpy values and paths in the state are stored as tensors / numbers / strings; RNG states likewise."""
    np.random.seed(5)
    np.random.standard_normal()  # a cached Gaussian in numpy's state
    state = {"stats": {"mean": np.arange(3.0), "count": np.int64(7)}, "where": tmp_path, "history": [(1, 0.5)]}
    p = ckpt.save_checkpoint(tmp_path / "c", 1, state)
    for f in ("state.pt", "rng_rank0.pt"):
        torch.load(p / f, weights_only=True)
    st = ckpt.load_checkpoint(p)
    assert st["stats"]["count"] == 7 and st["where"] == str(tmp_path) and st["history"] == [(1, 0.5)]
    assert np.array_equal(np.asarray(st["stats"]["mean"]), np.arange(3.0))
    want = np.random.standard_normal(4)
    ckpt.set_rng_state(st["rng"])
    assert np.array_equal(np.random.standard_normal(4), want)


def test_unsavable_object_is_refused_at_save_time_with_its_key(tmp_path):
    with pytest.raises(ckpt.CheckpointError, match=r"state\['extra'\]\['obj'\] of type _RunsCode"):
        ckpt.save_checkpoint(tmp_path, 1, {"extra": {"obj": _RunsCode(tmp_path / "x")}})
    assert ckpt.list_checkpoints(tmp_path) == []


# ------------------------------------------------------------------------------------------ temp dirs, disk full
def _state(v):
    return {"model": {"w": torch.full((4,), float(v))}, "step": v}


def test_two_writers_of_one_step_do_not_collide(tmp_path, monkeypatch):
    """Another process saves the same step while this one is writing state.pt: each writes its own temp dir (the
    old shared `.tmp_step_N` was deleted under the first writer, which then failed)."""
    real_save = torch.save
    calls = []

    def save_and_race(obj, f, *a, **kw):
        calls.append(1)
        if len(calls) == 2:  # the first writer's state.pt: the second writer runs now
            ckpt.save_checkpoint(tmp_path, 3, _state(30))
        return real_save(obj, f, *a, **kw)

    monkeypatch.setattr(torch, "save", save_and_race)
    ckpt.save_checkpoint(tmp_path, 3, _state(3))
    monkeypatch.setattr(torch, "save", real_save)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step_00000003"]
    assert ckpt.load_checkpoint(tmp_path / "step_00000003")["step"] == 3  # the last rename wins, whole
    assert not list(tmp_path.glob(".tmp_*"))


def test_disk_full_removes_the_temp_dir_and_names_it(tmp_path, monkeypatch):
    import errno

    ckpt.save_checkpoint(tmp_path, 1, _state(1))

    def full_disk(obj, f, *a, **kw):
        f.write(b"\0" * 1000)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(ckpt.CheckpointError, match=r"step 2 to .*\.tmp_step_00000002.*No space left") as e:
        ckpt.save_checkpoint(tmp_path, 2, _state(2))
    assert isinstance(e.value.__cause__, OSError)
    assert not list(tmp_path.glob(".tmp_*"))
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step_00000001"]


def test_stale_temp_dirs_are_ignored_then_removed_unless_their_writer_lives(tmp_path):
    import subprocess
    import sys

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        names = {
            "legacy": ".tmp_step_00000005",
            "dead": ckpt._temp_name(5, pid=dead.pid),
            "live": ckpt._temp_name(5, pid=live.pid),
            "other_host": ckpt._temp_name(5, pid=1, host="elsewhere"),
        }
        for n in names.values():
            (tmp_path / n).mkdir()
            (tmp_path / n / "state.pt").write_bytes(b"partial")
        assert ckpt.list_checkpoints(tmp_path) == [] and ckpt.resume_checkpoint(tmp_path) is None
        ckpt.save_checkpoint(tmp_path, 5, _state(5))
        left = {p.name for p in tmp_path.glob(".tmp_*")}
        assert left == {names["live"], names["other_host"]}  # a writer elsewhere: kept until STALE_TEMP_S
        old = time.time() - ckpt.STALE_TEMP_S - 10
        os.utime(tmp_path / names["other_host"], (old, old))
        ckpt.save_checkpoint(tmp_path, 6, _state(6))
        assert {p.name for p in tmp_path.glob(".tmp_*")} == {names["live"]}
    finally:
        live.kill()
        live.wait()


# ------------------------------------------------------------------------------------------ damaged checkpoints
def _damage(path, how="truncate"):
    f = path / "state.pt"
    data = f.read_bytes()
    if how == "truncate":
        f.write_bytes(data[: len(data) // 2])
    else:  # same size, different bytes: only the hash sees it
        f.write_bytes(data[:100] + bytes(b ^ 0xFF for b in data[100:200]) + data[200:])


def test_resume_refuses_when_every_checkpoint_is_damaged(tmp_path):
    paths = [ckpt.save_checkpoint(tmp_path, s, _state(s)) for s in (1, 2)]
    _damage(paths[0], "truncate")
    _damage(paths[1], "flip")
    with pytest.warns(UserWarning), pytest.raises(ckpt.CheckpointError, match="none of the 2 checkpoints") as e:
        ckpt.resume_checkpoint(tmp_path)
    assert "step_00000001" in str(e.value) and "truncated" in str(e.value)
    assert "step_00000002" in str(e.value) and "SHA-256" in str(e.value)
    assert ckpt.resume_checkpoint(tmp_path / "empty") is None


def test_resume_falls_back_past_a_damaged_newest(tmp_path):
    ckpt.save_checkpoint(tmp_path, 1, _state(1))
    _damage(ckpt.save_checkpoint(tmp_path, 2, _state(2)), "flip")
    with pytest.warns(UserWarning, match="step_00000002"):
        assert ckpt.resume_checkpoint(tmp_path).name == "step_00000001"


def test_prune_keeps_the_new_checkpoint_and_good_ones_over_damaged_later_ones(tmp_path):
    """A run resumed behind damaged checkpoints of later steps: they sort as newer, yet are the ones pruned."""
    paths = {s: ckpt.save_checkpoint(tmp_path, s, _state(s), keep_last=5) for s in (1, 2, 8, 9)}
    _damage(paths[8], "truncate")
    _damage(paths[9], "flip")
    with pytest.warns(UserWarning, match="deleting damaged"):
        ckpt.save_checkpoint(tmp_path, 3, _state(3), keep_last=2)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step_00000002", "step_00000003"]
    ckpt.save_checkpoint(tmp_path, 4, _state(4), keep_last=0)  # even keep_last=0 keeps what was just written
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step_00000004"]


def test_truncated_dcp_shard_is_refused_with_one_line(tmp_path):
    """A sharded (DCP) checkpoint whose shard lost its tail: the manifest catches it; with a recomputed manifest (a
    careless copy) the DCP read itself fails — either way one CheckpointError line naming the checkpoint."""
    from latentwm.engine.sharded import sharded_state

    cfg = get_preset("tiny").replace(train__out_dir=str(tmp_path))
    model = DynamicsModel(cfg.model)
    path = ckpt.save_checkpoint(
        tmp_path / "checkpoints",
        1,
        {"step": 1, "config": cfg.to_dict(), "dcp": ["ema"]},
        sharded_state=sharded_state({"ema": model}),
    )
    shard = path / "dcp" / "__0_0.distcp"
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    with pytest.raises(ckpt.CheckpointError, match="__0_0.distcp has .* bytes.*truncated") as e:
        ckpt.load_world_model(path)
    assert "\n" not in str(e.value)
    with pytest.raises(ckpt.CheckpointError, match="none of the 1 checkpoints"):
        ckpt.resume_checkpoint(tmp_path / "checkpoints")
    rewrite_manifest(path)
    with pytest.raises(ckpt.CheckpointError, match="cannot read its sharded state") as e:
        ckpt.load_world_model(path)
    assert "\n" not in str(e.value) and str(path) in str(e.value)


def test_nan_weights_and_non_world_model_files_are_refused_on_load(tmp_path):
    """A diverged run's NaN EMA weights gave a table of nan with exit 0; a pretrain-encoder checkpoint or a plain
    file gave KeyError tracebacks. Each is now a CheckpointError naming the file."""
    cfg = get_preset("tiny").replace(train__out_dir=str(tmp_path / "nan"))
    model = DynamicsModel(cfg.model)
    bad = {k: v.clone() for k, v in model.state_dict().items()}
    next(v for v in bad.values() if v.is_floating_point()).fill_(float("nan"))
    ckpt.save_checkpoint(
        tmp_path / "nan" / "checkpoints",
        1,
        {"model": model.state_dict(), "ema": bad, "step": 1, "config": cfg.to_dict()},
    )
    with pytest.raises(ckpt.CheckpointError, match="NaN/inf"):
        ckpt.load_world_model(tmp_path / "nan", ema=True)
    ckpt.load_world_model(tmp_path / "nan", ema=False)  # the raw weights are finite: they load
    ckpt.save_checkpoint(tmp_path / "enc" / "checkpoints", 1, {"encoder": model.state_dict(), "step": 1})
    with pytest.raises(ckpt.CheckpointError, match="not a world-model checkpoint"):
        ckpt.load_world_model(tmp_path / "enc")
    (tmp_path / "plain.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(ckpt.CheckpointError):
        ckpt.load_world_model(tmp_path / "plain.pt")


def test_a_manifest_that_lists_nothing_or_escapes_the_folder_is_refused(tmp_path):
    """An empty manifest passed verification (resume then failed on its damaged state.pt instead of using the good
    checkpoint beside it); an entry `../../…` was hashed. Both fail verification; resume falls back."""
    import json

    ckpt.save_checkpoint(tmp_path, 1, _state(1))
    empty = ckpt.save_checkpoint(tmp_path, 2, _state(2))
    man = json.loads((empty / "manifest.json").read_text())
    (empty / "manifest.json").write_text(json.dumps({**man, "files": {}}))
    with pytest.raises(ckpt.CheckpointError, match="lists no files"):
        ckpt.verify(empty)
    with pytest.warns(UserWarning, match="step_00000002"):
        assert ckpt.resume_checkpoint(tmp_path).name == "step_00000001"
    secret = tmp_path / "secret.txt"
    secret.write_text("not yours")
    man["files"]["../../secret.txt"] = {"bytes": secret.stat().st_size, "sha256": "0" * 64}
    (empty / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(ckpt.CheckpointError, match="outside the checkpoint"):
        ckpt.verify(empty)


def test_disk_full_inside_torch_save_is_named_too(tmp_path, monkeypatch):
    """torch's zip writer reports a full disk as RuntimeError("... unexpected pos ..."): a traceback before; now the
    same CheckpointError as an OSError, for checkpoints and for best.pt alike."""
    from latentwm.engine.state_file import save_state_file

    ckpt.save_checkpoint(tmp_path, 1, _state(1))

    def full_disk(obj, f, *a, **kw):
        f.write(b"\0" * 100)
        raise RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 64 vs 0")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(ckpt.CheckpointError, match=r"step 2 .*disk full"):
        ckpt.save_checkpoint(tmp_path, 2, _state(2))
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step_00000001"] and not list(tmp_path.glob(".tmp_*"))
    with pytest.raises(ckpt.CheckpointError, match="best.pt.*disk full"):
        save_state_file(tmp_path / "best.pt", {"x": torch.zeros(2)})
    assert not (tmp_path / "best.pt").exists() and not list(tmp_path.glob(".tmp_best.pt*"))
