"""Imagined goals (docs/design.md section 6: a goal can be a sentence): the model's own future under a text, from a real
observation, without actions; its last frame is the goal latent that goal-conditioned MPC then plans toward.

`imagine` is an action-free rollout in which every frame, observed and imagined, carries the sentence, sampled with
classifier-free guidance on the text (x̂ = x̂_no-text + w·(x̂_text − x̂_no-text), `rollout.Guided`). Training drops
actions and text independently (objective.action_dropout / text_dropout), so action-free, text-only rollouts and
the no-text branch are both in the training distribution.

Why `TEXT_GOAL_GUIDANCE` = 3 by default, measured on a toy (its script is not committed): a blob on a 4×4 torus
moves one cell per frame in the direction a sentence names; the sentence is right 30 % of the time, else the
direction is random; a 4-block model trained 1,500 steps with text dropout 0.1; 512 starts, 4 frames imagined from
one, K = 4. The imagined goal's blob is in the described cell for 0.889 of the starts at w = 1, 0.896–0.900 for
w = 1.5–4 and 0.895 at w = 6; its MSE to the described future is 0.0342 at w = 1, 0.0319–0.0333 for w = 1.5–4,
0.0348 at w = 6 (a sentence right 70 % of the time: 0.996–0.998 at every w). So on a model that reads its text,
guidance between 1.5 and 4 is as good as or slightly better than none, and it starts to cost at 6 (larger scales
extrapolate further from both branches, toward latents the encoder never produces). 3 sits inside that flat range
and amplifies a text condition that is weak beside the context, the usual case on small Push-T runs (small text
condition gain) — which the toy did not measure. `latentwm imagine --text-guidance W` and `latentwm plan
--plan.text-guidance W` compare on a real run.

The sentence encoder must be the one that embedded the training cache's text: `text_encoder_for(state)` rebuilds it
from the checkpoint's facts (`state["cache_info"]["text_encoder"]`, "<name>#<weights hash>") and refuses another.
Sentences go through float16 as the cache stores them (`embed_sentences`), so a sentence the cache holds gets
exactly its training embedding.

`latentwm imagine` (`run_imagine`) writes `imagined.gif` (context + imagined beside context + real), the goal
latent `goal.safetensors` ((N, D), normalized with the checkpoint's latent statistics, metadata: sentence, text
encoder, encoder, checkpoint, ...) and `imagine.json`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save

from latentwm.conditions import Conditions
from latentwm.config import ConfigError, ImagineConfig
from latentwm.config.planning import TEXT_GOAL_GUIDANCE
from latentwm.data.clips import ClipOptions, LatentClipDataset
from latentwm.data.episodes import NormStats
from latentwm.data.latent_cache import LatentCache
from latentwm.data.proprio import attach_proprio, proprio_stats_of
from latentwm.encoders.text import MotionClassEncoder, TextEncoder, open_text_encoder
from latentwm.engine.checkpoint import load_decoder, load_world_model
from latentwm.engine.pairing import check_pairing
from latentwm.eval.visualize import rollout_video, save_gif
from latentwm.io.files import atomic_write, write_json
from latentwm.io.lock import writable_out_dir
from latentwm.rollout import Sampling, rollout

GOAL_FILE = "goal.safetensors"


def trained_text(state: dict, where: str = "text goal") -> tuple[str, int]:
    """(text encoder label, text_dim) a checkpoint's model was trained with, from its facts (`state["config"]`,
    `state["cache_info"]` = the training cache's cache.json, or the top-level `text_encoder` the trainer records).
    ConfigError naming the checkpoint when its model has no text slot or its training data had no text."""
    path = state.get("path", "?")
    text_dim = int((((state.get("config") or {}).get("model") or {}).get("text_dim")) or 0)
    if text_dim == 0:
        raise ConfigError(
            f"{where}: the model of checkpoint {path} was not trained with text (model.text_dim = 0): "
            "it cannot condition on a sentence; train with --model.text-dim on a cache with text"
        )
    label = (state.get("cache_info") or {}).get("text_encoder") or state.get("text_encoder")
    if not label:
        raise ConfigError(
            f"{where}: the model of checkpoint {path} was not trained with text: its training cache "
            "records no text encoder (encode the episodes with --text.name, then train on that cache)"
        )
    return str(label), text_dim


def text_encoder_for(
    state: dict, name: str | None = None, where: str = "text goal", device=None
) -> TextEncoder | MotionClassEncoder:
    """The sentence encoder that embedded the text of a checkpoint's training cache, rebuilt from its label's name
    part (or from `name`, a folder it moved to) and verified: the rebuilt label must equal the recorded one exactly
    (with `name`: the same weights hash), else a ConfigError naming both labels."""
    label, text_dim = trained_text(state, where)
    recorded_name, _, recorded_hash = label.rpartition("#")
    enc = open_text_encoder(name or recorded_name or label, device=device)
    same = enc.label == label if not name else enc.label.rpartition("#")[2] == recorded_hash
    if not same:
        raise ConfigError(
            f"{where}: the training cache's text was embedded by {label!r}, but "
            f"{name or recorded_name!r} now loads {enc.label!r} (other weights): embeddings of another "
            "encoder mean nothing to the model; pass the original encoder's folder"
        )
    if enc.dim != text_dim:
        raise ConfigError(
            f"{where}: text encoder {enc.label!r} gives {enc.dim}-D embeddings, the model's text slot "
            f"takes model.text_dim = {text_dim}"
        )
    return enc


def embed_sentences(encoder, sentences: list[str], device=None) -> torch.Tensor:
    """(U, E) float32 embeddings of `sentences` through `encoder` (a TextEncoder or a function list[str] -> (U, E)),
    rounded through float16 as the latent cache stores them."""
    fn = encoder.embed if hasattr(encoder, "embed") else encoder
    emb = np.asarray(fn(list(sentences)), np.float32).astype(np.float16).astype(np.float32)
    return torch.from_numpy(emb).to(device)


def imagine(
    model,
    context: torch.Tensor,
    text: torch.Tensor,
    horizon: int,
    sample_steps: int = 4,
    text_guidance: float = TEXT_GOAL_GUIDANCE,
    tau_ctx: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The future (B, H, N, D) the model imagines after `context` (B, C, N, D) (normalized latents) under the
    sentence embeddings `text` (B or 1, E), without actions: every frame, observed and imagined, carries the text;
    sampled with K = sample_steps and text guidance `text_guidance` (1: plain conditional sampling). The last frame
    is the goal latent. Deterministic given `generator` (on context.device)."""
    if getattr(model.cfg, "text_dim", 0) == 0:
        raise ConfigError("imagine: the model has no text slot (model.text_dim = 0): it was not trained with text")
    if text.dim() != 2 or text.shape[-1] != model.cfg.text_dim or text.shape[0] not in (1, context.shape[0]):
        raise ValueError(
            f"imagine: text must be (B or 1, E = model.text_dim {model.cfg.text_dim}), got "
            f"{tuple(text.shape)} for a context of batch {context.shape[0]}"
        )
    text = text.to(context.device, context.dtype).expand(context.shape[0], -1)
    cond = Conditions(text=text, text_guidance=text_guidance)
    return rollout(model, context, horizon, cond, Sampling(sample_steps, tau_ctx), generator=generator)


# ---- latentwm imagine ------------------------------------------------------------------------------------------
def _held_out_clip(cache: LatentCache, exp, index: int, span: int, frame_skip: int) -> tuple[int, int]:
    """(entry, start) of held-out clip `index` of `span` model frames (the training split of `exp.data`)."""
    d = exp.data
    clips = LatentClipDataset(
        cache,
        span,
        "eval",
        ClipOptions(
            frame_skip=frame_skip,
            action_dim=exp.model.action_dim,
            eval_fraction=d.eval_fraction,
            seed=d.seed,
            normalize=False,
        ),
    )
    if not 0 <= index < len(clips):
        raise ConfigError(
            f"imagine.episode: held-out clip {index} does not exist: the cache {cache.path} has "
            f"{len(clips)} held-out clips of {span} frames (give 0..{len(clips) - 1}, or "
            "dataset/episode_id)"
        )
    return clips.clip_at(index)


def _named_entry(cache: LatentCache, episode: str, camera: str | None) -> int:
    """The cache entry of `dataset/episode_id` (and camera; None: its first); ConfigError naming the field."""
    dataset, _, episode_id = episode.partition("/")
    rows = [i for i, e in enumerate(cache.entries) if e["dataset"] == dataset and e["episode_id"] == episode_id]
    if not rows:
        some = ", ".join(f"{e['dataset']}/{e['episode_id']}" for e in cache.entries[:3])
        raise ConfigError(
            f"imagine.episode: no episode {episode!r} in the cache {cache.path} (dataset/episode_id, "
            f"e.g. {some}; or an integer: a held-out clip)"
        )
    cams = [i for i in rows if camera is None or cache.entries[i]["camera"] == camera]
    if not cams:
        have = sorted(cache.entries[i]["camera"] for i in rows)
        raise ConfigError(f"imagine.camera: episode {episode!r} has no camera {camera!r} (it has {', '.join(have)})")
    return cams[0]


def _frames(
    cache: LatentCache,
    cfg: ImagineConfig,
    exp,
    C: int,
    H: int,
    fs: int,
    stats: NormStats,
    proprio: NormStats | None = None,
):
    """(entry, start, context (C, N, D), real continuation (≤ H, N, D)) in the model's normalized space (proprio:
    the statistics of a model with proprio channels, attached to every token)."""
    if cfg.episode.strip().lstrip("-").isdigit():
        entry, start = _held_out_clip(cache, exp, int(cfg.episode), C + H, fs)
        start = start if cfg.start is None else cfg.start
    else:
        entry, start = _named_entry(cache, cfg.episode.strip(), cfg.camera), 0 if cfg.start is None else cfg.start
    e = cache.entries[entry]
    T = int(e["length"])
    if start + (C - 1) * fs >= T:
        raise ConfigError(
            f"imagine.start: frame {start} is too late in {e['dataset']}/{e['episode_id']}: {C} "
            f"context frames {fs} apart need frames {start}..{start + (C - 1) * fs}, the episode has "
            f"{T} (give imagine.start <= {max(T - 1 - (C - 1) * fs, 0)} or fewer context frames)"
        )
    idx = [t for t in start + fs * np.arange(C + H) if t < T]
    ep = cache.load_episode(entry)
    lat = torch.from_numpy(((ep["latents"][idx] - stats.mean) / stats.std).astype(np.float32))
    if proprio is not None:
        lat = attach_proprio(lat, torch.from_numpy(proprio.normalize(ep["proprio"][idx])))
    return entry, start, lat[:C], lat[C:]


def run_imagine(cfg: ImagineConfig) -> dict:
    """`latentwm imagine`: see the module docstring; returns what imagine.json holds."""
    if not cfg.text.strip():
        raise ConfigError('imagine.text is empty: give the sentence to imagine, e.g. --text "push the T block left"')
    out = writable_out_dir(cfg.out_dir)
    device = torch.device(cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    model, exp, state = load_world_model(cfg.checkpoint, ema=True, device=device)
    encoder = text_encoder_for(state, cfg.text_encoder, where="imagine")  # before any data is read
    cache = LatentCache(exp.data.cache_dir if cfg.cache_dir is None else cfg.cache_dir)
    check_pairing(state, cache.info, cache.path)
    C = exp.rollout.context if cfg.context is None else cfg.context
    H = exp.rollout.horizon if cfg.horizon is None else cfg.horizon
    fs, stats = int(state.get("frame_skip") or exp.data.frame_skip), NormStats.from_dict(state["data_stats"]["latents"])
    entry, start, ctx, real = _frames(
        cache, cfg, exp, C, H, fs, stats, proprio_stats_of(state["data_stats"], model.cfg)
    )
    text = embed_sentences(encoder, [cfg.text.strip()], device)
    t0 = time.time()
    ctx = ctx[None].to(device)
    pred = imagine(
        model,
        ctx,
        text,
        H,
        cfg.sample_steps,
        cfg.text_guidance,
        cfg.tau_ctx,
        torch.Generator(device).manual_seed(cfg.seed),
    )[0].cpu()
    no_text = rollout(
        model,
        ctx,
        H,
        None,
        Sampling(cfg.sample_steps, cfg.tau_ctx),
        generator=torch.Generator(device).manual_seed(cfg.seed),
    )[0].cpu()  # same noise, null text
    seconds = time.time() - t0
    e = cache.entries[entry]
    facts = dict(
        sentence=cfg.text.strip(),
        text_encoder=encoder.label,
        encoder=state.get("encoder"),
        checkpoint=str(state["path"]),
        step=state.get("step"),
        episode=f"{e['dataset']}/{e['episode_id']}",
        camera=e["camera"],
        start=int(start),
        context=C,
        horizon=H,
        frame_skip=fs,
        sample_steps=cfg.sample_steps,
        text_guidance=cfg.text_guidance,
        tau_ctx=cfg.tau_ctx,
        seed=cfg.seed,
    )
    res = dict(
        facts,
        **_scores(ctx[0].cpu(), real, pred, no_text),
        imagine_seconds=seconds,
        decoder=cfg.decoder,
        gif="imagined.gif",
        goal=GOAL_FILE,
    )
    _write(out, ctx[0].cpu(), real, pred, facts, res, cfg.decoder, state["data_stats"]["latents"])
    print(_summary(res, out))
    return res


def _mse(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).pow(2).mean())


def _scores(ctx: torch.Tensor, real: torch.Tensor, pred: torch.Tensor, no_text: torch.Tensor) -> dict:
    """Latent MSEs: the imagined frames to the real ones at the same steps (where the episode has them), the goal to
    the real goal-step frame and to the last context frame, and the goal's change from the no-text rollout (same
    noise: what the sentence did)."""
    full = len(real) == len(pred)
    return dict(
        real_frames=len(real),
        mse_to_real=[_mse(p, r) for p, r in zip(pred, real)],
        goal_mse_to_real=_mse(pred[-1], real[-1]) if full else None,
        last_context_mse_to_real=_mse(ctx[-1], real[-1]) if full else None,
        goal_mse_to_last_context=_mse(pred[-1], ctx[-1]),
        goal_change_vs_no_text=_mse(pred[-1], no_text[-1]),
    )


def _write(out: Path, ctx, real, pred, facts: dict, res: dict, decoder: str | None, latent_stats: dict) -> None:
    """imagined.gif (context + real | context + imagined; decoded frames with a decoder, else PCA), goal.safetensors
    and imagine.json."""
    dec = load_decoder(decoder)[0] if decoder is not None else None
    video = rollout_video(ctx, real, pred, decoder=dec, latent_stats=latent_stats if dec is not None else None)
    save_gif(out / "imagined.gif", video, fps=2)
    meta = {k: json.dumps(v) if not isinstance(v, str) else v for k, v in facts.items()}
    meta["normalized"] = "with the checkpoint's latent statistics (data_stats.latents), as the model sees latents"
    atomic_write(out / GOAL_FILE, save({"goal": pred[-1].float().contiguous()}, metadata=meta))
    write_json(out / "imagine.json", res)


def _summary(res: dict, out: Path) -> str:
    gap = (
        f"goal MSE to the real frame {res['goal_mse_to_real']:.4f} (last context frame "
        f"{res['last_context_mse_to_real']:.4f})"
        if res["goal_mse_to_real"] is not None
        else f"no real continuation ({res['real_frames']} of {res['horizon']} frames)"
    )
    return (
        f"imagined {res['horizon']} frames of {res['episode']} ({res['camera']}) from frame {res['start']} under "
        f"{res['sentence']!r} (text guidance {res['text_guidance']:g}, K = {res['sample_steps']}): {gap}, change "
        f"vs no text {res['goal_change_vs_no_text']:.4f}; imagined.gif, {GOAL_FILE}, imagine.json in {out}"
    )


def load_goal(path: str | Path) -> tuple[torch.Tensor, dict]:
    """(goal latent (N, D), metadata) of a goal.safetensors written by `latentwm imagine`."""
    with safe_open(str(path), framework="pt") as f:
        return f.get_tensor("goal"), dict(f.metadata() or {})


__all__ = ["GOAL_FILE", "embed_sentences", "imagine", "load_goal", "run_imagine", "text_encoder_for", "trained_text"]
