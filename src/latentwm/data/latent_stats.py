"""Per-channel statistics of an encoder's LayerNorm-ed latents (RAE's normalization, DESIGN section 4): what a
latent cache records and online encoding estimates, streamed in float64."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
from safetensors import safe_open
from safetensors.numpy import save_file

from latentwm.data.episodes import NormStats

STATS_EPS = 1e-5  # (x − mean) / (std + eps); RAE's eps (it divides by sqrt(var + eps))


@dataclass(frozen=True)
class LatentStats(NormStats):
    """Per-channel mean/std (D,) of LayerNorm-ed latents over every token of a dataset, and the encoder they came
    from (`weights_label`). A NormStats, so the latent cache / planners take it as is; `normalize` uses the same
    (x − mean) / (std + eps) as `DinoEncoder.set_stats`."""

    encoder: str = ""

    def normalize(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean) / (self.std + STATS_EPS)).astype(np.float32)

    def denormalize(self, x: np.ndarray) -> np.ndarray:
        return (x * (self.std + STATS_EPS) + self.mean).astype(np.float32)

    def to_dict(self) -> dict:
        return {**super().to_dict(), "encoder": self.encoder}

    @classmethod
    def from_dict(cls, d: dict) -> LatentStats:
        return cls(
            np.asarray(d["mean"], np.float64),
            np.asarray(d["std"], np.float64),
            int(d["count"]),
            str(d.get("encoder", "")),
        )

    def save(self, path: str | os.PathLike) -> None:
        """safetensors file: float64 `mean`/`std` tensors; count and encoder in its JSON header metadata."""
        save_file(
            {k: np.ascontiguousarray(getattr(self, k), np.float64) for k in ("mean", "std")},
            str(path),
            metadata={"format": "latentwm.LatentStats/1", "count": str(self.count), "encoder": self.encoder},
        )

    @classmethod
    def load(cls, path: str | os.PathLike) -> LatentStats:
        with safe_open(str(path), framework="np") as f:
            meta = f.metadata() or {}
            if meta.get("format") != "latentwm.LatentStats/1":
                raise ValueError(f"{path}: not a LatentStats file (metadata format {meta.get('format')!r})")
            return cls(f.get_tensor("mean"), f.get_tensor("std"), int(meta["count"]), meta.get("encoder", ""))


def compute_latent_stats(latents, encoder: str = "", min_std: float = 1e-3) -> LatentStats:
    """Per-channel mean/std over every token of an iterable of (..., D) latent chunks (torch or numpy), streamed.

    Chunks are merged with Chan et al.'s parallel Welford update in float64 (no E[x²] − E[x]² cancellation), so
    memory is one chunk. std is the population std, floored at `min_std` like the cache's NormStats (a dead
    channel must not blow up by 1/eps)."""
    n, mean, m2 = 0, 0.0, 0.0
    for chunk in latents:
        x = torch.as_tensor(chunk).detach().to("cpu", torch.float64)
        x = x.reshape(-1, x.shape[-1])  # (tokens, D)
        if len(x) == 0:
            continue
        nb, mb = len(x), x.mean(0)
        delta, tot = mb - mean, n + nb
        mean = mean + delta * (nb / tot)
        m2 = m2 + ((x - mb) ** 2).sum(0) + delta**2 * (n * nb / tot)
        n = tot
    if n == 0:
        raise ValueError("compute_latent_stats: no latents (empty iterable)")
    std = torch.sqrt(m2 / n).clamp_min(min_std)
    return LatentStats(mean.numpy(), std.numpy(), int(n), encoder)


__all__ = ["STATS_EPS", "LatentStats", "compute_latent_stats"]
