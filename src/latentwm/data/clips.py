"""Clips for training and evaluation, cut from a LatentCache.

A clip is `clip_len` frames `frame_skip` env steps apart. The action of a kept frame t concatenates the
`frame_skip` env actions a[t], …, a[t+k−1] (each normalized with the dataset's per-env-step statistics first),
exactly as `Episode.with_frame_skip`; it is known only if all of them were recorded. Rewards of a kept frame sum the
raw rewards until the next kept frame. Latents are normalized per channel with the cache's latent statistics.
Episodes stored every s-th env step (their `frame_skip`) hold s env actions per stored frame: clips step
frame_skip / s stored frames (one phase of the frame skip) and see the same actions.

Splits are by episode (all cameras of an episode land on the same side), chosen by a seeded hash. Training clips are
drawn at random but deterministically: item k of epoch e is a function of (seed, e·len + k) only, and any k ≥ 0 is
valid (the trainer indexes a global sample stream), so resuming reproduces the data exactly. Evaluation clips sit on
a fixed grid of starts (every `clip_len · frame_skip` frames), on every camera.

Text: `meta.text` holds an episode's text, except where its entry carries timed narrations (`extras["narrations"]`,
EPIC-KITCHENS): then only the narrations overlapping the clip's own frames, in training and evaluation clips alike.
The text condition (`ClipSample.text` (L, E), `text_mask` (L,)) is looked up in the entry's table of sentence
embeddings, computed once at encode time (`frame_text`): frame t of a clip gets the text of its raw frame. Where a
frame has several alternatives (DROID's paraphrased instructions, overlapping narrations), a training clip draws one
choice with the clip's own generator (deterministic in the item); evaluation clips take the held-out paraphrase
(`extras["narrations_heldout"]`) where there is one, else the first alternative, so evaluation never scores the
model on a sentence it trained on when a held-out one exists.
"""

from __future__ import annotations

import hashlib
import os
from functools import partial

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from latentwm.config import ConfigError
from latentwm.data.batch import ClipSample, WorldBatchMetadata, collate
from latentwm.data.episodes import frames_at, narrations_in
from latentwm.data.frame_text import pick_text
from latentwm.data.latent_cache import LatentCache, cache_pool
from latentwm.data.mixture import ConcatClips, MixtureDataset, MixtureSpec


def split_episodes(keys: list[str], eval_fraction: float, seed: int) -> set[str]:
    """The eval episodes: round(fraction·n) keys (≥ 1 when fraction > 0 and n ≥ 2) with the lowest seeded hash.

    A key's side depends only on its own hash rank, so adding episodes moves few of them.
    """
    if not keys or eval_fraction <= 0:
        return set()
    n = len(keys)
    n_eval = min(max(int(round(eval_fraction * n)), 1 if n >= 2 else 0), n if eval_fraction >= 1 else n - 1)
    h = sorted(keys, key=lambda k: hashlib.sha1(f"{seed}:{k}".encode()).hexdigest())
    return set(h[:n_eval])


class LatentClipDataset(Dataset):
    """`ClipSample`s (latents, actions, action_mask, proprio, rewards, meta) of one split of a LatentCache.

    `cache` may also be an `online.EpisodeStore` (raw episodes behind the same interface): the clips are then the
    same, with `frames` (T, 3, H, W) uint8 in place of latents, for the trainer to encode on the device.

    split: "train" (random clips, `len()` = epoch_size, any index ≥ 0 valid), "eval" (fixed grid) or "all" (fixed
    grid over every episode). Indices may also be (epoch, i) pairs, as `ClipSampler` yields them.
    text: fill `text`/`text_mask` from entries that have text (training passes `model.text_dim > 0`: a model
    without a text slot need not carry the embeddings).
    """

    def __init__(self, cache: LatentCache | str, clip_len: int, frame_skip: int = 1, action_dim: int | None = None,
                 split: str = "train", eval_fraction: float = 0.1, seed: int = 0, normalize: bool = True,
                 epoch_size: int | None = None, eval_stride: int | None = None, text: bool = True):
        if split not in ("train", "eval", "all"):
            raise ValueError(f"LatentClipDataset: split must be 'train', 'eval' or 'all', got {split!r}")
        if clip_len < 1 or frame_skip < 1:
            raise ValueError(f"LatentClipDataset: clip_len and frame_skip must be >= 1, got {clip_len}, {frame_skip}")
        self.cache = LatentCache(cache) if isinstance(cache, (str, os.PathLike)) else cache
        self.clip_len, self.frame_skip, self.split, self.seed = clip_len, frame_skip, split, seed
        self.normalize, self.epoch, self.text = normalize, 0, text
        entries = self.cache.entries
        groups: dict[str, list[int]] = {}
        for i, e in enumerate(entries):
            groups.setdefault(f"{e['dataset']}/{e['episode_id']}", []).append(i)
        held_out = split_episodes(sorted(groups), eval_fraction, seed)
        chosen = {k: v for k, v in groups.items() if split == "all" or (k in held_out) == (split == "eval")}
        self.stored_skip = _stored_skip(self.cache, frame_skip)
        self.stride = frame_skip // self.stored_skip  # stored frames between a clip's frames; span: frames covered
        self.span = (clip_len - 1) * self.stride + 1
        self.short = sorted(k for k, v in chosen.items() if min(entries[i]["length"] for i in v) < self.span)
        self.groups = [(k, v) for k, v in sorted(chosen.items()) if k not in self.short]
        self.num_skipped = len(self.short)
        self.latent_mean = self.latent_std = None
        if normalize:
            ls = self.cache.latent_stats
            self.latent_mean, self.latent_std = ls.mean.astype(np.float32), ls.std.astype(np.float32)
        self.ds_stats = self.cache.dataset_stats
        widths = {e["action_dim"] // self.stored_skip for _, v in self.groups for e in (entries[i] for i in v)
                  if e["action_dim"] is not None}  # per env step
        self.action_dim = action_dim if action_dim is not None else frame_skip * max(widths, default=0)
        if frame_skip * max(widths, default=0) > self.action_dim:
            raise ValueError(f"LatentClipDataset: actions of {max(widths)} per env step × frame_skip {frame_skip} "
                             f"= {frame_skip * max(widths)} exceed action_dim {self.action_dim}")
        # where clips can start
        lengths = [min(entries[i]["length"] for i in v) for _, v in self.groups]
        self._cum = np.cumsum([L - self.span + 1 for L in lengths]).astype(np.int64)
        stride = eval_stride or clip_len * self.stride
        self.grid = [(i, s) for (_, v), L in zip(self.groups, lengths) for i in v
                     for s in range(0, L - self.span + 1, stride)]
        n_grid_train = sum(len(range(0, L - self.span + 1, stride)) for L in lengths)
        self.epoch_size = epoch_size or max(1, n_grid_train)
        if split == "train" and not self.groups:
            raise ValueError(f"LatentClipDataset: no training episode of the cache {self.cache.path} has the "
                             f"{self.span} frames one clip needs ({self.num_skipped} too short)")

    # ------------------------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.epoch_size if self.split == "train" else len(self.grid)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def clip_at(self, index) -> tuple[int, int]:
        """(cache entry index, start frame) of item `index` (int, or (epoch, i))."""
        return self._draw(index)[:2]

    def _draw(self, index) -> tuple[int, int, int | None]:
        """(entry, start, text choice) of item `index`: a training item draws all three from its own generator
        (the choice last, so entries and starts are those drawn before text existed); evaluation: None."""
        epoch, i = index if isinstance(index, (tuple, list)) else (self.epoch, index)
        i = int(i)
        if self.split != "train":
            return (*self.grid[i], None)
        k = int(epoch) * self.epoch_size + i
        rng = np.random.default_rng([self.seed, 0xC1195, k])
        u = int(rng.integers(int(self._cum[-1])))
        g = int(np.searchsorted(self._cum, u, side="right"))
        start = u - (int(self._cum[g - 1]) if g else 0)
        cams = self.groups[g][1]
        return cams[int(rng.integers(len(cams)))], start, int(rng.integers(1 << 30))

    def __getitem__(self, index) -> ClipSample:
        return self.make_clip(*self._draw(index))

    def frames_of(self, start: int) -> np.ndarray:
        return start + self.stride * np.arange(self.clip_len)

    def states_for(self, index) -> np.ndarray | None:
        """Simulator states (clip_len, S) of item `index`'s frames, or None if the cache has none."""
        entry, start = self.clip_at(index)
        states = self.cache.raw(entry).get("states")
        return None if states is None else states[self.frames_of(start)]

    def make_clip(self, entry: int, start: int, text_choice: int | None = None) -> ClipSample:
        """The clip of `clip_len` frames of cache entry `entry` from raw frame `start`. text_choice: which of a
        frame's text alternatives (`frame_text.pick_text`); None: the held-out paraphrase, else the first (a
        training dataset never uses held-out paraphrases: the first alternative)."""
        e, raw = self.cache.entries[entry], self.cache.raw(entry)
        T, fs, t = e["length"], self.stride, self.frames_of(start)
        lat = frames = None
        if "latents" in raw:
            lat = raw["latents"][t].astype(np.float32)
            if self.normalize:
                lat = (lat - self.latent_mean) / self.latent_std
            lat = torch.from_numpy(lat)
        else:  # raw episodes: encoded (and normalized with latent_mean/std) by the trainer's OnlineEncoding
            frames = torch.from_numpy(np.ascontiguousarray(frames_at(raw["frames"], t))).permute(0, 3, 1, 2)
        stats = self.ds_stats.get(e["dataset"])
        steps = t[:, None] + np.arange(fs)  # (L, fs): the raw steps each clip step spans
        inside = steps < T
        steps = np.minimum(steps, T - 1)
        actions = mask = None
        if raw.get("actions") is not None:
            a = raw["actions"].astype(np.float32)
            if self.normalize:
                if stats is None or stats.actions is None:
                    raise ValueError(f"cache {self.cache.path}: no action statistics for dataset {e['dataset']!r}")
                a = stats.actions.normalize(a.reshape(len(a), self.stored_skip, -1)).reshape(len(a), -1)
            mask = inside.all(1) & raw["action_mask"][steps].all(1)
            actions = np.where(mask[:, None], a[steps].reshape(len(t), -1), 0.0).astype(np.float32)
        proprio = raw.get("proprio")
        if proprio is not None:
            proprio = proprio[t].astype(np.float32)
            if self.normalize and stats is not None and stats.proprio is not None:
                proprio = stats.proprio.normalize(proprio)
        rewards = raw.get("rewards")
        if rewards is not None:
            rewards = np.where(inside, rewards[steps], 0.0).sum(1, dtype=np.float32)
        text = tuple(e.get("text") or ())
        extras = (raw.get("meta") or {}).get("extras") or {}
        if extras.get("narrations"):  # timed narrations (EPIC): only those overlapping this clip's frames
            text = tuple(narrations_in(extras, int(t[0]), int(t[-1]) + 1))
        meta = WorldBatchMetadata(dataset=e["dataset"], episode_id=e["episode_id"], camera=e["camera"],
                                  start_frame=int(start), frame_stride=self.frame_skip, text=text,
                                  fps=float(e.get("fps") or 0.0) / fs, success=e.get("success"))
        states = raw.get("states")
        text_emb = text_mask = None
        if self.text and raw.get("text_emb") is not None:
            held = raw.get("text_ids_heldout") if self.split != "train" else None  # evaluation's paraphrases
            text_emb, text_mask = pick_text(raw["text_emb"], raw["text_ids"][t], None if held is None else held[t],
                                            text_choice)
        return ClipSample(latents=lat, frames=frames, actions=_t(actions), action_mask=_t(mask),
                          proprio=_t(proprio), rewards=_t(rewards),
                          states=None if states is None else _t(states[t].astype(np.float64)),
                          text=_t(text_emb), text_mask=_t(text_mask), meta=meta)


def _stored_skip(cache, frame_skip: int) -> int:
    """Env steps each stored frame of `cache` spans (one value per cache; it must divide `frame_skip`)."""
    skips = {int(e.get("frame_skip") or 1) for e in cache.entries}
    if len(skips) > 1:
        raise ConfigError(f"{cache.path}: episodes stored with different frame skips {sorted(skips)}; mix caches")
    k = skips.pop() if skips else 1
    if frame_skip % k:
        raise ConfigError(f"data.frame_skip = {frame_skip} env steps is not a multiple of the {k} env steps each "
                          f"stored frame of {cache.path} spans: pass --data.frame-skip {k * max(1, frame_skip // k)}")
    return k


def _t(a):
    return None if a is None else torch.from_numpy(np.ascontiguousarray(a))


class ClipSampler(Sampler):
    """This rank's share of one epoch: items i ≡ rank (mod world_size), yielded as (epoch, i).

    drop_last: every rank gets the same count (training); otherwise the remainder goes to the first ranks
    (evaluation sees every item exactly once). `start` skips this rank's first items (resume mid-epoch).
    Train-mode datasets draw item i of epoch e from (seed, e·len + i), so no shuffling is needed.
    shuffle permutes the epoch's order with (seed, epoch) before splitting.
    """

    def __init__(self, num_items: int, rank: int = 0, world_size: int = 1, seed: int = 0, shuffle: bool = False,
                 drop_last: bool = False, start: int = 0):
        if not 0 <= rank < world_size:
            raise ValueError(f"ClipSampler: need 0 <= rank < world_size, got {rank}, {world_size}")
        self.n, self.rank, self.world, self.seed = num_items, rank, world_size, seed
        self.shuffle, self.drop_last, self.start, self.epoch = shuffle, drop_last, start, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Iterate epoch `epoch` from this rank's item `start` on (to resume mid-epoch)."""
        self.epoch, self.start = int(epoch), int(start)

    def _indices(self) -> list[int]:
        order = np.arange(self.n)
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(self.n)
        if self.drop_last:
            order = order[: (self.n // self.world) * self.world]
        return order[self.rank:: self.world].tolist()[self.start:]

    def __iter__(self):
        return iter([(self.epoch, i) for i in self._indices()])

    def __len__(self) -> int:
        return len(self._indices())


def make_loader(dataset: LatentClipDataset, batch_size: int, num_workers: int = 0, rank: int = 0,
                world_size: int = 1, seed: int = 0, shuffle: bool = False, drop_last: bool | None = None,
                start: int = 0) -> DataLoader:
    """DataLoader of WorldBatches for this rank. Call `loader.sampler.set_epoch(e)` before each epoch.

    `batch_size` is per rank. Workers get whole batches (map-style), and items are deterministic in their index,
    so the result does not depend on num_workers.
    """
    if drop_last is None:
        drop_last = dataset.split == "train"
    sampler = ClipSampler(len(dataset), rank, world_size, seed, shuffle, drop_last, start)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                      collate_fn=partial(collate, action_dim=max(1, dataset.action_dim)), drop_last=drop_last,
                      persistent_workers=False)


def make_mixture_datasets(spec: MixtureSpec, clip_len: int, frame_skip: int = 1, action_dim: int | None = None,
                          eval_fraction: float = 0.1, seed: int = 0, eval_len: int | None = None, text: bool = True
                          ) -> tuple[MixtureDataset, Dataset | None, dict]:
    """(training mixture, evaluation set = every source's held-out grid concatenated (`ConcatClips`, the optional
    fields the training mixture keeps) or None, facts for checkpoints) from a spec of latent caches. All caches must
    hold latents of the same encoder, pooling, N and D, and those with text the same text encoder (`text`: see
    LatentClipDataset)."""
    if not spec.sources:
        raise ValueError("mixture spec has no sources")
    caches = {s.name: LatentCache(os.fspath(s.cache_dir)) for s in spec.sources}
    shapes = {n: (c.info["encoder"], cache_pool(c.info), c.info["num_tokens"], c.info["latent_dim"])
              for n, c in caches.items()}
    if len(set(shapes.values())) != 1:
        raise ValueError(f"mixture sources hold different latents (encoder, pool, N, D): {shapes}")
    texts = {n: (c.text_encoder, c.text_dim) for n, c in caches.items() if text and c.text_encoder is not None}
    if len(set(texts.values())) > 1:  # sources without text mix with any; two encoders' embeddings do not
        raise ValueError(f"mixture sources hold text of different sentence encoders (label, dim): {texts}")
    kw = dict(frame_skip=frame_skip, action_dim=action_dim, eval_fraction=eval_fraction, seed=seed, text=text)
    train = [(s.name, LatentClipDataset(caches[s.name], clip_len, split="train", **kw), s.weight) for s in spec.sources]
    evals = []
    if eval_fraction > 0:
        for s in spec.sources:
            ev = LatentClipDataset(caches[s.name], eval_len or clip_len, split="eval", **kw)
            if len(ev):
                evals.append(ev)
    mixture = MixtureDataset(train, seed=spec.seed, block=spec.block)
    label, dim = next(iter(texts.values()), (None, 0))
    extra = dict(mixture=mixture.state_dict(), frame_skip=frame_skip, encoder=next(iter(shapes.values()))[0],
                 text_encoder=label, text_dim=dim, data_stats={n: dict(latents=c.latent_stats.to_dict(),
                                     datasets={k: v.to_dict() for k, v in c.dataset_stats.items()})
                             for n, c in caches.items()})
    return mixture, (ConcatClips(evals, fields=mixture.fields) if evals else None), extra


def check_pool(info: dict, cfg, where: str) -> None:
    """A cache encoded with another `encoder.pool` than the config's holds a different token grid: refuse it."""
    if (have := cache_pool(info)) != cfg.encoder.pool:
        raise ConfigError(f"{where} was encoded with encoder.pool = {have} (N = {info['num_tokens']} tokens), this "
                          f"config has encoder.pool = {cfg.encoder.pool}: pass --encoder.pool {have} (and the matching "
                          "model.latent_grid) or encode the data again")


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
        raise ConfigError(f"{where} holds actions of {have}, but data.env_action_dim = {d.env_action_dim} (× "
                          f"data.frame_skip {d.frame_skip} = {d.action_dim} per model step): pass "
                          f"--data.env-action-dim {max(widths)} (model.action_dim must hold "
                          f"{max(widths)} × frame_skip {d.frame_skip} = {max(widths) * d.frame_skip})")


def check_text_dim(cache, cfg, where: str) -> None:
    """A cache (or online store) with text needs a model whose text slot has the embeddings' width, or none
    (model.text_dim = 0: the text is not used)."""
    if cache.text_encoder is not None and cfg.model.text_dim not in (0, cache.text_dim):
        raise ConfigError(f"{where} holds text embeddings of text_dim = {cache.text_dim} (text encoder "
                          f"{cache.text_encoder!r}), but model.text_dim = {cfg.model.text_dim}: pass --model.text-dim "
                          f"{cache.text_dim} (or 0 to train without text), or encode with a matching --text.name")


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
    what = (f"{where} {cache.path} is incomplete: {len(miss)} of {total} planned shards missing "
            f"({', '.join(miss[:3])}{', ...' if len(miss) > 3 else ''}); its encode was interrupted or is still "
            f"running")
    if not allow_partial:
        raise ConfigError(f"{what}. Finish it by running the same `latentwm encode` command again (it resumes "
                          f"where it stopped), or pass --data.allow-partial to train on the {len(cache.records)} "
                          f"encoded shards")
    print(f"WARNING: {what}; training on the {len(cache.records)} encoded shards only (data.allow_partial)")


def train_eval_sets(source, cfg, eval_len: int):
    """Training clips (data.clip_len) and held-out clips (eval_len frames, or None when nothing fits / no split) of
    one latent source (a LatentCache or an online EpisodeStore), split by episode as data.eval_fraction / seed say."""
    d = cfg.data
    kw = dict(frame_skip=d.frame_skip, action_dim=cfg.model.action_dim, eval_fraction=d.eval_fraction, seed=d.seed,
              text=cfg.model.text_dim > 0)
    train_set = LatentClipDataset(source, d.clip_len, split="train", **kw)
    eval_set = LatentClipDataset(source, eval_len, split="eval", **kw) if d.eval_fraction > 0 else None
    if eval_set is not None and len(eval_set) == 0:
        print(f"no eval clip of {eval_len} frames fits the held-out episodes ({eval_set.num_skipped} too short)")
        eval_set = None
    return train_set, eval_set


def make_clip_datasets(cfg, allow_partial: bool | None = None
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
        spec = MixtureSpec.parse(d.mixture, seed=d.seed, block=d.mixture_block)
        for s in spec.sources:
            src = LatentCache(s.cache_dir)
            check_complete(src, f"data.mixture source {s.name}:", allow_partial)
            check_action_width(src, cfg, f"data.mixture source {s.name} ({s.cache_dir})")
            check_text_dim(src, cfg, f"data.mixture source {s.name} ({s.cache_dir})")
        train_set, eval_set, extra = make_mixture_datasets(spec, d.clip_len, d.frame_skip, cfg.model.action_dim,
                                                           d.eval_fraction, d.seed, eval_len,
                                                           text=cfg.model.text_dim > 0)
        first = LatentCache(spec.sources[0].cache_dir).info
        check_pool(first, cfg, f"data.mixture source {spec.sources[0].cache_dir}")
        if first["latent_dim"] != cfg.model.latent_dim or first["num_tokens"] != cfg.model.num_latent_tokens:
            raise ConfigError(f"data.mixture: caches hold latents of N = {first['num_tokens']}, D = "
                              f"{first['latent_dim']}, the model expects N = {cfg.model.num_latent_tokens}, "
                              f"D = {cfg.model.latent_dim}")
        return train_set, eval_set, extra
    cache = LatentCache(d.cache_dir)
    info = cache.info
    check_complete(cache, "data.cache_dir", allow_partial)
    check_pool(info, cfg, f"data.cache_dir {d.cache_dir}")
    check_action_width(cache, cfg, f"data.cache_dir {d.cache_dir}")
    check_text_dim(cache, cfg, f"data.cache_dir {d.cache_dir}")
    if info["latent_dim"] != cfg.model.latent_dim or info["num_tokens"] != cfg.model.num_latent_tokens:
        raise ConfigError(f"data.cache_dir {d.cache_dir} holds latents of N = {info['num_tokens']}, D = "
                          f"{info['latent_dim']} (encoder {info['encoder']}), but the model expects N = "
                          f"{cfg.model.num_latent_tokens}, D = {cfg.model.latent_dim}")
    train_set, eval_set = train_eval_sets(cache, cfg, eval_len)
    stats = cache.latent_stats
    extra = dict(data_stats=dict(latents=stats.to_dict(),
                                 datasets={k: v.to_dict() for k, v in cache.dataset_stats.items()}),
                 encoder=info["encoder"], frame_skip=d.frame_skip, cache_info=info,
                 **text_facts(cache, cfg))
    if train_set.num_skipped:
        print(f"{train_set.num_skipped} training episodes shorter than one clip ({train_set.span} frames) skipped")
    return train_set, eval_set, extra


def eval_loader(dataset: Dataset, action_dim: int, batch_size: int = 16):
    """Batches (WorldBatch) of a finite evaluation dataset, in order."""
    return iter(DataLoader(dataset, batch_size=batch_size, shuffle=False,
                           collate_fn=partial(collate, action_dim=action_dim)))
