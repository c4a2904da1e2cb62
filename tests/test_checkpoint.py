import random

import numpy as np
import pytest
import torch

from latentwm.engine import checkpoint as ckpt


def _state(v):
    return {"model": {"w": torch.full((4,), float(v))}, "step": v}


def test_round_trip_and_rng(tmp_path):
    torch.manual_seed(3)
    np.random.seed(3)
    random.seed(3)
    ckpt.save_checkpoint(tmp_path, 5, _state(5))
    expected = (torch.rand(3), np.random.rand(), random.random())
    torch.manual_seed(99)
    st = ckpt.load_checkpoint(ckpt.latest_checkpoint(tmp_path))
    ckpt.set_rng_state(st["rng"])
    assert st["step"] == 5 and torch.equal(st["model"]["w"], torch.full((4,), 5.0))
    assert torch.equal(torch.rand(3), expected[0]) and np.random.rand() == expected[1]
    assert random.random() == expected[2]


def test_keep_last_and_latest(tmp_path):
    for s in (1, 2, 3, 4):
        ckpt.save_checkpoint(tmp_path, s, _state(s), keep_last=2)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step_00000003", "step_00000004"]
    assert ckpt.latest_checkpoint(tmp_path).name == "step_00000004"


def test_truncated_checkpoint_falls_back_to_previous(tmp_path):
    ckpt.save_checkpoint(tmp_path, 1, _state(1))
    last = ckpt.save_checkpoint(tmp_path, 2, _state(2))
    data = (last / "state.pt").read_bytes()
    (last / "state.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ckpt.CheckpointError, match="truncated"):
        ckpt.verify(last)
    with pytest.warns(UserWarning, match="damaged"):
        good = ckpt.latest_checkpoint(tmp_path)
    assert good.name == "step_00000001"
    assert ckpt.load_checkpoint(good)["step"] == 1


def test_flipped_byte_and_missing_manifest_are_detected(tmp_path):
    p = ckpt.save_checkpoint(tmp_path, 1, _state(1))
    raw = bytearray((p / "state.pt").read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    (p / "state.pt").write_bytes(bytes(raw))
    with pytest.raises(ckpt.CheckpointError, match="SHA-256"):
        ckpt.verify(p)
    (p / "manifest.json").unlink()
    with pytest.raises(ckpt.CheckpointError, match="manifest"):
        ckpt.verify(p)


def test_leftover_temp_dir_is_never_loaded(tmp_path):
    (tmp_path / ".tmp_step_00000009").mkdir(parents=True)
    (tmp_path / ".tmp_step_00000009" / "state.pt").write_bytes(b"partial")
    assert ckpt.latest_checkpoint(tmp_path) is None
    ckpt.save_checkpoint(tmp_path, 9, _state(9))  # the same step is written cleanly over the leftover
    assert ckpt.load_checkpoint(ckpt.latest_checkpoint(tmp_path))["step"] == 9
