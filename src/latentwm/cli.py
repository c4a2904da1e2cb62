"""`latentwm <command>`: every command is a frozen dataclass config parsed by tyro; `--preset NAME` picks defaults.

This is the only module that wires data, encoders, model, training, planning and reports together.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Literal
from typing import Callable

import tyro

from latentwm.config import PRESETS, ConfigError, EncoderConfig, ExperimentConfig, PlanConfig, get_preset


@dataclass(frozen=True)
class GenerateConfig:
    """Simulated Push-T episodes (gym-pusht) from a mix of scripted pushing and random-walk policies."""

    out_dir: str = "data/pusht_episodes"
    num_episodes: int = 200
    max_steps: int = 200
    """Environment steps per episode (10 Hz)."""
    seed: int = 0
    scripted_fraction: float = 0.7
    """Share of episodes driven by the scripted pushing policy; the rest use a smoothed random walk."""
    image_size: int = 96

    def __post_init__(self):
        for n in ("num_episodes", "max_steps", "image_size"):
            if getattr(self, n) <= 0:
                raise ConfigError(f"generate.{n} must be > 0, got {getattr(self, n)}")
        if not 0 <= self.scripted_fraction <= 1:
            raise ConfigError(f"generate.scripted_fraction must be in [0, 1], got {self.scripted_fraction}")


@dataclass(frozen=True)
class EncodeConfig:
    """Frames → frozen DINO latents → WebDataset shards + index (resumable; run under torchrun to split work)."""

    source: Literal["pusht", "droid", "epic", "video-folder"] = "pusht"
    """Dataset reader: pusht (`latentwm generate pusht` output), droid (LeRobot v3 / v2.1 or raw DROID), epic
    (EPIC-KITCHENS-100 tree with its CSVs), video-folder (any folder of videos, optional captions)."""
    root: str = "data/pusht_episodes"
    """Where the source's files are."""
    out_dir: str = "data/pusht_latents"
    encoder: EncoderConfig = field(default_factory=lambda: get_preset("cpu").encoder)
    """`--encoder.pool 2` stores 2×2-pooled tokens (N/4; recorded in cache.json, training must use the same)."""
    episodes_per_shard: int = 32
    fps: float = 0.0
    """Frame rate to sample video sources at (0: native; e.g. 10 for EPIC's 50/60 fps, 4 for DROID as V-JEPA 2)."""
    segment_s: float = -1.0
    """Cut long videos into episodes of this many seconds (-1: the source's default, 0: whole videos)."""
    cameras: str = ""
    """Comma-separated cameras to encode (droid; empty: all three)."""
    options: str = ""
    """Extra reader options as k=v pairs separated by spaces (see each reader's OPTIONS)."""

    def __post_init__(self):
        if self.episodes_per_shard <= 0:
            raise ConfigError(f"encode.episodes_per_shard must be > 0, got {self.episodes_per_shard}")
        if self.fps < 0:
            raise ConfigError(f"encode.fps must be >= 0, got {self.fps}")


@dataclass(frozen=True)
class EvalConfig:
    """Roll a trained model out on held-out clips of a latent cache: error per horizon vs copy-last, and videos."""

    checkpoint: str = "runs/demo/train"
    """A run folder (its latest complete checkpoint is used) or one checkpoint directory."""
    cache_dir: str = ""
    """Latent cache to evaluate on (empty: the one the model was trained on)."""
    out_dir: str = "runs/eval"
    split: Literal["eval", "all"] = "eval"
    """eval: the held-out episodes of the training split; all: every episode of the cache."""
    context: int = 0
    """Observed frames (0: the checkpoint's rollout.context)."""
    horizon: int = 0
    """Predicted frames (0: the checkpoint's rollout.horizon)."""
    sample_steps: int = 0
    """Denoising steps per frame (0: the checkpoint's rollout.sample_steps)."""
    tau_ctx: float = 1.0
    videos: int = 4
    """Side-by-side real/predicted GIFs to write."""
    decoder: str = ""
    """A `latentwm train-decoder` run folder or checkpoint: videos show decoded frames (empty: PCA of features)."""
    use_ema: bool = True
    seed: int = 0

    def __post_init__(self):
        for n in ("context", "horizon", "sample_steps", "videos"):
            if getattr(self, n) < 0:
                raise ConfigError(f"eval.{n} must be >= 0, got {getattr(self, n)}")
        if not 0 < self.tau_ctx <= 1:
            raise ConfigError(f"eval.tau_ctx must be in (0, 1], got {self.tau_ctx}")


@dataclass(frozen=True)
class PlanRunConfig:
    """Goal-conditioned MPC against the real gym-pusht environment, scored with DINO-WM's Push-T protocol beside
    random actions and the dataset's own actions, on the same goals and seeds."""

    checkpoint: str = "runs/demo/train"
    """A training run folder (its latest complete checkpoint, EMA weights) or one checkpoint directory."""
    episodes_dir: str = "runs/demo/episodes"
    """Push-T episode files (`latentwm generate`); goals come from the held-out ones."""
    cache_dir: str = ""
    """The training latent cache (its episode list defines the held-out split; empty: the checkpoint's)."""
    out_dir: str = "runs/plan"
    planners: tuple[Literal["cem", "mppi", "gradient"], ...] = ("cem", "mppi", "gradient")
    baselines: tuple[Literal["random", "dataset_actions"], ...] = ("random", "dataset_actions")
    plan: PlanConfig = field(default_factory=PlanConfig)
    """Planner settings (preset cpu/smoke/tiny: demo scale; larger presets: DINO-WM's 300 × 30 × 30)."""
    max_replans: int = 0
    """Plans per episode (0: a budget of twice the goal distance)."""
    context: int = 0
    """Observed history frames per plan (0: the checkpoint's rollout.context)."""
    repeat_actions: bool = True
    """Search one env action per model step, held for the frame skip (else the full frame-skip-concatenated
    action)."""
    videos: int = 4
    """Goals whose executed episodes (next to the goal image) are written as GIFs, for every method."""
    bf16: Literal["auto", "on", "off"] = "auto"
    """Candidate rollouts under bf16 autocast (auto: on CUDA and CPUs with bf16 units)."""
    proprio_probe: str = "auto"
    """DINO-WM's proprio term (weight plan.proprio-weight): 'auto' uses the run's proprio_probe.safetensors or trains
    one on the training cache (about a minute on the cpu preset; saved to out_dir), a path uses that probe, 'none'
    plans on the visual cost only."""
    device: str = "auto"
    """auto: cuda when available, else cpu."""

    def __post_init__(self):
        for n in ("max_replans", "context", "videos"):
            if getattr(self, n) < 0:
                raise ConfigError(f"plan.{n} must be >= 0, got {getattr(self, n)}")
        if not self.planners and not self.baselines:
            raise ConfigError("plan: give at least one of --planners / --baselines")


def _plan_default(preset: str):
    from latentwm.planning.evaluate import demo_plan_config

    small = preset in ("tiny", "smoke", "cpu")
    return PlanRunConfig(plan=demo_plan_config(get_preset(preset).plan) if small else get_preset(preset).plan)


def _run_plan(cfg: PlanRunConfig):
    import torch

    from latentwm.planning.evaluate import evaluate_planning, planning_table

    from latentwm.planning.proprio import resolve_probe

    device = cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    probe = None
    if cfg.plan.proprio_weight > 0 and cfg.planners:
        probe = resolve_probe(cfg.checkpoint, cfg.proprio_probe, cfg.cache_dir or None, cfg.out_dir, device=device)
    res = evaluate_planning(cfg.checkpoint, cfg.episodes_dir, cfg.cache_dir or None, plan_cfg=cfg.plan,
                            planners=tuple(cfg.planners), baselines=tuple(cfg.baselines), out_dir=cfg.out_dir,
                            max_replans=cfg.max_replans or None, context=cfg.context or None,
                            repeat_actions=cfg.repeat_actions, num_videos=cfg.videos,
                            bf16=None if cfg.bf16 == "auto" else cfg.bf16 == "on", proprio_probe=probe,
                            device=device)
    print(planning_table(res))
    print(f"planning.json, per-goal results and videos in {cfg.out_dir}")


@dataclass(frozen=True)
class Command:
    summary: str
    make_default: Callable[[str], object]  # preset name -> default config
    run: Callable[[object], object]
    default_preset: str = "cpu"


def _run_generate(cfg: GenerateConfig):
    from latentwm.data.sources.pusht import generate_pusht

    paths = generate_pusht(cfg.out_dir, num_episodes=cfg.num_episodes, max_steps=cfg.max_steps, seed=cfg.seed,
                           scripted_fraction=cfg.scripted_fraction, image_size=cfg.image_size)
    print(f"{len(paths)} episodes in {cfg.out_dir}")


def _source_items(cfg: EncodeConfig) -> list:
    """(key, loader) pairs of the chosen source; frames are decoded at the encoder's resolution."""
    from latentwm.data.sources import load_source, parse_options

    try:
        return load_source(cfg.source, cfg.root, size=cfg.encoder.image_size, fps=cfg.fps or None,
                           segment_s=cfg.segment_s, cameras=cfg.cameras, options=parse_options(cfg.options))
    except ValueError as e:
        raise ConfigError(f"encode (--source {cfg.source} --root {cfg.root}): {e}") from e


def _run_encode(cfg: EncodeConfig):
    from latentwm.data.latent_cache import encode_to_cache, finalize_cache
    from latentwm.encoders.dino import DinoEncoder
    from latentwm.train.distributed import init_distributed, shutdown

    items = _source_items(cfg)
    if not items:
        raise ConfigError(f"encode.root: no {cfg.source} episodes found in {cfg.root}")
    dist = init_distributed()  # under torchrun each rank encodes its own shards
    try:
        enc = DinoEncoder.from_config(cfg.encoder, device=dist.device)
        res = encode_to_cache(items, lambda f: enc.encode(f).cpu().numpy(), cfg.out_dir,
                              encoder_label=enc.weights_label, episodes_per_shard=cfg.episodes_per_shard,
                              rank=dist.rank, world_size=dist.world_size, image_size=cfg.encoder.image_size,
                              meta=dict(pool=cfg.encoder.pool), show_progress=dist.is_main)
        n_shards = len(res["shards_written"])
        if dist.enabled:  # totals over ranks; the all-reduce returns once every rank has listed its shards
            import torch

            tot = dist.all_reduce_sum(torch.tensor([res["episodes"], res["skipped"], n_shards], dtype=torch.float64,
                                                   device=dist.device)).tolist()
            res.update(episodes=int(tot[0]), skipped=int(tot[1]),
                       complete=finalize_cache(cfg.out_dir) if dist.is_main else res["complete"])
            n_shards = int(tot[2])
            dist.barrier()  # leave together: a gloo rank tearing down while its peer still works can abort
    finally:
        shutdown(dist)
    if dist.is_main:
        print(f"{res['episodes']} episodes encoded into {n_shards} shards, {res['skipped']} skipped; "
              f"cache {'complete' if res['complete'] else 'incomplete'}: {cfg.out_dir}")


def _run_eval(cfg: EvalConfig):
    import json
    from pathlib import Path

    from latentwm.data.clips import LatentClipDataset
    from latentwm.eval.metrics import rollout_errors
    from latentwm.eval.visualize import plot_curves, rollout_video, save_gif
    from latentwm.train.checkpoint import load_world_model
    from latentwm.train.trainer import eval_loader

    model, exp, state = load_world_model(cfg.checkpoint, ema=cfg.use_ema)
    r = exp.rollout
    C, H, K = cfg.context or r.context, cfg.horizon or r.horizon, cfg.sample_steps or r.sample_steps
    d = exp.data
    data = LatentClipDataset(cfg.cache_dir or d.cache_dir, C + H, frame_skip=d.frame_skip,
                             action_dim=exp.model.action_dim, split=cfg.split, eval_fraction=d.eval_fraction,
                             seed=d.seed)
    if len(data) == 0:
        raise ConfigError(f"eval: no {cfg.split} clip of {C + H} frames in {data.cache.path}")
    res = rollout_errors(model, eval_loader(data, exp.model.action_dim), C, H, K, cfg.tau_ctx, seed=cfg.seed,
                         keep_predictions=cfg.videos)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    examples = res.pop("examples", [])
    dec = None
    if cfg.decoder and examples:
        from latentwm.encoders.decoder import load_decoder

        dec = load_decoder(cfg.decoder)[0]
    n = 0
    for truth, pred, ctx in examples:
        for b in range(truth.shape[0]):
            video = rollout_video(ctx[b], truth[b], pred[b], decoder=dec,
                                  latent_stats=state["data_stats"]["latents"] if dec is not None else None)
            save_gif(out / f"rollout_{n}.gif", video, fps=2.0)
            n += 1
    plot_curves(out / "rollout_error.png", {"model": (res["horizons"], res["model_error"]),
                                             "copy last frame": (res["horizons"], res["copy_last_error"])},
                f"Rollout error ({cfg.split} clips)", "horizon (model steps)", "latent MSE")
    res.update(checkpoint=str(state["path"]), step=state["step"], context=C, sample_steps=K, tau_ctx=cfg.tau_ctx,
               encoder=state.get("encoder"))
    (out / "metrics.json").write_text(json.dumps(res, indent=1))
    print("horizon  model     copy-last")
    for h, m, c in zip(res["horizons"], res["model_error"], res["copy_last_error"]):
        print(f"{h:>7}  {m:.5f}  {c:.5f}")
    print(f"{res['num_clips']} clips; metrics, plot and {n} videos in {out}")


def _run_demo(cfg):
    from latentwm.demo import run_demo

    run_demo(cfg)


def _demo_default(preset: str):
    from latentwm.demo import DemoConfig

    return DemoConfig(preset=preset)


def _run_train(cfg: ExperimentConfig):
    from latentwm.train.trainer import train

    train(cfg)


def _decoder_default(preset: str):
    from latentwm.train.decoder_trainer import default_decoder_config

    return default_decoder_config(preset)


def _run_train_decoder(cfg):
    from latentwm.train.decoder_trainer import train_decoder

    res = train_decoder(cfg)
    if res:
        print(f"held-out PSNR {res['psnr']:.2f} dB (mean image {res['mean_image_psnr']:.2f} dB), SSIM "
              f"{res['ssim']:.3f}; decoder and metrics.json in {cfg.out_dir}")


def _rl_default(preset: str):
    from latentwm.rl.runner import RLConfig

    return RLConfig()


def _run_rl(cfg):
    from latentwm.rl.runner import run_rl

    run_rl(cfg)


COMMANDS: dict[str, Command] = {
    "demo": Command("the embedded default, end to end on CPU (Push-T): generate → encode → decoder → train → "
                    "roll out → plan → report",
                    _demo_default, _run_demo),
    "generate": Command("simulated Push-T episodes (scripted + random-walk policies)",
                        lambda preset: GenerateConfig(), _run_generate),
    "encode": Command("frames → DINO latents → cache shards (resumable, torchrun-parallel)",
                      lambda preset: EncodeConfig(encoder=get_preset(preset).encoder), _run_encode),
    "rollout": Command("predict futures of held-out clips from their context and actions; side-by-side videos",
                       lambda preset: EvalConfig(videos=8, out_dir="runs/rollout"), _run_eval),
    "eval": Command("rollout error of a trained model vs ground truth and copy-last-frame; plot and videos",
                    lambda preset: EvalConfig(), _run_eval),
    "train": Command("dynamics training with shortcut forcing (single process or torchrun)",
                     get_preset, _run_train),
    "plan": Command("goal-conditioned MPC (CEM / MPPI / gradient) in the real Push-T env vs random and dataset "
                    "actions", _plan_default, _run_plan),
    "train-decoder": Command("RAE-style decoder from latents back to pixels (cache or online encoding; PSNR/SSIM, "
                             "reconstruction grids)", _decoder_default, _run_train_decoder),
    "rl": Command("offline RL in the frozen model: BC + reward heads, PMPO imagination training, gym-pusht eval",
                  _rl_default, _run_rl),
}

# Commands of DESIGN.md section 10 not available in this version yet: listed so users see the whole tool.
PLANNED: dict[str, str] = {}


def _usage() -> str:
    lines = ["usage: latentwm <command> [--preset NAME] [--section.field VALUE ...]", "",
             "Latent world models on frozen DINO features.", "", "commands:"]
    order = ["demo", "generate", "encode", "train", "rollout", "plan", "eval", "train-decoder", "rl"]
    for name in order:
        if name in COMMANDS:
            lines.append(f"  {name:<14} {COMMANDS[name].summary}")
    pending = [n for n in order if n not in COMMANDS and n in PLANNED]
    if pending:
        lines += ["", "not available in this version yet:"]
        lines += [f"  {n:<14} {PLANNED[n]}" for n in pending]
    lines += ["", f"presets: {', '.join(PRESETS)}", "`latentwm <command> --help` lists every field of a command."]
    return "\n".join(lines)


def _pop_preset(args: list[str], default: str) -> tuple[str, list[str]]:
    out, preset, i = [], default, 0
    while i < len(args):
        a = args[i]
        if a == "--preset":
            if i + 1 >= len(args):
                raise ConfigError("--preset needs a value: one of " + ", ".join(PRESETS))
            preset, i = args[i + 1], i + 2
            continue
        if a.startswith("--preset="):
            preset, i = a.split("=", 1)[1], i + 1
            continue
        out.append(a)
        i += 1
    return preset, out


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    name, rest = args[0], args[1:]
    if name == "generate" and rest and rest[0] == "pusht":
        rest = rest[1:]  # `latentwm generate pusht`: Push-T is the one simulator so far
    if name not in COMMANDS:
        why = "is not available in this version yet" if name in PLANNED else "is not a latentwm command"
        print(f"latentwm: {name!r} {why}\n\n{_usage()}", file=sys.stderr)
        return 2
    cmd = COMMANDS[name]
    try:
        preset, rest = _pop_preset(rest, cmd.default_preset)
        default = cmd.make_default(preset)
    except ConfigError as e:
        print(f"latentwm {name}: {e}", file=sys.stderr)
        return 2
    cfg = tyro.cli(type(default), args=rest, default=default, prog=f"latentwm {name}",
                   description=f"{cmd.summary} (defaults from preset {preset!r})")
    cmd.run(cfg)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
