"""Fault injection on `train --train.resume` with damaged checkpoints (the Trainer, tiny preset)."""

import pytest

from latentwm.config import get_preset
from latentwm.data.sources.synthetic import MovingBlobClips
from latentwm.engine import checkpoint as ckpt
from latentwm.train.trainer import Trainer


def _cfg(out, **kw):
    base = dict(
        train__out_dir=str(out),
        train__steps=4,
        train__log_every=2,
        train__ckpt_every=2,
        train__eval_every=1000,
        train__warmup_steps=1,
        train__keep_last=1,
        data__batch_size=2,
    )
    return get_preset("tiny").replace(**{**base, **kw})


def _fit(cfg):
    m = cfg.model
    data = MovingBlobClips(grid=m.latent_grid, dim=m.latent_dim, frames=cfg.data.clip_len, seed=0)
    return Trainer(cfg, data, None, device="cpu").fit()


def _flip(path):
    f = path / "state.pt"
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0xFF
    f.write_bytes(bytes(data))


def test_resume_over_only_damaged_checkpoints_refuses_and_keeps_them(tmp_path):
    """Before: a warning, a restart at step 0, and the first new save pruned (keep_last=1) in favour of the damaged
    step 4, which sorted as newer — the run's only checkpoint was damaged and the new good ones deleted."""
    _fit(_cfg(tmp_path))
    (last,) = ckpt.list_checkpoints(tmp_path / "checkpoints")
    _flip(last)
    with pytest.warns(UserWarning), pytest.raises(ckpt.CheckpointError, match=r"(?s)cannot resume.*step_00000004.*SHA"):
        _fit(_cfg(tmp_path, train__resume=True, train__steps=6))
    assert ckpt.list_checkpoints(tmp_path / "checkpoints") == [last]  # nothing written, nothing pruned


def test_resume_falls_back_past_a_damaged_newest(tmp_path):
    _fit(_cfg(tmp_path, train__keep_last=2))
    _flip(tmp_path / "checkpoints" / "step_00000004")
    with pytest.warns(UserWarning, match="step_00000004"):
        out = _fit(_cfg(tmp_path, train__keep_last=2, train__resume=True, train__steps=6))
    assert out["step"] == 6
    names = [p.name for p in ckpt.list_checkpoints(tmp_path / "checkpoints")]
    assert names == ["step_00000004", "step_00000006"]  # step 4 written again from step 2, whole
    ckpt.verify(tmp_path / "checkpoints" / "step_00000004")
