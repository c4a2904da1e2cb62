"""What the text condition costs: training throughput with the text slot vs without, guided vs unguided sampling,
and the encode stage's sentence-embedding throughput.

    python benchmarks/bench_text.py [--preset cpu] [--steps 8] [--episodes 4]

- Training: one optimizer step (shortcut-forcing loss, backward, AdamW) of the preset's model with model.text_dim
  = 384 and a per-frame text batch vs model.text_dim = 0 (no slot, no text), the two timed alternately in the same
  run (the ratio, not the absolute numbers, is the result). Target ≥ 0.95×.
- Sampling: a K-step rollout (context 4, horizon 8) of a batch of 16 with text_guidance 1 (one branch) vs 3 (the
  conditional and the no-text branch batched in one step) and with text and action guidance (three branches).
  Target ≤ 2.0× for one guided condition.
- Encode: all-MiniLM-L6-v2 (the `[text]` extra) sentences/s on the Push-T language's sentences, and per generated
  Push-T episode the time to embed its unique narrations next to the time to encode its frames with the preset's
  DINO encoder.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import median_time, report, table  # noqa: E402

from latentwm.conditions import Conditions  # noqa: E402
from latentwm.config import GenerateConfig, TextEncoderConfig, get_preset  # noqa: E402
from latentwm.data.batch import collate  # noqa: E402
from latentwm.data.sources.pusht import generate_pusht, load_pusht  # noqa: E402
from latentwm.data.sources.synthetic import MovingBlobClips  # noqa: E402
from latentwm.encoders.dino import DinoEncoder  # noqa: E402
from latentwm.encoders.text import TextEncoder  # noqa: E402
from latentwm.envs.pusht_language import heldout_sentences, train_sentences  # noqa: E402
from latentwm.model.dynamics import DynamicsModel  # noqa: E402
from latentwm.objectives.shortcut_forcing import ShortcutForcing, TrainStep  # noqa: E402
from latentwm.rollout import Sampling, rollout  # noqa: E402


def training(preset: str, steps: int, device) -> list[dict]:
    cfg = get_preset(preset)
    m, B, T = cfg.model, cfg.data.batch_size, cfg.data.clip_len
    data = MovingBlobClips(grid=m.latent_grid, dim=m.frame_dim, frames=T)
    batch = collate([data[i] for i in range(B)], m.action_dim).to(device)
    g = torch.Generator().manual_seed(0)
    text = torch.nn.functional.normalize(torch.randn(B, T, 384, generator=g), dim=-1).to(device)
    text_mask = (torch.rand(B, T, generator=g) > 0.2).to(device)
    runs = {}
    for name, dim in (("with text slot", 384), ("without", 0)):
        torch.manual_seed(0)
        model = DynamicsModel(dataclasses.replace(m, text_dim=dim)).to(device)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        obj = ShortcutForcing(cfg.objective, m.k_max)
        cond = batch.conditions.replace(text=text, text_mask=text_mask) if dim else batch.conditions

        def step(model=model, opt=opt, obj=obj, cond=cond):
            loss, _ = obj(model, batch.latents, cond, batch.valid, TrainStep(1, seeds=list(range(B))))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        runs[name] = (step, model)
    times = {n: [] for n in runs}
    for fn, _ in runs.values():  # warm-up
        fn()
    for _ in range(steps):  # alternate, so drift in machine load hits both alike
        for n, (fn, _) in runs.items():
            t = time.perf_counter()
            fn()
            times[n].append(time.perf_counter() - t)
    return [
        {
            "part": "train step",
            "variant": n,
            "params": runs[n][1].num_parameters(),
            "seconds": float(np.median(times[n])),
            "frames_per_s": B * T / float(np.median(times[n])),
        }
        for n in runs
    ]


def sampling(preset: str, repeats: int, device) -> list[dict]:
    cfg = get_preset(preset)
    torch.manual_seed(0)
    model = DynamicsModel(cfg.model).to(device).eval()
    B, C, H, m = 16, 4, 8, cfg.model
    ctx = torch.randn(B, C, m.num_latent_tokens, m.frame_dim, device=device)
    acts = torch.randn(B, C + H - 1, m.action_dim, device=device)
    text = torch.randn(B, m.text_dim, device=device)
    noise = torch.randn(B, H, m.num_latent_tokens, m.frame_dim, device=device)
    rows = []
    for name, tg, ag in (("unguided", 1.0, 1.0), ("text guidance 3", 3.0, 1.0), ("text 3 + action 2", 3.0, 2.0)):
        t = median_time(
            lambda tg=tg, ag=ag: rollout(
                model,
                ctx,
                H,
                Conditions(acts, text=text, text_guidance=tg, action_guidance=ag),
                Sampling(4),
                noise=noise,
            ),
            repeats=repeats,
        )
        rows.append({"part": "rollout B16 C4 H8 K4", "variant": name, "seconds": t, "frames_per_s": B * H / t})
    return rows


def encoding(preset: str, episodes: int) -> tuple[list[dict], dict]:
    cfg = get_preset(preset)
    t0 = time.perf_counter()
    enc = TextEncoder.from_config(TextEncoderConfig())
    load_s = time.perf_counter() - t0
    sentences = train_sentences() + heldout_sentences()
    enc.embed(sentences[:8])
    t = median_time(lambda: enc.embed(sentences), repeats=3)
    dino = DinoEncoder.from_config(cfg.encoder)
    rows = [
        {
            "part": "MiniLM embed",
            "variant": f"{len(sentences)} Push-T sentences",
            "seconds": t,
            "sentences_per_s": len(sentences) / t,
        }
    ]
    per_ep = []
    with tempfile.TemporaryDirectory() as tmp:
        generate_pusht(
            GenerateConfig(out_dir=str(tmp), num_episodes=episodes, max_steps=200, image_size=cfg.encoder.image_size),
            show_progress=False,
        )
        for _, load in load_pusht(tmp):
            ep = load()
            uniq = sorted({s for key in ("narrations", "narrations_heldout") for _, _, s in ep.extras[key]})
            frames = next(iter(ep.frames.values()))
            te = median_time(lambda uniq=uniq: enc.embed(uniq), repeats=3)
            tl = median_time(lambda frames=frames: dino.encode(frames), repeats=1, warmup=0)
            per_ep.append((len(uniq), te, tl, len(frames)))
    n, te, tl, nf = (float(np.mean([p[i] for p in per_ep])) for i in range(4))
    rows.append(
        {
            "part": "encode one Push-T episode",
            "variant": f"{n:.0f} unique sentences vs {nf:.0f} frames",
            "seconds": te,
            "text_share_of_encode": te / (te + tl),
        }
    )
    return rows, {
        "text_encoder_load_s": load_s,
        "sentences_per_s": len(sentences) / t,
        "episode_text_s": te,
        "episode_frames_s": tl,
        "text_share_of_encode": te / (te + tl),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--episodes", type=int, default=4)
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    train_rows = training(args.preset, args.steps, device)
    sample_rows = sampling(args.preset, max(3, args.steps // 2), device)
    enc_rows, enc = encoding(args.preset, args.episodes)
    rows = train_rows + sample_rows + enc_rows
    slot = train_rows[0]["frames_per_s"] / train_rows[1]["frames_per_s"]
    guided = sample_rows[1]["seconds"] / sample_rows[0]["seconds"]
    both = sample_rows[2]["seconds"] / sample_rows[0]["seconds"]
    summary = {
        "preset": args.preset,
        "device": device.type,
        "train_frames_per_s_ratio_text_vs_none": slot,
        "guided_sampling_cost_ratio": guided,
        "guided_two_conditions_cost_ratio": both,
        **enc,
    }
    notes = (
        f"Training with the text slot runs at {slot:.3f}× the frames/s of the model without it (target ≥ 0.95); "
        f"text-guided sampling costs {guided:.2f}× unguided (target ≤ 2.0), text + action guidance {both:.2f}×. "
        f"MiniLM embeds {enc['sentences_per_s']:.0f} sentences/s; a Push-T episode's sentences take "
        f"{100 * enc['text_share_of_encode']:.1f}% of its encode time."
    )
    cols = ["part", "variant", "params", "seconds", "frames_per_s", "sentences_per_s", "text_share_of_encode"]
    report(f"bench_text: the text condition's cost ({args.preset} preset)", table(rows, cols), summary, notes)


if __name__ == "__main__":
    main()
