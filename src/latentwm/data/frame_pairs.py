"""(frame, latent) pairs for decoder training: frames of raw episodes with their latents from a latent cache, or
alone (then the trainer encodes them online).

Every `frame_stride`-th frame of every camera is kept, in memory (`max_frames` caps each split, evenly subsampled).
The held-out frames are those of the held-out episodes of the dynamics model's own split (`split_episodes` with the
same eval_fraction and seed over `dataset/episode_id` keys), so a decoder is scored on episodes neither model saw.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from latentwm.config import ConfigError, DecoderConfig
from latentwm.data.clips import split_episodes
from latentwm.data.episodes import EpisodeError, frames_at
from latentwm.data.latent_cache import LatentCache, cache_pool
from latentwm.data.sources import load_source, parse_options
from latentwm.data.video import VideoError, resize_frames


@dataclass
class FrameSet:
    """Frames (M, H, W, 3) uint8 with their latents (M, N, D) fp16 (None: encoded online by `encode_fn`)."""

    frames: torch.Tensor
    latents: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.frames)

    def batch(self, idx, device, size: int, encode_fn=None) -> tuple[torch.Tensor, torch.Tensor]:
        """(latents (B, N, D) float32, targets (B, 3, size, size) in [-1, 1]) on `device`."""
        f = self.frames[idx].to(device, non_blocking=True).permute(0, 3, 1, 2)  # (B, 3, H, W) uint8
        lat = self.latents[idx].to(device).float() if self.latents is not None else encode_fn(f).float()
        return lat, resize_frames(f, size)


def _subsample(parts: list, cap: int) -> list:
    n = sum(len(p[0]) for p in parts)
    if n <= cap:
        return parts
    keep = set(np.linspace(0, n - 1, cap).round().astype(int).tolist())
    out, base = [], 0
    for fr, lat in parts:
        sel = [i for i in range(len(fr)) if base + i in keep]
        out.append((fr[sel], None if lat is None else lat[sel]))
        base += len(fr)
    return out


def load_frame_sets(cfg: DecoderConfig, show_progress: bool = True) -> tuple[FrameSet, FrameSet, dict]:
    """(train, held-out, facts) from cfg.episodes_dir (+ cfg.cache_dir; a DecoderConfig). facts: skipped items,
    episode counts, and with a cache its encoder label, pooling, grid, latent width and latent statistics."""
    cache = LatentCache(cfg.cache_dir) if cfg.cache_dir else None
    size = cache.info.get("image_size") if cache is not None else cfg.encoder.image_size
    try:
        items = load_source(
            cfg.source,
            cfg.episodes_dir,
            size=None if cfg.source == "pusht" else size,
            options=parse_options(cfg.source_options),
        )
    except ValueError as e:
        raise ConfigError(f"decoder (--source {cfg.source} --episodes-dir {cfg.episodes_dir}): {e}") from e
    if not items:
        raise ConfigError(f"decoder.episodes_dir: no {cfg.source} episodes in {cfg.episodes_dir}")
    per_ep, skipped = _load_frames(cfg, items, cache, show_progress)
    held = split_episodes(sorted(per_ep), cfg.eval_fraction, cfg.seed)
    train, held_out = _split_sets(per_ep, held, cfg.max_frames, with_latents=cache is not None)
    facts = dict(skipped=skipped, train_episodes=len(per_ep) - len(held), eval_episodes=len(held))
    if cache is not None:
        facts.update(_cache_facts(cache))
    return train, held_out, facts


def _load_frames(
    cfg: DecoderConfig, items: list, cache: LatentCache | None, show_progress: bool
) -> tuple[dict[str, list], list[dict]]:
    """({"dataset/episode_id": [(frames, latents or None) per camera]}, skipped items): every `frame_stride`-th frame
    of every readable episode, with its cached latents when there is a cache."""
    per_ep: dict[str, list] = {}
    skipped = []
    for key, loader in tqdm(items, desc="load frames", unit="ep", disable=not show_progress, dynamic_ncols=True):
        try:
            ep = loader()
        except (EpisodeError, VideoError) as e:
            skipped.append(dict(item=key, error=str(e)))
            print(f"train-decoder: skipping {key}: {e}")
            continue
        t = np.arange(0, len(ep), cfg.frame_stride)
        for cam in ep.cameras:
            lat = None if cache is None else _cached_latents(cfg, cache, ep, cam, t)
            per_ep.setdefault(f"{ep.dataset}/{ep.episode_id}", []).append(
                (torch.from_numpy(np.ascontiguousarray(frames_at(ep.frames[cam], t))), lat)
            )
    if not per_ep:
        raise ConfigError(f"decoder.episodes_dir: no readable episode in {cfg.episodes_dir} ({len(skipped)} skipped)")
    shapes = {p[0].shape[1:] for v in per_ep.values() for p in v}
    if len(shapes) > 1:
        raise ConfigError(f"decoder: frames of {cfg.episodes_dir} have different shapes {sorted(shapes)}")
    return per_ep, skipped


def _cached_latents(cfg: DecoderConfig, cache: LatentCache, ep, cam: str, t: np.ndarray) -> torch.Tensor:
    """The cache's latents of frames `t` of (episode, camera); a ConfigError when the cache lacks or disagrees."""
    try:
        raw = cache.raw(cache.find(ep.dataset, ep.episode_id, cam))["latents"]
    except KeyError:
        raise ConfigError(
            f"decoder.cache_dir {cfg.cache_dir} has no latents of {ep.dataset}/"
            f"{ep.episode_id} camera {cam}: encode these episodes into it (or pass "
            "--cache-dir '' to encode online)"
        ) from None
    if len(raw) != len(ep):
        raise ConfigError(
            f"decoder.cache_dir: {ep.dataset}/{ep.episode_id} has {len(raw)} latent frames "
            f"in the cache but {len(ep)} frames in {cfg.episodes_dir}"
        )
    return torch.from_numpy(np.ascontiguousarray(raw[t]))


def _split_sets(
    per_ep: dict[str, list], held: set[str], max_frames: int, with_latents: bool
) -> tuple[FrameSet, FrameSet]:
    """(train, held-out) FrameSets: the frames of the episodes outside / inside `held`, each capped at max_frames."""
    shape = next(iter(per_ep.values()))[0][0].shape[1:]
    sets = []
    for side in (False, True):
        parts = _subsample([p for k in sorted(per_ep) if (k in held) == side for p in per_ep[k]], max_frames)
        frames = torch.cat([p[0] for p in parts]) if parts else torch.zeros(0, *shape, dtype=torch.uint8)
        lats = torch.cat([p[1] for p in parts]) if parts and with_latents else None
        sets.append(FrameSet(frames, lats))
    return sets[0], sets[1]


def _cache_facts(cache: LatentCache) -> dict:
    """The cache's encoder label, pooling, square token grid, latent width and latent statistics."""
    info = cache.info
    g = int(round(info["num_tokens"] ** 0.5))
    if g * g != info["num_tokens"]:
        raise ConfigError(f"decoder.cache_dir: {info['num_tokens']} tokens per frame are not a square grid")
    st = cache.latent_stats
    return dict(
        encoder=info["encoder"],
        pool=cache_pool(info),
        grid=g,
        latent_dim=int(info["latent_dim"]),
        latent_stats=dict(mean=np.asarray(st.mean).tolist(), std=np.asarray(st.std).tolist()),
    )
