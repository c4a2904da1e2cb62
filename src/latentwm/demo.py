"""`latentwm demo`: Push-T end to end on a CPU — generate → encode → decoder → train → evaluate → plan → report.

Every stage is resumable: re-running the demo reuses finished episodes, shards and training checkpoints, so an
interrupted demo continues where it stopped. `--fresh` starts over in the same folder.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from latentwm.config import ConfigError, ExperimentConfig, get_preset

# Demo sizes per preset: (episodes, env steps per episode). Push-T runs at 10 Hz; frame skip 5 → 2 model steps/s.
DEMO_DATA = {"smoke": (24, 100), "cpu": (240, 200), "tiny": (24, 100)}
# Planning goals per preset (DINO-WM's protocol on held-out episodes; ~12 s per goal for all methods on the cpu model).
DEMO_GOALS = {"smoke": 2, "cpu": 20, "tiny": 2}
# Proprio probe for the planning cost: (Adam steps, clips whose frames it trains on).
DEMO_PROBE = {"smoke": (200, 64), "cpu": (1500, 512), "tiny": (200, 64)}
# The latents → pixels decoder that makes the videos readable: (frames it trains on, epochs, minutes at most).
DEMO_DECODER = {"smoke": (400, 40, 1.0), "cpu": (4000, 8, 4.0), "tiny": (400, 40, 1.0)}


@dataclass(frozen=True)
class DemoConfig:
    """End-to-end Push-T on the CPU; writes a report folder (report.md, metrics.json, plots, GIFs)."""

    preset: str = "cpu"
    """cpu (the full demo, 30–40 min on 2 cores) or smoke (CI, about a minute)."""
    out_dir: str = "runs/demo"
    episodes: int = 0
    """Episodes to simulate (0: the preset's default)."""
    max_steps: int = 0
    """Environment steps per episode (0: the preset's default)."""
    train_steps: int = 0
    """Optimizer steps (0: the preset's train.steps)."""
    plan_goals: int = -1
    """Planning goals for the MPC stage (-1: the preset's default, 0: skip planning)."""
    planners: tuple[str, ...] = ("cem", "mppi", "gradient")
    """Planners scored beside the random and dataset-action baselines."""
    rl: bool = False
    """Also run offline RL (`latentwm rl`: BC + reward heads, PMPO in imagination, gym-pusht evaluation) and add
    its section to the report."""
    seed: int = 0
    fresh: bool = False
    """Delete the demo folder first instead of resuming."""

    def __post_init__(self):
        if self.preset not in DEMO_DATA:
            raise ConfigError(f"demo.preset must be one of {sorted(DEMO_DATA)}, got {self.preset!r}")
        for n in ("episodes", "max_steps", "train_steps"):
            if getattr(self, n) < 0:
                raise ConfigError(f"demo.{n} must be >= 0, got {getattr(self, n)}")
        if self.plan_goals < -1:
            raise ConfigError(f"demo.plan_goals must be >= -1, got {self.plan_goals}")
        bad = set(self.planners) - {"cem", "mppi", "gradient"}
        if bad:
            raise ConfigError(f"demo.planners: unknown {sorted(bad)}; choose from cem, mppi, gradient")

    def experiment(self) -> ExperimentConfig:
        base = get_preset(self.preset)
        out = Path(self.out_dir)
        kw = dict(data__cache_dir=str(out / "latents"), train__out_dir=str(out / "train"), train__resume=True,
                  train__seed=self.seed, data__seed=self.seed)
        if self.train_steps:
            kw["train__steps"] = self.train_steps
        return base.replace(**kw)

    def goals(self) -> int:
        return DEMO_GOALS[self.preset] if self.plan_goals < 0 else self.plan_goals

    def data_size(self) -> tuple[int, int]:
        n, steps = DEMO_DATA[self.preset]
        return self.episodes or n, self.max_steps or steps


def run_demo(cfg: DemoConfig) -> Path:
    """Run every stage; returns the report folder."""
    from latentwm.data.latent_cache import encode_to_cache
    from latentwm.data.sources.pusht import generate_pusht, load_pusht
    from latentwm.encoders.dino import DinoEncoder

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
                    encoder_label=encoder.weights_label, image_size=exp.encoder.image_size,
                    episodes_per_shard=32)

    stage("train the latents → pixels decoder (RAE-style) that renders the videos")
    decoder = train_demo_decoder(cfg, out)
    exp = exp.replace(rollout__decoder=str(out / "decoder"))

    stage(f"train the dynamics model ({exp.preset} preset, {exp.train.steps} steps)")
    from latentwm.data.clips import make_clip_datasets
    from latentwm.train.trainer import Trainer

    train_set, eval_set, extra = make_clip_datasets(exp)
    if eval_set is None:
        raise RuntimeError("demo: no held-out clip is long enough to evaluate; raise --max-steps")
    trainer = Trainer(exp, train_set, eval_set, extra_state=extra, device="cpu")
    trainer.fit()

    stage("evaluate rollouts on held-out episodes")
    results = evaluate(trainer, exp)

    planning = None
    if cfg.goals():
        stage(f"plan toward {cfg.goals()} held-out goals in the real Push-T env "
              f"({', '.join(cfg.planners)} vs random and dataset actions)")
        from latentwm.planning.evaluate import demo_plan_config, evaluate_planning
        from latentwm.planning.proprio import PROBE_FILE, ProprioProbe, train_proprio_probe

        # DINO-WM plans on visual + proprio MSE; the agent state is read from the model's features by a probe
        # (saved beside the checkpoints, where `latentwm plan` finds it).
        probe_path = Path(exp.train.out_dir) / PROBE_FILE
        probe = None
        if probe_path.exists():  # resume: the probe of this model, when it is the one saved
            probe = ProprioProbe.load(probe_path)
            if probe.metrics.get("model_step") != trainer.state.step:
                probe = None
        if probe is None:
            steps, clips = DEMO_PROBE[cfg.preset]
            probe, probe_metrics = train_proprio_probe(trainer.ema, out / "latents", exp, steps=steps, clips=clips,
                                                       seed=cfg.seed)
            probe.save(probe_path, {**probe_metrics, "model_step": trainer.state.step})
        planning = evaluate_planning(trainer.ema, out / "episodes", out / "latents",
                                     plan_cfg=demo_plan_config(exp.plan, num_goals=cfg.goals()),
                                     planners=tuple(cfg.planners), config=exp, encoder=encoder,
                                     out_dir=out / "report" / "planning", seed=cfg.seed, proprio_probe=probe,
                                     device="cpu")
    else:
        stage("planning skipped (--plan-goals 0)")

    rl = None
    if cfg.rl:
        print("\n[+] offline RL in the frozen model (BC + reward heads → PMPO in imagination → gym-pusht)")
        from latentwm.rl.runner import RLConfig, run_rl

        small = cfg.preset != "cpu"
        rl = run_rl(RLConfig(checkpoint=str(out / "train"), cache_dir=str(out / "latents"), out_dir=str(out / "rl"),
                             seed=cfg.seed, device="cpu",
                             **(dict(heads_steps=60, imagine_steps=8, value_warmup=4, batch_size=8, hidden=64,
                                     eval_episodes=2,
                                     eval_max_steps=5) if small else {})))

    stage("write the report")
    from latentwm.eval.report import write_report

    report = write_report(out / "report", exp, results, train_dir=Path(exp.train.out_dir),
                          encoder_label=encoder.weights_label, wall_time_s=time.time() - t0,
                          model_parameters=trainer.model.num_parameters(), planning=planning, decoder=decoder, rl=rl,
                          latent_stats=extra["data_stats"]["latents"],
                          data={"episodes": n_eps, "env_steps_per_episode": max_steps,
                                "train_clips_per_epoch": len(train_set), "eval_clips": len(eval_set)})
    print(f"\nreport: {report / 'report.md'}\nmetrics: {report / 'metrics.json'}")
    return report


def train_demo_decoder(cfg: DemoConfig, out: Path) -> dict:
    """Train (or, when finished before, reuse) the demo's decoder on its episodes and latent cache; returns its
    held-out metrics (PSNR / SSIM vs the mean image) with the run folder under "path"."""
    import dataclasses
    import json

    from latentwm.train.decoder_trainer import default_decoder_config, train_decoder

    frames, epochs, minutes = DEMO_DECODER[cfg.preset]
    n_eps, max_steps = cfg.data_size()
    dcfg = dataclasses.replace(default_decoder_config(cfg.preset), episodes_dir=str(out / "episodes"),
                               cache_dir=str(out / "latents"), out_dir=str(out / "decoder"), epochs=epochs,
                               max_minutes=minutes, frame_stride=max(1, n_eps * max_steps // frames),
                               max_frames=frames, resume=True, device="cpu", seed=cfg.seed)
    done = out / "decoder" / "metrics.json"
    res = json.loads(done.read_text()) if done.exists() else train_decoder(dcfg)
    return {**res, "path": str(out / "decoder")}


def evaluate(trainer, exp: ExperimentConfig) -> dict:
    """Held-out rollout errors with the EMA weights, clean context (τ_ctx = 1) and lightly re-noised (0.9)."""
    from latentwm.eval.metrics import rollout_errors

    r = exp.rollout
    out = {}
    for tau_ctx in (1.0, 0.9):
        out[f"tau_ctx={tau_ctx}"] = rollout_errors(trainer.ema, trainer.eval_batches(), r.context, r.horizon,
                                                   r.sample_steps, tau_ctx, seed=exp.train.seed,
                                                   device=trainer.device, keep_predictions=4)
    return out


def _stages(n: int):
    count = [0]

    def stage(title: str) -> None:
        count[0] += 1
        print(f"\n[{count[0]}/{n}] {title}", flush=True)

    return stage


