"""Encoder wrapper overhead: images/s of `DinoEncoder.encode` vs the bare transformers forward, same inputs.

    python benchmarks/bench_encoder.py

Bare = `backbone(pixel_values=...)` on pixels already converted to float at the encoder resolution (the model's
input, prepared once outside the timing). Wrapper = the full `encode` from uint8 frames at that resolution (input
checks, uint8 → float, forward, drop CLS/registers, LayerNorm without affine, chunking, an ordinary output tensor;
on CPU the ImageNet normalization and the norm's affine are folded into the frozen weights, see encoders/dino.py).
Equal model work, so wrapper/bare measures only the wrapper's overhead: target ≥ 0.95. A third column times
`encode` from 256×256 frames (a real bicubic-antialias resize to 224), reported but not part of the ratio.
Interleaved repeats after warmup, medians; torch's default thread count.
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


def bench(name: str, image_size: int, batch: int, repeats: int, warmup: int = 2) -> dict:
    enc = DinoEncoder.from_config(EncoderConfig(name=name, image_size=image_size, batch_size=batch))
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (batch, image_size, image_size, 3), dtype=np.uint8)
    big = rng.integers(0, 256, (batch, 256, 256, 3), dtype=np.uint8)
    pixels = enc.preprocess(frames)  # exactly what encode feeds the backbone

    @torch.inference_mode()
    def bare():
        enc.backbone(pixel_values=pixels)

    fns = {"bare": bare, "wrapper": lambda: enc.encode(frames), "resize": lambda: enc.encode(big)}
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    for _ in range(repeats):  # interleaved: drifts in machine load hit all alike
        for k, fn in fns.items():
            times[k].append(median_time(fn, repeats=1, warmup=0))
    t = {k: float(np.median(v)) for k, v in times.items()}
    return {
        "encoder": name,
        "image_size": image_size,
        "batch": batch,
        "tokens": enc.num_tokens,
        "folded": enc.folded,
        "bare_images_per_s": batch / t["bare"],
        "wrapper_images_per_s": batch / t["wrapper"],
        "wrapper_vs_bare": t["bare"] / t["wrapper"],
        "wrapper_from_256_images_per_s": batch / t["resize"],
    }


def main():
    torch.manual_seed(0)
    rows = [bench("tiny-random", 224, 64, 31), bench("vits-random", 224, 16, 9)]
    keys = ("bare_images_per_s", "wrapper_images_per_s", "wrapper_vs_bare", "wrapper_from_256_images_per_s")
    summary = {
        "wrapper_vs_bare_ratio": min(r["wrapper_vs_bare"] for r in rows),
        "per_encoder": {r["encoder"]: {k: r[k] for k in keys} for r in rows},
    }
    cols = ["encoder", "image_size", "batch", "tokens", "folded", *keys]
    report(
        "bench_encoder: wrapper vs bare transformers forward",
        table(rows, cols),
        summary,
        "Random-weight configs (no downloads); vits-random has ViT-S/14 sizes (384 wide, 12 layers). "
        "wrapper_vs_bare: same 224² uint8 frames (no resize), equal model work. wrapper_from_256: encode of "
        "256² frames, including the bicubic-antialias resize to 224 (not in the ratio).",
    )


if __name__ == "__main__":
    main()
