import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from latentwm.config import ConfigError, get_preset
from latentwm.data.sources.synthetic import MovingBlobClips
from latentwm.engine import checkpoint as ckpt
from latentwm.engine.logging import read_metrics
from latentwm.engine.loop import TrainingDiverged
from latentwm.train.trainer import Trainer

SCRIPT = Path(__file__).parent / "scripts" / "toy_train.py"


def _cfg(out, **kw):
    base = dict(
        train__out_dir=str(out),
        train__steps=12,
        train__log_every=1,
        train__ckpt_every=4,
        train__eval_every=1000,
        train__warmup_steps=2,
        objective__bootstrap_start=3,
        objective__bootstrap_fraction=0.5,
    )
    base.update(kw)
    return get_preset("tiny").replace(**base)


def _data(cfg, **kw):
    m = cfg.model
    kw.setdefault("text_dim", m.text_dim)  # with text: the text slot takes part in every check below
    return MovingBlobClips(grid=m.latent_grid, dim=m.latent_dim, frames=cfg.data.clip_len, seed=0, **kw)


def _losses(out):
    recs = {}
    for r in read_metrics(Path(out) / "metrics.jsonl"):
        if "train/loss" in r:
            recs[r["step"]] = r["train/loss"]  # a resumed run overwrites the steps it repeats
    return recs


def _run(cfg, *extra, env=None, wait=True):
    cmd = [sys.executable, str(SCRIPT), json.dumps(cfg.to_dict()), *map(str, extra)]
    p = subprocess.Popen(cmd, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if wait:
        out, _ = p.communicate(timeout=300)
        assert p.returncode == 0, out.decode()[-3000:]
    return p


@pytest.mark.slow
def test_loss_falls_and_run_is_logged(tmp_path):
    cfg = _cfg(tmp_path, train__steps=60, train__ckpt_every=30, train__lr=3e-3)
    out = Trainer(cfg, _data(cfg), None, device="cpu").fit()
    losses = _losses(tmp_path)
    first, last = sum(list(losses.values())[:5]) / 5, sum(list(losses.values())[-5:]) / 5
    assert last < 0.5 * first, (first, last)
    assert out["step"] == 60 and [p.name for p in ckpt.list_checkpoints(tmp_path / "checkpoints")] == [
        "step_00000030",
        "step_00000060",
    ]
    assert (tmp_path / "tb").is_dir()
    st = ckpt.load_checkpoint(ckpt.latest_checkpoint(tmp_path / "checkpoints"))
    assert {"model", "ema", "optimizer", "scheduler", "step", "data_position", "config", "rng"} <= set(st)


def test_grad_accumulation_matches_one_big_batch(tmp_path):
    a = _cfg(tmp_path / "a", train__steps=3, data__batch_size=4, train__grad_accum=1)
    b = _cfg(tmp_path / "b", train__steps=3, data__batch_size=4, train__grad_accum=2)
    Trainer(a, _data(a), None, device="cpu").fit()
    Trainer(b, _data(b), None, device="cpu").fit()
    la, lb = _losses(tmp_path / "a"), _losses(tmp_path / "b")
    for s in la:
        assert abs(la[s] - lb[s]) < 1e-5 * max(1, la[s]), (s, la[s], lb[s])


def test_refuses_to_overwrite_a_run_without_resume(tmp_path):
    cfg = _cfg(tmp_path, train__steps=4)
    Trainer(cfg, _data(cfg), None, device="cpu").fit()
    with pytest.raises(ConfigError, match="--train.resume"):
        Trainer(cfg, _data(cfg), None, device="cpu").fit()


@pytest.mark.slow
def test_sigkill_then_resume_repeats_the_uninterrupted_run_exactly(tmp_path):
    full = _cfg(tmp_path / "full", train__steps=14)
    _run(full)
    ref = _losses(tmp_path / "full")
    crash = _cfg(tmp_path / "crash", train__steps=14)
    p = _run(crash, wait=False)
    deadline = time.time() + 240
    while time.time() < deadline:  # kill it in the middle: after a checkpoint, before the end
        done = _losses(tmp_path / "crash") if (tmp_path / "crash" / "metrics.jsonl").exists() else {}
        if max(done, default=0) >= 9:
            break
        time.sleep(0.05)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert max(_losses(tmp_path / "crash")) < 14, "the run finished before it could be killed"
    _run(crash.replace(train__resume=True))
    got = _losses(tmp_path / "crash")
    assert sorted(got) == sorted(ref)
    for s in ref:
        assert got[s] == ref[s], (s, got[s], ref[s])  # bit-for-bit on the CPU


def test_nonfinite_steps_are_skipped_then_the_run_stops(tmp_path):
    cfg = _cfg(tmp_path, train__steps=8, train__max_nonfinite=100, data__batch_size=4)

    class Poisoned(MovingBlobClips):
        def __getitem__(self, k):
            s = super().__getitem__(k)
            if k // 4 in (2, 5):  # steps 2 and 5 see a NaN sample
                s.latents[0, 0, 0] = float("nan")
            return s

    m = cfg.model
    out = Trainer(
        cfg, Poisoned(grid=m.latent_grid, dim=m.latent_dim, frames=cfg.data.clip_len), None, device="cpu"
    ).fit()
    assert out["nonfinite"] == 2
    model = ckpt.load_checkpoint(ckpt.latest_checkpoint(tmp_path / "checkpoints"))["model"]
    assert all(torch.isfinite(v).all() for v in model.values())

    cfg2 = _cfg(tmp_path / "b", train__steps=8, train__max_nonfinite=1, data__batch_size=4, train__ckpt_every=1)
    with pytest.raises(TrainingDiverged, match="train.max_nonfinite.*step_00000005"):
        Trainer(
            cfg2, Poisoned(grid=m.latent_grid, dim=m.latent_dim, frames=cfg.data.clip_len), None, device="cpu"
        ).fit()


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_process_run_matches_single_process(tmp_path, strategy):
    # bootstrap on from step 2, so the FSDP teacher passes (collectives) are exercised too
    kw = dict(train__steps=4, data__batch_size=4, objective__bootstrap_start=2, train__distributed=strategy)
    single = _cfg(tmp_path / "single", **kw)
    _run(single)
    ddp = _cfg(tmp_path / "ddp", **kw)
    port = "29631" if strategy == "ddp" else "29632"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--master-port",
        port,
        str(SCRIPT),
        json.dumps(ddp.to_dict()),
    ]
    r = subprocess.run(cmd, capture_output=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, (r.stdout + r.stderr).decode()[-3000:]
    ls, ld = _losses(tmp_path / "single"), _losses(tmp_path / "ddp")
    assert sorted(ls) == sorted(ld) == [1, 2, 3, 4]
    for s in ls:
        assert abs(ls[s] - ld[s]) < 1e-4 * max(1.0, ls[s]), (s, ls[s], ld[s])
    # ranks stayed in sync: the saved weights equal the single-process ones
    # (FSDP writes a sharded checkpoint: load_world_model reads either format)
    ws = ckpt.load_world_model(tmp_path / "single", ema=False)[0].state_dict()
    wd = ckpt.load_world_model(tmp_path / "ddp", ema=False)[0].state_dict()
    for k in ws:
        torch.testing.assert_close(ws[k], wd[k], atol=1e-5, rtol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("scope", ["blocks", "model"])
def test_compiled_training_equals_eager(tmp_path, scope):
    """--train.compile traces the same computation (aot_eager: dynamo + autograd tracing, no kernel generation, so
    the check is fast on a CPU); block-wise compilation leaves the state-dict keys and the EMA untouched."""
    kw = dict(train__steps=4, train__ckpt_every=4, data__batch_size=4, objective__bootstrap_start=2)
    eager = _cfg(tmp_path / "eager", **kw)
    comp = _cfg(
        tmp_path / "comp", train__compile=True, train__compile_scope=scope, train__compile_backend="aot_eager", **kw
    )
    a = Trainer(eager, _data(eager), None, device="cpu")
    b = Trainer(comp, _data(comp), None, device="cpu")
    a.fit(), b.fit()
    la, lb = _losses(tmp_path / "eager"), _losses(tmp_path / "comp")
    assert la.keys() == lb.keys() and all(abs(la[k] - lb[k]) <= 1e-4 * max(1.0, abs(la[k])) for k in la)
    assert list(a.model.state_dict()) == list(b.model.state_dict())
    for k, v in a.ema.state_dict().items():
        torch.testing.assert_close(b.ema.state_dict()[k], v, atol=1e-5, rtol=1e-4)
