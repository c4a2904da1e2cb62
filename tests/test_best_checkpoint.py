"""train.keep_best: checkpoints/best.pt holds the weights of the best held-out score, written only when the score
improves, kept across resume (the record is part of the train state), never resumed from nor pruned."""

import hashlib
import json
from pathlib import Path

import pytest
import torch

from latentwm.config import get_preset
from latentwm.data.sources.synthetic import MovingBlobClips
from latentwm.engine import checkpoint as ckpt
from latentwm.engine.logging import read_metrics
from latentwm.eval.metrics import EvalOptions, rollout_errors
from latentwm.train import best as best_mod
from latentwm.train import trainer as trainer_mod
from latentwm.train.trainer import Trainer


class _Offset(torch.utils.data.Dataset):
    """`n` clips of `base` from index `start` on (held-out clips of the same toy world)."""

    def __init__(self, base, start, n):
        self.base, self.start, self.n = base, start, n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return self.base[self.start + i]


def _cfg(out, **kw):
    base = dict(
        train__out_dir=str(out),
        train__steps=12,
        train__log_every=2,
        train__ckpt_every=4,
        train__eval_every=2,
        train__warmup_steps=2,
        objective__bootstrap_start=3,
    )
    return get_preset("tiny").replace(**{**base, **kw})


def _sets(cfg):
    m = cfg.model
    world = MovingBlobClips(grid=m.latent_grid, dim=m.latent_dim, frames=cfg.data.clip_len, seed=0)
    return world, _Offset(world, 10**6, 3)


class _Crash(Exception):
    pass


def _scripted(monkeypatch, scores):
    """The held-out errors Trainer.evaluate sees become scores[step] at every horizon (the rollouts still run)."""
    real = trainer_mod.rollout_errors
    current = {}

    def fake(*a, **kw):
        res = real(*a, **kw)
        return {**res, "model_error": [scores[current["trainer"].loop.step]] * len(res["model_error"])}

    monkeypatch.setattr(trainer_mod, "rollout_errors", fake)
    return current


def _fit(cfg, current, crash_at=None, writes=None):
    tr = Trainer(cfg, *_sets(cfg), device="cpu", on_eval=lambda s, r: _maybe_crash(s, crash_at))
    current["trainer"] = tr
    if writes is not None:
        real_write = tr.best.write
        tr.best.write = lambda *a: (writes.append(tr.loop.step), real_write(*a))[1]
    return tr, tr.fit()


def _maybe_crash(step, crash_at):
    if step == crash_at:
        raise _Crash(step)


SCORES = {2: 0.5, 4: 0.4, 6: 0.45, 8: 0.3, 10: 0.35, 12: 0.2}


def test_best_is_written_when_the_score_improves_and_only_then(tmp_path, monkeypatch):
    current = _scripted(monkeypatch, {**SCORES, 12: 0.31})
    writes, emas = [], {}
    cfg = _cfg(tmp_path)
    tr = Trainer(
        cfg,
        *_sets(cfg),
        device="cpu",
        on_eval=lambda s, r: emas.setdefault(s, {k: v.clone() for k, v in tr.ema.state_dict().items()}),
    )
    current["trainer"] = tr
    real_write = tr.best.write
    tr.best.write = lambda *a: (writes.append(tr.loop.step), real_write(*a))[1]
    out = tr.fit()
    assert writes == [2, 4, 8]
    assert out["best"]["step"] == 8 and out["best"]["score"] == pytest.approx(0.3)
    rec = json.loads((tmp_path / "best.json").read_text())
    assert rec["step"] == 8 and rec["score"] == pytest.approx(0.3) and rec["path"] == "checkpoints/best.pt"
    model, exp, state = ckpt.load_world_model(tmp_path / "checkpoints" / "best.pt")
    assert state["step"] == 8 and state["best"]["step"] == 8 and "optimizer" not in state
    for k, v in model.state_dict().items():
        assert torch.equal(v, emas[8][k]), k
    rows = [r for r in read_metrics(tmp_path / "metrics.jsonl") if "eval/best_score" in r]
    assert [(r["step"], r["eval/best_step"]) for r in rows] == [(2, 2), (4, 4), (6, 4), (8, 8), (10, 8), (12, 8)]
    assert rows[-1]["eval/best_score"] == pytest.approx(0.3)


def test_resume_keeps_the_best_and_rewrites_what_the_uninterrupted_run_wrote(tmp_path, monkeypatch):
    current = _scripted(monkeypatch, SCORES)
    full_writes, writes = [], []
    _fit(_cfg(tmp_path / "full"), current, writes=full_writes)
    cfg = _cfg(tmp_path / "crash")
    with pytest.raises(_Crash):  # at step 10, before its checkpoint: the last one is step 8's
        _fit(cfg, current, crash_at=10)
    tr, out = _fit(cfg.replace(train__resume=True), current, writes=writes)
    assert full_writes == [2, 4, 8, 12]
    assert writes == [12]  # step 10 (0.35) does not beat the restored best of step 8 (0.3)
    assert out["best"]["step"] == 12
    for name in ("full", "crash"):
        rec = json.loads((tmp_path / name / "best.json").read_text())
        assert (rec["step"], rec["score"]) == (12, 0.2), name
    a = ckpt.load_world_model(tmp_path / "full" / "checkpoints" / "best.pt")[0].state_dict()
    b = ckpt.load_world_model(tmp_path / "crash" / "checkpoints" / "best.pt")[0].state_dict()
    for k in a:
        assert torch.equal(a[k], b[k]), k  # bit-for-bit on the CPU


def test_restored_best_is_in_the_state_and_other_rollout_settings_drop_it(tmp_path, monkeypatch):
    current = _scripted(monkeypatch, {2: 0.5, 4: 0.4, 6: 0.45})
    _fit(_cfg(tmp_path, train__steps=4), current)
    st = ckpt.load_checkpoint(ckpt.latest_checkpoint(tmp_path / "checkpoints"))
    assert st["best"]["step"] == 4 and st["best"]["score"] == pytest.approx(0.4)
    tr = Trainer(_cfg(tmp_path, train__steps=6, train__resume=True), *_sets(_cfg(tmp_path)), device="cpu")
    tr.loop.resume(True)
    assert tr.state.best["step"] == 4
    tr = Trainer(
        _cfg(tmp_path, train__steps=6, train__resume=True, rollout__horizon=3), *_sets(_cfg(tmp_path)), device="cpu"
    )
    tr.loop.resume(True)
    assert tr.state.best is None


def test_best_is_never_resumed_from_nor_pruned(tmp_path, monkeypatch):
    current = _scripted(monkeypatch, {2: 0.1, 4: 0.5, 6: 0.5, 8: 0.5, 10: 0.5, 12: 0.5})
    cfg = _cfg(tmp_path, train__steps=8, train__ckpt_every=2, train__keep_last=1)
    _fit(cfg, current)
    ck = tmp_path / "checkpoints"
    assert sorted(p.name for p in ck.iterdir()) == ["best.pt", "step_00000008"]
    assert [p.name for p in ckpt.list_checkpoints(ck)] == ["step_00000008"]
    assert ckpt.resume_checkpoint(ck).name == ckpt.latest_checkpoint(ck).name == "step_00000008"
    assert ckpt.load_world_model(tmp_path)[2]["step"] == 8  # a run folder still means its latest step
    assert ckpt.load_world_model(ck / "best.pt")[2]["step"] == 2
    tr, out = _fit(cfg.replace(train__resume=True, train__steps=12), current)
    assert out["step"] == 12 and out["best"]["step"] == 2
    assert sorted(p.name for p in ck.iterdir()) == ["best.pt", "step_00000012"]


def test_load_best_restores_the_best_weights_and_their_score(tmp_path):
    cfg = _cfg(tmp_path, train__steps=8, train__eval_every=4, train__lr=3e-3)
    tr = Trainer(cfg, *_sets(cfg), device="cpu")
    out = tr.fit()
    rec = tr.load_best()
    assert rec == out["best"] and rec["step"] in (4, 8)
    r = cfg.rollout  # as the demo evaluates after fit() (Trainer.evaluate's logger is closed by then)
    res = rollout_errors(
        tr.ema,
        tr.eval_batches(),
        r.context,
        r.horizon,
        options=EvalOptions(seed=cfg.train.seed, sample_steps=r.sample_steps, tau_ctx=r.tau_ctx),
    )
    assert best_mod.held_out_score(res) == rec["score"]
    fresh = Trainer(cfg.replace(train__resume=True), *_sets(cfg), device="cpu")
    assert fresh.load_best() == rec
    for k, v in fresh.ema.state_dict().items():
        assert torch.equal(v, tr.ema.state_dict()[k])


def test_keep_best_off_writes_nothing_but_still_logs(tmp_path, monkeypatch):
    current = _scripted(monkeypatch, {2: 0.5, 4: 0.4})
    tr, out = _fit(_cfg(tmp_path, train__steps=4, train__keep_best=False), current)
    assert out["best"]["step"] == 4
    assert not (tmp_path / "checkpoints" / "best.pt").exists() and not (tmp_path / "best.json").exists()
    with pytest.raises(ckpt.CheckpointError, match="best.pt: no best checkpoint"):
        tr.load_best()


def test_non_finite_scores_never_become_the_best(tmp_path, monkeypatch):
    current = _scripted(monkeypatch, {2: float("nan"), 4: float("inf"), 6: 0.7})
    _fit(_cfg(tmp_path, train__steps=6), current)
    assert json.loads((tmp_path / "best.json").read_text())["step"] == 6


def test_checkpoints_of_older_versions_resume(tmp_path):
    """A checkpoint written before model.dropout and train.keep_best existed resumes (they take their defaults)."""
    cfg = _cfg(tmp_path, train__steps=4, train__eval_every=1000)
    Trainer(cfg, *_sets(cfg), device="cpu").fit()
    last = ckpt.latest_checkpoint(tmp_path / "checkpoints")
    st = torch.load(last / "state.pt", weights_only=True)
    del st["config"]["model"]["dropout"], st["config"]["train"]["keep_best"], st["best"]
    torch.save(st, last / "state.pt")
    man = json.loads((last / "manifest.json").read_text())
    man["files"]["state.pt"] = {
        "bytes": (last / "state.pt").stat().st_size,
        "sha256": hashlib.sha256((last / "state.pt").read_bytes()).hexdigest(),
    }
    (last / "manifest.json").write_text(json.dumps(man))
    out = Trainer(cfg.replace(train__resume=True, train__steps=6), *_sets(cfg), device="cpu").fit()
    assert out["step"] == 6 and Path(tmp_path / "checkpoints" / "step_00000006").is_dir()
