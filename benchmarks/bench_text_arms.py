"""How fast does the model learn to follow text instead of actions? Training arms on the same Push-T data, each
condition's held-out gain measured with the other condition removed, against training steps.

    python benchmarks/bench_text_arms.py --episodes EPISODES [--steps 2000] [--eval-every 200]
                                         [--arms joint,text-only,action-only,motion-class] [--encoder E]
                                         [--out runs/text_arms] [--quick]

EPISODES: a `latentwm generate pusht` folder (its narrations: one sentence per 20-step segment, training
paraphrases; held-out paraphrases kept apart). It is encoded twice with the same frozen image encoder (--encoder,
default the cpu preset's): sentences through all-MiniLM-L6-v2 (`minilm`), and as the one-hot motion class the
sentence was generated from (`pusht-motion-class`, no language). Arms (one model each; same seed, data, steps):
- joint: actions and text, action dropout 0.5 (half the clips are text-only in training);
- text-only: actions always null (action dropout 1), text dropout 0.1;
- action-only: text always null (text dropout 1), action dropout 0.1;
- motion-class: the joint arm on the one-hot cache: does the conditioning path learn when no language encoder
  stands in the way?
Every evaluation (--eval-every) logs, on held-out clips, each condition's gain (error with another clip's future
condition − with the true one, noise-matched) with the other condition present and alone (removed from the whole
clip): eval/{text,action}{,_alone}_gain_mean ± stderr (eval/metrics.py). Scored per arm: the final gains with their
standard errors and the step each alone-gain first reaches half its final value, with an interval (the steps where
gain + 2 s.e. and gain − 2 s.e. first reach it). Every stage resumes. --quick: tiny sizes, printed, not recorded.
Last line: JSON {"rows": [...], ...}.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_conditioning import run, train_args  # noqa: E402
from common import report, table  # noqa: E402

from latentwm.config import GenerateConfig  # noqa: E402
from latentwm.data.sources.pusht import generate_pusht  # noqa: E402
from latentwm.encoders.text import MOTION_CLASS, MotionClassEncoder  # noqa: E402
from latentwm.report.text import gain_curves, half_gain_interval  # noqa: E402

ARMS = {
    "joint": ("minilm", ["--objective.action-dropout", "0.5", "--objective.text-dropout", "0.1"]),
    "text-only": ("minilm", ["--objective.action-dropout", "1.0", "--objective.text-dropout", "0.1"]),
    "action-only": ("minilm", ["--objective.action-dropout", "0.1", "--objective.text-dropout", "1.0"]),
    "motion-class": (MOTION_CLASS, ["--objective.action-dropout", "0.5", "--objective.text-dropout", "0.1"]),
}
TEXT_DIM = {"minilm": 384, MOTION_CLASS: MotionClassEncoder().dim}


def arm(out: Path, name: str, episodes: Path, steps: int, every: int, encoder: str, extra: list[str]) -> dict:
    """Encode (once per text encoder) and train one arm (resumed); its gains from the run's log."""
    text, flags = ARMS[name]
    cache = out / f"latents_{'minilm' if text == 'minilm' else 'motion'}"
    run(["encode", "--root", str(episodes), "--out-dir", str(cache), "--encoder.name", encoder,
         "--encoder.image-size", "112", "--text.name", text])  # fmt: skip
    d = out / name
    run([*train_args(cache, d, steps, every), "--model.text-dim", str(TEXT_DIM[text]), "--encoder.name", encoder,
         *flags, *extra])  # fmt: skip
    gains, errs = gain_curves(d), gain_curves(d, "gain_stderr")
    row: dict = {"arm": name, "text": text, "steps": steps}
    for cond in ("text", "action", "text_alone", "action_alone"):
        curve, se = gains.get(cond, []), dict(errs.get(cond, []))
        row[f"{cond}_gain"] = curve[-1][1] if curve else None
        row[f"{cond}_gain_stderr"] = se.get(curve[-1][0]) if curve else None
        row[f"{cond}_curve"] = curve
        row[f"{cond}_half_gain"] = half_gain_interval(curve, se) if curve else None
    return row


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--episodes", default="")
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--eval-every", type=int, default=200)
    ap.add_argument("--arms", default=",".join(ARMS))
    ap.add_argument("--encoder", default="tiny-random")
    ap.add_argument("--out", default="runs/text_arms")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    out = Path(args.out)
    episodes = Path(args.episodes) if args.episodes else out / "episodes"
    if args.quick and not args.episodes and not (episodes / "generate.json").exists():
        generate_pusht(GenerateConfig(out_dir=str(episodes), num_episodes=8, max_steps=60, workers=1),
                       show_progress=False)  # fmt: skip
    steps, every = (4, 2) if args.quick else (args.steps, args.eval_every)
    extra = ["--data.eval-fraction", "0.4"] if args.quick else []  # a few held-out clips to shuffle between
    rows = [arm(out, a, episodes, steps, every, args.encoder, extra) for a in args.arms.split(",")]
    cols = ["arm", "text_alone_gain", "text_alone_gain_stderr", "text_gain", "action_alone_gain", "action_gain"]
    flat = [{c: r[c] for c in cols} | {"text_alone_half_gain": json.dumps(r["text_alone_half_gain"])} for r in rows]
    notes = (
        f"{len(list(episodes.glob('*.npz')))} Push-T episodes ({episodes}); encoder {args.encoder} (frozen, "
        f"112 px); cpu preset with 2×2-grouped tokens, batch 16, {steps} steps per arm, evaluation every {every} "
        f"steps; *_alone: the condition's gain with the other removed from the whole clip; text_alone_half_gain: "
        f"[step, low, high], the step the alone text gain first reaches half its final value and its interval."
    )
    report("bench_text_arms: following text instead of actions", table(flat, list(flat[0])),
           {"rows": rows, "quick": args.quick}, notes, record=not args.quick)  # fmt: skip


if __name__ == "__main__":
    main()
