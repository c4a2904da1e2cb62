"""Proprioception in the planning cost: a readout of the agent's own state from the world model, and its goal term.

Why: DINO-WM's Push-T objective is last-frame visual MSE + 1.0 × proprio MSE (../shared/ANCHORS.md); its predictor
carries proprio as extra channels of every token. Our dynamics model predicts encoder latents only, and on small
frames a frozen encoder barely sees the agent (Push-T's agent is about 3 px wide in a 96 px frame) while the goal test
needs it within 20 of 512 units: the visual term alone cannot place it (benchmarks/bench_plan_cost.py).

`ProprioProbe` closes that gap without touching the model: a small MLP, trained on the frozen model's per-frame
features (`probe_features`: the final outputs of the frame's registers, shortcut and action tokens, on clean latents
with the dataset's actions), predicting the frame's proprio
(normalized with the dataset's statistics, only the dims used, Push-T: agent x, y). The features of frame t have seen
frame t, its history and the action that led into it, so on a predicted frame the probe reads where the model thinks
the agent is. At planning time `LatentGoalObjective` runs the last predicted frame's clean pass (the pass that would
write it into the cache) for its features, and adds `weight · mean((p̂ − p_goal)²)` (normalized units, as DINO-WM).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from safetensors.torch import load_file, save
from torch import nn

from latentwm.conditions import Conditions
from latentwm.config import ProbeConfig
from latentwm.data.batch import collate
from latentwm.data.clip_sets import model_clip_options
from latentwm.data.clips import LatentClipDataset
from latentwm.data.latent_cache import LatentCache
from latentwm.engine.checkpoint import load_world_model
from latentwm.engine.loop import NonFiniteGuard, optimizer_step
from latentwm.engine.pairing import check_pairing
from latentwm.io.files import atomic_write, read_json
from latentwm.model.layers import mlp
from latentwm.rollout import clip_hidden

PROBE_FILE = "proprio_probe.safetensors"
_DEFAULT_PROBE = ProbeConfig()


def probe_features(model, hidden: torch.Tensor) -> torch.Tensor:
    """hidden (..., S, W) final-normed token outputs -> (..., (R + 2)·W): the frame's registers, shortcut and action
    tokens (on the cpu demo model the action token's output adds what registers miss: held-out agent RMSE 34 vs
    54 px with registers alone)."""
    return hidden[..., model.layout.special_slice, :].flatten(-2).float()


def clean_features(model, batch) -> torch.Tensor:
    """(B, T, F) probe features of a batch of clean latent clips (τ = 1, the dataset's actions: `clip_hidden`, the
    features planning reads on a predicted frame, next-frame models included), no grad."""
    with torch.no_grad():
        h = clip_hidden(model, batch.latents, Conditions(batch.actions, batch.action_mask))
    return probe_features(model, h)


class _SavableProbe(Protocol):
    """What `save_probe` writes: a module's weights and `meta()`; it keeps the metrics as `metrics`."""

    metrics: dict

    def meta(self) -> dict: ...

    def state_dict(self) -> Mapping[str, torch.Tensor]: ...


def save_probe(probe: _SavableProbe, path: str | os.PathLike, metrics: dict | None = None) -> Path:
    """Atomic write of a probe's weights to `path` (.safetensors) and of `probe.meta()` + metrics to its .json;
    the metrics become `probe.metrics`. Shared by the proprio and state probes."""
    path = Path(path)
    atomic_write(path, save({k: v.detach().cpu().contiguous() for k, v in probe.state_dict().items()}))
    atomic_write(path.with_suffix(".json"), json.dumps({**probe.meta(), "metrics": metrics or {}}, indent=1))
    probe.metrics = metrics or {}
    return path


def read_probe(path: str | os.PathLike, filename: str, what: str) -> tuple[dict, dict]:
    """(metadata, weights) of a probe written by `save_probe` (`path`: the file, or the folder holding `filename`);
    a missing file is a FileNotFoundError naming it."""
    path = Path(path)
    if path.is_dir():
        path = path / filename
    meta_path = path.with_suffix(".json")
    if not path.exists() or not meta_path.exists():
        raise FileNotFoundError(f"{what}: {path} (and its .json) not found")
    return read_json(meta_path, f"{what} metadata"), load_file(str(path))


class ProprioProbe(nn.Module):
    """(…, F) frame features -> (…, k) normalized proprio of the dims `dims`.

    Features are standardized per dimension with statistics of the training features (buffers, saved with the
    weights); `prop_mean`/`prop_std` (P,) are the dataset's proprio statistics, kept to normalize goal states.
    """

    feat_mean: torch.Tensor
    feat_std: torch.Tensor
    prop_mean: torch.Tensor
    prop_std: torch.Tensor
    metrics: dict  # set by save / load / train_proprio_probe

    def __init__(self, feature_dim: int, dims: tuple[int, ...], prop_mean, prop_std, hidden: int = 256):
        super().__init__()
        self.feature_dim, self.dims, self.hidden = int(feature_dim), tuple(int(d) for d in dims), int(hidden)
        self.net = mlp(feature_dim, hidden, len(self.dims))
        self.register_buffer("feat_mean", torch.zeros(feature_dim))
        self.register_buffer("feat_std", torch.ones(feature_dim))
        self.register_buffer("prop_mean", torch.as_tensor(np.asarray(prop_mean), dtype=torch.float32))
        self.register_buffer("prop_std", torch.as_tensor(np.asarray(prop_std), dtype=torch.float32))

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.net((feats.float() - self.feat_mean) / self.feat_std)

    def normalize(self, proprio) -> torch.Tensor:
        """(…, P) raw proprio (e.g. a goal state's) -> (…, k) normalized, the probed dims."""
        p = torch.as_tensor(np.asarray(proprio, np.float32), device=self.prop_mean.device)
        return ((p - self.prop_mean) / self.prop_std)[..., list(self.dims)]

    def to_units(self, pred: torch.Tensor) -> torch.Tensor:
        """(…, k) normalized predictions -> raw units (e.g. Push-T pixels of the 512 workspace)."""
        d = list(self.dims)
        return pred * self.prop_std[d] + self.prop_mean[d]

    # ---- persistence -------------------------------------------------------------------------------------------
    def meta(self) -> dict:
        return dict(
            feature_dim=self.feature_dim,
            dims=list(self.dims),
            hidden=self.hidden,
            proprio_dim=int(self.prop_mean.numel()),
        )

    def save(self, path: str | os.PathLike, metrics: dict | None = None) -> Path:
        """Atomic write of `path` (.safetensors) and its .json (meta + metrics; they become `self.metrics`)."""
        return save_probe(self, path, metrics)

    @classmethod
    def load(cls, path: str | os.PathLike, device="cpu") -> ProprioProbe:
        """A probe saved by `save` (a file, or the folder holding proprio_probe.safetensors)."""
        meta, state = read_probe(path, PROBE_FILE, "proprio probe")
        probe = cls(
            meta["feature_dim"],
            tuple(meta["dims"]),
            np.zeros(meta["proprio_dim"]),
            np.ones(meta["proprio_dim"]),
            hidden=meta["hidden"],
        )
        probe.load_state_dict(state)
        probe.metrics = meta.get("metrics", {})
        return probe.to(device).eval()


@dataclass
class ProprioGoal:
    """The proprio term of a planning cost: weight · mean over dims of (probe(features) − goal)²."""

    probe: ProprioProbe
    goal: torch.Tensor  # (k,) normalized goal proprio
    weight: float = 1.0

    def __call__(self, feats: torch.Tensor) -> torch.Tensor:
        """feats (P, F) features of each candidate's last predicted frame -> (P,)."""
        return self.weight * (self.probe(feats) - self.goal.to(feats.device)).pow(2).mean(-1)


def _features_and_targets(model, data, n_clips: int, dims, batch_size: int, seed: int, device):
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(data), generator=g)[:n_clips].tolist()
    feats, targets = [], []
    for i in range(0, len(idx), batch_size):
        b = collate([data[j] for j in idx[i : i + batch_size]], action_dim=model.cfg.action_dim).to(device)
        if b.proprio is None:
            raise ValueError("proprio probe: the clips carry no proprio (the dataset records none)")
        f = clean_features(model, b)  # (B, T, F)
        keep = b.valid if b.valid is not None else torch.ones(f.shape[:2], dtype=torch.bool, device=f.device)
        feats.append(f[keep])
        targets.append(b.proprio[..., list(dims)][keep].float())
    return torch.cat(feats), torch.cat(targets)


def train_proprio_probe(
    model,
    cache_dir: str | os.PathLike,
    exp,
    cfg: ProbeConfig = _DEFAULT_PROBE,
    dims: tuple[int, ...] = (0, 1),
    seed: int = 0,
    device="cpu",
    log=print,
) -> tuple[ProprioProbe, dict]:
    """Fit a `ProprioProbe` on the frozen `model`'s features of the cache's training clips; score held-out clips.

    exp: the model's ExperimentConfig (clip split, clip length, frame skip). Features are computed once (no grad) for
    `cfg.clips` clips per split, then the MLP trains `cfg.steps` Adam steps on minibatches of frames. Returns
    (probe, metrics) with held-out RMSE in raw proprio units, the constant-mean baseline's, and R² per dim.
    """
    clip_len = exp.data.clip_len
    # text=False: features are read as planning reads them, without text (the null text token)
    opts = model_clip_options(exp, text=False)
    # the ignores: LatentClipDataset takes an os.PathLike too, but its annotation says `LatentCache | str`
    train = LatentClipDataset(cache_dir, clip_len, "train", opts)  # type: ignore[arg-type]
    held = LatentClipDataset(cache_dir, clip_len, "eval", opts)  # type: ignore[arg-type]
    if len(train) == 0:
        raise ValueError(f"proprio probe: no training clip of {clip_len} frames in {cache_dir}")
    stats = _proprio_stats(train, cache_dir, dims)
    model.eval()
    dev = torch.device(device)
    xf, yf = _features_and_targets(model, train, cfg.clips, dims, 16, seed, dev)
    with torch.random.fork_rng(devices=[]):  # the same probe for the same seed, whatever ran before
        torch.manual_seed(seed)
        probe = ProprioProbe(xf.shape[-1], dims, stats.mean, stats.std, hidden=cfg.hidden).to(dev)
    probe.feat_mean.copy_(xf.mean(0))
    probe.feat_std.copy_(xf.std(0).clamp_min(1e-4))
    train_mse = _fit(probe, xf, yf, cfg, seed)
    metrics: dict[str, Any] = {"train_frames": int(len(xf)), "steps": cfg.steps, "train_mse": train_mse}
    if len(held):
        xe, ye = _features_and_targets(model, held, cfg.clips, dims, 16, seed, dev)
        metrics.update(_heldout_metrics(probe, xe, ye, yf.mean(0)))
        log(
            f"proprio probe (dims {list(dims)}): held-out RMSE {metrics['heldout_rmse']:.1f} vs "
            f"{metrics['baseline_rmse']:.1f} for the mean (R² {', '.join(f'{r:.2f}' for r in metrics['r2'])}; "
            f"{len(xf)} train / {len(xe)} held-out frames)"
        )
    probe.metrics = metrics
    return probe, metrics


def _proprio_stats(train: LatentClipDataset, cache_dir, dims: tuple[int, ...]):
    """The proprio NormStats of the cache's one dataset that records proprio (refusing none, several, bad dims)."""
    with_prop = {k: v.proprio for k, v in train.cache.dataset_stats.items() if v.proprio is not None}
    if not with_prop:
        raise ValueError(f"proprio probe: the cache {cache_dir} has no proprio statistics (no proprio recorded)")
    if len(with_prop) > 1:  # each dataset's proprio means something else (Push-T agent xy vs DROID pose)
        raise ValueError(
            f"proprio probe: the cache {cache_dir} mixes datasets with proprio ({sorted(with_prop)}); "
            "train the probe on a cache of the one dataset you plan in"
        )
    stats = next(iter(with_prop.values()))
    if max(dims) >= len(stats.mean):
        raise ValueError(f"proprio probe: dims {list(dims)} out of range for {len(stats.mean)}-D proprio")
    return stats


def _fit(probe: ProprioProbe, xf: torch.Tensor, yf: torch.Tensor, cfg: ProbeConfig, seed: int) -> float:
    """cfg.steps Adam steps (cosine schedule) on random minibatches of the precomputed features xf (M, F) → yf
    (M, k), under the loop core's non-finite policy; returns the last minibatch's MSE."""
    opt = torch.optim.Adam(probe.net.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, cfg.steps)
    guard = NonFiniteGuard("proprio probe", cfg.max_nonfinite, field="probe.max_nonfinite")
    g = torch.Generator(device="cpu").manual_seed(seed + 1)
    loss = torch.zeros(())
    for step in range(cfg.steps):
        i = torch.randint(len(xf), (min(cfg.batch_size, len(xf)),), generator=g).to(xf.device)
        loss = (probe(xf[i]) - yf[i]).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        optimizer_step(opt, probe.net.parameters(), None, guard, step, sched=sched)
    probe.eval()
    return float(loss.detach())


@torch.no_grad()
def _heldout_metrics(probe: ProprioProbe, xe: torch.Tensor, ye: torch.Tensor, train_mean: torch.Tensor) -> dict:
    """Held-out RMSE in raw proprio units, the train-mean baseline's, and R² per dim."""
    std = probe.prop_std[list(probe.dims)]
    err = ((probe(xe) - ye) * std).pow(2).mean(0)  # per dim, raw units²
    base = ((ye - train_mean) * std).pow(2).mean(0)
    return dict(
        heldout_frames=int(len(xe)),
        heldout_rmse=float(err.mean().sqrt()),
        baseline_rmse=float(base.mean().sqrt()),
        r2=[float(1 - e / b) for e, b in zip(err, base.clamp_min(1e-12))],
    )


def resolve_probe(
    checkpoint: str | os.PathLike,
    spec: str = "auto",
    cache_dir: str | os.PathLike | None = None,
    out_dir: str | os.PathLike | None = None,
    probe_cfg: ProbeConfig = _DEFAULT_PROBE,
    device="cpu",
    log=print,
) -> ProprioProbe | None:
    """The probe `latentwm plan` uses. spec "none": no proprio term; a path: that probe; "auto": the run's own
    (`<run>/proprio_probe.safetensors`, next to its checkpoints), else one trained now on the training cache and
    saved under out_dir (None when the cache records no proprio: visual cost only, said in the log)."""
    if spec == "none":
        return None
    if spec != "auto":
        return ProprioProbe.load(spec, device=device)
    ck = Path(checkpoint)
    for d in (ck, ck.parent, ck.parent.parent):
        if (d / PROBE_FILE).exists():
            log(f"proprio probe: {d / PROBE_FILE}")
            return ProprioProbe.load(d / PROBE_FILE, device=device)
    model, exp, state = load_world_model(checkpoint, ema=True, device=device)
    cache = cache_dir or exp.data.cache_dir
    if (Path(cache) / "cache.json").exists():  # a probe trained on another encoder's latents would misread them
        check_pairing(state, LatentCache(cache).info, cache)
    try:
        probe, metrics = train_proprio_probe(model.requires_grad_(False), cache, exp, probe_cfg, device=device, log=log)
    except ValueError as e:
        log(f"proprio probe: none ({e}); planning with the visual cost only")
        return None
    if out_dir is not None:
        log(f"proprio probe saved to {probe.save(Path(out_dir) / PROBE_FILE, metrics)}")
    return probe


__all__ = [
    "PROBE_FILE",
    "ProprioGoal",
    "ProprioProbe",
    "clean_features",
    "probe_features",
    "read_probe",
    "resolve_probe",
    "save_probe",
    "train_proprio_probe",
]
