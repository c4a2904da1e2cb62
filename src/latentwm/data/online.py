"""Online encoding: clips cut from raw episodes, encoded on the device inside the training loop.

`EpisodeStore` stands where a `LatentCache` stands for `LatentClipDataset`: the same `entries` (one per (episode,
camera), in the order `encode_to_cache` writes them), the same per-dataset action/proprio statistics (the same sums),
and `raw(i)` with the episode's arrays — but raw `frames` (a camera's array or lazy FrameSource) where a cache has
latents. So the training and evaluation clips (split, start, camera, actions, masks, metadata) are exactly those of a
cache of the same episodes; `make_clip` returns `frames` (T, 3, H, W) uint8 instead of latents. `OnlineEncoding` is
the trainer's batch transform: it encodes a WorldBatch's frames on the encoder's device and normalizes them with the
latent statistics exactly as `LatentClipDataset` normalizes cached latents, giving the WorldBatch the cache path
gives (up to the cache's fp16 storage).

Text: each episode's sentences are embedded once, when the store first scans it (`frame_text`, the table a cache
stores, in fp16 as there), so the clips' text tensors equal a cache's and no sentence encoder runs in the training
loop or its DataLoader workers.

Latent statistics come from a latent cache of the same encoder (its latent_stats.json), a LatentStats file, or are
estimated at start from up to `stats_frames` frames spread evenly over the episodes.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from latentwm.config import ConfigError
from latentwm.data.batch import WorldBatch
from latentwm.data.cache_integrity import same_encoder
from latentwm.data.clip_sets import check_proprio, check_text_dim, text_facts, train_eval_sets
from latentwm.data.clips import training_stats
from latentwm.data.episodes import ChannelSums, DatasetStats, Episode, EpisodeError, NormStats, frames_at
from latentwm.data.frame_text import EpisodeTexts, TextEmbedding
from latentwm.data.latent_cache import LatentCache, cache_pool, sample_key
from latentwm.data.latent_stats import LatentStats, compute_latent_stats
from latentwm.data.proprio import attach_proprio
from latentwm.data.sources import load_source, parse_options, source_facts
from latentwm.data.video import VideoError

EncodeFn = Callable[[torch.Tensor], torch.Tensor]  # uint8 (B, 3, H, W) -> (B, N, D) LayerNorm-ed latents


class EpisodeStore:
    """Raw episodes behind the LatentCache reader interface (`entries`, `raw(i)`, `dataset_stats`, `latent_stats`).

    items: (key, loader) pairs as a source yields them. Every episode is loaded once at construction (facts and
    action/proprio sums; an unreadable one is skipped, counted in `skipped` and reported with its error), then on
    demand through an LRU of `keep` episodes. `latent_stats` must be set before a normalizing LatentClipDataset is
    built on the store (`make_online_datasets` does it). `text` (a TextEmbedding, or a function building one when
    the first episode with text is scanned; None: no text): each episode's text arrays are computed during the scan
    and kept (`text_encoder`, `text_dim` as a LatentCache has them).
    """

    def __init__(
        self,
        items: Sequence[tuple[str, Callable[[], Episode]]],
        root: str | os.PathLike = "",
        cameras: Sequence[str] | None = None,
        keep: int = 8,
        show_progress: bool = True,
        text: TextEmbedding | Callable[[], TextEmbedding] | None = None,
    ):
        from tqdm.auto import tqdm

        self.path, self.loaders, self.keep = Path(root), dict(items), keep
        texts = None if text is None else EpisodeTexts(text)
        self.text: dict[str, dict[str, np.ndarray]] = {}  # item -> text arrays (memoized for the store's life)
        self.entries: list[dict] = []
        self.skipped: list[dict] = []
        self.latent_stats: NormStats | None = None
        self.text_encoder: str | None = None
        self.text_dim = 0
        self._lru: OrderedDict[str, Episode] = OrderedDict()
        sums: dict[str, dict[str, ChannelSums]] = {"actions": {}, "proprio": {}}
        for key, _ in tqdm(items, desc="scan episodes", unit="ep", disable=not show_progress, dynamic_ncols=True):
            try:
                ep = self.loaders[key]()
                cams = list(cameras or ep.cameras)
                if missing := [c for c in cams if c not in ep.frames]:
                    raise EpisodeError(f"episode {key} has no camera {missing} (has {ep.cameras})")
            except (EpisodeError, VideoError) as e:  # bad data: skipped, counted, named (as the cache writer)
                self.skipped.append(dict(item=key, error=str(e)))
                print(f"online encode: skipping {key}: {e}")
                continue
            arrays = None if texts is None else texts.arrays(ep.text, ep.extras, len(ep), f"episode {key}")
            if arrays is not None:
                self.text[key] = arrays
                self.text_encoder, self.text_dim = texts.embedding.label, int(texts.embedding.dim)
            for cam in cams:  # per camera, like the cache's sums: the same statistics
                self.entries.append(
                    dict(
                        fps=ep.fps,
                        success=ep.success,
                        text=list(ep.text),
                        frame_skip=ep.frame_skip,
                        dataset=ep.dataset,
                        episode_id=ep.episode_id,
                        camera=cam,
                        length=len(ep),
                        key=sample_key(ep.dataset, ep.episode_id, cam),
                        item=key,
                        action_dim=None if ep.actions is None else int(ep.actions.shape[1]),
                        proprio_dim=None if ep.proprio is None else int(ep.proprio.shape[1]),
                        text_dim=None if arrays is None else int(arrays["text_emb"].shape[1]),
                    )
                )
                if ep.actions is not None:
                    sums["actions"].setdefault(ep.dataset, ChannelSums()).add(np.asarray(ep.actions)[ep.mask()])
                if ep.proprio is not None:
                    sums["proprio"].setdefault(ep.dataset, ChannelSums()).add(np.asarray(ep.proprio))
        names = sorted({e["dataset"] for e in self.entries})
        self.dataset_stats = {
            n: DatasetStats(n, **{q: s[n].stats() if n in s else None for q, s in sums.items()}) for n in names
        }
        if not self.entries:
            raise EpisodeError(f"no readable episode among {len(items)} items of {root} ({len(self.skipped)} skipped)")

    def __len__(self) -> int:
        return len(self.entries)

    def episode(self, item: str) -> Episode:
        if item in self._lru:
            self._lru.move_to_end(item)
            return self._lru[item]
        ep = self._lru[item] = self.loaders[item]()
        while len(self._lru) > self.keep:
            self._lru.popitem(last=False)
        return ep

    def raw(self, i: int) -> dict:
        """Entry i's `frames` ((T, H, W, 3) array or FrameSource), per-step arrays as a cache stores them, `meta`."""
        e = self.entries[i]
        ep = self.episode(e["item"])
        out = dict(
            frames=ep.frames[e["camera"]],
            proprio=ep.proprio,
            rewards=ep.rewards,
            states=ep.states,
            meta=dict(
                fps=ep.fps,
                success=ep.success,
                text=list(ep.text),
                frame_skip=ep.frame_skip,
                extras=ep.extras,
                dataset=ep.dataset,
                episode_id=ep.episode_id,
                camera=e["camera"],
                length=len(ep),
            ),
        )
        if ep.actions is not None:
            out.update(actions=ep.actions, action_mask=ep.mask())
        out.update(self.text.get(e["item"], {}))
        return {k: v for k, v in out.items() if v is not None}

    def members(self, i: int, names: tuple[str, ...]) -> dict:
        """The named per-step arrays of entry i (LatentCache.members' interface)."""
        return {k: v for k, v in self.raw(i).items() if k in names}

    def frames(self, i: int, indices: Sequence[int]) -> np.ndarray:
        """(k, H, W, 3) uint8 frames of entry i."""
        return frames_at(self.raw(i)["frames"], indices)

    def __getstate__(self) -> dict:  # pickled to spawned DataLoader workers without the decoded episodes
        return {**self.__dict__, "_lru": OrderedDict()}


def load_latent_stats(path: str | os.PathLike, encoder_label: str, pool: int) -> NormStats:
    """Latent statistics from a latent cache directory (checked against the encoder label and pooling) or a
    LatentStats .safetensors file (checked against the label)."""
    p = Path(path)
    if p.is_dir():
        cache = LatentCache(p)
        have = (cache.info.get("encoder"), cache_pool(cache.info))
        if not same_encoder(have[0], encoder_label) or have[1] != pool:
            raise ValueError(
                f"data.latent_stats: the cache {p} holds latents of (encoder, pool) = {have}, online "
                f"encoding uses {(encoder_label, pool)}"
            )
        return cache.latent_stats
    if not p.is_file():
        raise ValueError(f"data.latent_stats: {p} is neither a latent cache directory nor a LatentStats file")
    stats = LatentStats.load(p)
    if stats.encoder and not same_encoder(stats.encoder, encoder_label):
        raise ValueError(
            f"data.latent_stats: {p} was computed with {stats.encoder!r}, online encoding uses {encoder_label!r}"
        )
    return stats


def estimate_latent_stats(
    store: EpisodeStore, encode_fn: EncodeFn, stats_frames: int = 1024, encoder_label: str = ""
) -> NormStats:
    """Per-channel statistics of the encoder's latents over ≤ stats_frames frames spread evenly over every entry
    (at most 64 entries, evenly spaced; frames evenly spaced within each), deterministic."""
    chosen = np.unique(np.linspace(0, len(store) - 1, min(len(store), 64)).round().astype(int))
    per = max(1, stats_frames // len(chosen))

    def chunks():
        for i in chosen:
            L = store.entries[i]["length"]
            t = np.unique(np.linspace(0, L - 1, min(L, per)).round().astype(int))
            f = torch.from_numpy(np.ascontiguousarray(store.frames(int(i), t))).permute(0, 3, 1, 2)
            yield encode_fn(f)  # (k, N, D)

    return compute_latent_stats(chunks(), encoder=encoder_label)


class OnlineEncoding:
    """Batch transform: a WorldBatch with `frames` (B, T, 3, H, W) uint8 → the same batch with `latents` (B, T, N, D)
    encoded by `encode_fn` and normalized (x − mean) / std like cached latents (padding steps zero), frames dropped;
    with `proprio_frames` the batch's normalized proprio is then attached to every token (model.proprio_dim,
    data/proprio.py), as a cache's clips carry it. A batch that already has latents passes through."""

    def __init__(self, encode_fn: EncodeFn, stats: NormStats, proprio_frames: bool = False):
        self.encode_fn, self.proprio_frames = encode_fn, proprio_frames
        self.mean = torch.as_tensor(np.asarray(stats.mean, np.float32))  # (D,)
        self.std = torch.as_tensor(np.asarray(stats.std, np.float32))

    def __call__(self, batch: WorldBatch) -> WorldBatch:
        if batch.latents is not None or batch.frames is None:
            return batch
        B, T = batch.valid.shape
        x = self.encode_fn(batch.frames.reshape(B * T, *batch.frames.shape[2:]))  # (B·T, N, D) float32
        x = x.reshape(B, T, *x.shape[1:])
        mean, std = self.mean.to(x.device), self.std.to(x.device)
        x = (x - mean) / std
        if self.proprio_frames:
            x = attach_proprio(x, batch.proprio.to(x.device))
        x = torch.where(batch.valid.to(x.device)[:, :, None, None], x, torch.zeros((), device=x.device))
        return replace(batch, latents=x, frames=None)


def make_online_datasets(
    cfg,
    encode_fn: EncodeFn,
    encoder_label: str,
    stats_frames: int = 1024,
    show_progress: bool = True,
    text: TextEmbedding | Callable[[], TextEmbedding] | None = None,
):
    """(train set, eval set or None, facts for checkpoints, OnlineEncoding) for an ExperimentConfig with
    data.online_encode: the clips of `make_clip_datasets` over a cache of the same episodes, with frames.
    `text`: the sentence embedding of the episodes' text (as `latentwm encode --text` would store it), used when
    model.text_dim > 0; None: clips carry no text."""
    d = cfg.data
    if not d.episodes_dir:
        raise ConfigError("data.episodes_dir must name the raw episodes when data.online_encode is on")
    if d.mixture:
        raise ConfigError(
            "data.online_encode reads one source (data.source, data.episodes_dir); it does not "
            "combine with data.mixture (encode the sources into caches to mix them)"
        )
    try:
        items = load_source(
            d.source, d.episodes_dir, size=cfg.encoder.image_size, options=parse_options(d.source_options)
        )
    except ValueError as e:
        raise ConfigError(f"data.source {d.source} / data.episodes_dir {d.episodes_dir}: {e}") from e
    if not items:
        raise ConfigError(f"data.episodes_dir: no {d.source} episodes found in {d.episodes_dir}")
    store = EpisodeStore(
        items, d.episodes_dir, show_progress=show_progress, text=text if cfg.model.text_dim > 0 else None
    )
    check_text_dim(store, cfg, f"data.episodes_dir {d.episodes_dir}")
    check_proprio(store, cfg, f"data.episodes_dir {d.episodes_dir}")
    probe = encode_fn(torch.from_numpy(np.ascontiguousarray(store.frames(0, [0]))).permute(0, 3, 1, 2))
    N, D = int(probe.shape[1]), int(probe.shape[2])
    if (N, D) != (cfg.model.num_latent_tokens, cfg.model.latent_dim):
        raise ConfigError(
            f"data.online_encode: the encoder gives N = {N}, D = {D} (encoder.pool = "
            f"{cfg.encoder.pool}), the model expects N = {cfg.model.num_latent_tokens}, D = "
            f"{cfg.model.latent_dim}"
        )
    try:
        stats = (
            load_latent_stats(d.latent_stats, encoder_label, cfg.encoder.pool)
            if d.latent_stats
            else estimate_latent_stats(store, encode_fn, stats_frames, encoder_label)
        )
    except ValueError as e:
        raise ConfigError(str(e)) from e
    if np.shape(stats.mean) != (D,):
        raise ConfigError(f"data.latent_stats: statistics of width {np.shape(stats.mean)}, the latents have D = {D}")
    store.latent_stats = stats
    eval_len = max(d.clip_len, cfg.rollout.context + cfg.rollout.horizon)
    train_set, eval_set = train_eval_sets(store, cfg, eval_len)
    info = dict(
        format="online",
        encoder=encoder_label,
        pool=cfg.encoder.pool,
        image_size=cfg.encoder.image_size,
        num_tokens=N,
        latent_dim=D,
        source=d.source,
        episodes_dir=str(d.episodes_dir),
        skipped=len(store.skipped),
        **source_facts(d.source, parse_options(d.source_options)),  # as a cache.json records the reader
    )
    stats_dict = stats.to_dict()
    extra = dict(
        data_stats=dict(latents=stats_dict, datasets=training_stats(store, cfg)),
        encoder=encoder_label,
        frame_skip=d.frame_skip,
        cache_info=info,
        **text_facts(store, cfg),
    )
    return train_set, eval_set, extra, OnlineEncoding(encode_fn, stats, cfg.model.proprio_dim > 0)
