"""Decoder speed: decoded frames/s, and the cost of decoding a 16-frame rollout relative to generating it.

    python benchmarks/bench_decoder.py [--threads 1] [--repeats 10] [--no-large]

- decode_frames_per_s: the `cpu`-size decoder (0.83M parameters) on the `cpu` preset's latents (8×8 tokens of width
  64, tiny-random at 112 px) → 64 px frames (output patch 8), batches of 16, float32, no gradients; also at batch 1.
- rollout: the `cpu` preset dynamics model generates 16 frames after 4 context frames with K = 4 denoising steps
  (latentwm.rollout.rollout, KV cache, actions given), batch 1; then the decoder turns those 16 frames into pixels
  in one batch. `decode_vs_generate` = decode time / generation time.
- For scale (not the headline, skipped with --no-large): RAE's ViT-B decoder on DINOv2-B-shaped latents (16×16 tokens
  of width 768) → 256 px frames, batch 1.
Random weights (speed does not depend on them), medians over repeats after warm-up, one torch thread by default (a
shared 2-core machine). Appends to RESULTS.md; the last stdout line is JSON.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import median_time, report, table  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--no-large", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from latentwm.conditions import Conditions
    from latentwm.config import get_preset
    from latentwm.encoders.decoder import DecoderSpec, RAEDecoder, approx_decode_flops
    from latentwm.model import DynamicsModel
    from latentwm.rollout import Sampling, rollout

    torch.manual_seed(0)
    exp = get_preset("cpu")
    m = exp.model
    spec = DecoderSpec(m.latent_dim, m.latent_grid, 8, "cpu")
    dec = RAEDecoder(spec).eval()
    rows = []
    with torch.inference_mode():
        x16 = torch.randn(16, spec.num_tokens, spec.latent_dim)
        t16 = median_time(lambda: dec(x16), args.repeats, 2)
        t1 = median_time(lambda: dec(x16[:1]), args.repeats * 3, 3)
        fps16, fps1 = 16 / t16, 1 / t1
        for b, t in ((16, t16), (1, t1)):
            rows.append(
                {
                    "decoder": "cpu",
                    "latents": f"{spec.grid}×{spec.grid}×{spec.latent_dim}",
                    "frame px": spec.image_size,
                    "batch": b,
                    "ms / batch": t * 1e3,
                    "frames/s": b / t,
                    "GFLOP/frame": approx_decode_flops(spec) / 1e9,
                }
            )
        model = DynamicsModel(m).eval()
        C, H, K = 4, 16, 4
        ctx = torch.randn(1, C, m.num_latent_tokens, m.frame_dim)
        actions = torch.randn(1, C + H - 1, m.action_dim)
        gen = torch.Generator().manual_seed(0)
        t_gen = median_time(
            lambda: rollout(model, ctx, H, Conditions(actions), Sampling(K), generator=gen),
            max(3, args.repeats // 3),
            1,
        )
        pred = rollout(model, ctx, H, Conditions(actions), Sampling(K), generator=gen)[0]  # (16, N, D)
        t_dec = median_time(lambda: dec.decode(pred[..., : m.latent_dim], batch_size=16), args.repeats, 2)
        large = None
        if not args.no_large:
            big = DecoderSpec(768, 16, 16, "B")
            bdec = RAEDecoder(big).eval()
            xb = torch.randn(1, big.num_tokens, big.latent_dim)
            tb = median_time(lambda: bdec(xb), 3, 1)
            large = 1 / tb
            rows.append(
                {
                    "decoder": "B (RAE ViT-B)",
                    "latents": "16×16×768",
                    "frame px": big.image_size,
                    "batch": 1,
                    "ms / batch": tb * 1e3,
                    "frames/s": large,
                    "GFLOP/frame": approx_decode_flops(big) / 1e9,
                }
            )
    md = table(rows, list(rows[0]))
    roll = table(
        [
            {
                "cpu dynamics model": f"{model.num_parameters() / 1e6:.2f}M params",
                "context": C,
                "horizon": H,
                "K": K,
                "generate ms": t_gen * 1e3,
                "decode 16 frames ms": t_dec * 1e3,
                "decode / generate": t_dec / t_gen,
            }
        ],
        ["cpu dynamics model", "context", "horizon", "K", "generate ms", "decode 16 frames ms", "decode / generate"],
    )
    summary = {
        "decode_frames_per_s": round(fps16, 1),
        "decode_frames_per_s_batch1": round(fps1, 1),
        "rollout16_generate_ms": round(t_gen * 1e3, 2),
        "rollout16_decode_ms": round(t_dec * 1e3, 2),
        "decode_vs_generate": round(t_dec / t_gen, 4),
        "threads": torch.get_num_threads(),
    }
    if large is not None:
        summary["decode_frames_per_s_B_256px"] = round(large, 3)
    report(
        "Decoder: decode speed and cost relative to generation (CPU)",
        md + "\n\n" + roll,
        summary,
        "Random weights, float32, inference mode, medians; decoded in one batch per rollout.",
    )


if __name__ == "__main__":
    main()
