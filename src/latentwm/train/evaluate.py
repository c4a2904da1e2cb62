"""`latentwm eval` / `latentwm rollout`: roll a trained model out on held-out clips of a latent cache; error per
horizon against the ground truth and the copy-last-frame baseline, a plot, side-by-side GIFs and metrics.json."""

from __future__ import annotations

import json

from latentwm.config import ConfigError, EvalConfig
from latentwm.data.clips import LatentClipDataset, eval_loader
from latentwm.data.latent_cache import LatentCache
from latentwm.eval.metrics import rollout_errors
from latentwm.eval.visualize import plot_curves, write_rollout_gifs
from latentwm.train.checkpoint import check_pairing, load_world_model
from latentwm.train.decoder_trainer import load_decoder
from latentwm.train.lock import writable_out_dir


def run_eval(cfg: EvalConfig) -> dict:
    """Evaluate `cfg.checkpoint` (EMA weights unless use_ema is off) and write the results to cfg.out_dir."""
    out = writable_out_dir(cfg.out_dir)  # before computing: an unwritable out dir fails now, not after the work
    model, exp, state = load_world_model(cfg.checkpoint, ema=cfg.use_ema)
    r, d = exp.rollout, exp.data
    C, H, K = cfg.context or r.context, cfg.horizon or r.horizon, cfg.sample_steps or r.sample_steps
    cache = LatentCache(cfg.cache_dir or d.cache_dir)
    check_pairing(state, cache.info, cache.path)  # latents of another encoder would give numbers, all wrong
    data = LatentClipDataset(cache, C + H, frame_skip=d.frame_skip, action_dim=exp.model.action_dim,
                             split=cfg.split, eval_fraction=d.eval_fraction, seed=d.seed)
    if len(data) == 0:
        raise ConfigError(f"eval: no {cfg.split} clip of {C + H} frames in {data.cache.path}")
    res = rollout_errors(model, eval_loader(data, exp.model.action_dim), C, H, K, cfg.tau_ctx, seed=cfg.seed,
                         keep_predictions=cfg.videos)
    examples = res.pop("examples", [])
    dec = load_decoder(cfg.decoder)[0] if cfg.decoder and examples else None
    gifs = write_rollout_gifs(examples, out, decoder=dec,
                              latent_stats=state["data_stats"]["latents"] if dec is not None else None)
    plot_curves(out / "rollout_error.png", {"model": (res["horizons"], res["model_error"]),
                                             "copy last frame": (res["horizons"], res["copy_last_error"])},
                f"Rollout error ({cfg.split} clips)", "horizon (model steps)", "latent MSE")
    res.update(checkpoint=str(state["path"]), step=state["step"], context=C, sample_steps=K, tau_ctx=cfg.tau_ctx,
               encoder=state.get("encoder"))
    (out / "metrics.json").write_text(json.dumps(res, indent=1))
    print("horizon  model     copy-last")
    for h, m, c in zip(res["horizons"], res["model_error"], res["copy_last_error"]):
        print(f"{h:>7}  {m:.5f}  {c:.5f}")
    print(f"{res['num_clips']} clips; metrics, plot and {len(gifs)} videos in {out}")
    return res


__all__ = ["run_eval"]
