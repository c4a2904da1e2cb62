"""Decoder acceptance on Push-T: held-out PSNR of a decoder trained on the CPU for at most 15 minutes vs the
mean-image baseline (DESIGN.md section 8; the decoder issue asks for ≥ 4 dB above it).

    python benchmarks/bench_decoder_pusht.py [--episodes 40] [--env-steps 100] [--epochs 40] [--minutes 14]
                                             [--threads 1] [--out runs/bench_decoder_pusht]

Pipeline, as a user runs it: `generate_pusht` (96 px, the demo's size) → encode with the `cpu` preset's
`tiny-random` encoder (112 px, 8×8 tokens of width 64) into a latent cache → `latentwm train-decoder` (cpu-size
decoder, 8 px output patches → 64 px frames, L1 + SSIM since LPIPS is not installed here, noise augmentation
τ_n = 0.8, no discriminator) with a wall-clock budget. Frames of the held-out 10% of episodes (the dynamics model's
split) are scored with the EMA weights. One torch thread by default (shared machine). Appends to RESULTS.md; the
last stdout line is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import report, table  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--episodes", type=int, default=40)
    ap.add_argument("--env-steps", type=int, default=100)
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--minutes", type=float, default=14.0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="runs/bench_decoder_pusht")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    from latentwm.cli import main as cli
    from latentwm.config import GenerateConfig, get_preset
    from latentwm.data.latent_cache import Encoding, encode_to_cache
    from latentwm.data.sources.pusht import generate_pusht, load_pusht
    from latentwm.encoders.dino import DinoEncoder

    out = Path(args.out)
    t0 = time.perf_counter()
    generate_pusht(
        GenerateConfig(
            out_dir=str(out / "episodes"), num_episodes=args.episodes, max_steps=args.env_steps, seed=0, image_size=96
        ),
        show_progress=False,
    )
    enc_cfg = get_preset("cpu").encoder
    enc = DinoEncoder.from_config(enc_cfg)
    encode_to_cache(
        load_pusht(out / "episodes"),
        Encoding(lambda f: enc.encode(f).numpy(), enc.weights_label, image_size=enc_cfg.image_size),
        out / "latents",
        show_progress=False,
    )
    prep_s = time.perf_counter() - t0
    run = out / "decoder"
    rc = cli(
        [
            "train-decoder",
            "--preset",
            "cpu",
            "--episodes-dir",
            str(out / "episodes"),
            "--cache-dir",
            str(out / "latents"),
            "--out-dir",
            str(run),
            "--epochs",
            str(args.epochs),
            "--max-minutes",
            str(args.minutes),
            "--resume",
        ]
    )
    if rc != 0:
        raise SystemExit(rc)
    m = json.loads((run / "metrics.json").read_text())
    gain = m["psnr"] - m["mean_image_psnr"]
    rows = [
        {
            "decoder": f"cpu ({m['parameters'] / 1e6:.2f}M)",
            "frames": f"{m['train_frames']} train / {m['frames']} held-out",
            "train min": m["train_seconds"] / 60,
            "epochs": m["epochs"],
            "PSNR dB": m["psnr"],
            "mean-image PSNR dB": m["mean_image_psnr"],
            "gain dB": gain,
            "SSIM": m["ssim"],
            "mean-image SSIM": m["mean_image_ssim"],
            "perceptual": m["perceptual"],
        }
    ]
    md = table(rows, list(rows[0]))
    notes = (
        f"Push-T: {args.episodes} episodes × {args.env_steps} env steps at 96 px (generate + encode "
        f"{prep_s:.0f} s); encoder {m['encoder']} at {enc_cfg.image_size} px → 8×8×64 latents; decoder output "
        f"{m['decoder']['grid'] * m['decoder']['patch_size']} px (patch {m['decoder']['patch_size']}); "
        f"{torch.get_num_threads()} torch thread(s), budget {args.minutes} min. Acceptance: gain ≥ 4 dB. "
        f"Reconstruction grids: {run / 'eval'}."
    )
    summary = {
        "heldout_psnr_db": round(m["psnr"], 3),
        "mean_image_psnr_db": round(m["mean_image_psnr"], 3),
        "psnr_gain_db": round(gain, 3),
        "heldout_ssim": round(m["ssim"], 4),
        "train_minutes": round(m["train_seconds"] / 60, 2),
        "epochs": round(m["epochs"], 2),
        "threads": torch.get_num_threads(),
        "accepted": bool(gain >= 4.0),
    }
    report("Decoder: Push-T held-out reconstruction (tiny-random latents, CPU)", md, summary, notes)


if __name__ == "__main__":
    main()
