"""Training and held-out clip sets from an ExperimentConfig: one latent cache (or online episode store) split by
episode, or a weighted mixture of caches, each checked against the model before any step runs (pooling, action
width per env step, text width, proprio channels, unfinished encodes) with errors that say which flag to pass;
and the facts a checkpoint records about its data (statistics, encoder, text)."""

from __future__ import annotations

import os

from torch.utils.data import Dataset

from latentwm.config import ConfigError
from latentwm.data.clips import ClipOptions, LatentClipDataset, training_stats
from latentwm.data.latent_cache import LatentCache, cache_pool
from latentwm.data.mixture import ConcatClips, MixtureDataset, MixtureSpec


def make_mixture_datasets(
    spec: MixtureSpec,
    clip_len: int,
    frame_skip: int = 1,
    action_dim: int | None = None,
    eval_fraction: float = 0.1,
    seed: int = 0,
    eval_len: int | None = None,
    text: bool = True,
) -> tuple[MixtureDataset, Dataset | None, dict]:
    """(training mixture, evaluation set = every source's held-out grid concatenated (`ConcatClips`, the optional
    fields the training mixture keeps) or None, facts for checkpoints) from a spec of latent caches. All caches must
    hold latents of the same encoder, pooling, N and D, and those with text the same text encoder (`text`: see
    LatentClipDataset)."""
    if not spec.sources:
        raise ValueError("mixture spec has no sources")
    caches = {s.name: LatentCache(os.fspath(s.cache_dir)) for s in spec.sources}
    shapes = {
        n: (c.info["encoder"], cache_pool(c.info), c.info["num_tokens"], c.info["latent_dim"])
        for n, c in caches.items()
    }
    if len(set(shapes.values())) != 1:
        raise ValueError(f"mixture sources hold different latents (encoder, pool, N, D): {shapes}")
    texts = {n: (c.text_encoder, c.text_dim) for n, c in caches.items() if text and c.text_encoder is not None}
    if len(set(texts.values())) > 1:  # sources without text mix with any; two encoders' embeddings do not
        raise ValueError(f"mixture sources hold text of different sentence encoders (label, dim): {texts}")
    opts = ClipOptions(frame_skip=frame_skip, action_dim=action_dim, eval_fraction=eval_fraction, seed=seed, text=text)
    train = [(s.name, LatentClipDataset(caches[s.name], clip_len, "train", opts), s.weight) for s in spec.sources]
    evals = []
    if eval_fraction > 0:
        for s in spec.sources:
            ev = LatentClipDataset(caches[s.name], eval_len or clip_len, "eval", opts)
            if len(ev):
                evals.append(ev)
    mixture = MixtureDataset(train, seed=spec.seed, block=spec.block)
    label, dim = next(iter(texts.values()), (None, 0))
    extra = dict(
        mixture=mixture.state_dict(),
        frame_skip=frame_skip,
        encoder=next(iter(shapes.values()))[0],
        text_encoder=label,
        text_dim=dim,
        data_stats={
            n: dict(latents=c.latent_stats.to_dict(), datasets={k: v.to_dict() for k, v in c.dataset_stats.items()})
            for n, c in caches.items()
        },
    )
    return mixture, (ConcatClips(evals, fields=mixture.fields) if evals else None), extra


def check_pool(info: dict, cfg, where: str) -> None:
    """A cache encoded with another `encoder.pool` than the config's holds a different token grid: refuse it."""
    if (have := cache_pool(info)) != cfg.encoder.pool:
        raise ConfigError(
            f"{where} was encoded with encoder.pool = {have} (N = {info['num_tokens']} tokens), this "
            f"config has encoder.pool = {cfg.encoder.pool}: pass --encoder.pool {have} (and the matching "
            "model.latent_grid) or encode the data again"
        )


def check_action_width(cache, cfg, where: str) -> None:
    """Every dataset of `cache` that has actions must record data.env_action_dim of them per env step (clips
    concatenate frame_skip of them into one model-step action, so another width would be cut at the wrong places);
    action-free datasets (video) pass whatever the setting."""
    d = cfg.data
    widths: dict[int, set[str]] = {}
    for e in cache.entries:
        if e.get("action_dim") is not None:  # per env step (a stored frame may span several)
            widths.setdefault(int(e["action_dim"]) // int(e.get("frame_skip") or 1), set()).add(e["dataset"])
    if any(w != d.env_action_dim for w in widths):
        have = ", ".join(f"{w} per env step ({', '.join(sorted(ds))})" for w, ds in sorted(widths.items()))
        raise ConfigError(
            f"{where} holds actions of {have}, but data.env_action_dim = {d.env_action_dim} (× "
            f"data.frame_skip {d.frame_skip} = {d.action_dim} per model step): pass "
            f"--data.env-action-dim {max(widths)} (model.action_dim must hold "
            f"{max(widths)} × frame_skip {d.frame_skip} = {max(widths) * d.frame_skip})"
        )


def check_text_dim(cache, cfg, where: str) -> None:
    """A cache (or online store) with text needs a model whose text slot has the embeddings' width, or none
    (model.text_dim = 0: the text is not used)."""
    if cache.text_encoder is not None and cfg.model.text_dim not in (0, cache.text_dim):
        raise ConfigError(
            f"{where} holds text embeddings of text_dim = {cache.text_dim} (text encoder "
            f"{cache.text_encoder!r}), but model.text_dim = {cfg.model.text_dim}: pass --model.text-dim "
            f"{cache.text_dim} (or 0 to train without text), or encode with a matching --text.name"
        )


def text_facts(source, cfg) -> dict:
    """What a checkpoint records about the text its model trains on: the sentence encoder's label (None: no text,
    or a model without a text slot) and the embeddings' width."""
    used = cfg.model.text_dim > 0 and source.text_encoder is not None
    return dict(text_encoder=source.text_encoder if used else None, text_dim=source.text_dim if used else 0)


def check_complete(cache: LatentCache, where: str, allow_partial: bool = False) -> None:
    """A cache whose encode has not finished (planned shards missing from its index) is refused with a ConfigError
    saying how much is missing and how to finish it, unless allow_partial (then a loud warning)."""
    if cache.complete:
        return
    miss = cache.missing_shards
    total = len(cache.plan["shards"]) if cache.plan else len(miss) + len(cache.records)
    what = (
        f"{where} {cache.path} is incomplete: {len(miss)} of {total} planned shards missing "
        f"({', '.join(miss[:3])}{', ...' if len(miss) > 3 else ''}); its encode was interrupted or is still "
        f"running"
    )
    if not allow_partial:
        raise ConfigError(
            f"{what}. Finish it by running the same `latentwm encode` command again (it resumes "
            f"where it stopped), or pass --data.allow-partial to train on the {len(cache.records)} "
            f"encoded shards"
        )
    print(f"WARNING: {what}; training on the {len(cache.records)} encoded shards only (data.allow_partial)")


def model_clip_options(cfg, text: bool | None = None) -> ClipOptions:
    """LatentClipDataset's options for clips as the model of ExperimentConfig `cfg` sees them: its frame skip,
    action width, split, proprio channels and action convention; text: None = whether the model has a text slot."""
    d = cfg.data
    return ClipOptions(
        frame_skip=d.frame_skip,
        action_dim=cfg.model.action_dim,
        eval_fraction=d.eval_fraction,
        seed=d.seed,
        text=cfg.model.text_dim > 0 if text is None else text,
        proprio_frames=cfg.model.proprio_dim > 0,
        relative_actions=d.relative_actions,
    )


def check_proprio(cache, cfg, where: str) -> None:
    """A model with proprio channels needs a cache whose datasets store proprio of exactly model.proprio_dim
    channels; relative actions need proprio at least as wide as one env action."""
    dims = {int(v.proprio.mean.shape[0]) for v in cache.dataset_stats.values() if v.proprio is not None}
    want = cfg.model.proprio_dim
    if want and dims != {want}:
        raise ConfigError(
            f"{where} stores proprio of {sorted(dims) or 'no'} channels, but model.proprio_dim = "
            f"{want}: pass --model.proprio-dim {min(dims) if dims else 0}"
        )
    if cfg.data.relative_actions and not any(d >= cfg.data.env_action_dim for d in dims):
        raise ConfigError(
            f"{where} stores no proprio with the agent's position (≥ {cfg.data.env_action_dim} "
            f"channels): data.relative_actions needs it; pass --data.no-relative-actions"
        )


def train_eval_sets(source, cfg, eval_len: int):
    """Training clips (data.clip_len) and held-out clips (eval_len frames, or None when nothing fits / no split) of
    one latent source (a LatentCache or an online EpisodeStore), split by episode as data.eval_fraction / seed say."""
    d = cfg.data
    opts = model_clip_options(cfg)
    train_set = LatentClipDataset(source, d.clip_len, "train", opts)
    eval_set = LatentClipDataset(source, eval_len, "eval", opts) if d.eval_fraction > 0 else None
    if eval_set is not None and len(eval_set) == 0:
        print(f"no eval clip of {eval_len} frames fits the held-out episodes ({eval_set.num_skipped} too short)")
        eval_set = None
    return train_set, eval_set


def make_clip_datasets(
    cfg, allow_partial: bool | None = None
) -> tuple[LatentClipDataset, LatentClipDataset | None, dict]:
    """(train set, eval set or None, facts for checkpoints) from an ExperimentConfig's data section.

    Refused with a ConfigError: caches whose actions are not data.env_action_dim wide per env step, and caches whose
    encode has not finished unless allow_partial (default: the config's data.allow_partial, False without one).
    """
    d = cfg.data
    if allow_partial is None:
        allow_partial = bool(getattr(d, "allow_partial", False))
    eval_len = max(d.clip_len, cfg.rollout.context + cfg.rollout.horizon)
    if d.mixture:
        if cfg.model.proprio_dim or d.relative_actions:
            raise ConfigError(
                "data.mixture: model.proprio_dim > 0 and data.relative_actions need every frame's "
                "proprio, which video sources do not have; train them on one cache (data.cache_dir)"
            )
        spec = MixtureSpec.parse(d.mixture, seed=d.seed, block=d.mixture_block)
        for s in spec.sources:
            src = LatentCache(s.cache_dir)
            check_complete(src, f"data.mixture source {s.name}:", allow_partial)
            check_action_width(src, cfg, f"data.mixture source {s.name} ({s.cache_dir})")
            check_text_dim(src, cfg, f"data.mixture source {s.name} ({s.cache_dir})")
        train_set, eval_set, extra = make_mixture_datasets(
            spec,
            d.clip_len,
            d.frame_skip,
            cfg.model.action_dim,
            d.eval_fraction,
            d.seed,
            eval_len,
            text=cfg.model.text_dim > 0,
        )
        first = LatentCache(spec.sources[0].cache_dir).info
        check_pool(first, cfg, f"data.mixture source {spec.sources[0].cache_dir}")
        if first["latent_dim"] != cfg.model.latent_dim or first["num_tokens"] != cfg.model.num_latent_tokens:
            raise ConfigError(
                f"data.mixture: caches hold latents of N = {first['num_tokens']}, D = "
                f"{first['latent_dim']}, the model expects N = {cfg.model.num_latent_tokens}, "
                f"D = {cfg.model.latent_dim}"
            )
        return train_set, eval_set, extra
    cache = LatentCache(d.cache_dir)
    info = cache.info
    check_complete(cache, "data.cache_dir", allow_partial)
    check_pool(info, cfg, f"data.cache_dir {d.cache_dir}")
    check_action_width(cache, cfg, f"data.cache_dir {d.cache_dir}")
    check_text_dim(cache, cfg, f"data.cache_dir {d.cache_dir}")
    check_proprio(cache, cfg, f"data.cache_dir {d.cache_dir}")
    if info["latent_dim"] != cfg.model.latent_dim or info["num_tokens"] != cfg.model.num_latent_tokens:
        raise ConfigError(
            f"data.cache_dir {d.cache_dir} holds latents of N = {info['num_tokens']}, D = "
            f"{info['latent_dim']} (encoder {info['encoder']}), but the model expects N = "
            f"{cfg.model.num_latent_tokens}, D = {cfg.model.latent_dim}"
        )
    train_set, eval_set = train_eval_sets(cache, cfg, eval_len)
    stats = cache.latent_stats
    extra = dict(
        data_stats=dict(latents=stats.to_dict(), datasets=training_stats(cache, cfg)),
        encoder=info["encoder"],
        frame_skip=d.frame_skip,
        cache_info=info,
        **text_facts(cache, cfg),
    )
    if train_set.num_skipped:
        print(f"{train_set.num_skipped} training episodes shorter than one clip ({train_set.span} frames) skipped")
    return train_set, eval_set, extra
