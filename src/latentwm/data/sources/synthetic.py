"""A learnable toy source of latent clips: a blob moving on the token grid, pushed by the actions.

Used by tests and benchmarks that need data with real action-conditioned dynamics but no simulator or encoder.
`clips[k]` is deterministic in (seed, k) for any k ≥ 0, the stream contract of the trainer.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from latentwm.data.batch import ClipSample, WorldBatchMetadata


class MovingBlobClips(Dataset):
    """Clips (T, g², D): token features are a background vector plus a blob vector at the blob's cell.

    Actions (T, 2) are the blob's integer displacement to the next frame (in {-1, 0, 1}², wrapping around), so the
    future is predictable from the actions and unpredictable without them. `length` bounds `len()` for samplers
    that need one; indexing works for any k ≥ 0.
    """

    def __init__(self, grid: int = 4, dim: int = 16, frames: int = 8, seed: int = 0, noise: float = 0.05,
                 length: int = 1 << 30, with_actions: bool = True):
        self.grid, self.dim, self.frames, self.seed = grid, dim, frames, seed
        self.noise, self.length, self.with_actions = noise, length, with_actions
        g = np.random.default_rng(seed)
        self.background = g.normal(size=dim).astype(np.float32)
        self.blob = g.normal(size=dim).astype(np.float32) * 2

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, k: int) -> ClipSample:
        rng = np.random.default_rng([self.seed, int(k)])
        g, T = self.grid, self.frames
        pos = rng.integers(0, g, size=2)
        moves = rng.integers(-1, 2, size=(T, 2))
        lat = np.tile(self.background, (T, g * g, 1))
        for t in range(T):
            lat[t, pos[0] * g + pos[1]] = self.blob
            pos = (pos + moves[t]) % g
        lat = lat + self.noise * rng.normal(size=lat.shape).astype(np.float32)
        return ClipSample(
            latents=torch.from_numpy(lat.astype(np.float32)),
            actions=torch.from_numpy(moves.astype(np.float32)) if self.with_actions else None,
            meta=WorldBatchMetadata("moving-blob", str(k), camera="synthetic", fps=1.0),
        )
