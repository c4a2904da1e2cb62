"""Encoder wrapper overhead: images/s of `DinoEncoder.encode` vs the bare transformers forward, same inputs.

    python benchmarks/bench_encoder.py

Bare = `model(pixel_values)` on frames already converted to float at the encoder resolution (the model's input).
Wrapper = the full `encode` from uint8 frames at that resolution (uint8 → float, forward, drop CLS/registers,
LayerNorm without affine, chunking; the ImageNet normalization and the norm's affine are folded into the frozen
weights, so they cost nothing). Interleaved repeats, medians. Target: wrapper/bare ≥ 0.95.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import median_time, report, table  # noqa: E402

from latentwm.config import EncoderConfig  # noqa: E402
from latentwm.encoders.dino import DinoEncoder  # noqa: E402


def bench(name: str, image_size: int, batch: int, repeats: int) -> dict:
    enc = DinoEncoder.from_config(EncoderConfig(name=name, image_size=image_size, batch_size=batch))
    frames = np.random.default_rng(0).integers(0, 256, (batch, image_size, image_size, 3), dtype=np.uint8)
    pixels = enc.preprocess(frames)

    @torch.inference_mode()
    def bare():
        enc.backbone(pixel_values=pixels)

    def wrapper():
        enc.encode(frames)

    t_bare, t_wrap = [], []
    for _ in range(repeats):  # interleaved so drifts in machine load hit both alike
        t_bare.append(median_time(bare, repeats=1, warmup=0))
        t_wrap.append(median_time(wrapper, repeats=1, warmup=0))
    bare()
    tb, tw = float(np.median(t_bare)), float(np.median(t_wrap))
    return {"encoder": name, "image_size": image_size, "batch": batch, "tokens": enc.num_tokens,
            "bare_images_per_s": batch / tb, "wrapper_images_per_s": batch / tw, "wrapper_vs_bare": tb / tw}


def main():
    rows = [bench("tiny-random", 224, 64, 31), bench("vits-random", 224, 16, 9)]
    summary = {"wrapper_vs_bare_ratio": min(r["wrapper_vs_bare"] for r in rows),
               "per_encoder": {r["encoder"]: {k: r[k] for k in ("bare_images_per_s", "wrapper_images_per_s",
                                                                  "wrapper_vs_bare")} for r in rows}}
    cols = ["encoder", "image_size", "batch", "tokens", "bare_images_per_s", "wrapper_images_per_s",
            "wrapper_vs_bare"]
    report("bench_encoder: wrapper vs bare transformers forward", table(rows, cols), summary,
           "Random-weight configs (no downloads); vits-random has ViT-S/14 sizes (384 wide, 12 layers).")


if __name__ == "__main__":
    main()
