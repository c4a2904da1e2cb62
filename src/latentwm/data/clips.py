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
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from latentwm.config import ConfigError
from latentwm.data.batch import ClipSample, WorldBatchMetadata, collate
from latentwm.data.episodes import frames_at, narrations_in
from latentwm.data.frame_text import pick_text
from latentwm.data.latent_cache import LatentCache
from latentwm.data.proprio import attach_proprio, relative_action_stats, relative_to_agent


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


@dataclass(frozen=True)
class ClipOptions:
    """How a `LatentClipDataset` cuts, splits and presents its clips; the same for a run's training and held-out sets
    (which differ only in split and clip length)."""

    frame_skip: int = 1
    """Env steps between a clip's frames; a frame's action concatenates the frame_skip env actions."""
    action_dim: int | None = None
    """Width every clip's actions are padded to (model.action_dim); None: frame_skip × the widest env action."""
    eval_fraction: float = 0.1
    """Share of episodes held out (`split_episodes`)."""
    seed: int = 0
    """Seeds the episode split and the training clips' draws."""
    normalize: bool = True
    """Normalize latents, actions and proprio with the cache's statistics."""
    epoch_size: int | None = None
    """Training items per epoch; None: as many as the clips on the evaluation grid of the training episodes."""
    eval_stride: int | None = None
    """Stored frames between evaluation clip starts; None: clip_len × the clips' frame stride (no overlap)."""
    text: bool = True
    """Fill `text`/`text_mask` from entries that have text (training passes `model.text_dim > 0`: a model without a
    text slot need not carry the embeddings)."""
    proprio_frames: bool = False
    """Latents carry each frame's normalized proprio on every token ((T, N, D + P), model.proprio_dim;
    data/proprio.py)."""
    relative_actions: bool = False
    """Actions relative to the agent (data.relative_actions; data/proprio.py), normalized with the cache's
    relative-action statistics (`LatentClipDataset.action_stats`)."""
    heldout_text: bool = True
    """Evaluation clips carry each frame's held-out paraphrase where it has one (wording training never saw); False:
    the first training paraphrase, which separates "the model learned the sentences" from "its text encoder carries
    their meaning to new wording"."""


class LatentClipDataset(Dataset):
    """`ClipSample`s (latents, actions, action_mask, proprio, rewards, meta) of one split of a LatentCache.

    `cache` may also be an `online.EpisodeStore` (raw episodes behind the same interface): the clips are then the
    same, with `frames` (T, 3, H, W) uint8 in place of latents, for the trainer to encode on the device.

    split: "train" (random clips, `len()` = options.epoch_size, any index ≥ 0 valid), "eval" (fixed grid) or "all"
    (fixed grid over every episode). Indices may also be (epoch, i) pairs, as `ClipSampler` yields them.
    options: how clips are cut, split and presented (`ClipOptions`; `clip_sets.model_clip_options` gives those a
    model of an ExperimentConfig sees).
    """

    def __init__(
        self, cache: LatentCache | str, clip_len: int, split: str = "train", options: ClipOptions | None = None
    ):
        self.options = o = options or ClipOptions()
        frame_skip = o.frame_skip
        if split not in ("train", "eval", "all"):
            raise ValueError(f"LatentClipDataset: split must be 'train', 'eval' or 'all', got {split!r}")
        if clip_len < 1 or frame_skip < 1:
            raise ValueError(f"LatentClipDataset: clip_len and frame_skip must be >= 1, got {clip_len}, {frame_skip}")
        self.cache = LatentCache(cache) if isinstance(cache, (str, os.PathLike)) else cache
        self.clip_len, self.frame_skip, self.split, self.seed = clip_len, frame_skip, split, o.seed
        self.normalize, self.epoch, self.text = o.normalize, 0, o.text
        self.proprio_frames, self.relative_actions = o.proprio_frames, o.relative_actions
        self.heldout_text = o.heldout_text
        entries = self.cache.entries
        groups: dict[str, list[int]] = {}
        for i, e in enumerate(entries):
            groups.setdefault(f"{e['dataset']}/{e['episode_id']}", []).append(i)
        held_out = split_episodes(sorted(groups), o.eval_fraction, o.seed)
        chosen = {k: v for k, v in groups.items() if split == "all" or (k in held_out) == (split == "eval")}
        if split == "train" and groups and not chosen:
            raise ConfigError(
                f"data.eval_fraction = {o.eval_fraction} holds out all {len(groups)} episodes of "
                f"{self.cache.path}: no training episode is left; lower --data.eval-fraction"
            )
        self.stored_skip = _stored_skip(self.cache, frame_skip)
        self.stride = frame_skip // self.stored_skip  # stored frames between a clip's frames; span: frames covered
        self.span = (clip_len - 1) * self.stride + 1
        self.short = sorted(k for k, v in chosen.items() if min(entries[i]["length"] for i in v) < self.span)
        self.groups = [(k, v) for k, v in sorted(chosen.items()) if k not in self.short]
        self.num_skipped = len(self.short)
        self.latent_mean = self.latent_std = None
        if o.normalize:
            ls = self.cache.latent_stats
            self.latent_mean, self.latent_std = ls.mean.astype(np.float32), ls.std.astype(np.float32)
        self.ds_stats = self.cache.dataset_stats
        self.action_stats = action_stats_of(self.cache, o.relative_actions, self.stride)
        widths = {
            e["action_dim"] // self.stored_skip
            for _, v in self.groups
            for e in (entries[i] for i in v)
            if e["action_dim"] is not None
        }  # per env step
        self.action_dim = o.action_dim if o.action_dim is not None else frame_skip * max(widths, default=0)
        if frame_skip * max(widths, default=0) > self.action_dim:
            raise ValueError(
                f"LatentClipDataset: actions of {max(widths)} per env step × frame_skip {frame_skip} "
                f"= {frame_skip * max(widths)} exceed action_dim {self.action_dim}"
            )
        # where clips can start
        lengths = [min(entries[i]["length"] for i in v) for _, v in self.groups]
        self._cum = np.cumsum([L - self.span + 1 for L in lengths]).astype(np.int64)
        stride = o.eval_stride or clip_len * self.stride
        self.grid = [
            (i, s) for (_, v), L in zip(self.groups, lengths) for i in v for s in range(0, L - self.span + 1, stride)
        ]
        n_grid_train = sum(len(range(0, L - self.span + 1, stride)) for L in lengths)
        self.epoch_size = o.epoch_size or max(1, n_grid_train)
        if split == "train" and not self.groups:
            raise ValueError(
                f"LatentClipDataset: no training episode of the cache {self.cache.path} has the "
                f"{self.span} frames one clip needs ({self.num_skipped} too short)"
            )

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
        raw_proprio = raw.get("proprio")
        actions = mask = None
        if raw.get("actions") is not None:
            a = raw["actions"][steps].astype(np.float32).reshape(len(t), fs * self.stored_skip, -1)  # per env step
            if self.relative_actions:
                a = relative_to_agent(a, raw_proprio[t])
            if self.normalize:
                if (ast := self.action_stats.get(e["dataset"])) is None:
                    raise ValueError(f"cache {self.cache.path}: no action statistics for dataset {e['dataset']!r}")
                a = ast.normalize(a)
            mask = inside.all(1) & raw["action_mask"][steps].all(1)
            actions = np.where(mask[:, None], a.reshape(len(t), -1), 0.0).astype(np.float32)
        proprio = raw_proprio
        if proprio is not None:
            proprio = proprio[t].astype(np.float32)
            if self.normalize and stats is not None and stats.proprio is not None:
                proprio = stats.proprio.normalize(proprio)
        if self.proprio_frames and lat is not None:
            if proprio is None:
                raise ValueError(
                    f"cache {self.cache.path}: episode {e['episode_id']} has no proprio, but the model "
                    f"takes proprio channels (model.proprio_dim > 0)"
                )
            lat = attach_proprio(lat, torch.from_numpy(proprio))
        rewards = raw.get("rewards")
        if rewards is not None:
            rewards = np.where(inside, rewards[steps], 0.0).sum(1, dtype=np.float32)
        text = tuple(e.get("text") or ())
        extras = (raw.get("meta") or {}).get("extras") or {}
        if extras.get("narrations"):  # timed narrations (EPIC): only those overlapping this clip's frames
            text = tuple(narrations_in(extras, int(t[0]), int(t[-1]) + 1))
        meta = WorldBatchMetadata(
            dataset=e["dataset"],
            episode_id=e["episode_id"],
            camera=e["camera"],
            start_frame=int(start),
            frame_stride=self.frame_skip,
            text=text,
            fps=float(e.get("fps") or 0.0) / fs,
            success=e.get("success"),
        )
        states = raw.get("states")
        text_emb = text_mask = None
        if self.text and raw.get("text_emb") is not None:
            held = raw.get("text_ids_heldout") if self.split != "train" and self.heldout_text else None
            text_emb, text_mask = pick_text(
                raw["text_emb"], raw["text_ids"][t], None if held is None else held[t], text_choice
            )
        return ClipSample(
            latents=lat,
            frames=frames,
            actions=_t(actions),
            action_mask=_t(mask),
            proprio=_t(proprio),
            rewards=_t(rewards),
            states=None if states is None else _t(states[t].astype(np.float64)),
            text=_t(text_emb),
            text_mask=_t(text_mask),
            meta=meta,
        )


def action_stats_of(cache, relative: bool, stride: int) -> dict:
    """{dataset: per-env-step NormStats} the actions are normalized with: the cache's own, or (relative) those of
    the actions relative to the agent over model steps of `stride` stored frames, computed once per cache object
    and stride (data/proprio.py)."""
    if not relative:
        return {k: v.actions for k, v in cache.dataset_stats.items() if v.actions is not None}
    memo = cache.__dict__.setdefault("_relative_action_stats", {})
    for k, v in cache.dataset_stats.items():
        if v.actions is not None and (k, stride) not in memo:
            memo[k, stride] = relative_action_stats(cache, k, stride)
    return {k: s for (k, st), s in memo.items() if st == stride}


def training_stats(cache, cfg) -> dict:
    """{dataset: DatasetStats dict} as a model of ExperimentConfig `cfg` was trained on `cache`: the cache's own, with
    the action statistics its clips were normalized with (relative actions: those of the offsets). What checkpoints
    record and the planner's action codec reads back."""
    d = cfg.data
    acts = action_stats_of(cache, d.relative_actions, d.frame_skip // _stored_skip(cache, d.frame_skip))
    return {
        k: {**v.to_dict(), **({"actions": acts[k].to_dict()} if k in acts else {})}
        for k, v in cache.dataset_stats.items()
    }


def _stored_skip(cache, frame_skip: int) -> int:
    """Env steps each stored frame of `cache` spans (one value per cache; it must divide `frame_skip`)."""
    skips = {int(e.get("frame_skip") or 1) for e in cache.entries}
    if len(skips) > 1:
        raise ConfigError(f"{cache.path}: episodes stored with different frame skips {sorted(skips)}; mix caches")
    k = skips.pop() if skips else 1
    if frame_skip % k:
        raise ConfigError(
            f"data.frame_skip = {frame_skip} env steps is not a multiple of the {k} env steps each "
            f"stored frame of {cache.path} spans: pass --data.frame-skip {k * max(1, frame_skip // k)}"
        )
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

    def __init__(
        self,
        num_items: int,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        shuffle: bool = False,
        drop_last: bool = False,
        start: int = 0,
    ):
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
        return order[self.rank :: self.world].tolist()[self.start :]

    def __iter__(self):
        return iter([(self.epoch, i) for i in self._indices()])

    def __len__(self) -> int:
        return len(self._indices())


@dataclass(frozen=True)
class ReadOrder:
    """Which items of a dataset one rank's loader reads, in which order (`ClipSampler`'s settings): items
    i ≡ rank (mod world_size) of each epoch, permuted with (seed, epoch) when shuffle, from this rank's item `start`
    on (resume mid-epoch). drop_last: every rank gets the same count; None: only for a training dataset."""

    rank: int = 0
    world_size: int = 1
    seed: int = 0
    shuffle: bool = False
    drop_last: bool | None = None
    start: int = 0


def make_loader(
    dataset: LatentClipDataset, batch_size: int, num_workers: int = 0, order: ReadOrder | None = None
) -> DataLoader:
    """DataLoader of WorldBatches for this rank. Call `loader.sampler.set_epoch(e)` before each epoch.

    `batch_size` is per rank. Workers get whole batches (map-style), and items are deterministic in their index,
    so the result does not depend on num_workers. order: which items, in which order (default: rank 0 of 1).
    """
    s = order or ReadOrder()
    drop_last = dataset.split == "train" if s.drop_last is None else s.drop_last
    sampler = ClipSampler(len(dataset), s.rank, s.world_size, s.seed, s.shuffle, drop_last, s.start)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=partial(collate, action_dim=max(1, dataset.action_dim)),
        drop_last=drop_last,
        persistent_workers=False,
    )


def eval_loader(dataset: Dataset, action_dim: int, batch_size: int = 16):
    """Batches (WorldBatch) of a finite evaluation dataset, in order."""
    return iter(
        DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=partial(collate, action_dim=action_dim))
    )
