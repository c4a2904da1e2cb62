"""Fault injection on checkpoints: crafted pickles, state that would not load safely."""

import numpy as np
import pytest
import torch

from latentwm.config import get_preset
from latentwm.model.dynamics import DynamicsModel
from latentwm.train import checkpoint as ckpt

from helpers import rewrite_manifest


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
