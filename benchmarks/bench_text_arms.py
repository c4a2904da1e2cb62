"""How fast does the model learn to follow text instead of actions? Training arms on the same Push-T data, each
condition's held-out gain measured with the other condition removed, against training steps.

    python benchmarks/bench_text_arms.py --episodes EPISODES [--steps 2000] [--eval-every 200]
                                         [--arms joint,text-only,action-only,motion-class] [--encoder E]
                                         [--out runs/text_arms] [--narration direction|magnitude]
                                         [--floor-draws 20] [--quick]

EPISODES: a `latentwm generate pusht` folder (its narrations: one sentence per 20-step segment, training
paraphrases; held-out paraphrases kept apart; --narration magnitude: the sentences that say how far and which way,
`pusht_language`'s magnitude style, read from the same states into <out>/magnitude/). It is encoded twice with the
same frozen image encoder (--encoder, default the cpu preset's): sentences through all-MiniLM-L6-v2 (`minilm`), and
as the one-hot motion class the sentence was generated from (`pusht-motion-class[-magnitude]`, no language).
Arms (one model each; same seed, data, steps):
- joint: actions and text, action dropout 0.5 (half the clips are text-only in training);
- text-only: actions always null (action dropout 1), text dropout 0.1;
- action-only: text always null (text dropout 1), action dropout 0.1;
- motion-class: the joint arm on the one-hot cache: does the conditioning path learn when no language encoder
  stands in the way?
Every evaluation (--eval-every) logs, on held-out clips, each condition's gain (error with another clip's future
condition − with the true one, noise-matched) with the other condition present and alone (removed from the whole
clip): eval/{text,action}{,_alone}_gain_mean ± stderr (eval/metrics.py). Scored per arm: the final gains with their
standard errors and the step each alone-gain first reaches half its final value, with an interval (the steps where
gain + 2 s.e. and gain − 2 s.e. first reach it); each arm's run folder gets a metrics.json with the demo's `text` /
`action` sections (`text.alone.half_gain_step`, ...; the rows' `text.half_gain_step` / `action.half_gain_step` are
the alone ones). The floor: an arm never trained on a condition still "gains" from it (its input layer is a random
projection of the condition, correlated with the future by chance); the text-only arm's action path and the
action-only arm's text path are redrawn --floor-draws times and scored the same way (untrained_floor), the spread a
trained gain must exceed. Every stage resumes. --quick: tiny sizes, printed, not recorded.
Last line: JSON {"rows": [...], ...}.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Subset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_conditioning import run, train_args  # noqa: E402
from common import report, table  # noqa: E402

from latentwm.config import GenerateConfig, ProbeConfig  # noqa: E402
from latentwm.data.clip_sets import model_clip_options  # noqa: E402
from latentwm.data.clips import LatentClipDataset, eval_loader  # noqa: E402
from latentwm.data.proprio import proprio_stats_of  # noqa: E402
from latentwm.data.sources.pusht import generate_pusht  # noqa: E402
from latentwm.encoders.text import (  # noqa: E402
    MOTION_CLASS,
    MOTION_CLASS_MAGNITUDE,
    MotionClassEncoder,
    open_text_encoder,
)
from latentwm.engine.checkpoint import load_world_model  # noqa: E402
from latentwm.eval.metrics import EvalOptions, rollout_errors  # noqa: E402
from latentwm.io.files import write_json  # noqa: E402
from latentwm.model.dynamics import DynamicsModel  # noqa: E402
from latentwm.planning.state_probe import STATE_PROBE_CONFIG, StateProbe, train_state_probe  # noqa: E402
from latentwm.planning.text_meaning import MeaningCheck, direction_accuracy, wording_readout  # noqa: E402
from latentwm.report.text import (  # noqa: E402
    ARMS_FILE,
    above_3se_h4_8,
    arms_answer,
    arms_section,
    gain_curves,
    half_gain_interval,
    text_metrics,
)
from latentwm.rollout import Sampling  # noqa: E402

ARMS = {
    "joint": ("minilm", ["--objective.action-dropout", "0.5", "--objective.text-dropout", "0.1"]),
    "text-only": ("minilm", ["--objective.action-dropout", "1.0", "--objective.text-dropout", "0.1"]),
    "action-only": ("minilm", ["--objective.action-dropout", "0.1", "--objective.text-dropout", "1.0"]),
    "motion-class": (MOTION_CLASS, ["--objective.action-dropout", "0.5", "--objective.text-dropout", "0.1"]),
}
MOTION = {"direction": MOTION_CLASS, "magnitude": MOTION_CLASS_MAGNITUDE}
"""The motion-class control of each narration style (encoders/text.py MotionClassEncoder)."""


@dataclass(frozen=True)
class Sweep:
    """One training-arms sweep: the data, the arms' shared settings and where they go."""

    out: Path
    episodes: Path
    steps: int
    every: int
    encoder: str
    narration: str = "direction"
    """The Push-T reader's narration style: "direction" (the stored templates) or "magnitude" (sentences that say
    how far and which way: pusht_language's magnitude style); another style's caches, arms and results go to
    <out>/<style>/."""
    quick: bool = False
    floor_draws: int = 0
    """Redraws of the untrained condition path of the text-only and action-only arms (untrained_floor); 0: none."""

    def folder(self, name: str) -> Path:
        """<out>/<name> for the stored narration, <out>/<style>/<name> for another (name "": the sweep's folder)."""
        return (self.out if self.narration == "direction" else self.out / self.narration) / name


def arm(sw: Sweep, name: str) -> dict:
    """Encode (once per text encoder and narration style) and train one arm (resumed); its gains from the run's
    log, its final model's per-horizon gains and the meaning check."""
    text, flags = ARMS[name]
    text = MOTION[sw.narration] if text == MOTION_CLASS else text
    cache = sw.folder(f"latents_{'minilm' if text == 'minilm' else 'motion'}")
    run(["encode", "--root", str(sw.episodes), "--out-dir", str(cache), "--encoder.name", sw.encoder,
         "--encoder.image-size", "112", "--text.name", text,
         *(["--options", f"narration={sw.narration}"] if sw.narration != "direction" else [])])  # fmt: skip
    d = sw.folder(name)
    text_dim = 384 if text == "minilm" else MotionClassEncoder(sw.narration).dim
    run([*train_args(cache, d, sw.steps, sw.every), "--model.text-dim", str(text_dim), "--encoder.name", sw.encoder,
         *flags, *(["--data.eval-fraction", "0.4"] if sw.quick else [])])  # fmt: skip
    gains, errs = gain_curves(d), gain_curves(d, "gain_stderr")
    row: dict = {"arm": name, "text": text, "steps": sw.steps}
    row["direction"] = meaning(sw.folder(""), cache, d, sw.steps, sw.quick)
    if text == "minilm" and name != "action-only":  # an arm that learns sentences: on the wording it saw, too
        row["wording_gain"] = seen_wording_gain(cache, d, sw.steps, sw.quick)
    if sw.floor_draws and name in UNTRAINED:
        row["untrained_floor"] = untrained_floor(cache, d, UNTRAINED[name], sw.steps, sw.floor_draws, sw.quick)
    # the arm's metrics.json, as a demo run's: text / action sections with half_gain_step, alone ones inside, and
    # the final model's per-horizon gains with the other condition removed (text_only_gain / action_only_gain)
    sections = text_metrics(d, d, horizon_gains(cache, d, sw.steps, sw.quick), None, row["direction"])
    (d / "metrics.json").write_text(json.dumps(sections, indent=1))
    for cond in ("text", "action"):
        row[f"{cond}.half_gain_step"] = (sections[cond].get("alone") or {}).get("half_gain_step")
        row[f"{cond}_only_gain"] = sections[cond].get(f"{cond}_only_gain")
    for cond in ("text", "action", "text_alone", "action_alone"):
        curve, se = gains.get(cond, []), dict(errs.get(cond, []))
        row[f"{cond}_gain"] = curve[-1][1] if curve else None
        row[f"{cond}_gain_stderr"] = se.get(curve[-1][0]) if curve else None
        row[f"{cond}_curve"] = curve
        row[f"{cond}_stderr_curve"] = [[st, se.get(st)] for st, _ in curve]
        row[f"{cond}_half_gain"] = half_gain_interval(curve, se) if curve else None
    return row


def meaning(out: Path, cache: Path, run_dir: Path, steps: int, quick: bool = False) -> dict:
    """The meaning check of the arm's final model (planning/text_meaning.py): direction accuracy of text-only
    futures (context 4, horizon 4; K = the run's rollout steps) on held-out clips, beside chance (shuffled
    sentences), the true future's (ceiling) and the null-text rollout's. One state probe per cache (the pose
    reader, fitted once on its training frames). Cached in the run folder, keyed on the step count."""
    f = run_dir / "meaning.json"
    if f.exists() and json.loads(f.read_text()).get("steps") == steps:
        return json.loads(f.read_text())["direction"]
    model, exp, state = load_world_model(run_dir)
    probe_file = out / f"state_probe_{cache.name}.safetensors"
    if probe_file.exists():
        probe = StateProbe.load(probe_file)
    else:
        cfg = ProbeConfig(steps=50, clips=64) if quick else STATE_PROBE_CONFIG
        probe, metrics = train_state_probe(cache, exp, cfg)
        probe.save(probe_file, metrics)
    data = LatentClipDataset(str(cache), 8, "eval", model_clip_options(exp))
    check = MeaningCheck(context=4, horizon=4, clips=40 if quick else 300, sampling=Sampling(exp.rollout.sample_steps))
    res = direction_accuracy(model, probe, data, check, proprio_stats_of(state["data_stats"], exp.model))
    f.write_text(json.dumps({"steps": steps, "direction": res}, indent=1))
    return res


HORIZON = 8
"""The final per-horizon evaluation's length: the issue's test reads horizons 4–8."""
HORIZON_CLIPS = 480
"""At most this many held-out clips (evenly spaced over the split) in the per-horizon evaluation."""


def _final_eval(cache: Path, exp, quick: bool, gain: tuple[str, ...], heldout_text: bool = True) -> tuple:
    """The final evaluations' held-out clips (at most HORIZON_CLIPS, evenly spaced; held-out paraphrases, or with
    heldout_text False the training wording of the same clips) as a function making a fresh loader (a loader is
    consumed by one evaluation), and their options (condition gains of `gain`)."""
    r = exp.rollout
    opts = dataclasses.replace(model_clip_options(exp, text=True), heldout_text=heldout_text)
    data = LatentClipDataset(str(cache), r.context + HORIZON, "eval", opts)
    n = min(len(data), 24 if quick else HORIZON_CLIPS)
    if n == 0:
        raise SystemExit(f"bench_text_arms: no held-out clip of {r.context + HORIZON} frames in {cache}")
    picked = Subset(data, [round(i * len(data) / n) for i in range(n)])
    opts = EvalOptions(seed=exp.train.seed, condition_gain=gain, text_guidance=r.text_guidance,
                       sample_steps=r.sample_steps)  # fmt: skip
    return (lambda: eval_loader(picked, exp.model.action_dim)), opts


def horizon_gains(cache: Path, run_dir: Path, steps: int, quick: bool = False) -> dict:
    """The arm's final model (EMA) rolled out HORIZON frames after the run's context on held-out clips (held-out
    paraphrases), each condition's gain per horizon with the other present and removed from the whole clip
    (rollout_errors' condition gain: another clip's condition − the true one, same noise), with standard errors.
    Cached in the run folder, keyed on the step count."""
    f = run_dir / "horizon_eval.json"
    if f.exists() and json.loads(f.read_text()).get("steps") == steps:
        return json.loads(f.read_text())["eval"]
    model, exp, _ = load_world_model(run_dir)
    loader, opts = _final_eval(cache, exp, quick, ("text", "action"))
    res = rollout_errors(model, loader(), exp.rollout.context, HORIZON, opts)
    f.write_text(json.dumps({"steps": steps, "eval": res}, indent=1, default=float))
    return res


def _mean_gain(g: dict) -> float:
    """A condition gain of rollout_errors ({gain: per horizon, ...}) as its mean over horizons."""
    return sum(g["gain"]) / len(g["gain"])


def seen_wording_gain(cache: Path, run_dir: Path, steps: int, quick: bool = False) -> dict:
    """The arm's text-alone gain on the same held-out clips, noise and horizons as horizon_gains, with each frame's
    training wording in place of its held-out paraphrase: {by_horizon, stderr (of the mean over horizons), mean}
    beside the held-out wording's mean. What separates "the model learned the sentences" from "its text encoder
    carries them to new wording". Cached in the run folder, keyed on the step count."""
    f = run_dir / "wording_eval.json"
    if f.exists() and json.loads(f.read_text()).get("steps") == steps:
        return json.loads(f.read_text())["wording"]
    held = horizon_gains(cache, run_dir, steps, quick)["condition_gain"]["text_alone"]
    model, exp, _ = load_world_model(run_dir)
    loader, opts = _final_eval(cache, exp, quick, ("text",), heldout_text=False)
    seen = rollout_errors(model, loader(), exp.rollout.context, HORIZON, opts)["condition_gain"]["text_alone"]
    res = {k: {"by_horizon": g["gain"], "mean": _mean_gain(g), "stderr": g["gain_stderr"]}
           for k, g in (("seen", seen), ("heldout", held))}  # fmt: skip
    f.write_text(json.dumps({"steps": steps, "wording": res}, indent=1, default=float))
    return res


UNTRAINED = {"text-only": "action", "action-only": "text"}
"""The condition each arm never trains on (always null): its input layer stays as initialized."""


def untrained_floor(cache: Path, run_dir: Path, cond: str, steps: int, draws: int, quick: bool = False) -> dict:
    """What an untrained condition path 'gains': the arm never saw `cond`, so its input layer (`{cond}_in`) is a
    random projection, and a random projection of the true condition correlates with the future by chance — with a
    sign and size set by the draw, not by learning. The floor: the alone gain (mean over horizons 1–HORIZON, same
    clips and noise as horizon_gains) with that layer redrawn `draws` times (seeds 1..draws, rescaled to the saved
    layer's norm) beside the saved layer's; a trained condition's gain means listening only beyond this spread.
    Two controls say what the saved layer is: its cosine with the arm's own initial draw (the trainer's seed, the
    model rebuilt: 1 = never moved by a gradient, only shrunk by weight decay), and the saved layer with its output
    rows permuted (its values kept, any alignment with the trained network's directions destroyed). The saved layer
    is scored in the same loop as the redraws, so no difference of evaluation path can separate them.
    Cached in the run folder, keyed on the step count and the draws."""
    f = run_dir / f"floor_{cond}.json"
    if f.exists() and (kept := json.loads(f.read_text())).get("key") == [steps, draws, FLOOR_VERSION]:
        return kept["floor"]
    final = horizon_gains(cache, run_dir, steps, quick)["condition_gain"][f"{cond}_alone"]
    model, exp, _ = load_world_model(run_dir)
    layer = getattr(model, f"{cond}_in")
    saved = layer.weight.detach().clone()
    torch.manual_seed(exp.train.seed)  # the trainer's: the arm's initial weights, drawn again
    init = getattr(DynamicsModel(exp.model), f"{cond}_in").weight.detach()
    loader, opts = _final_eval(cache, exp, quick, (cond,))

    def score(w: torch.Tensor) -> tuple[float, float]:
        with torch.no_grad():
            layer.weight.copy_(w)
        g = rollout_errors(model, loader(), exp.rollout.context, HORIZON, opts)["condition_gain"][f"{cond}_alone"]
        return _mean_gain(g), g["gain_stderr"]

    saved_gain, saved_se = score(saved)
    gains, stderrs = [], []
    for seed in range(1, draws + 1):
        w = torch.randn(saved.shape, generator=torch.Generator().manual_seed(seed))
        g, se = score(w * (saved.norm() / w.norm()))
        gains.append(g)
        stderrs.append(se)
    permuted = [
        score(saved[torch.randperm(saved.shape[0], generator=torch.Generator().manual_seed(seed))])[0]
        for seed in range(1, min(draws, 2) + 1)
    ]
    mean = sum(gains) / len(gains)
    sd = (sum((g - mean) ** 2 for g in gains) / max(1, len(gains) - 1)) ** 0.5
    floor = {
        "condition": cond,
        "saved_layer_gain": saved_gain,
        "saved_layer_gain_stderr": saved_se,
        "final_eval_gain": _mean_gain(final),
        "saved_init_cosine": float(torch.nn.functional.cosine_similarity(saved.flatten(), init.flatten(), dim=0)),
        "saved_init_norm_ratio": float(saved.norm() / init.norm()),
        "permuted_gains": permuted,
        "redrawn_gains": gains,
        "redrawn_stderrs": stderrs,
        "mean": mean,
        "sd": sd,
        "max_abs": max(abs(g) for g in gains),
        "draws": draws,
    }
    f.write_text(json.dumps({"key": [steps, draws, FLOOR_VERSION], "floor": floor}, indent=1))
    return floor


FLOOR_VERSION = 2
"""Bumped when the floor's measurement changes (2: the saved layer scored in the redraws' loop, its initial draw's
cosine and permuted rows), so an older cached floor is measured again."""


FIGURES = Path(__file__).resolve().parent / "figures"
"""Where a recorded run draws its curves, one figure per data size (the RESULTS.md entry links it)."""


def plot(rows: list[dict], path: Path, trajectories: int) -> Path:
    """Two panels against training steps, one line per arm with a ±2 standard-error band: the text's gain with the
    actions removed, and the actions' gain with the text removed (eval/metrics.py's alone gains)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharex=True)
    for ax, cond, title in zip(
        axes, ("text_alone", "action_alone"), ("text alone (no actions)", "actions alone (no text)")
    ):
        for r in rows:
            curve = r.get(f"{cond}_curve") or []
            if not curve:
                continue
            steps, gains = zip(*curve)
            se = [e if e is not None else 0.0 for _, e in r.get(f"{cond}_stderr_curve") or [(s, 0.0) for s in steps]]
            line = ax.plot(steps, gains, marker="o", ms=3, label=r["arm"])[0]
            ax.fill_between(steps, [g - 2 * e for g, e in zip(gains, se)], [g + 2 * e for g, e in zip(gains, se)],
                            color=line.get_color(), alpha=0.15)  # fmt: skip
        ax.axhline(0.0, color="k", lw=0.8)
        ax.set(title=f"{title}: held-out gain", xlabel="training step", ylabel="latent MSE gain (shuffled − true)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"How fast each arm learns to listen ({trajectories} Push-T trajectories; ±2 s.e. bands)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _floor_cells(floor: dict | None) -> dict:
    """The table's untrained-floor columns: the condition, the saved layer's gain, the redrawn layers' mean ± sd."""
    if not floor:
        return {"untrained_path": "", "untrained_saved_gain": None, "untrained_redrawn_mean": None,
                "untrained_redrawn_sd": None}  # fmt: skip
    return {"untrained_path": floor["condition"], "untrained_saved_gain": floor["saved_layer_gain"],
            "untrained_redrawn_mean": floor["mean"], "untrained_redrawn_sd": floor["sd"]}  # fmt: skip


def _wording_cells(w: dict | None) -> dict:
    """The table's wording columns: the final text-alone gain with the training wording and with the held-out one."""
    return {"text_alone_seen_wording": w["seen"]["mean"] if w else None,
            "text_alone_heldout_wording": w["heldout"]["mean"] if w else None}  # fmt: skip


def wording_readout_of(sw: Sweep) -> dict:
    """How much of the narration style's meaning all-MiniLM-L6-v2 carries to held-out wording (text_meaning's
    wording_readout), cached in the sweep's folder."""
    f = sw.folder("") / "wording_readout.json"
    if f.exists():
        return json.loads(f.read_text())
    res = wording_readout(open_text_encoder("minilm").embed, sw.narration)
    write_json(f, res)  # atomic, makes the folder
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--episodes", default="")
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--eval-every", type=int, default=200)
    ap.add_argument("--arms", default=",".join(ARMS))
    ap.add_argument("--encoder", default="tiny-random")
    ap.add_argument("--out", default="runs/text_arms")
    ap.add_argument("--narration", choices=sorted(MOTION), default="direction")
    ap.add_argument("--floor-draws", type=int, default=20, help="redraws of an arm's untrained path (0: none)")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    out = Path(args.out)
    episodes = Path(args.episodes) if args.episodes else out / "episodes"
    if args.quick and not args.episodes and not (episodes / "generate.json").exists():
        generate_pusht(GenerateConfig(out_dir=str(episodes), num_episodes=8, max_steps=60, workers=1),
                       show_progress=False)  # fmt: skip
    steps, every = (4, 2) if args.quick else (args.steps, args.eval_every)
    draws = min(args.floor_draws, 2) if args.quick else args.floor_draws
    sw = Sweep(out, episodes, steps, every, args.encoder, args.narration, args.quick, draws)
    rows = [arm(sw, a) for a in args.arms.split(",")]
    cols = ["arm", "text_alone_gain", "text_alone_gain_stderr", "text_gain", "action_alone_gain", "action_gain"]
    flat = [
        {c: r[c] for c in cols}
        | {"text_alone_half_gain": json.dumps(r["text_alone_half_gain"])}
        | {f"direction_{k}": r["direction"].get(k) for k in ("accuracy", "chance", "ceiling", "null_text_accuracy")}
        | {"text_only_h4_8_above_3se": json.dumps(above_3se_h4_8(r.get("text_only_gain")))}
        | _floor_cells(r.get("untrained_floor"))
        | _wording_cells(r.get("wording_gain"))
        for r in rows
    ]
    wording = wording_readout_of(sw) if any(ARMS[a][0] == "minilm" for a in args.arms.split(",")) else None
    notes = (
        f"{len(list(episodes.glob('*.npz')))} Push-T episodes ({episodes}); encoder {args.encoder} (frozen, "
        f"112 px); cpu preset with 2×2-grouped tokens, batch 16, {steps} steps per arm, evaluation every {every} "
        f"steps; *_alone: the condition's gain with the other removed from the whole clip; text_alone_half_gain: "
        f"[step, low, high], the step the alone text gain first reaches half its final value and its interval; "
        f"direction_*: the meaning check (planning/text_meaning.py) of text-only futures, context 4, horizon 4, on "
        f"held-out clips under one sentence: accuracy of the imagined motion's 8-way direction, chance "
        f"(shuffled sentences), ceiling (the true future read the same way), null text. untrained_*: the arm's "
        f"never-trained condition path (text-only: actions; action-only: text), its alone gain over horizons 1–"
        f"{HORIZON} with the saved input layer and with the layer redrawn {draws} times (mean ± sd): what a random "
        f"projection of the condition gains by chance. text_alone_seen/heldout_wording: the final model's text-alone "
        f"gain over horizons 1–{HORIZON} on the same clips with the training wording vs the held-out paraphrases. "
        f"Narration style: {args.narration}."
    )
    if wording:
        notes += (
            " The wording readout (planning/text_meaning.py wording_readout, all-MiniLM-L6-v2, ridge fitted on every "
            "training paraphrase, scored on every held-out one): "
            + "; ".join(
                f"{k} {v['ridge_accuracy']:.2f} (nearest {v['nearest_accuracy']:.2f}, chance "
                f"{v['chance']:.2f}, {v['classes']} classes)"
                for k, v in wording.items()
            )  # fmt: skip
            + "."
        )
    n_traj = len(list(episodes.glob("*.npz")))
    # the sweep's own folder: arms.json, the curves and a report section (the demo's --text-arms reads them)
    sweep = {"trajectories": n_traj, "steps": steps, "eval_every": every, "encoder": args.encoder,
             "narration": args.narration, "rows": rows, "wording_readout": wording}  # fmt: skip
    here = sw.folder("")
    here.mkdir(parents=True, exist_ok=True)
    (here / ARMS_FILE).write_text(json.dumps(sweep, indent=1))
    fig = plot(rows, here / "text_arms.png", n_traj)
    (here / "report.md").write_text(arms_section([sweep], lambda s: fig.name) + "\n")
    if not args.quick:
        suffix = "" if args.narration == "direction" else f"_{args.narration}"
        fig = Path(shutil.copy(fig, FIGURES / f"text_arms_{n_traj}{suffix}.png"))
    notes += f" Plot: {fig if args.quick else fig.relative_to(FIGURES.parent)}."
    said = arms_answer(sweep)
    notes += f"\n\n{said}" if said else ""
    report("bench_text_arms: following text instead of actions", table(flat, list(flat[0])),
           {"rows": rows, "wording_readout": wording, "quick": args.quick}, notes,
           record=not args.quick)  # fmt: skip


if __name__ == "__main__":
    main()
