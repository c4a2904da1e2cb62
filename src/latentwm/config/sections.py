"""Frozen dataclass configs and named presets.

Every command of the CLI is built from these (tyro). Validation happens in `__post_init__`, so a bad value is
rejected the moment a config exists, with the field named: `ConfigError("model.width must be > 0, got -3")`.
Cross-field checks (latent width vs encoder, action dims) live on `ExperimentConfig`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

from latentwm.encoders.presets import ENCODER_PRESETS


class ConfigError(ValueError):
    """A config value is out of range or inconsistent; the message names the field."""


def _positive(obj, prefix: str, *names: str) -> None:
    for n in names:
        v = getattr(obj, n)
        if v is None or v <= 0:
            raise ConfigError(f"{prefix}.{n} must be > 0, got {v!r}")


def _nonneg(obj, prefix: str, *names: str) -> None:
    for n in names:
        v = getattr(obj, n)
        if v < 0:
            raise ConfigError(f"{prefix}.{n} must be >= 0, got {v!r}")


def _unit(obj, prefix: str, *names: str) -> None:
    for n in names:
        v = getattr(obj, n)
        if not 0.0 <= v <= 1.0:
            raise ConfigError(f"{prefix}.{n} must be in [0, 1], got {v!r}")


def _pow2(v: int) -> bool:
    return v > 0 and (v & (v - 1)) == 0


@dataclass(frozen=True)
class EncoderConfig:
    """Frozen DINO encoder (section 4)."""

    name: str = "tiny-random"
    """Preset (dinov2-s, dinov2-reg-b, dinov3-s, tiny-random, ...) or a local folder with a transformers model."""
    image_size: int = 224
    """Frames are resized (bicubic, antialias) to image_size², a multiple of the patch size."""
    local_files_only: bool = True
    """Never download at run time; a missing model is an error that says how to fetch it."""
    batch_size: int = 64
    """Frames per encoder forward."""
    seed: int = 0
    """Seed for random-weight presets (tiny-random, ...): same seed, same encoder."""
    pool: int = 1
    """1, or 2 to average-pool the patch-token grid 2×2 (N → N/4 tokens; a latent cache records it)."""

    def __post_init__(self):
        _positive(self, "encoder", "image_size", "batch_size")
        if self.pool not in (1, 2):
            raise ConfigError(f"encoder.pool must be 1 or 2, got {self.pool}")
        preset = ENCODER_PRESETS.get(self.name)
        if preset is None and not ("/" in self.name or "\\" in self.name or self.name.startswith(".")):
            raise ConfigError(
                f"encoder.name: unknown preset {self.name!r}; choose one of {sorted(ENCODER_PRESETS)} "
                "or give a local model folder / hub id containing '/'"
            )
        if preset is not None and self.image_size % preset.patch_size:
            raise ConfigError(
                f"encoder.image_size must be a multiple of the patch size {preset.patch_size} of "
                f"{self.name!r}, got {self.image_size}"
            )
        if preset is not None and (self.image_size // preset.patch_size) % self.pool:
            raise ConfigError(f"encoder.pool {self.pool} needs an even patch grid; image_size {self.image_size} / "
                              f"patch {preset.patch_size} = {self.image_size // preset.patch_size}")

    @property
    def preset(self):
        return ENCODER_PRESETS.get(self.name)

    @property
    def grid(self) -> int | None:
        """Side of the latent token grid (after pooling), or None when the encoder is a local model not yet loaded."""
        p = self.preset
        return None if p is None else self.image_size // p.patch_size // self.pool


@dataclass(frozen=True)
class ModelConfig:
    """Dynamics transformer (section 5)."""

    latent_dim: int = 384
    """D: width of the encoder's patch tokens."""
    latent_grid: int = 16
    """Side of the latent token grid (N = latent_grid²)."""
    patch_group: int = 1
    """1, or 2 to group 2×2 latent tokens into one (N/4 tokens of 4D features)."""
    width: int = 512
    depth: int = 12
    heads: int = 8
    kv_heads: int = 2
    """Grouped-query attention: heads share kv_heads key/value heads."""
    mlp_ratio: float = 4.0
    """SwiGLU hidden size is 2/3 · mlp_ratio · width (rounded to a multiple of 8), the usual parameter match."""
    time_every: int = 4
    """One causal time block every `time_every` layers (the last of each group); the rest are space blocks."""
    registers: int = 4
    action_dim: int = 10
    """Actions are zero-padded to this width (Push-T with frame skip 5: 2 × 5 = 10)."""
    context_frames: int = 16
    """Time attention sees at most this many frames (current included): the KV cache's window."""
    softcap: float | None = 50.0
    """Attention logits become c·tanh(s/c); None turns capping off (and lets the fused path use SDPA)."""
    attention: Literal["eager", "fused"] = "fused"
    """eager: reference math; fused: flex_attention (with soft cap) or SDPA (without)."""
    k_max: int = 64
    """Finest step size is 1/k_max (a power of two)."""
    rope_base: float = 10000.0

    def __post_init__(self):
        _positive(self, "model", "latent_dim", "latent_grid", "width", "depth", "heads", "kv_heads",
                  "mlp_ratio", "time_every", "action_dim", "context_frames", "k_max", "rope_base")
        _nonneg(self, "model", "registers")
        if self.patch_group not in (1, 2):
            raise ConfigError(f"model.patch_group must be 1 or 2, got {self.patch_group}")
        if self.patch_group == 2 and self.latent_grid % 2:
            raise ConfigError(f"model.latent_grid must be even with patch_group 2, got {self.latent_grid}")
        if self.width % self.heads:
            raise ConfigError(f"model.width ({self.width}) must be divisible by model.heads ({self.heads})")
        if self.heads % self.kv_heads:
            raise ConfigError(f"model.heads ({self.heads}) must be divisible by model.kv_heads ({self.kv_heads})")
        if (self.width // self.heads) % 4:
            raise ConfigError(
                f"model head dim width/heads = {self.width // self.heads} must be divisible by 4 (2D RoPE)")
        if self.depth < self.time_every:
            raise ConfigError(
                f"model.depth ({self.depth}) must be >= model.time_every ({self.time_every}): "
                "a model with no time block cannot predict the future")
        if not _pow2(self.k_max):
            raise ConfigError(f"model.k_max must be a power of two, got {self.k_max}")
        if self.softcap is not None and self.softcap <= 0:
            raise ConfigError(f"model.softcap must be > 0 or None, got {self.softcap}")

    @property
    def num_latent_tokens(self) -> int:
        """N: latent tokens per frame as the encoder produces them."""
        return self.latent_grid**2

    @property
    def head_dim(self) -> int:
        return self.width // self.heads

    @property
    def mlp_hidden(self) -> int:
        return int(round(2 / 3 * self.mlp_ratio * self.width / 8)) * 8


@dataclass(frozen=True)
class ObjectiveConfig:
    """Shortcut forcing (section 5)."""

    bootstrap_fraction: float = 0.25
    """Fraction of sequences per batch trained with d > 1/k_max (self-consistency targets)."""
    bootstrap_start: int = 1000
    """Flow-only warm-up steps before bootstrap targets are used."""
    ramp_weight: bool = True
    """Weight frames by w(τ) = 0.9τ + 0.1."""
    tau_buckets: int = 4
    """Loss is logged split into this many equal τ buckets."""

    def __post_init__(self):
        _unit(self, "objective", "bootstrap_fraction")
        _nonneg(self, "objective", "bootstrap_start")
        _positive(self, "objective", "tau_buckets")


@dataclass(frozen=True)
class RolloutConfig:
    """K-step sampling used for evaluation rollouts and planning."""

    sample_steps: int = 4
    """K: denoising steps per generated frame (a power of two ≤ model.k_max)."""
    tau_ctx: float = 1.0
    """Signal level at which context frames enter the cache (1.0 clean; e.g. 0.9 lightly re-noised)."""
    context: int = 4
    """Observed frames given before the model predicts."""
    horizon: int = 8
    """Frames predicted in evaluation rollouts."""
    use_ema: bool = True
    decoder: str = ""
    """A `latentwm train-decoder` run (or checkpoint) on the same encoder's latents: evaluation videos show decoded
    frames; empty: PCA of the features."""

    def __post_init__(self):
        _positive(self, "rollout", "sample_steps", "context", "horizon")
        if not _pow2(self.sample_steps):
            raise ConfigError(f"rollout.sample_steps must be a power of two, got {self.sample_steps}")
        if not 0.0 < self.tau_ctx <= 1.0:
            raise ConfigError(f"rollout.tau_ctx must be in (0, 1], got {self.tau_ctx}")


@dataclass(frozen=True)
class DataConfig:
    """Where training clips come from and how they are cut."""

    cache_dir: str = "data/pusht_latents"
    """Latent cache (WebDataset shards + index) written by `latentwm encode`."""
    clip_len: int = 8
    """T: frames per training clip (after frame skip)."""
    frame_skip: int = 5
    """Environment steps per model step; actions of the skipped steps are concatenated."""
    env_action_dim: int = 2
    """Action width per environment step in the dataset (Push-T: 2). 0 for action-free video."""
    batch_size: int = 16
    """Clips per optimizer step across all ranks (global batch, before gradient accumulation)."""
    num_workers: int = 0
    eval_fraction: float = 0.1
    """Share of episodes held out for evaluation (by episode, never by clip)."""
    mixture: str = ""
    """Train on a weighted mixture of caches instead of cache_dir, e.g. "epic=/d/epic:0.7,droid=/d/droid:0.3"."""
    mixture_block: int = 1000
    """The mixture's proportions are exact within every block of this many samples."""
    online_encode: bool = False
    """Read raw episodes from episodes_dir and encode their frames on the device inside the training loop (the same
    clips and batches as a latent cache of them) instead of reading cache_dir."""
    source: Literal["pusht", "droid", "epic", "video-folder"] = "pusht"
    """online_encode: the reader of episodes_dir (as `latentwm encode --source`)."""
    episodes_dir: str = ""
    """online_encode: where the source's raw episodes are."""
    source_options: str = ""
    """online_encode: reader options as k=v pairs (fps=10 segment_s=30 cameras=wrist_left ...)."""
    latent_stats: str = ""
    """online_encode: per-channel latent statistics from a latent cache directory (of the same encoder) or a
    LatentStats .safetensors file; empty: estimated at start from up to 1024 frames of the episodes."""
    seed: int = 0

    def __post_init__(self):
        _positive(self, "data", "clip_len", "frame_skip", "batch_size", "mixture_block")
        if self.mixture:
            from latentwm.data.mixture import MixtureSpec

            try:
                MixtureSpec.parse(self.mixture)
            except ValueError as e:
                raise ConfigError(f"data.mixture: {e}") from None
        _nonneg(self, "data", "env_action_dim", "num_workers")
        _unit(self, "data", "eval_fraction")

    @property
    def action_dim(self) -> int:
        """Width of one model-step action: env_action_dim × frame_skip."""
        return self.env_action_dim * self.frame_skip


@dataclass(frozen=True)
class TrainConfig:
    """Optimizer, schedule, precision, checkpoints and logging (section 9)."""

    out_dir: str = "runs/train"
    steps: int = 10000
    lr: float = 3e-4
    min_lr_ratio: float = 0.1
    """Cosine decays to lr · min_lr_ratio."""
    warmup_steps: int = 500
    weight_decay: float = 0.05
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    grad_accum: int = 1
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    """auto: bf16 autocast on CUDA, fp32 on CPU."""
    compile: bool = False
    """torch.compile the model (GPU runs)."""
    distributed: Literal["ddp", "fsdp"] = "ddp"
    """Strategy under torchrun: DDP, or FSDP2 fully_shard for models that do not fit one GPU."""
    seed: int = 0
    log_every: int = 10
    eval_every: int = 500
    ckpt_every: int = 500
    keep_last: int = 3
    resume: bool = False
    """Continue from the latest complete checkpoint in out_dir."""
    max_nonfinite: int = 10
    """Non-finite losses/gradients tolerated (step skipped, counted) before the run stops."""
    wandb: bool = False
    """Also log to Weights & Biases (needs the `wandb` extra)."""

    def __post_init__(self):
        _positive(self, "train", "steps", "lr", "grad_clip", "grad_accum", "log_every", "eval_every",
                  "ckpt_every", "keep_last")
        _nonneg(self, "train", "warmup_steps", "weight_decay", "max_nonfinite")
        _unit(self, "train", "min_lr_ratio", "beta1", "beta2", "ema_decay")


@dataclass(frozen=True)
class PlanConfig:
    """Goal-conditioned MPC (section 6); defaults are DINO-WM's Push-T settings."""

    planner: Literal["cem", "mppi", "gradient"] = "cem"
    horizon: int = 5
    """Planned model steps (with frame skip 5: 25 environment steps)."""
    population: int = 300
    elites: int = 30
    iterations: int = 30
    init_std: float = 1.0
    """Initial sampling std in normalized action units."""
    temperature: float = 0.5
    """MPPI: weights ∝ exp(−cost / temperature)."""
    grad_lr: float = 0.1
    grad_steps: int = 100
    exec_steps: int = 5
    """Actions executed per replanning (receding horizon)."""
    cost: Literal["mse", "l1", "cosine"] = "mse"
    cost_all_frames: bool = False
    """Weight every predicted frame (later frames more) instead of only the last."""
    sample_steps: int = 1
    """K for the candidate rollouts."""
    warm_start: bool = True
    goal_offset: int = 25
    """Goal = observation this many environment steps later in a held-out episode."""
    proprio_weight: float = 1.0
    """Weight of the proprio term (DINO-WM: visual MSE + 1.0 × proprio MSE), used when a proprio probe is given
    (`planning/proprio.py`); 0 turns it off."""
    num_goals: int = 50
    seed: int = 0

    def __post_init__(self):
        _positive(self, "plan", "horizon", "population", "elites", "iterations", "init_std", "temperature",
                  "grad_lr", "grad_steps", "exec_steps", "sample_steps", "goal_offset", "num_goals")
        if not self.proprio_weight >= 0:
            raise ConfigError(f"plan.proprio_weight must be >= 0, got {self.proprio_weight}")
        if self.elites > self.population:
            raise ConfigError(f"plan.elites ({self.elites}) must be <= plan.population ({self.population})")
        if not _pow2(self.sample_steps):
            raise ConfigError(f"plan.sample_steps must be a power of two, got {self.sample_steps}")


@dataclass(frozen=True)
class ExperimentConfig:
    """Everything one training / evaluation run needs; `preset` records where the defaults came from."""

    preset: str = "cpu"
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    plan: PlanConfig = field(default_factory=PlanConfig)

    def __post_init__(self):
        enc = self.encoder.preset
        if enc is not None:
            if self.model.latent_dim != enc.hidden_size:
                raise ConfigError(
                    f"model.latent_dim ({self.model.latent_dim}) must equal the width of encoder "
                    f"{self.encoder.name!r} ({enc.hidden_size})")
            if self.model.latent_grid != self.encoder.grid:
                raise ConfigError(
                    f"model.latent_grid ({self.model.latent_grid}) must equal encoder.image_size / patch / pool = "
                    f"{self.encoder.image_size} / {enc.patch_size} / {self.encoder.pool} = {self.encoder.grid}")
        if self.data.action_dim > self.model.action_dim:
            raise ConfigError(
                f"model.action_dim ({self.model.action_dim}) is smaller than the data's action width "
                f"data.env_action_dim × data.frame_skip = {self.data.env_action_dim} × {self.data.frame_skip} "
                f"= {self.data.action_dim}")
        if self.data.clip_len > self.model.context_frames:
            raise ConfigError(
                f"data.clip_len ({self.data.clip_len}) must be <= model.context_frames "
                f"({self.model.context_frames}): training would see longer histories than generation can keep")
        if self.rollout.sample_steps > self.model.k_max or self.plan.sample_steps > self.model.k_max:
            raise ConfigError(f"rollout/plan sample_steps must be <= model.k_max ({self.model.k_max})")
        if self.rollout.context > self.model.context_frames:
            raise ConfigError(
                f"rollout.context ({self.rollout.context}) must be <= model.context_frames "
                f"({self.model.context_frames})")

    def replace(self, **sections) -> "ExperimentConfig":
        """Copy with whole sections or `section__field=value` overrides, re-validated."""
        out = {}
        for key, value in sections.items():
            if "__" in key:
                sec, name = key.split("__", 1)
                base = out.get(sec, getattr(self, sec))
                out[sec] = dataclasses.replace(base, **{name: value})
            else:
                out[key] = value
        return dataclasses.replace(self, **out)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ExperimentConfig":
        kinds = {f.name: f.type for f in dataclasses.fields(cls)}
        sections = dict(encoder=EncoderConfig, model=ModelConfig, objective=ObjectiveConfig,
                        rollout=RolloutConfig, data=DataConfig, train=TrainConfig, plan=PlanConfig)
        kw = {}
        for k, v in d.items():
            if k not in kinds:
                raise ConfigError(f"unknown config section {k!r}")
            kw[k] = sections[k](**v) if k in sections else v
        return cls(**kw)


# ----------------------------------------------------------------------------------------------------------------
# Presets. Parameter counts are the dynamics model's (tests check they stay true within 5%).


def _tiny() -> ExperimentConfig:
    """Tests: 54k parameters; 4×4 latent grid of the 64-wide tiny-random encoder."""
    enc = EncoderConfig(name="tiny-random", image_size=56, batch_size=32)
    model = ModelConfig(latent_dim=64, latent_grid=4, width=32, depth=4, heads=4, kv_heads=2, time_every=2,
                        registers=2, action_dim=10, context_frames=8, softcap=50.0, k_max=8)
    return ExperimentConfig(
        preset="tiny", encoder=enc, model=model,
        objective=ObjectiveConfig(bootstrap_start=10),
        rollout=RolloutConfig(sample_steps=2, context=2, horizon=4),
        data=DataConfig(clip_len=6, batch_size=4),
        train=TrainConfig(steps=50, lr=1e-3, warmup_steps=5, log_every=5, eval_every=25, ckpt_every=25,
                          ema_decay=0.9),
        plan=PlanConfig(population=32, elites=4, iterations=3, horizon=3, grad_steps=5, num_goals=2),
    )


def _smoke() -> ExperimentConfig:
    """CI demo (`latentwm demo --preset smoke`, < 5 minutes): the tiny model (54k parameters), a short run."""
    base = _tiny()
    return base.replace(preset="smoke", train=dataclasses.replace(base.train, steps=150, eval_every=150,
                                                                    ckpt_every=150))


def _cpu() -> ExperimentConfig:
    """The CPU demo: 1.13M parameters; 8×8 grid of the 64-wide tiny-random encoder at 112 px."""
    enc = EncoderConfig(name="tiny-random", image_size=112, batch_size=64)
    model = ModelConfig(latent_dim=64, latent_grid=8, width=128, depth=6, heads=4, kv_heads=2, time_every=2,
                        registers=4, action_dim=10, context_frames=16, softcap=50.0, k_max=32)
    return ExperimentConfig(
        preset="cpu", encoder=enc, model=model,
        objective=ObjectiveConfig(bootstrap_start=400),
        rollout=RolloutConfig(sample_steps=4, context=4, horizon=8),
        data=DataConfig(clip_len=12, batch_size=16),
        train=TrainConfig(steps=1200, lr=1e-3, warmup_steps=100, eval_every=400, ckpt_every=200,
                          ema_decay=0.995),
    )


def _gpu(name: str, enc_name: str, width: int, depth: int, heads: int, kv_heads: int) -> ExperimentConfig:
    p = ENCODER_PRESETS[enc_name]
    enc = EncoderConfig(name=enc_name, image_size=224 if p.patch_size == 14 else 256, batch_size=256)
    model = ModelConfig(latent_dim=p.hidden_size, latent_grid=enc.grid, patch_group=2, width=width, depth=depth,
                        heads=heads, kv_heads=kv_heads, time_every=4, registers=4, action_dim=10,
                        context_frames=16, k_max=64)
    return ExperimentConfig(
        preset=name, encoder=enc, model=model,
        data=DataConfig(clip_len=16, batch_size=256, num_workers=8),
        train=TrainConfig(steps=200_000, lr=3e-4, warmup_steps=2000, eval_every=5000, ckpt_every=2000),
    )


def _small() -> ExperimentConfig:
    """One GPU: 46M parameters; DINOv2-S (384-wide, 16×16 grid) latents grouped 2×2."""
    return _gpu("small", "dinov2-s", 512, 16, 8, 2)


def _base() -> ExperimentConfig:
    """A node of GPUs: 272M parameters; DINOv2-B with registers (768-wide), grouped 2×2."""
    return _gpu("base", "dinov2-reg-b", 1024, 24, 16, 4)


def _large() -> ExperimentConfig:
    """Many nodes (FSDP2): 1.08B parameters; DINOv3-L (1024-wide, 16×16 grid at 256 px), grouped 2×2."""
    cfg = _gpu("large", "dinov3-l", 2048, 24, 16, 4)
    return cfg.replace(train__distributed="fsdp")


PRESETS = {"tiny": _tiny, "smoke": _smoke, "cpu": _cpu, "small": _small, "base": _base, "large": _large}


def get_preset(name: str) -> ExperimentConfig:
    """A named preset; an unknown name is a ConfigError listing the known ones."""
    try:
        return PRESETS[name]()
    except KeyError:
        raise ConfigError(f"preset: unknown preset {name!r}; choose one of {sorted(PRESETS)}") from None
