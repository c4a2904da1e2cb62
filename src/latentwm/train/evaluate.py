"""`latentwm eval` / `latentwm rollout`: roll a trained model out on held-out clips of a latent cache; error per
horizon against the ground truth, the copy-last-frame and context-average baselines, the mean of several samples
and a swapped-action rollout, a plot, side-by-side GIFs and metrics.json."""

from __future__ import annotations

import json

import torch
from torch.utils.data import Subset

from latentwm.config import ConfigError, EvalConfig
from latentwm.data.clip_sets import model_clip_options
from latentwm.data.clips import LatentClipDataset, eval_loader
from latentwm.data.latent_cache import LatentCache
from latentwm.engine.checkpoint import load_decoder, load_world_model
from latentwm.engine.pairing import check_pairing
from latentwm.eval.metrics import EvalOptions, rollout_errors
from latentwm.eval.visualize import plot_curves, write_rollout_gifs
from latentwm.io.lock import writable_out_dir


def run_eval(cfg: EvalConfig) -> dict:
    """Evaluate `cfg.checkpoint` (EMA weights unless use_ema is off) and write the results to cfg.out_dir."""
    out = writable_out_dir(cfg.out_dir)  # before computing: an unwritable out dir fails now, not after the work
    device = torch.device(cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    model, exp, state = load_world_model(cfg.checkpoint, ema=cfg.use_ema, device=device)
    if cfg.compile:
        model.compile_sampling()
    r, d = exp.rollout, exp.data
    C = r.context if cfg.context is None else cfg.context
    H = r.horizon if cfg.horizon is None else cfg.horizon
    K = r.sample_steps if cfg.sample_steps is None else cfg.sample_steps
    cache = LatentCache(d.cache_dir if cfg.cache_dir is None else cfg.cache_dir)
    check_pairing(state, cache.info, cache.path)  # latents of another encoder would give numbers, all wrong
    data = LatentClipDataset(cache, C + H, cfg.split, model_clip_options(exp))
    if len(data) == 0:
        raise ConfigError(f"eval: no {cfg.split} clip of {C + H} frames in {data.cache.path}")
    data = clip_subset(data, cfg.max_clips)
    res = rollout_errors(
        model,
        eval_loader(data, exp.model.action_dim),
        C,
        H,
        device=device,
        options=EvalOptions(
            seed=cfg.seed,
            keep_predictions=cfg.videos,
            num_samples=cfg.num_samples,
            action_swap=cfg.action_swap,
            sample_steps=K,
            tau_ctx=cfg.tau_ctx,
        ),
    )
    examples = res.pop("examples", [])
    dec = load_decoder(cfg.decoder)[0] if cfg.decoder is not None and examples else None
    gifs = write_rollout_gifs(
        examples, out, decoder=dec, latent_stats=state["data_stats"]["latents"] if dec is not None else None
    )
    plot_curves(
        out / "rollout_error.png",
        error_series(res),
        f"Rollout error ({cfg.split} clips)",
        "horizon (model steps)",
        "latent MSE",
    )
    res.update(
        checkpoint=str(state["path"]),
        step=state["step"],
        context=C,
        sample_steps=K,
        tau_ctx=cfg.tau_ctx,
        encoder=state.get("encoder"),
    )
    (out / "metrics.json").write_text(json.dumps(res, indent=1))
    print(error_table(res))
    print(f"{res['num_clips']} clips; metrics, plot and {len(gifs)} videos in {out}")
    return res


def clip_subset(data, max_clips: int | None):
    """`data` itself, or at most max_clips of its clips spread evenly over them in order (None: all)."""
    n = len(data)
    if max_clips is None or max_clips >= n:
        return data
    return Subset(data, [i * n // max_clips for i in range(max_clips)])


# (label in the plot, column in the table, key of rollout_errors' result); absent or None keys are left out
_SERIES = [
    ("model", "model", "model_error"),
    ("mean of N samples", "mean-of-N", "mean_of_samples_error"),
    ("context average", "ctx-avg", "context_average_error"),
    ("copy last frame", "copy-last", "copy_last_error"),
    ("swapped actions", "swapped", "swapped_actions_error"),
]


def error_series(res: dict) -> dict[str, tuple[list, list]]:
    """The curves of rollout_error.png: name -> (horizons, errors), for the keys `res` has."""
    return {
        f"{name} (N={res['num_samples']})" if key == "mean_of_samples_error" else name: (res["horizons"], res[key])
        for name, _, key in _SERIES
        if res.get(key) is not None
    }


def error_table(res: dict) -> str:
    """Error per horizon: model, mean-of-N, ctx-avg, copy-last, swapped ("-" where not computed)."""
    cols = [(col, res.get(key)) for _, col, key in _SERIES]
    lines = ["horizon  " + "  ".join(f"{c:>9}" for c, _ in cols)]
    for i, h in enumerate(res["horizons"]):
        lines.append(f"{h:>7}  " + "  ".join(f"{v[i]:>9.5f}" if v is not None else f"{'-':>9}" for _, v in cols))
    if res.get("action_sensitivity") is not None:
        lines.append(f"action sensitivity (swapped - model, mean over horizons): {res['action_sensitivity']:.5f}")
    return "\n".join(lines)


__all__ = ["error_series", "error_table", "run_eval"]
