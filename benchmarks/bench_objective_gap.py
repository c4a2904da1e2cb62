"""Why does the next-frame regression predict better than shortcut forcing at equal training compute? Objective
variants of the same model on the same data and steps, scored on held-out rollouts.

    python benchmarks/bench_objective_gap.py --cache CACHE --encoder E [--steps 2000] [--clip-len 8]
        [--variants shortcut,next,clean-context,ramp-weight,v,no-bootstrap,noise-shift,teacher-forcing,previous-frame,
         pure-noise,pure-noise-previous]
        [--reuse NAME=RUN,...] [--samples 4] [--clips 200] [--out runs/objective_gap] [--extra "ARGS"]
        [--episodes EPISODES [--rank-goals 20]] [--quick]

Every variant trains bench_conditioning's model (the cpu preset with 2×2-grouped tokens, the Push-T conditioning,
batch 16) for --steps steps on CACHE (resumed), then `latentwm eval` rolls it out on --clips held-out clips, horizon
1–4 after 4 context frames, at the checkpoint's K with --samples samples per clip. Variants (one setting each away
from the default):
- shortcut: shortcut forcing as the cpu preset configures it (x-prediction, diffusion-forcing levels, a flat loss
  weight over τ);
- next: the next-frame regression (model.prediction next; DINO-WM's teacher-forced MSE; deterministic);
- clean-context: objective.clean_context 0.5 (half the clips train on a clean prefix, the level sampling commits
  context at);
- ramp-weight: Dreamer 4's w(τ) = 0.9τ + 0.1 (objective.ramp_weight on: the nearly-pure-noise levels, where
  sampling starts and the actions decide the prediction, weigh 0.1–0.3);
- v: v-prediction (model.prediction v);
- no-bootstrap: objective.bootstrap_fraction 0 with model.k_max 4 (every clip on flow targets at the one step size
  the K = 4 sampler uses: what the compute buys when none goes to bootstrap targets for other step sizes);
- noise-shift: objective.noise_shift 8 (k_max and the bootstrap as the default; the pure-noise level, where
  sampling starts and the prediction must come from the context and actions, trains on 21 % of the flow frames
  instead of 1/32 — about no-bootstrap's 25 %, so the two separate that share from the step-size set);
- teacher-forcing: objective.teacher_forcing (every frame's context is the clean clip, as sampling's KV cache
  holds it, instead of noisy frames at their own levels) at half the batch: a clip costs two passes' worth, so
  the steps and the frames processed stay those of the others (equal compute).
- previous-frame: model.previous_frame (every latent token also embeds the same token of the frame before, clean —
  what the regression's inputs hold — instead of reaching the past only through the time blocks).
- pure-noise: the regression's task on the shortcut architecture — model.k_max 1, so every frame trains at τ = 0,
  d = 1 (no other level, no bootstrap; sampled at K = 1), with teacher forcing's clean history (diffusion forcing at
  one level would leave the history pure noise) at half the batch (equal compute). What is left of the gap to the
  regression is then the frame's input (noise instead of the frame), not the objective's spread over levels.
- pure-noise-previous: pure-noise with model.previous_frame (the frame before, clean, in every token, as the
  regression's input holds it): the regression's task and information on the shortcut architecture.
Scored: the network's own fit of frames 4–7 given the clean frames before them, sampler aside, on held-out and on
training clips (shortcut models: one pass from pure noise at the flow-trained step, the clean history in a
teacher-forced pass; the regression: its prediction), the one-sample error per horizon, the error of the mean of the
samples, and their extrapolation to infinitely many samples (error = bias + spread / N from N = 1 and N = samples:
the part no averaging removes), copy-last's, and the action sensitivity (error with another clip's actions − with
the true ones). With --episodes (the episodes the cache was encoded from), also whether the predictions resolve the
block: `planning.ladder.cost_rank_rows` on --rank-goals held-out planning goals × 48 random plans, the Spearman
correlation of the model's latent cost of its rollouts (at the checkpoint's K) with the block's true distance after
executing them in the simulator, beside the encoder's own latent cost on the simulator's frames (the ceiling).
--reuse NAME=RUN scores an existing run as variant NAME instead of training it (same data, model and steps, e.g. the
data-scaling point's); --extra: arguments added to every trained variant's `latentwm train` (to match reused runs,
e.g. their text width). --quick: a tiny cache and a few steps, printed, not recorded. Last line: JSON {"rows":
[...], ...}.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_conditioning import run, train_args  # noqa: E402
from common import report, table  # noqa: E402

from latentwm.conditions import History  # noqa: E402
from latentwm.config import GenerateConfig  # noqa: E402
from latentwm.data.batch import collate  # noqa: E402
from latentwm.data.clip_sets import model_clip_options  # noqa: E402
from latentwm.data.clips import LatentClipDataset  # noqa: E402
from latentwm.data.sources.pusht import generate_pusht  # noqa: E402
from latentwm.eval.metrics import latent_mse  # noqa: E402
from latentwm.io.files import write_json  # noqa: E402
from latentwm.planning.evaluate import WorldModelRun, held_out_episodes, sample_goals  # noqa: E402
from latentwm.planning.ladder import cost_rank_rows, summarize_ranks  # noqa: E402
from latentwm.planning.results import block_must_move  # noqa: E402

# one level (τ = 0, d = 1, sampled at K = 1) with clean histories, at half the batch (two streams per clip)
PURE_NOISE = ["--model.k-max", "1", "--objective.bootstrap-fraction", "0", "--objective.teacher-forcing",
              "--data.batch-size", "8", "--rollout.sample-steps", "1", "--plan.sample-steps", "1"]  # fmt: skip
VARIANTS = {
    "shortcut": [],
    "next": ["--model.prediction", "next"],
    "clean-context": ["--objective.clean-context", "0.5"],
    "ramp-weight": ["--objective.ramp-weight"],
    "v": ["--model.prediction", "v"],
    "no-bootstrap": ["--objective.bootstrap-fraction", "0", "--model.k-max", "4"],
    "noise-shift": ["--objective.noise-shift", "8"],
    "teacher-forcing": ["--objective.teacher-forcing", "--data.batch-size", "8"],
    "previous-frame": ["--model.previous-frame"],
    "pure-noise": PURE_NOISE,
    "pure-noise-previous": [*PURE_NOISE, "--model.previous-frame"],
}
HORIZON = 4


def score(run_dir: Path, out: Path, samples: int, clips: int) -> dict:
    """`latentwm eval` of a run (kept in `out`, recomputed only when missing); the figures the table shows."""
    f = out / "metrics.json"
    if not f.exists():
        run(["eval", "--checkpoint", str(run_dir), "--out-dir", str(out), "--num-samples", str(samples),
             "--max-clips", str(clips), "--videos", "0", "--context", "4", "--horizon", str(HORIZON)])  # fmt: skip
    m = json.loads(f.read_text())
    one = m.get("sample_error") or m["model_error"]
    mean = m.get("mean_of_samples_error") or one  # a deterministic model: one sample is every sample
    n = m.get("num_samples", 1)
    # error_N = bias + spread / N: two N's give both; the bias is what no number of samples removes
    bias = [o - (o - a) * n / (n - 1) if n > 1 else o for o, a in zip(one, mean)]
    return {
        "heldout_error": one,
        "mean_of_samples_error": mean,
        "bias_error": bias,
        "copy_last_error": m["copy_last_error"],
        "action_sensitivity": m["action_sensitivity"],
        "action_sensitivity_stderr": m.get("action_sensitivity_stderr"),
        "num_clips": m["num_clips"],
        "num_samples": n,
        "sample_steps": m["sample_steps"],
        "step": m["step"],
    }


@torch.no_grad()
def one_pass_error(run_dir: Path, out: Path, clips: int) -> dict:
    """How well the network itself fits the next frame, sampler aside (kept in `out`/one_pass.json): on `clips`
    held-out and `clips` training clips, frames 4..7 given the clean frames before them — shortcut models: x̂ of
    one pass from pure noise (τ = 0, d = 1/k_max, the flow-trained level) with the clean history in a teacher-forced
    pass (what sampling's KV cache holds); the regression: its x̂_{t+1}. Latent MSE per frame."""
    f = out / "one_pass.json"
    if not f.exists():
        run = WorldModelRun.load(run_dir)
        m, exp = run.model.eval(), run.exp
        dev = next(m.parameters()).device
        res = {}
        for split in ("eval", "train"):
            data = LatentClipDataset(exp.data.cache_dir, exp.data.clip_len, split, model_clip_options(exp))
            n = min(clips, len(data))
            stride = max(1, len(data) // n)
            errs = []
            for i in range(0, n, 25):
                b = collate([data[j * stride] for j in range(i, min(i + 25, n))], exp.model.action_dim)
                x, a, mk = b.latents.float().to(dev), b.actions.to(dev), b.action_mask.to(dev)
                kw = {} if b.text is None else {"text": b.text.to(dev), "text_mask": b.text_mask.to(dev)}
                if exp.model.prediction == "next":
                    pred = m(x, 1.0, 1.0 / exp.model.k_max, a, mk, **kw)[:, 3:7]
                else:
                    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(i)).to(dev)
                    lv = torch.zeros(x.shape[:2], device=dev)
                    pred = m(noise, lv, lv + 1.0 / exp.model.k_max, a, mk, history=History(x, stream=True), **kw)[
                        :, 4:8
                    ]
                errs.append(latent_mse(pred, x[:, 4:8]))
            res["heldout" if split == "eval" else "train"] = torch.cat(errs).mean(0).tolist()
        write_json(f, res)
    return json.loads(f.read_text())


def block_rank(run_dir: Path, out: Path, episodes: Path, goals: int, samples: int = 48) -> dict:
    """Does the run's prediction resolve the block? (kept in `out`/cost_rank.json, recomputed only when missing.)
    Mean Spearman correlation, over held-out goals where a random plan moved the block, of the block's true
    distance with the model's latent cost (at the checkpoint's K) and with the encoder's latent cost of the
    simulator's frames."""
    f = out / "cost_rank.json"
    if not f.exists():
        run = WorldModelRun.load(run_dir)
        d, k = run.exp.data, run.exp.rollout.sample_steps
        plan_cfg = dataclasses.replace(run.exp.plan, num_goals=goals)
        gs = sample_goals(held_out_episodes(episodes, d.cache_dir, d.eval_fraction, d.seed), goals,
                          plan_cfg.goal_offset, plan_cfg.seed)  # fmt: skip
        rows = cost_rank_rows(run, gs, plan_cfg, samples, (k,), log=lambda m: None)
        summary = summarize_ranks(rows, [block_must_move(g) for g in gs])
        model = f"model K={k} latent" if f"model K={k} latent" in summary else f"model K={k}"
        write_json(f, {"model": summary[model], "simulator_latent": summary["latent"], "sample_steps": k,
                       "goals": goals, "samples": samples, "summary": summary})  # fmt: skip
    r = json.loads(f.read_text())
    return {"block_rank": r["model"]["block_rank_corr"],
            "sim_latent_block_rank": r["simulator_latent"]["block_rank_corr"],
            "rank_goals": r["goals"], "rank_k": r["sample_steps"]}  # fmt: skip


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", default="")
    ap.add_argument("--encoder", default="tiny-random", help="the encoder the cache was encoded with")
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--clip-len", type=int, default=8)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--reuse", default="", help="NAME=RUN,...: score these runs instead of training them")
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--clips", type=int, default=200)
    ap.add_argument("--out", default="runs/objective_gap")
    ap.add_argument("--extra", default="", help="arguments added to every trained variant's `latentwm train`")
    ap.add_argument("--episodes", default="", help="the cache's episodes: also score the block cost rank")
    ap.add_argument("--rank-goals", type=int, default=20)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    out = Path(args.out)
    cache = Path(args.cache) if args.cache else out / "latents"
    if args.quick and not args.cache:
        eps = out / "episodes"
        if not (eps / "generate.json").exists():
            generate_pusht(GenerateConfig(out_dir=str(eps), num_episodes=8, max_steps=60, workers=1),
                           show_progress=False)  # fmt: skip
        run(["encode", "--root", str(eps), "--out-dir", str(cache), "--encoder.name", args.encoder,
             "--encoder.image-size", "112", "--text.name", ""])  # fmt: skip
    steps, clips = (4, 8) if args.quick else (args.steps, args.clips)
    reuse = dict(kv.split("=", 1) for kv in args.reuse.split(",") if kv)
    rows = []
    for name in args.variants.split(","):
        if name not in VARIANTS:
            raise SystemExit(f"bench_objective_gap: unknown variant {name!r}; known: {', '.join(VARIANTS)}")
        d = Path(reuse[name]) if name in reuse else out / name
        if name not in reuse:
            run([*train_args(cache, d, steps), "--data.clip-len", str(args.clip_len), "--encoder.name", args.encoder,
                 *(["--data.eval-fraction", "0.4"] if args.quick else []), *shlex.split(args.extra),
                 *VARIANTS[name]])  # fmt: skip
        row = {"variant": name, "run": str(d), **score(d, out / f"eval_{name}", args.samples, clips)}
        row["one_pass_error"] = one_pass_error(d, out / f"eval_{name}", clips)
        if args.episodes:
            row |= block_rank(d, out / f"eval_{name}", Path(args.episodes), 2 if args.quick else args.rank_goals)
        rows.append(row)
    flat = [
        {
            "variant": r["variant"],
            **{f"h{h}": r["heldout_error"][h - 1] for h in (1, HORIZON)},
            **{f"mean_of_{r['num_samples']}_h{h}": r["mean_of_samples_error"][h - 1] for h in (1, HORIZON)},
            **{f"bias_h{h}": r["bias_error"][h - 1] for h in (1, HORIZON)},
            "copy_last_h1": r["copy_last_error"][0],
            "action_sensitivity": r["action_sensitivity"],
            "one_pass_h1": r["one_pass_error"]["heldout"][0],
            "one_pass_train_h1": r["one_pass_error"]["train"][0],
            **(
                {"block_rank": r["block_rank"], "sim_latent_block_rank": r["sim_latent_block_rank"]}
                if "block_rank" in r
                else {}
            ),  # fmt: skip
        }
        for r in rows
    ]
    cols = list(dict.fromkeys(k for f in flat for k in f))
    notes = (
        f"cache {cache}, encoder {args.encoder}; the cpu preset with 2×2-grouped tokens, proprio channels and "
        f"relative actions, batch 16, clips of {args.clip_len}, {steps} steps per variant, seed 0"
        + (f" (reused runs: {', '.join(f'{k} = {v}' for k, v in reuse.items())})" if reuse else "")
        + f"; held-out rollouts on {clips} clips, 4 context frames, at the checkpoint's K with {args.samples} samples "
        "per clip. h*: one sample's latent MSE at that horizon; mean_of_*: the samples' mean; bias_*: extrapolated "
        "to infinitely many samples (error = bias + spread / N); action_sensitivity: error with another clip's "
        "actions − with the true ones (mean over horizons). one_pass_h1 / one_pass_train_h1: the network's own fit "
        "of the first predicted frame, sampler aside, on held-out / training clips — one pass from pure noise at "
        "the flow-trained step with the clean history (teacher-forced pass: the cache sampling builds); the "
        "regression's x̂_{t+1}."
        + (
            f" block_rank: Spearman correlation of the model's latent cost (at its K) with the block's true distance "
            f"over {args.rank_goals} held-out goals × 48 random plans executed in the simulator; "
            "sim_latent_block_rank: the encoder's latent cost of the simulator's frames (the ceiling)."
            if args.episodes
            else ""
        )
        + (f" Extra training arguments: {args.extra}." if args.extra else "")
    )
    report("bench_objective_gap: shortcut forcing vs next-frame regression at equal compute", table(flat, cols),
           {"rows": rows, "quick": args.quick}, notes, record=not args.quick)  # fmt: skip


if __name__ == "__main__":
    main()
