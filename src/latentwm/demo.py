"""`latentwm demo`: Push-T end to end on a CPU — generate → encode → decoder → train → evaluate → plan → report.

Every setting comes from the preset (`config/presets.py`: its training sections, decoder, probe, rl and demo
sizes); this module only composes the commands' building blocks. Every stage is resumable: re-running the demo
reuses finished episodes, shards, decoder and training checkpoints, so an interrupted demo continues where it
stopped. `--fresh` starts over in the same folder.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path

from latentwm.config import DemoConfig, ExperimentConfig, PlanConfig, preset
from latentwm.config.jsonfile import read_json
from latentwm.data.clips import make_clip_datasets
from latentwm.data.latent_cache import encode_to_cache
from latentwm.data.sources.pusht import generate_pusht, load_pusht
from latentwm.encoders.dino import DinoEncoder
from latentwm.eval.metrics import rollout_errors
from latentwm.planning.evaluate import PlanningOptions, WorldModelRun, evaluate_planning
from latentwm.planning.proprio import PROBE_FILE, ProprioProbe, train_proprio_probe
from latentwm.report import write_report
from latentwm.rl.runner import run_rl
from latentwm.train.decoder_trainer import train_decoder
from latentwm.train.trainer import Trainer


def run_demo(cfg: DemoConfig) -> Path:
    """Run every stage; returns the report folder."""
    t0 = time.time()
    out = Path(cfg.out_dir)
    if cfg.fresh and out.exists():
        shutil.rmtree(out)
    exp = cfg.experiment()
    n_eps, max_steps = cfg.data_size()
    stage = _stages(7)

    stage("generate Push-T episodes (gym-pusht, scripted pushing + random walks)")
    generate_pusht(out / "episodes", num_episodes=n_eps, max_steps=max_steps, seed=cfg.seed)

    stage(f"encode frames with the {exp.encoder.name} encoder")
    encoder = DinoEncoder.from_config(exp.encoder)
    encode_to_cache(load_pusht(out / "episodes"), lambda f: encoder.encode(f).numpy(), out / "latents",
                    encoder_label=encoder.weights_label, image_size=exp.encoder.image_size, episodes_per_shard=32)

    stage("train the latents → pixels decoder (RAE-style) that renders the videos")
    decoder = train_demo_decoder(cfg, out)
    exp = exp.replace(rollout__decoder=str(out / "decoder"))

    stage(f"train the dynamics model ({exp.preset} preset, {exp.train.steps} steps)")
    trainer, data = train_demo_model(exp)

    stage("evaluate rollouts on held-out episodes")
    results = evaluate(trainer, exp)

    planning = None
    if cfg.goals():
        stage(f"plan toward {cfg.goals()} held-out goals in the real Push-T env "
              f"({', '.join(cfg.planners)} vs random and dataset actions)")
        planning = plan_demo(cfg, exp, trainer, encoder, out)
    else:
        stage("planning skipped (--plan-goals 0)")

    rl = None
    if cfg.rl:
        print("\n[+] offline RL in the frozen model (BC + reward heads → PMPO in imagination → gym-pusht)")
        rl = run_rl(dataclasses.replace(preset(cfg.preset).rl, checkpoint=str(out / "train"),
                                        cache_dir=str(out / "latents"), out_dir=str(out / "rl"), seed=cfg.seed,
                                        device="cpu"))

    stage("write the report")
    report = write_report(out / "report", exp, results, train_dir=Path(exp.train.out_dir),
                          encoder_label=encoder.weights_label, wall_time_s=time.time() - t0,
                          model_parameters=trainer.model.num_parameters(), planning=planning, decoder=decoder, rl=rl,
                          latent_stats=data["extra"]["data_stats"]["latents"],
                          data={"episodes": n_eps, "env_steps_per_episode": max_steps,
                                "train_clips_per_epoch": len(data["train"]), "eval_clips": len(data["eval"])})
    print(f"\nreport: {report / 'report.md'}\nmetrics: {report / 'metrics.json'}")
    return report


def train_demo_decoder(cfg: DemoConfig, out: Path) -> dict:
    """Train (or, when finished before, reuse) the demo's decoder on its episodes and latent cache; returns its
    held-out metrics (PSNR / SSIM vs the mean image) with the run folder under "path"."""
    sizes = cfg.sizes
    n_eps, max_steps = cfg.data_size()
    dcfg = dataclasses.replace(preset(cfg.preset).decoder, episodes_dir=str(out / "episodes"),
                               cache_dir=str(out / "latents"), out_dir=str(out / "decoder"),
                               epochs=sizes.decoder_epochs, max_minutes=sizes.decoder_minutes,
                               frame_stride=max(1, n_eps * max_steps // sizes.decoder_frames),
                               max_frames=sizes.decoder_frames, resume=True, device="cpu", seed=cfg.seed)
    done = out / "decoder" / "metrics.json"
    res = read_json(done, "decoder metrics") if done.exists() else train_decoder(dcfg)
    return {**res, "path": str(out / "decoder")}


def train_demo_model(exp: ExperimentConfig) -> tuple[Trainer, dict]:
    """Fit the dynamics model on the demo's cache (resuming its checkpoints); returns the trainer and the datasets."""
    train_set, eval_set, extra = make_clip_datasets(exp)
    if eval_set is None:
        raise RuntimeError("demo: no held-out clip is long enough to evaluate; raise --max-steps")
    trainer = Trainer(exp, train_set, eval_set, extra_state=extra, device="cpu")
    trainer.fit()
    return trainer, {"train": train_set, "eval": eval_set, "extra": extra}


def evaluate(trainer: Trainer, exp: ExperimentConfig) -> dict:
    """Held-out rollout errors with the EMA weights, clean context (τ_ctx = 1) and lightly re-noised (0.9)."""
    r = exp.rollout
    out = {}
    for tau_ctx in (1.0, 0.9):
        out[f"tau_ctx={tau_ctx}"] = rollout_errors(trainer.ema, trainer.eval_batches(), r.context, r.horizon,
                                                   r.sample_steps, tau_ctx, seed=exp.train.seed,
                                                   device=trainer.device, keep_predictions=4)
    return out


def demo_probe(cfg: DemoConfig, exp: ExperimentConfig, trainer: Trainer, out: Path) -> ProprioProbe:
    """DINO-WM plans on visual + proprio MSE; the agent state is read from the model's features by a probe, saved
    beside the checkpoints (where `latentwm plan` finds it) and reused when it belongs to this model step."""
    probe_path = Path(exp.train.out_dir) / PROBE_FILE
    if probe_path.exists():
        probe = ProprioProbe.load(probe_path)
        if probe.metrics.get("model_step") == trainer.state.step:
            return probe
    probe, metrics = train_proprio_probe(trainer.ema, out / "latents", exp, preset(cfg.preset).probe, seed=cfg.seed)
    probe.save(probe_path, {**metrics, "model_step": trainer.state.step})
    return probe


def plan_demo(cfg: DemoConfig, exp: ExperimentConfig, trainer: Trainer, encoder, out: Path) -> dict:
    """The planners and baselines on the preset's plan section, toward cfg.goals() held-out goals."""
    probe = demo_probe(cfg, exp, trainer, out)
    plan_cfg: PlanConfig = dataclasses.replace(exp.plan, num_goals=cfg.goals())
    return evaluate_planning(WorldModelRun.from_cache(trainer.ema, exp, out / "latents"), out / "episodes", plan_cfg,
                             cache_dir=out / "latents", options=PlanningOptions(planners=tuple(cfg.planners),
                                                                               seed=cfg.seed),
                             encoder=encoder, proprio_probe=probe, out_dir=out / "report" / "planning")


def _stages(n: int):
    count = [0]

    def stage(title: str) -> None:
        count[0] += 1
        print(f"\n[{count[0]}/{n}] {title}", flush=True)

    return stage


__all__ = ["evaluate", "run_demo", "train_demo_decoder"]
