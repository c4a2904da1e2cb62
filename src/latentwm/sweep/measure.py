"""What one finished run of a sweep measures (its eval.json): `latentwm eval` of the kept checkpoint once per K, the
parameter count, training throughput and the losses at the end (from the run's own metrics.jsonl)."""

from __future__ import annotations

import statistics
from pathlib import Path

import torch

from latentwm.config import EvalConfig, ExperimentConfig
from latentwm.config.sweep import SweepEvalConfig
from latentwm.engine.logging import read_metrics
from latentwm.model.dynamics import DynamicsModel
from latentwm.train.best import best_path
from latentwm.train.evaluate import run_eval

FINAL_FRACTION = 0.1
"""The losses "at the end" are the mean of the rows logged in the last 10% of the training steps (at least the last
row): one logged row is the mean of train.log_every steps, still noisy at a few hundred steps."""
_KEEP = (
    "horizons",
    "model_error",
    "copy_last_error",
    "context_average_error",
    "sample_error",
    "mean_of_samples_error",
    "sample_spread",
    "swapped_actions_error",
    "action_sensitivity",
    "num_clips",
    "skipped_clips",
    "num_samples",
    "step",
    "checkpoint",
    "tau_ctx",
    "context",
    "sample_steps",
)


def kept_checkpoint(train_dir: Path) -> Path:
    """The weights a run hands over: checkpoints/best.pt (the best held-out score, train.keep_best) when there is
    one, else the run folder (load_world_model takes its latest complete checkpoint)."""
    best = best_path(train_dir)
    return best if best.is_file() else train_dir


def parameter_count(cfg: ExperimentConfig) -> int:
    """Parameters of the dynamics model `cfg.model` builds (built on the meta device: no memory, no init cost)."""
    with torch.device("meta"):
        return DynamicsModel(cfg.model).num_parameters()


def training_facts(train_dir: Path) -> dict:
    """From `<train_dir>/metrics.jsonl`: frames_per_s (median over logged rows: robust to the first row's start-up
    and to rows that include an evaluation pause), the final loss / loss_flow / loss_bootstrap (FINAL_FRACTION;
    loss_bootstrap None when no bootstrap frame was trained then: bootstrap_fraction 0 or still in warm-up) and the
    last step logged."""
    rows = [r for r in read_metrics(train_dir / "metrics.jsonl") if "train/loss" in r]
    if not rows:
        return {"frames_per_s": None, "loss": None, "loss_flow": None, "loss_bootstrap": None, "steps": 0}
    last = rows[-1]["step"]
    tail = [r for r in rows if r["step"] > last * (1 - FINAL_FRACTION)] or rows[-1:]
    mean = lambda k: sum(r.get(k, 0.0) for r in tail) / len(tail)  # noqa: E731
    fps = [r["train/frames_per_s"] for r in rows if "train/frames_per_s" in r]
    boot = [r for r in tail if r.get("train/bootstrap_frac", 0.0) > 0]
    return {
        "frames_per_s": statistics.median(fps) if fps else None,
        "loss": mean("train/loss"),
        "loss_flow": mean("train/loss_flow"),
        "loss_bootstrap": sum(r["train/loss_bootstrap"] for r in boot) / len(boot) if boot else None,
        "steps": last,
    }


def loss_curve(train_dir: Path) -> tuple[list[int], list[float]]:
    """(steps, train/loss) of every logged row (a resumed run's metrics.jsonl holds each step once)."""
    rows = {r["step"]: r["train/loss"] for r in read_metrics(train_dir / "metrics.jsonl") if "train/loss" in r}
    steps = sorted(rows)
    return steps, [rows[s] for s in steps]


def evaluate_run(cfg: ExperimentConfig, run_dir: Path, ev: SweepEvalConfig, device: str = "auto") -> dict:
    """`latentwm eval` of the run's kept checkpoint for every K of ev.sample_steps (outputs in
    `<run>/eval/K<k>/`), on ev's clips with ev's noise seed, context frames entering at the run's rollout.tau_ctx.
    Returns {"checkpoint", "K": {k: the rollout errors per horizon, baselines, mean of samples, action
    sensitivity}, "params", training facts}."""
    train_dir = Path(cfg.train.out_dir)
    ckpt = kept_checkpoint(train_dir)
    per_k = {}
    extras = lambda k: not ev.extras_at or k in ev.extras_at  # noqa: E731
    for k in ev.sample_steps:
        res = run_eval(
            EvalConfig(
                checkpoint=str(ckpt),
                cache_dir=ev.cache_dir or None,  # the [eval] table's "" / 0: eval's None (not given)
                out_dir=str(run_dir / "eval" / f"K{k}"),
                split=ev.split,
                context=ev.context,
                horizon=ev.horizon,
                sample_steps=k,
                tau_ctx=cfg.rollout.tau_ctx,
                videos=ev.videos,
                use_ema=ev.use_ema,
                seed=ev.seed,
                num_samples=ev.num_samples if extras(k) else 1,
                action_swap=ev.action_swap and extras(k),
                device=device,
                max_clips=ev.max_clips or None,
            )
        )
        per_k[str(k)] = {key: res.get(key) for key in _KEEP}
    return {
        "checkpoint": str(ckpt),
        "best": ckpt.is_file(),
        "K": per_k,
        "params": parameter_count(cfg),
        **training_facts(train_dir),
    }


__all__ = ["FINAL_FRACTION", "evaluate_run", "kept_checkpoint", "loss_curve", "parameter_count", "training_facts"]
