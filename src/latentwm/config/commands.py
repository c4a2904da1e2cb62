"""Settings of the commands that are not a training run: generate, encode, eval/rollout, imagine, demo (each command's
section; `latentwm <command> --help` lists them)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from latentwm.config.base import (
    ConfigError,
    nonempty,
    nonempty_or_unset,
    nonneg,
    nonneg_or_unset,
    positive,
    positive_or_unset,
    pow2,
)
from latentwm.config.experiment import ExperimentConfig
from latentwm.config.planning import TEXT_GOAL_GUIDANCE
from latentwm.config.presets import PRESETS, get_preset, preset
from latentwm.config.registry import PLANNER_NAMES, Planner, Source
from latentwm.config.sections import EncoderConfig, TextEncoderConfig
from latentwm.config.stages import DemoSizes, PolicyMix


@dataclass(frozen=True)
class GenerateConfig:
    """Simulated Push-T episodes (gym-pusht) from a mix of goal-directed, random-target and random-walk policies."""

    out_dir: str = "data/pusht_episodes"
    num_episodes: int = 200
    max_steps: int = 200
    """Environment steps per episode (10 Hz); an episode also ends when the block covers the goal zone."""
    seed: int = 0
    mix: PolicyMix = field(default_factory=PolicyMix)
    image_size: int = 96
    render_every: int = 1
    """Render (and store) every k-th env step only: the episode is stored with frame skip k (each stored step spans
    k env steps, its action the k commanded targets concatenated, its reward their sum), one phase of a model's
    frame skip per episode; rendering is most of an env step's cost. 1: every step. Must divide the model's
    data.frame_skip."""
    workers: int | None = None
    """Processes that simulate and render (episode i depends only on the settings and i: the same files whatever
    the count); None: one per CPU core (one process for fewer than 16 episodes to make)."""

    def __post_init__(self):
        nonempty(self, "generate", "out_dir")
        positive(self, "generate", "num_episodes", "max_steps", "image_size", "render_every")
        if self.max_steps < self.render_every:
            raise ConfigError(
                f"generate.max_steps ({self.max_steps}) must be at least generate.render_every ({self.render_every})"
            )
        if self.workers is not None and self.workers < 1:
            raise ConfigError(f"generate.workers must be >= 1 (or unset: one per core), got {self.workers}")

    def settings(self) -> dict:
        """What every episode of one folder shares (generate.json; num_episodes may grow)."""
        return {
            "max_steps": self.max_steps,
            "image_size": self.image_size,
            "seed": self.seed,
            "render_every": self.render_every,
            "mix": {**self.mix.shares(), "noise": list(self.mix.noise)},
        }


@dataclass(frozen=True)
class EncodeConfig:
    """Frames → frozen DINO latents → WebDataset shards + index (resumable; run under torchrun to split work)."""

    source: Source = "pusht"
    """Dataset reader: pusht (`latentwm generate pusht` output), droid (LeRobot v3 / v2.1 or raw DROID), epic
    (EPIC-KITCHENS-100 tree with its CSVs), video-folder (any folder of videos, optional captions), lerobot (any
    LeRobot v3 / v2.1 dataset), agibot (AgiBot World native layout or its LeRobot port), egodex (EgoDex MP4 +
    HDF5), rlds (TFDS RLDS / Open X-Embodiment TFRecord shards: SOAR, Bridge, any set via spec=generic), and the
    annotated video presets ssv2, kinetics, openvid, howto100m, ego4d (videos + the set's own annotation files as
    text). Each reader's module docstring gives its layout and OPTIONS."""
    root: str = "data/pusht_episodes"
    """Where the source's files are."""
    out_dir: str = "data/pusht_latents"
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    """`--encoder.pool 2` stores 2×2-pooled tokens (N/4; recorded in cache.json, training must use the same)."""
    episodes_per_shard: int = 32
    fps: float | None = None
    """Frame rate to sample video sources at, > 0 (e.g. 10 for EPIC's 50/60 fps, 4 for DROID as V-JEPA 2);
    None (not given): the source's native rate."""
    segment_s: float | None = None
    """Cut long videos into episodes of this many seconds; 0: whole videos, uncut;
    None (not given): the source's default (30 s for epic, howto100m and ego4d; whole videos for the others).
    Recorded-episode sources (droid, lerobot, agibot, egodex, rlds) are never cut."""
    cameras: str | None = None
    """Comma-separated cameras to encode (droid, lerobot, agibot); None (not given): all of the dataset's."""
    options: str = ""
    """Extra reader options as k=v pairs separated by spaces (see each reader's OPTIONS)."""
    text: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    """Sentence encoder for the episodes' text (instructions, narrations, captions): every unique sentence is
    embedded once and stored in the cache with per-frame ids; `--text.name ""` stores none."""

    def __post_init__(self):
        nonempty(self, "encode", "out_dir")
        positive(self, "encode", "episodes_per_shard")
        positive_or_unset(self, "encode", fps="the source's native rate")
        nonneg_or_unset(self, "encode", segment_s="the source's default; 0: whole videos")
        nonempty_or_unset(self, "encode", cameras="all of the dataset's cameras")


@dataclass(frozen=True)
class EvalConfig:
    """Roll a trained model out on held-out clips of a latent cache: error per horizon vs copy-last and
    context-average baselines, mean of several samples, swapped actions, and videos."""

    checkpoint: str = "runs/demo/train"
    """A run folder (its latest complete checkpoint is used) or one checkpoint directory."""
    cache_dir: str | None = None
    """Latent cache to evaluate on; None (not given): the one the model was trained on."""
    out_dir: str = "runs/eval"
    split: Literal["eval", "all"] = "eval"
    """eval: the held-out episodes of the training split; all: every episode of the cache."""
    context: int | None = None
    """Observed frames, >= 1; None (not given): the checkpoint's rollout.context."""
    horizon: int | None = None
    """Predicted frames, >= 1; None (not given): the checkpoint's rollout.horizon."""
    sample_steps: int | None = None
    """Denoising steps per frame, a power of two; None (not given): the checkpoint's rollout.sample_steps."""
    tau_ctx: float = 1.0
    videos: int = 4
    """Side-by-side real/predicted GIFs to write."""
    decoder: str | None = None
    """A `latentwm train-decoder` run folder or checkpoint: videos show decoded frames; None (not given): a PCA of
    the features."""
    use_ema: bool = True
    seed: int = 0
    num_samples: int = 4
    """Rollouts per clip: with more than one, the error of their mean is reported beside the single-sample error
    (a sharp stochastic model's mean is clearly better than one sample; a blurry model's is not)."""
    action_swap: bool = True
    """Also roll out with each clip's future actions swapped for the next clip's (same noise): the error increase
    is the model's sensitivity to its actions."""
    max_clips: int | None = None
    """Evaluate at most this many clips (>= 1), spread evenly over the split's clips in order: a fixed subset, the
    same for every model, when many evaluations (a sweep's K = 64 rollouts) must fit a budget. None (not given):
    all of them."""
    device: str = "auto"
    """Where the rollouts run (auto: cuda when available, else cpu): a K = 64 evaluation of a GPU-sized model is
    hours on a CPU."""
    compile: bool = False
    """torch.compile the cached denoising pass (`DynamicsModel.compile_sampling`): the first rollout compiles
    (seconds on the CPU), later ones run faster — worth it for many rollouts."""

    def __post_init__(self):
        nonempty(self, "eval", "out_dir")
        nonneg(self, "eval", "videos")
        positive(self, "eval", "num_samples")
        positive_or_unset(
            self,
            "eval",
            context="the checkpoint's rollout.context",
            horizon="the checkpoint's rollout.horizon",
            max_clips="all clips",
        )
        nonempty_or_unset(self, "eval", cache_dir="the cache the model was trained on", decoder="a PCA of the features")
        if self.sample_steps is not None and not pow2(self.sample_steps):
            raise ConfigError(
                f"eval.sample_steps must be a power of two, got {self.sample_steps} (leave --sample-steps out "
                "for the checkpoint's rollout.sample_steps)"
            )
        if not 0 < self.tau_ctx <= 1:
            raise ConfigError(f"eval.tau_ctx must be in (0, 1], got {self.tau_ctx}")


@dataclass(frozen=True)
class ImagineConfig:
    """Imagine the future a sentence describes: an action-free rollout of a trained model from a real context under
    the text (classifier-free guided), side by side with the real continuation; its last frame is a goal latent
    (`latentwm plan --goal-text` plans toward such a goal)."""

    checkpoint: str = "runs/demo/train"
    """A run folder (its latest complete checkpoint), one checkpoint directory, or a best.pt; the model must have a
    text slot trained on a cache with text."""
    text: str = ""
    """The sentence (required), e.g. "push the T block to the left"; every frame, observed and imagined, carries it."""
    cache_dir: str | None = None
    """Latent cache the context comes from; None (not given): the one the model was trained on."""
    episode: str = "0"
    """dataset/episode_id of the cache (e.g. pusht/episode_000003), or an integer: that held-out clip of the
    training split (its episode, camera and start frame)."""
    camera: str | None = None
    """Camera of a named episode; None (not given): its first."""
    start: int | None = None
    """Stored-frame index (>= 0) of the first context frame; None (not given): the held-out clip's start, or 0 for
    a named episode."""
    context: int | None = None
    """Observed frames (>= 1), frame_skip apart; None (not given): the checkpoint's rollout.context."""
    horizon: int | None = None
    """Imagined frames (>= 1), the last one the goal; None (not given): the checkpoint's rollout.horizon."""
    sample_steps: int = 4
    """K: denoising steps per imagined frame (a power of two ≤ model.k_max)."""
    text_guidance: float = TEXT_GOAL_GUIDANCE
    """Classifier-free guidance scale of the text (1: plain text-conditioned sampling; see planning/imagine.py)."""
    tau_ctx: float = 1.0
    seed: int = 0
    """Noise of the imagined frames."""
    decoder: str | None = None
    """A `latentwm train-decoder` run or checkpoint: the GIF shows decoded frames; None (not given): a PCA of the
    features."""
    text_encoder: str | None = None
    """Where the sentence encoder the training cache used is now (a folder), when it moved; None (not given):
    rebuilt from the name in the checkpoint's text encoder label. Its weights must match the label either way."""
    out_dir: str = "runs/imagine"
    device: str = "auto"
    """auto: cuda when available, else cpu."""

    def __post_init__(self):
        nonempty(self, "imagine", "out_dir")
        nonneg(self, "imagine", "text_guidance")
        positive_or_unset(
            self, "imagine", context="the checkpoint's rollout.context", horizon="the checkpoint's rollout.horizon"
        )
        nonneg_or_unset(self, "imagine", start="the held-out clip's start, or 0 for a named episode")
        nonempty_or_unset(
            self,
            "imagine",
            cache_dir="the cache the model was trained on",
            camera="the episode's first camera",
            decoder="a PCA of the features",
            text_encoder="the one the checkpoint's text encoder label names",
        )
        if not pow2(self.sample_steps):
            raise ConfigError(f"imagine.sample_steps must be a power of two, got {self.sample_steps}")
        if not 0 < self.tau_ctx <= 1:
            raise ConfigError(f"imagine.tau_ctx must be in (0, 1], got {self.tau_ctx}")
        if not self.episode.strip():
            raise ConfigError("imagine.episode is empty: give dataset/episode_id or a held-out clip index")


DemoStage = Literal[
    "episodes",
    "encoder",
    "encoder_quality",
    "latents",
    "decoder",
    "train",
    "state_probe",
    "proprio_probe",
    "evaluate",
    "plan",
    "ladder",
    "rl",
]


@dataclass(frozen=True)
class DemoConfig:
    """End-to-end Push-T on the CPU; writes a report folder (report.md, metrics.json, plots, GIFs)."""

    preset: str = "cpu"
    """Every stage's settings come from this preset: cpu (the full demo, 30–40 min on 2 cores), smoke (CI, about a
    minute); GPU presets need their encoder's pretrained weights."""
    out_dir: str = "runs/demo"
    episodes: int | None = None
    """Episodes to simulate (>= 1); None (not given): the preset's default."""
    max_steps: int | None = None
    """Environment steps per episode (>= 1); None (not given): the preset's default."""
    render_every: int = 1
    """Render every k-th env step only (`latentwm generate --render-every`): one phase of the model's frame skip
    per episode, more episodes per minute of generation; k must divide the preset's data.frame_skip."""
    train_steps: int | None = None
    """Optimizer steps (>= 1); None (not given): the preset's train.steps."""
    plan_goals: int | None = None
    """Planning goals for the MPC stage; 0: skip planning (and the stages only it needs); None (not given): the
    preset's default."""
    planners: tuple[Planner, ...] = ("cem", "mppi", "gradient")
    """Planners scored beside the random and dataset-action baselines."""
    rl: bool = False
    """Also run offline RL (`latentwm rl`: BC + reward heads, PMPO in imagination, gym-pusht evaluation) and add
    its section to the report."""
    encoder: str = "pretrain"
    """pretrain: train the demo's encoder on its own training episodes first (`latentwm pretrain-encoder` with the
    preset's `pretrain` section) and use it; anything else is an encoder for every stage as `--encoder.name` takes
    it (a preset such as tiny-random, a hub id, or a local DINOv2 folder), with the preset's image size."""
    text: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    """The sentence encoder of the Push-T language (generated from the simulator state, `envs/pusht_language.py`):
    the model trains with text and actions (condition dropout on) and the report measures how fast it learns to
    listen to each. `--text.name ""`: no text (the model gets no text slot)."""
    text_arms: tuple[str, ...] = ()
    """Training-arms sweeps to answer the seed's question with (`benchmarks/bench_text_arms.py` output folders, one
    per data size: joint, text-only, action-only and motion-class arms on the same data): the report's "Does the
    model listen?" section adds how much of the actions' gain text alone reaches at each data size and how many steps
    it needs, the arms' tables and curves."""
    encoder_table: str | None = None
    """The encoder table to show under the encoder (a `benchmarks/bench_encoder_pretrain.py` output folder, holding
    encoders.json): every candidate encoder scored on what the planning cost must resolve."""
    data_scaling: str | None = None
    """The data-scaling curve to show after planning (a `benchmarks/bench_data_scaling.py` output folder, holding
    scaling.json and data_scaling.png): success against training trajectories beside DINO-WM's Table 5."""
    state_cost_diagnosis: bool = True
    """Also plan with CEM on the state probe's pose cost alone (visual and proprio weights 0; same goals and seeds):
    if that cannot move the block either, the dynamics model, not the encoder's latent cost, is the bottleneck."""
    seed: int = 0
    fresh: bool = False
    """Delete the demo folder first instead of reusing its finished stages."""
    redo: DemoStage | None = None
    """Redo this stage and every stage that depends on it, reusing the rest (e.g. `--redo plan` after changing the
    planner's code). Stages: episodes, encoder, encoder_quality, latents, decoder, train, state_probe,
    proprio_probe, evaluate, plan, ladder, rl."""

    def __post_init__(self):
        if self.preset not in PRESETS:
            raise ConfigError(f"demo.preset must be one of {list(PRESETS)}, got {self.preset!r}")
        nonempty(self, "demo", "out_dir")
        positive_or_unset(
            self,
            "demo",
            episodes="the preset's default",
            max_steps="the preset's default",
            train_steps="the preset's train.steps",
        )
        positive(self, "demo", "render_every")
        if preset(self.preset).data.frame_skip % self.render_every:
            raise ConfigError(
                f"demo.render_every = {self.render_every} must divide the {self.preset} preset's "
                f"data.frame_skip = {preset(self.preset).data.frame_skip}"
            )
        nonneg_or_unset(self, "demo", plan_goals="the preset's default; 0: skip planning")
        if not self.encoder:
            raise ConfigError("demo.encoder must be 'pretrain' or an encoder name / folder, got ''")
        bad = set(self.planners) - set(PLANNER_NAMES)
        if bad:
            raise ConfigError(f"demo.planners: unknown {sorted(bad)}; choose from {', '.join(PLANNER_NAMES)}")

    @property
    def sizes(self) -> DemoSizes:
        return preset(self.preset).demo

    def experiment(self) -> ExperimentConfig:
        base = get_preset(self.preset)
        out = Path(self.out_dir)
        kw = dict(
            data__cache_dir=str(out / "latents"),
            train__out_dir=str(out / "train"),
            train__resume=True,
            train__seed=self.seed,
            data__seed=self.seed,
        )
        if self.train_steps is not None:
            kw["train__steps"] = self.train_steps
        kw["encoder__name"] = str(self.pretrained_encoder_dir) if self.encoder == "pretrain" else self.encoder
        if not self.text.name:
            kw["model__text_dim"] = 0
        return base.replace(**kw)

    @property
    def pretrained_encoder_dir(self) -> Path:
        """Where the demo's pretrained encoder is saved (`<out_dir>/encoder_pretrain/encoder`)."""
        return Path(self.out_dir) / "encoder_pretrain" / "encoder"

    def goals(self) -> int:
        """Planning goals: plan_goals, or the preset's default when it is not given (0: no planning)."""
        return self.sizes.goals if self.plan_goals is None else self.plan_goals

    def data_size(self) -> tuple[int, int]:
        """(episodes, environment steps per episode): the given ones, else the preset's."""
        return (
            self.sizes.episodes if self.episodes is None else self.episodes,
            self.sizes.env_steps if self.max_steps is None else self.max_steps,
        )

    def generate_config(self) -> GenerateConfig:
        """The episodes the demo simulates: the preset's data size and policy mix, under `<out_dir>/episodes`."""
        n, steps = self.data_size()
        return GenerateConfig(
            out_dir=str(Path(self.out_dir) / "episodes"),
            num_episodes=n,
            max_steps=steps,
            seed=self.seed,
            mix=self.sizes.mix,
            render_every=self.render_every,
        )


@dataclass(frozen=True)
class VerifyConfig:
    """Check every shard of a latent cache against its index (presence, size, CRC-32); exit 2 if any is damaged."""

    cache_dir: str = "data/pusht_latents"
    """The latent cache (`latentwm verify CACHE` takes it as the first argument too)."""
    verbose: bool = False
    """List every shard, not only the damaged ones."""
    add_checksums: bool = False
    """Record the CRC-32 of every shard whose index entry has none (caches written before checksums), trusting its
    bytes as they are now; from then on `verify` and training check them. Without it such a cache fails
    verification as unverifiable."""


@dataclass(frozen=True)
class ExportConfig:
    """One .safetensors file with a trained world model's weights and facts (config, latent statistics, encoder),
    from a full or sharded (FSDP2 / DCP) checkpoint, for `latentwm eval` / `plan` on one device."""

    checkpoint: str = "runs/train"
    """A run folder (its newest verified checkpoint), a step directory, or a one-file checkpoint (best.pt)."""
    out: str = "runs/export/model.safetensors"
    """The file to write (must end in .safetensors; replaced atomically if it exists)."""
    ema: bool = True
    """Export the EMA weights (what sampling uses); --no-ema exports the raw trained weights."""

    def __post_init__(self):
        if not self.checkpoint:
            raise ConfigError("export.checkpoint: empty; give a run folder, step directory or checkpoint file")
        if not self.out.endswith(".safetensors"):
            raise ConfigError(f"export.out: {self.out!r} must end in .safetensors")


__all__ = [
    "DemoConfig",
    "DemoStage",
    "EncodeConfig",
    "EvalConfig",
    "ExportConfig",
    "GenerateConfig",
    "ImagineConfig",
    "PolicyMix",
    "VerifyConfig",
]
