"""`latentwm demo`: Push-T end to end on a CPU — generate → encode → decoder → train → state probe → evaluate → plan
→ report. The episodes carry language generated from the simulator state; the model trains with text and actions
and the report answers how fast it learns to listen to each (report/text.py).

Every setting comes from the preset (`config/presets.py`: its training sections, decoder, probe, rl and demo
sizes); this module only composes the commands' building blocks. Every stage runs a fixed number of steps (no
wall-clock budget: the result does not depend on the machine's speed) and is a stage cache (`demo/stages.py`): its
folder records the settings and inputs that made it, a rerun reuses what still matches and says so, a changed
setting redoes its stage and every stage that depends on it, an interrupted stage continues where it stopped.
`--fresh` starts over in the same folder; `--redo STAGE` redoes one stage and every stage that depends on it.

After training, the run's best held-out weights (`checkpoints/best.pt`, train/best.py) are loaded: evaluation,
planning and RL use the kept step, not the last one.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from latentwm.config import DemoConfig, ExperimentConfig, GenerateConfig, get_preset, preset
from latentwm.data.clip_sets import make_clip_datasets, model_clip_options
from latentwm.data.clips import LatentClipDataset, eval_loader
from latentwm.data.latent_cache import Encoding, LatentCache, encode_to_cache
from latentwm.data.proprio import latents_only, proprio_stats_of
from latentwm.data.sources.pusht import generate_pusht, load_pusht, policy_counts
from latentwm.demo.planning import demo_ladder, fit_proprio_probe, place_beside, plan_demo
from latentwm.demo.stages import Stages
from latentwm.encoders.dino import DinoEncoder
from latentwm.encoders.encode import text_embedding
from latentwm.engine.state_file import CheckpointError
from latentwm.eval.metrics import EvalOptions, rollout_errors
from latentwm.io.files import read_json
from latentwm.planning.cost_quality import encoder_cost_quality
from latentwm.planning.results import text_goal_comparison
from latentwm.planning.state_probe import (
    STATE_PROBE_CONFIG,
    STATE_PROBE_FILE,
    StateProbe,
    pose_errors,
    train_state_probe,
)
from latentwm.planning.text_meaning import MeaningCheck, direction_accuracy
from latentwm.report import ReportRun, StageResults, write_report
from latentwm.report.studies import read_data_scaling, read_encoder_table
from latentwm.report.text import read_arms
from latentwm.rl.runner import run_rl
from latentwm.rollout import Sampling
from latentwm.train.decoder_trainer import train_decoder
from latentwm.train.encoder_pretrain import run_pretrain_encoder
from latentwm.train.trainer import Trainer

NUM_SAMPLES = 4
"""Rollouts per held-out clip at τ_ctx = 1 (the mean of several samples vs one: a blurring model gains nothing)."""
GIFS = 4
"""keep_predictions of the rollout GIFs (rollout_errors' meaning: up to GIFS − i clips of batch i)."""


def settings_of(obj) -> dict:
    """A config dataclass as the plain dict a stage key is made of."""
    return dataclasses.asdict(obj)


@dataclass
class DemoRun:
    """One demo run: its settings, its stage caches and the stage banner."""

    cfg: DemoConfig
    out: Path
    exp: ExperimentConfig
    st: Stages
    stage: Callable[[str], None]

    def run(self, name: str, folder: str, settings: dict, inputs: tuple[str, ...], make: Callable[[], dict]) -> dict:
        return self.st.run(name, self.out / folder, settings, inputs, make)


def run_demo(cfg: DemoConfig) -> Path:
    """Run every stage (reusing the finished ones that still match); returns the report folder."""
    t0 = time.time()
    out = Path(cfg.out_dir)
    if cfg.fresh and out.exists():
        shutil.rmtree(out)
    run = DemoRun(cfg, out, cfg.experiment(), Stages(redo=frozenset({cfg.redo} if cfg.redo else ())), _stages(10))
    # the studies are read first: a wrong folder fails before hours of work
    arms = tuple(read_arms(Path(f)) for f in cfg.text_arms)
    encoder_table = read_encoder_table(Path(cfg.encoder_table)) if cfg.encoder_table else None
    scaling = read_data_scaling(Path(cfg.data_scaling)) if cfg.data_scaling else None
    facts, encoder, encoder_info, decoder = data_stages(run)
    trainer, data, kept, state_probe, results = model_stages(run)
    planning = rl = None
    if cfg.goals():
        run.stage(_plan_title(cfg, state_probe))
        run.run(
            "proprio_probe",
            "proprio_probe",
            {"probe": settings_of(preset(cfg.preset).probe), "seed": cfg.seed},
            ("train",),
            lambda: fit_proprio_probe(cfg, run.exp, trainer, out, kept),
        )
        planning = run.run(
            "plan",
            "report/planning",
            {
                "plan": settings_of(run.exp.plan),
                "goals": cfg.goals(),
                "planners": list(cfg.planners),
                "text_goal_planners": list(cfg.sizes.text_goal_planners),
                "state_cost_diagnosis": cfg.state_cost_diagnosis,
                "seed": cfg.seed,
            },
            ("episodes", "latents", "train", "state_probe", "proprio_probe"),
            lambda: plan_demo(cfg, run.exp, trainer, encoder, out, state_probe),
        )
        if cfg.sizes.ladder_state_steps:
            run.stage(
                "the planning ladder on the same goals: the simulator (state / latent cost), a state model "
                "(privileged), the model at K = 1 and 4, random actions"
            )
            planning["ladder"] = run.run(
                "ladder",
                "ladder",
                {
                    "plan": settings_of(run.exp.plan),
                    "goals": cfg.goals(),
                    "state_steps": cfg.sizes.ladder_state_steps,
                    "seed": cfg.seed,
                },
                ("episodes", "latents", "train", "plan"),
                lambda: demo_ladder(cfg, run.exp, trainer, encoder, out),
            )
    else:
        run.stage("planning skipped (--plan-goals 0)")
    if cfg.rl:
        rl = run.run(
            "rl", "rl", settings_of(preset(cfg.preset).rl), ("latents", "train"), lambda: demo_rl(cfg, out, kept)
        )
    run.stage("write the report")
    st = run.st
    if st.reused:
        print(f"reused {len(st.reused)} finished stages ({', '.join(st.reused)}); made {', '.join(st.made) or 'none'}")
    text_eval = results.pop("text_eval", None)
    report = write_report(
        out / "report",
        run.exp,
        ReportRun(
            results,
            train_dir=Path(run.exp.train.out_dir),
            encoder_label=encoder.weights_label,
            wall_time_s=time.time() - t0,
            model_parameters=trainer.model.num_parameters(),
            best=kept,
            encoder_info=encoder_info,
            data={
                **facts,
                "train_clips_per_epoch": len(data["train"]),
                "eval_clips": len(data["eval"]),
                "stages": {"reused": st.reused, "made": st.made},
            },
        ),
        StageResults(
            planning=planning,
            decoder=decoder,
            latent_stats=data["extra"]["data_stats"]["latents"],
            rl=rl,
            text_eval=text_eval,
            text_goal=text_goal_comparison(planning) if planning else None,
            text_arms=arms,
            encoder_table=encoder_table,
            data_scaling=scaling,
        ),
    )
    print(f"\nreport: {report / 'report.md'}\nmetrics: {report / 'metrics.json'}")
    return report


def data_stages(run: DemoRun) -> tuple[dict, DinoEncoder, dict, dict]:
    """Episodes, the encoder (pretrained here or named) and its goal-cost quality, the latent cache, the decoder.
    Returns (the data's facts, the encoder, facts about the encoder, the decoder's metrics)."""
    cfg, exp, out = run.cfg, run.exp, run.out
    gen = cfg.generate_config()
    run.stage(
        f"generate {gen.num_episodes} Push-T episodes (gym-pusht; goal-directed, random-target and random-walk "
        f"pushing{f', every {gen.render_every}th frame rendered' if gen.render_every > 1 else ''})"
    )
    facts = run.run(
        "episodes", "episodes", {**gen.settings(), "num_episodes": gen.num_episodes}, (), lambda: generate_stage(gen)
    )
    run.stage(_encoder_title(cfg))
    pre = (
        {k: v for k, v in settings_of(preset(cfg.preset).pretrain).items() if k not in ("data_dir", "out_dir")}
        if cfg.encoder == "pretrain"
        else {"encoder": cfg.encoder}
    )
    split = [exp.data.eval_fraction, exp.data.seed]
    info = run.run(
        "encoder",
        "encoder_pretrain",
        {"pretrain": pre, "split": split, "seed": cfg.seed},
        ("episodes",),
        lambda: pretrain_demo_encoder(cfg, exp, out),
    )
    info = {
        **info,
        **run.run(
            "encoder_quality",
            "encoder_quality",
            {
                "goals": cfg.sizes.cost_quality_goals,
                "encoder": settings_of(exp.encoder),
                "plan": settings_of(exp.plan),
                "split": split,
            },
            ("episodes", "encoder"),
            lambda: demo_cost_quality(cfg, exp, out),
        ),
    }
    run.stage(
        f"encode frames with the {exp.encoder.name} encoder"
        + (f" and the Push-T language with {cfg.text.name}" if cfg.text.name else "")
    )
    encoder = DinoEncoder.from_config(exp.encoder)
    run.run(
        "latents",
        "latents",
        {"encoder": settings_of(exp.encoder), "text": settings_of(cfg.text), "episodes_per_shard": 32},
        ("episodes", "encoder"),
        lambda: encode_stage(encoder, cfg, out),
    )
    run.stage("train the latents → pixels decoder (RAE-style) that renders the videos")
    dcfg = demo_decoder_config(cfg, out)
    decoder = {
        **run.run("decoder", "decoder", settings_of(dcfg), ("episodes", "latents"), lambda: train_decoder(dcfg)),
        "path": str(out / "decoder"),
    }
    run.exp = exp.replace(rollout__decoder=str(out / "decoder"))
    return facts, encoder, info, decoder


def model_stages(run: DemoRun) -> tuple[Trainer, dict, dict | None, StateProbe | None, dict]:
    """The dynamics model (its best held-out weights loaded), the state probe and the held-out evaluation.
    Returns (trainer, datasets, kept-weights record, state probe, evaluation results)."""
    cfg, exp, out = run.cfg, run.exp, run.out
    run.stage(
        f"train the dynamics model ({exp.preset} preset, {exp.train.steps} steps); keep its best held-out weights"
    )
    made: dict = {}

    def train_stage() -> dict:
        made["run"] = train_demo_model(exp)
        return {"steps": made["run"][0].state.step}

    run.run("train", "train", settings_of(exp), ("latents",), train_stage)
    trainer, data = made.get("run") or train_demo_model(exp)  # reused: resumes at its last step, trains nothing
    kept = load_kept(trainer)
    run.stage("fit the Push-T state probe (pose read from encoder latents) on the training frames")
    pcfg = dataclasses.replace(STATE_PROBE_CONFIG, steps=cfg.sizes.state_probe_steps, clips=cfg.sizes.state_probe_clips)
    run.run(
        "state_probe",
        "state_probe",
        {"probe": settings_of(pcfg), "seed": cfg.seed},
        ("latents",),
        lambda: fit_state_probe(cfg, exp, out, pcfg),
    )
    state_probe = load_state_probe(out, exp)
    run.stage("evaluate rollouts on held-out episodes (and with / without / another clip's text)")
    run.run(
        "evaluate",
        "evaluate",
        {
            "samples": NUM_SAMPLES,
            "gifs": GIFS,
            "rollout": settings_of(exp.rollout),
            "text_horizon": cfg.sizes.text_horizon,
            "text_conditions": list(TEXT_EVAL_CONDITIONS),
            "meaning_check": settings_of(MEANING_CHECK),
        },
        ("train", "state_probe"),
        lambda: evaluate_stage(cfg, trainer, exp, out, state_probe),
    )
    results = torch.load(out / "evaluate" / "results.pt", weights_only=True)
    return trainer, data, kept, state_probe, results


def generate_stage(gen: GenerateConfig) -> dict:
    """Simulate the episodes; the facts metrics.json reports about the data (count, env steps, policy mix)."""
    paths = generate_pusht(gen)
    lengths = []
    for path in paths:  # the actions member only: loading whole episodes would decompress every frame
        with np.load(path, allow_pickle=False) as z:
            lengths.append(len(z["actions"]) * gen.render_every)
    return {
        "trajectories": len(paths),
        "env_steps_per_episode": gen.max_steps,
        "env_steps": int(sum(lengths)),
        "policy_mix": {"shares": gen.mix.shares(), "noise_px": list(gen.mix.noise), "episodes": policy_counts(gen)},
    }


def encode_stage(encoder: DinoEncoder, cfg: DemoConfig, out: Path) -> dict:
    encode_to_cache(
        load_pusht(out / "episodes"),
        Encoding(
            lambda f: encoder.encode(f).numpy(),
            encoder.weights_label,
            image_size=encoder.cfg.image_size,
            text=text_embedding(cfg.text),
        ),
        out / "latents",
        episodes_per_shard=32,
    )
    return {"encoder": encoder.weights_label, "entries": len(LatentCache(out / "latents").entries)}


def pretrain_demo_encoder(cfg: DemoConfig, exp: ExperimentConfig, out: Path) -> dict:
    """With `--encoder pretrain` (the default): pretrain the encoder on the demo's training episodes (the preset's
    `pretrain` section: a fixed step count) into cfg.pretrained_encoder_dir, which exp.encoder already names.
    Returns the report's facts about how it was trained ({} for an encoder given by name)."""
    if cfg.encoder != "pretrain":
        return {}
    folder = cfg.pretrained_encoder_dir
    run_pretrain_encoder(
        dataclasses.replace(
            preset(cfg.preset).pretrain,
            data_dir=str(out / "episodes"),
            out_dir=str(folder.parent),
            eval_fraction=exp.data.eval_fraction,
            split_seed=exp.data.seed,
            seed=cfg.seed,
            resume=True,
        )
    )
    facts = read_json(folder / "pretrain.json", "encoder pretraining record")
    kw = facts["objective_kwargs"]
    return {
        "how_trained": (
            f"in this demo by `latentwm pretrain-encoder` ({facts['objective']} objective "
            f"{', '.join(f'{k}={v}' for k, v in kw.items())}; {facts['steps_done']} steps in "
            f"{facts['train_seconds_total']:.0f} s on {facts['train_frames']} frames of {facts['train_episodes']} "
            f"training episodes, the held-out ones never seen; {facts['parameters']:,} parameters, DINOv2 "
            f"architecture, frozen afterwards)"
        ),
        "pretrain": {
            k: facts[k]
            for k in (
                "objective",
                "objective_kwargs",
                "steps_done",
                "train_seconds_total",
                "train_frames",
                "train_episodes",
                "parameters",
                "final_losses",
            )
        },
    }


def demo_cost_quality(cfg: DemoConfig, exp: ExperimentConfig, out: Path) -> dict:
    """Rank correlation and CEM-on-simulator success of the latent goal cost (planning/cost_quality.py) on
    sizes.cost_quality_goals held-out goals, for exp's encoder and the preset's random-weight encoder."""
    n = cfg.sizes.cost_quality_goals
    random_cfg = get_preset(cfg.preset).encoder
    encoders = {"cost_quality": exp.encoder}
    if exp.encoder != random_cfg:
        encoders["random_encoder_cost_quality"] = random_cfg
    res: dict = {}
    for key, ecfg in encoders.items() if n else ():
        encoder = DinoEncoder.from_config(ecfg)
        print(f"goal-cost quality of {encoder.weights_label} ({n} held-out goals, the simulator as the model)")
        q = encoder_cost_quality(encoder.encode, out / "episodes", exp, num_goals=n)["per_cost"]["latent"]
        res[key] = {
            "rank_corr": q["rank_corr"],
            "cem_on_simulator_success": q["cem_on_simulator_success"],
            "cem_on_simulator_final_distance": q["cem_on_simulator_final_distance"],
            "goals": n,
            "encoder": encoder.weights_label,
        }
    return res


def demo_decoder_config(cfg: DemoConfig, out: Path):
    """The preset's decoder section on the demo's episodes and cache: a fixed number of epochs on a fixed, evenly
    strided set of frames."""
    sizes = cfg.sizes
    n_eps, max_steps = cfg.data_size()
    return dataclasses.replace(
        preset(cfg.preset).decoder,
        episodes_dir=str(out / "episodes"),
        cache_dir=str(out / "latents"),
        out_dir=str(out / "decoder"),
        epochs=sizes.decoder_epochs,
        max_frames=sizes.decoder_frames,
        frame_stride=max(1, n_eps * -(-max_steps // cfg.render_every) // sizes.decoder_frames),
        resume=True,
        device="cpu",
        seed=cfg.seed,
    )


def train_demo_model(exp: ExperimentConfig) -> tuple[Trainer, dict]:
    """Fit the dynamics model on the demo's cache (resuming its checkpoints); returns the trainer and the datasets."""
    train_set, eval_set, extra = make_clip_datasets(exp)
    if eval_set is None:
        raise RuntimeError("demo: no held-out clip is long enough to evaluate; raise --max-steps")
    trainer = Trainer(exp, train_set, eval_set, extra_state=extra, device="cpu")
    trainer.fit()
    return trainer, {"train": train_set, "eval": eval_set, "extra": extra}


def load_kept(trainer: Trainer) -> dict | None:
    """Load the best held-out EMA weights (`<train>/checkpoints/best.pt`) into the trainer: the later stages use
    them. Returns their record {"step", "score", "rollout", "path"}; None (the last step's weights stay) when the
    run kept none."""
    try:
        rec = trainer.load_best()
    except CheckpointError as e:
        print(f"best checkpoint: none ({e}); the later stages use the last step's weights")
        return None
    print(
        f"kept the best held-out weights: step {rec['step']} of {trainer.state.step} (held-out score "
        f"{rec['score']:.4f})"
    )
    return {**rec, "path": str(trainer.best.path)}


def fit_state_probe(cfg: DemoConfig, exp: ExperimentConfig, out: Path, pcfg) -> dict:
    """Fit the Push-T pose probe (planning/state_probe.py) on the cache's training frames into
    `<out>/state_probe/`; {"fitted": False} when the sizes turn it off or the cache has no states."""
    if not pcfg.steps:
        return {"fitted": False, "why": "state_probe_steps = 0"}
    t = time.time()
    try:
        probe, metrics = train_state_probe(out / "latents", exp, pcfg, seed=cfg.seed)
    except ValueError as e:  # a cache without simulator states
        print(f"state probe: none ({e})")
        return {"fitted": False, "why": str(e)}
    probe.save(out / "state_probe" / STATE_PROBE_FILE, {**metrics, "fit_seconds": time.time() - t})
    return {"fitted": True, **{k: v for k, v in metrics.items() if isinstance(v, (int, float, str))}}


def load_state_probe(out: Path, exp: ExperimentConfig) -> StateProbe | None:
    """The demo's state probe, also placed beside the checkpoints (where `latentwm plan --state-probe` looks)."""
    path = out / "state_probe" / STATE_PROBE_FILE
    if not path.exists():
        return None
    place_beside(path, Path(exp.train.out_dir))
    return StateProbe.load(path)


def evaluate_stage(
    cfg: DemoConfig, trainer: Trainer, exp: ExperimentConfig, out: Path, state_probe: StateProbe | None
) -> dict:
    """Held-out rollout errors (`evaluate`) and the text-horizon comparison, saved to `<out>/evaluate/results.pt`
    (tensors and numbers; read back with weights_only)."""
    results = evaluate(trainer, exp, state_probe)
    results["text_eval"] = text_horizon_eval(cfg, trainer, exp, out, state_probe)
    torch.save(_plain(results), out / "evaluate" / "results.pt")
    return {"file": "results.pt", "model_step": trainer.state.step}


def _plain(obj):
    """Results with numpy scalars and arrays as Python numbers and tensors (what weights_only loading accepts)."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_plain(v) for v in obj)
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def evaluate(trainer: Trainer, exp: ExperimentConfig, state_probe: StateProbe | None = None) -> dict:
    """Held-out rollout errors with the trainer's EMA weights (the kept ones): clean context (τ_ctx = 1) with
    NUM_SAMPLES samples per clip and swapped actions, lightly re-noised context (0.9), clean context at K = 1
    ("k=1", skipped when the preset samples with K = 1); with a state probe, "state_error": the pose error of the
    predicted frames (every clip's first sample) beside copy-last and the context average."""
    r = exp.rollout

    def run(batches, **options) -> dict:
        opts = EvalOptions(seed=exp.train.seed, **options)
        return rollout_errors(trainer.ema, batches, r.context, r.horizon, opts, device=trainer.device)

    keep = len(trainer.eval_set) if state_probe is not None else GIFS
    main = run(
        trainer.eval_batches(),
        sample_steps=r.sample_steps,
        tau_ctx=1.0,
        keep_predictions=keep,
        num_samples=NUM_SAMPLES,
        action_swap=True,
    )
    out = {
        "tau_ctx=1.0": main,
        "tau_ctx=0.9": run(trainer.eval_batches(), sample_steps=r.sample_steps, tau_ctx=0.9, keep_predictions=GIFS),
    }
    if r.sample_steps != 1:
        out["k=1"] = run(trainer.eval_batches(), sample_steps=1, tau_ctx=1.0)
    if state_probe is not None:
        out["state_error"] = state_errors(state_probe, main["examples"], exp.model.proprio_dim)
        main["examples"] = [tuple(t[: GIFS - i] for t in ex) for i, ex in enumerate(main["examples"][:GIFS])]
    return out


TEXT_EVAL_CONDITIONS = ("text", "action")
"""Each condition's gain at the text horizon, with the other present and removed from the whole clip."""
MEANING_CHECK = MeaningCheck(context=4, horizon=4, clips=300)
"""The meaning check's window: a narration spans 4 model steps at Push-T's frame skip, so 4 predicted frames under
one sentence; K and the seed come from the run."""


def text_horizon_eval(
    cfg: DemoConfig, trainer: Trainer, exp: ExperimentConfig, out: Path, state_probe: StateProbe | None = None
) -> dict | None:
    """Held-out rollouts of sizes.text_horizon frames with the clips' true text (their held-out paraphrases), none,
    and another clip's, noise-matched, and the same for actions, each with the other condition present and removed
    (rollout_errors' condition gain); with the state probe, the meaning check (planning/text_meaning.py) under
    "meaning". None when the model or cache has no text."""
    H, r = cfg.sizes.text_horizon, exp.rollout
    if not H or exp.model.text_dim == 0 or LatentCache(out / "latents").text_encoder is None:
        return None
    data = LatentClipDataset(out / "latents", r.context + H, "eval", model_clip_options(exp, text=True))
    if len(data) == 0:
        print(f"text rollouts: no held-out clip of {r.context + H} model steps; skipped")
        return None
    res = rollout_errors(
        trainer.ema,
        eval_loader(data, exp.model.action_dim),
        r.context,
        H,
        device=trainer.device,
        options=EvalOptions(
            seed=exp.train.seed,
            condition_gain=TEXT_EVAL_CONDITIONS,
            text_guidance=r.text_guidance,
            sample_steps=r.sample_steps,
        ),
    )
    if state_probe is not None:
        check = dataclasses.replace(MEANING_CHECK, sampling=Sampling(r.sample_steps), seed=exp.train.seed)
        clips = LatentClipDataset(out / "latents", check.context + check.horizon, "eval", model_clip_options(exp))
        data_stats = trainer.extra_state.get("data_stats")
        stats = proprio_stats_of(data_stats, exp.model) if data_stats and exp.model.proprio_dim else None
        res["meaning"] = direction_accuracy(trainer.ema, state_probe, clips, check, stats, trainer.device)
    return res


def state_errors(probe: StateProbe, examples: list, proprio_dim: int = 0) -> dict:
    """Per-horizon agent px / block px / angle ° between the probe's reading of predicted and true frames, for the
    model, copy-last and the context average; "probe": the probe's own held-out error on true frames. proprio_dim:
    the frames' proprio channels (the probe reads the encoder channels)."""
    truth, pred, ctx = (latents_only(torch.cat(t), proprio_dim) for t in zip(*examples))
    res = pose_errors(
        probe, pred, truth, baselines={"copy_last": ctx[:, -1:], "context_average": ctx.float().mean(1, keepdim=True)}
    )
    return {
        "model": {k: v for k, v in res.items() if k != "baselines"},
        **res["baselines"],
        "probe": dict(getattr(probe, "metrics", {})),
        "num_clips": int(truth.shape[0]),
    }


def demo_rl(cfg: DemoConfig, out: Path, kept: dict | None) -> dict:
    """Offline RL in the frozen model (the kept weights: best.pt, else the run's latest checkpoint)."""
    print("\n[+] offline RL in the frozen model (BC + reward heads → PMPO in imagination → gym-pusht)")
    return run_rl(
        dataclasses.replace(
            preset(cfg.preset).rl,
            checkpoint=kept["path"] if kept else str(out / "train"),
            cache_dir=str(out / "latents"),
            out_dir=str(out / "rl"),
            seed=cfg.seed,
            device="cpu",
        )
    )


def _encoder_title(cfg: DemoConfig) -> str:
    if cfg.encoder == "pretrain":
        p = preset(cfg.preset).pretrain
        return (
            f"pretrain the encoder on the training episodes ({p.objective}, DINOv2 architecture {p.hidden_size} "
            f"wide × {p.layers} blocks, {p.steps} steps) and score its goal cost"
        )
    return f"encoder {cfg.encoder}: score its goal cost"


def _plan_title(cfg: DemoConfig, state_probe: StateProbe | None) -> str:
    diagnosis = "; CEM on the state-probe cost" if cfg.state_cost_diagnosis and state_probe is not None else ""
    return (
        f"plan toward {cfg.goals()} held-out goals in the real Push-T env ({', '.join(cfg.planners)} vs random "
        f"and dataset actions{diagnosis})"
    )


def _stages(n: int):
    count = [0]

    def stage(title: str) -> None:
        count[0] += 1
        print(f"\n[{count[0]}/{n}] {title}", flush=True)

    return stage


__all__ = ["DemoRun", "evaluate", "run_demo"]
