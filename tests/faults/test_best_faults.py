"""Fault injection on checkpoints/best.pt (train/best.py): a damaged, truncated, crafted or foreign file is refused
with an error naming it; a failed write leaves the previous best intact and no temporary file behind."""

import errno

import pytest
import torch

from latentwm.config import get_preset
from latentwm.engine import checkpoint as ckpt
from latentwm.engine import state_file
from latentwm.model.dynamics import DynamicsModel
from latentwm.train.best import BestKeeper
from latentwm.train.trainer import Trainer


def _keeper(root, step=3, score=0.5):
    cfg = get_preset("tiny").replace(train__out_dir=str(root))
    torch.manual_seed(step)
    sd = DynamicsModel(cfg.model).state_dict()
    k = BestKeeper(root, {"horizon": 4})
    k.accept(step, score)
    k.write({"model": sd, "ema": sd, "config": cfg.to_dict()}, [score])
    return k, cfg


def test_a_flipped_byte_in_the_weights_is_caught_naming_the_file(tmp_path):
    k, cfg = _keeper(tmp_path)
    ckpt.load_world_model(k.path)  # intact: loads
    raw = bytearray(k.path.read_bytes())
    w = torch.load(k.path, weights_only=True)["ema"]["latent_in.weight"]
    at = raw.find(w.reshape(-1)[:8].numpy().tobytes())
    assert at > 0
    raw[at + 3] ^= 0x10  # torch.load alone would load this without complaint
    k.path.write_bytes(bytes(raw))
    with pytest.raises(ckpt.CheckpointError, match=r"best\.pt: contents do not match the digest"):
        ckpt.load_world_model(k.path)
    with pytest.raises(ckpt.CheckpointError, match=r"best\.pt: contents do not match the digest"):
        Trainer(cfg, [], None, device="cpu").load_best()


def test_a_truncated_best_is_refused_naming_the_file(tmp_path):
    k, _ = _keeper(tmp_path)
    k.path.write_bytes(k.path.read_bytes()[:1000])
    with pytest.raises(ckpt.CheckpointError, match=r"best\.pt: unreadable checkpoint file"):
        ckpt.load_world_model(k.path)


class _RunsCode:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_crafted_best_is_refused_and_never_runs(tmp_path):
    k, _ = _keeper(tmp_path)
    marker = tmp_path / "pwned"
    payload = torch.load(k.path, weights_only=True)
    payload["evil"] = _RunsCode(marker)
    torch.save(payload, k.path)
    with pytest.raises(ckpt.CheckpointError, match="other than tensors"):
        k.load()
    assert not marker.exists()


def test_a_file_without_digest_or_best_record_is_refused(tmp_path):
    k, _ = _keeper(tmp_path)
    st = torch.load(k.path, weights_only=True)
    torch.save({key: v for key, v in st.items() if key != "digest"}, k.path)
    with pytest.raises(ckpt.CheckpointError, match=r"best\.pt: not a one-file checkpoint"):
        k.load()
    st.pop("best"), st.pop("digest")
    state_file.save_state_file(k.path, st)
    with pytest.raises(ckpt.CheckpointError, match=r"best\.pt: not a best checkpoint"):
        k.load()


def test_a_failed_write_keeps_the_previous_best_and_leaves_no_temp(tmp_path, monkeypatch):
    k, _ = _keeper(tmp_path, step=3)
    before = k.path.read_bytes()
    (k.path.parent / ".best.pt.999999.deadbeef.tmp").write_bytes(b"partial")  # a crashed writer's leftover

    def full(obj, path):
        path.write_bytes(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(state_file, "save_file", full)
    k.accept(5, 0.1)
    with pytest.raises(ckpt.CheckpointError, match=r"could not write .*best\.pt: .*No space left.*intact"):
        k.write({"model": {}, "ema": {}, "config": {}}, [0.1])
    assert k.path.read_bytes() == before
    assert sorted(p.name for p in k.path.parent.iterdir()) == ["best.pt"]
    assert ckpt.load_world_model(k.path)[2]["step"] == 3
