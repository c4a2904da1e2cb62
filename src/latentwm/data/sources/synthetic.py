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

    text_dim > 0 adds a text condition that says the same in "words": frame t carries the fixed random unit vector
    (text_dim,) of the move that led into it (one of 9), none at t = 0, and a fifth of the clips carry no text at
    all — so with `with_actions=False` the future is predictable from the text alone.
    """

    def __init__(
        self,
        grid: int = 4,
        dim: int = 16,
        frames: int = 8,
        seed: int = 0,
        noise: float = 0.05,
        length: int = 1 << 30,
        with_actions: bool = True,
        text_dim: int = 0,
    ):
        self.grid, self.dim, self.frames, self.seed = grid, dim, frames, seed
        self.noise, self.length, self.with_actions = noise, length, with_actions
        g = np.random.default_rng(seed)
        self.background = g.normal(size=dim).astype(np.float32)
        self.blob = g.normal(size=dim).astype(np.float32) * 2
        self.text_dim = text_dim
        if text_dim:  # a "sentence" per move (dx, dy) in {-1, 0, 1}²: row 3·(dx + 1) + (dy + 1)
            words = np.random.default_rng([seed, 7]).normal(size=(9, text_dim))
            self.words = (words / np.linalg.norm(words, axis=1, keepdims=True)).astype(np.float32)

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
        text = mask = None
        if self.text_dim:  # drawn after everything else: clips without text are unchanged by it
            ids = 3 * (moves[:, 0] + 1) + moves[:, 1] + 1
            text = np.concatenate([np.zeros((1, self.text_dim), np.float32), self.words[ids[:-1]]])
            mask = np.arange(T) > 0
            if rng.random() < 0.2:
                text, mask = np.zeros_like(text), np.zeros(T, dtype=bool)
        return ClipSample(
            latents=torch.from_numpy(lat.astype(np.float32)),
            actions=torch.from_numpy(moves.astype(np.float32)) if self.with_actions else None,
            text=None if text is None else torch.from_numpy(text),
            text_mask=None if mask is None else torch.from_numpy(mask),
            meta=WorldBatchMetadata("moving-blob", str(k), camera="synthetic", fps=1.0),
        )
