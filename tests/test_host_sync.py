"""No host syncs on the hot paths (issue 18): a training step and the KV-cached sampling loop read nothing back
from the device. On the CPU the reads are counted (every Tensor → Python conversion); where CUDA exists the same
paths run under torch.cuda.set_sync_debug_mode("error")."""

import contextlib
import traceback

import pytest
import torch

from latentwm.conditions import Conditions
from latentwm.config import get_preset
from latentwm.data.sources.synthetic import MovingBlobClips
from latentwm.model.dynamics import DynamicsModel
from latentwm.rollout import Sampling, rollout
from latentwm.train.trainer import Trainer

READS = ("item", "tolist", "cpu", "__bool__", "__float__", "__int__", "__index__")


class HostReads:
    """Counts Tensor → host conversions while `on` (with where each came from, for the failure message)."""

    def __init__(self, monkeypatch):
        self.on, self.where = False, []
        for name in READS:
            orig = getattr(torch.Tensor, name)

            def wrapped(t, *a, _orig=orig, _name=name, **k):
                if self.on:
                    self.where.append(f"Tensor.{_name} at " + "".join(traceback.format_stack(limit=4)[:-1]))
                return _orig(t, *a, **k)

            monkeypatch.setattr(torch.Tensor, name, wrapped)

    @contextlib.contextmanager
    def counting(self):
        self.on = True
        try:
            yield
        finally:
            self.on = False


def test_the_counter_sees_every_kind_of_read(monkeypatch):
    reads = HostReads(monkeypatch)
    t = torch.tensor([1.5])
    with reads.counting():
        t.item(), t.tolist(), t.cpu(), bool(t), float(t), int(t), [0, 1][torch.tensor(1)]
        if torch.isfinite(t).all():  # the guard's old per-step read
            pass
    assert [w.split(" at ")[0] for w in reads.where] == [
        "Tensor.item",
        "Tensor.tolist",
        "Tensor.cpu",
        "Tensor.__bool__",
        "Tensor.__float__",
        "Tensor.__int__",
        "Tensor.__index__",
        "Tensor.__bool__",
    ]


def _cfg(tmp_path, steps):
    # log / checkpoint only at the end: the steps in between are the hot path
    return get_preset("tiny").replace(
        train__out_dir=str(tmp_path),
        train__steps=steps,
        train__log_every=steps,
        train__ckpt_every=steps,
        train__eval_every=1000,
        train__warmup_steps=2,
        objective__bootstrap_start=1,
        objective__bootstrap_fraction=0.5,
    )


def test_training_steps_between_log_rows_read_nothing_from_the_device(tmp_path, monkeypatch):
    reads = HostReads(monkeypatch)
    steps = 6
    cfg = _cfg(tmp_path, steps)
    m = cfg.model
    trainer = Trainer(
        cfg, MovingBlobClips(grid=m.latent_grid, dim=m.latent_dim, frames=cfg.data.clip_len, seed=0), None, device="cpu"
    )
    inner = trainer.device_step

    def device_step(step, batches, local_valid):
        # steps 1 .. steps − 2 (the warm-up step 0 and the last, logged step excluded); the bootstrap is on
        with reads.counting() if 1 <= step < steps - 1 else contextlib.nullcontext():
            return inner(step, batches, local_valid)

    trainer.device_step = device_step
    out = trainer.fit()
    assert out["step"] == steps
    assert reads.where == [], f"{len(reads.where)} host reads in the training step:\n" + "\n".join(reads.where[:3])


def test_the_loop_reads_the_deferred_verdicts_only_at_log_rows(tmp_path, monkeypatch):
    """A NaN step is still skipped and counted without a per-step read: the guard reads at the log row."""
    reads = HostReads(monkeypatch)
    steps = 6
    cfg = _cfg(tmp_path, steps).replace(train__max_nonfinite=10)
    m = cfg.model

    class Poisoned(MovingBlobClips):
        def __getitem__(self, k):
            s = super().__getitem__(k)
            if k // cfg.data.batch_size == 2:  # step 2 sees a NaN sample
                s.latents[0, 0, 0] = float("nan")
            return s

    trainer = Trainer(
        cfg, Poisoned(grid=m.latent_grid, dim=m.latent_dim, frames=cfg.data.clip_len, seed=0), None, device="cpu"
    )
    inner = trainer.train_step

    def train_step(step):
        # on from step 1 until the last step starts: the data fetch, the step and the loop's per-step work
        reads.on = 1 <= step < steps - 1
        return inner(step)

    trainer.train_step = train_step
    out = trainer.fit()
    assert out["step"] == steps and out["nonfinite"] == 1
    assert reads.where == [], f"{len(reads.where)} host reads in the loop:\n" + "\n".join(reads.where[:3])
    model = trainer.state_dict()["model"]
    assert all(torch.isfinite(v).all() for v in model.values())


@pytest.mark.parametrize("prediction", ["x", "next"])
def test_kv_cached_sampling_reads_nothing_from_the_device(monkeypatch, prediction):
    reads = HostReads(monkeypatch)
    cfg = get_preset("tiny").model
    from dataclasses import replace

    torch.manual_seed(0)
    model = DynamicsModel(replace(cfg, prediction=prediction)).eval()
    B, C, H = 2, 3, 4
    ctx = torch.randn(B, C, cfg.num_latent_tokens, cfg.latent_dim)
    acts = torch.randn(B, C + H - 1, cfg.action_dim)
    gen = torch.Generator().manual_seed(0)
    with reads.counting():
        out = rollout(model, ctx, H, Conditions(acts), Sampling(4), generator=gen)
    assert out.shape == (B, H, cfg.num_latent_tokens, cfg.latent_dim)
    assert reads.where == [], f"{len(reads.where)} host reads in sampling:\n" + "\n".join(reads.where[:3])


def test_cuda_training_step_and_sampling_under_sync_debug_mode(tmp_path, device):
    """On CUDA (LATENTWM_TEST_DEVICE=cuda, as benchmarks/gpu_check.sh runs it): a synchronizing call in the training
    step (after the warm-up step) or in the KV-cached sampling loop raises."""
    if device.type != "cuda":
        pytest.skip("needs CUDA (LATENTWM_TEST_DEVICE=cuda); on the CPU the tests above count the reads")
    steps = 4
    cfg = _cfg(tmp_path, steps)
    m = cfg.model
    trainer = Trainer(
        cfg,
        MovingBlobClips(grid=m.latent_grid, dim=m.latent_dim, frames=cfg.data.clip_len, seed=0),
        None,
        device=str(device),
    )
    inner = trainer.device_step

    def device_step(step, batches, local_valid):
        if not 1 <= step < steps - 1:
            return inner(step, batches, local_valid)
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            return inner(step, batches, local_valid)
        finally:
            torch.cuda.set_sync_debug_mode(0)

    trainer.device_step = device_step
    assert trainer.fit()["step"] == steps

    model = DynamicsModel(m).to(device).eval()
    ctx = torch.randn(2, 3, m.num_latent_tokens, m.latent_dim, device=device)
    rollout(model, ctx, 2, sampling=Sampling(2))  # warm-up: lazy initialization may synchronize
    torch.cuda.set_sync_debug_mode("error")
    try:
        rollout(model, ctx, 4, sampling=Sampling(4))
    finally:
        torch.cuda.set_sync_debug_mode(0)
