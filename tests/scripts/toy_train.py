"""Train the tiny model on the moving-blob toy data; used by tests as a separate (killable / torchrun) process.

usage: python toy_train.py CONFIG_JSON [nan_every]
"""

import json
import sys

import torch

from latentwm.config import ExperimentConfig
from latentwm.data.sources.synthetic import MovingBlobClips
from latentwm.train.trainer import Trainer


class NaNEvery(MovingBlobClips):
    """Poisons every n-th sample with NaN latents (a corrupt record that slipped through)."""

    def __init__(self, n, **kw):
        super().__init__(**kw)
        self.n = n

    def __getitem__(self, k):
        s = super().__getitem__(k)
        if self.n and k % self.n == 0:
            s.latents[:] = float("nan")
        return s


def main():
    torch.set_num_threads(1)
    cfg = ExperimentConfig.from_dict(json.loads(sys.argv[1]))
    nan_every = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    m = cfg.model
    ds = NaNEvery(
        nan_every, grid=m.latent_grid, dim=m.latent_dim, frames=cfg.data.clip_len, seed=0, text_dim=m.text_dim
    )  # the text slot takes part in the resume / DDP / accumulation checks
    Trainer(cfg, ds, None, device="cpu").fit()


if __name__ == "__main__":
    main()
