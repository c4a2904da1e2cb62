"""Settings of the stages around dynamics training: the latents → pixels decoder, offline RL, and how big
the demo makes each stage."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from latentwm.config.base import ConfigError, nonempty, nonneg, positive, unit
from latentwm.config.registry import DecoderSizeName, Source
from latentwm.config.sections import EncoderConfig, LoopSettings


@dataclass(frozen=True)
class DecoderConfig(LoopSettings):
    """Train the RAE-style latents → pixels decoder on frames and their latents."""

    episodes_dir: str = "data/pusht_episodes"
    """Raw episodes (the frames to reconstruct), read with `source`."""
    source: Source = "pusht"
    source_options: str = ""
    """Reader options as k=v pairs (as `latentwm encode --options`)."""
    cache_dir: str = "data/pusht_latents"
    """Latent cache of those episodes (`latentwm encode`); empty: encode frames online with `encoder`."""
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    """The frozen encoder (online encoding only; a cache records its own)."""
    out_dir: str = "runs/decoder"
    size: DecoderSizeName = "cpu"
    """Decoder width/depth: RAE's ViT-B / L / XL, or the small tiny / cpu sizes."""
    patch_size: int = 8
    """Output pixels per token side: images are token grid × patch_size pixels square (independent of the
    encoder's patch)."""
    epochs: int = 30
    batch_size: int = 32
    """Frames per optimizer step across all ranks."""
    lr: float = 4e-4
    warmup_steps: int = 100
    noise_tau: float = 0.8
    """Noise augmentation of the standardized input latents: σ = noise_tau · U(0, 1) per frame (0: off)."""
    l1_weight: float = 1.0
    perceptual: Literal["auto", "ssim", "off"] = "auto"
    """auto: LPIPS when available locally, else pixel SSIM (with a notice); ssim: always SSIM; off: none."""
    perceptual_weight: float = 1.0
    adv_weight: float = 0.0
    """Adversarial term's scale on top of the adaptive weight (0: no discriminator)."""
    disc_start_epoch: int = 5
    """Epochs of reconstruction-only warm-up before the discriminator and the adversarial term switch on."""
    disc_lr: float = 1e-4
    disc_channels: int = 32
    frame_stride: int = 1
    """Use every k-th frame of an episode (neighbouring frames are near-duplicates)."""
    max_frames: int = 50_000
    """Cap on frames held in memory per split (evenly subsampled beyond it)."""
    eval_fraction: float = 0.1
    """Held-out share of episodes (the dynamics model's split: same fraction and seed → same episodes)."""
    eval_frames: int = 256
    """Held-out frames scored at every evaluation (evenly spaced)."""
    grid_images: int = 8
    """Originals vs reconstructions shown in each evaluation's picture."""
    max_minutes: float = 0.0
    """Safety cap on training time: past it the run checkpoints and exits with an error (rerun with --resume to
    finish); a capped run never writes results. 0: no cap."""
    log_every: int = 20
    eval_every: int = 1
    """Evaluate every this many epochs."""
    keep_last: int = 2
    device: str = "auto"

    def __post_init__(self):
        nonempty(self, "decoder", "out_dir")
        self.check_loop("decoder")
        positive(
            self,
            "decoder",
            "patch_size",
            "epochs",
            "batch_size",
            "frame_stride",
            "max_frames",
            "eval_frames",
            "eval_every",
            "disc_lr",
            "disc_channels",
        )
        nonneg(
            self,
            "decoder",
            "noise_tau",
            "l1_weight",
            "perceptual_weight",
            "adv_weight",
            "disc_start_epoch",
            "max_minutes",
            "grid_images",
        )
        unit(self, "decoder", "eval_fraction")
        if self.l1_weight == 0 and (self.perceptual == "off" or self.perceptual_weight == 0):
            raise ConfigError("decoder: l1_weight and the perceptual term are both off; nothing to train")


@dataclass(frozen=True)
class RLConfig:
    """Offline RL inside a trained world model (Dreamer 4's recipe), evaluated in gym-pusht."""

    checkpoint: str = "runs/demo/train"
    """The dynamics run (its latest checkpoint, EMA weights; frozen throughout)."""
    cache_dir: str = ""
    """Latent cache with actions and rewards (empty: the one the model was trained on)."""
    out_dir: str = "runs/rl"
    phase: Literal["heads", "imagine", "eval", "all"] = "all"
    heads_steps: int = 600
    imagine_steps: int = 300
    batch_size: int = 32
    clip_len: int = 8
    lr: float = 1e-3
    hidden: int = 256
    reward_steps: int = 4
    """Multi-token reward prediction: the rewards of arriving at this frame and the next L − 1."""
    horizon: int = 8
    """Imagined model steps per rollout."""
    sample_steps: int = 4
    """K for imagined frames (d = 1/K)."""
    context: int = 4
    """Dataset frames observed before imagining (and the policy's history in the real env)."""
    finetune_world_model: bool = False
    """Phase heads: also train the world model (its shortcut-forcing loss on the same clips keeps it a world
    model; lr × world_model_lr_scale); later phases then use the fine-tuned weights, frozen."""
    world_model_lr_scale: float = 0.1
    gamma: float = 0.9
    lam: float = 0.95
    alpha: float = 0.5
    """PMPO: weight of the negative-advantage set (1 − alpha on the positive set)."""
    beta: float = 0.3
    """PMPO: KL-to-BC-prior weight."""
    value_warmup: int = 100
    """Imagination steps that train only the value head first: PMPO uses the advantages' signs, and an untrained
    value (≈ 0) makes every advantage positive (a batch with no signal)."""
    eval_episodes: int = 10
    eval_max_steps: int = 40
    """Model steps per evaluation episode (× frame skip env steps)."""
    videos: int = 2
    log_every: int = 20
    ckpt_every: int = 200
    max_nonfinite: int = 10
    """Non-finite losses/gradients tolerated (step skipped, counted) before a phase stops."""
    seed: int = 0
    device: str = "auto"

    def __post_init__(self):
        nonempty(self, "rl", "out_dir")
        positive(
            self,
            "rl",
            "heads_steps",
            "imagine_steps",
            "batch_size",
            "clip_len",
            "lr",
            "hidden",
            "reward_steps",
            "horizon",
            "sample_steps",
            "context",
            "eval_episodes",
            "eval_max_steps",
            "log_every",
            "ckpt_every",
            "world_model_lr_scale",
        )
        nonneg(self, "rl", "value_warmup", "beta", "videos", "max_nonfinite")
        unit(self, "rl", "gamma", "lam", "alpha")
        if self.clip_len < 2:
            raise ConfigError("rl.clip_len must be >= 2 (rewards need a next frame)")


@dataclass(frozen=True)
class PolicyMix:
    """Which Push-T policies drive the episodes (envs/pusht_policies.py): shares that sum to 1, and the command noise
    levels the pushing policies draw from (one per episode)."""

    goal: float = 0.5
    """Noisy pushing of the block toward the green zone's pose (DINO-WM's data are noisy replays of expert pushes)."""
    scripted: float = 0.3
    """Pushing toward random targets: block motion in every direction."""
    random_walk: float = 0.2
    """A smoothed random walk of the pusher: free motion and chance contacts."""
    noise: tuple[float, ...] = (4.0, 12.0, 25.0)
    """Command noise levels (std, arena px) of the pushing policies; each episode draws one uniformly."""

    def __post_init__(self):
        nonneg(self, "generate.mix", "goal", "scripted", "random_walk")
        total = self.goal + self.scripted + self.random_walk
        if abs(total - 1.0) > 1e-6:
            raise ConfigError(f"generate.mix: the shares goal + scripted + random_walk must sum to 1, got {total:g}")
        if not self.noise or any(not n >= 0 for n in self.noise):
            raise ConfigError(f"generate.mix.noise: need one or more levels >= 0, got {self.noise}")

    def shares(self) -> dict[str, float]:
        return {"goal": self.goal, "scripted": self.scripted, "random_walk": self.random_walk}


@dataclass(frozen=True)
class DemoSizes:
    """How big `latentwm demo` makes each stage (the preset's demo section). Push-T runs at 10 Hz; frame skip 5 → 2
    model steps per second."""

    episodes: int = 240
    env_steps: int = 200
    """Environment steps per simulated episode."""
    goals: int = 20
    """Planning goals (DINO-WM's protocol on held-out episodes; ~12 s per goal for all methods on the cpu model)."""
    decoder_frames: int = 4000
    """Frames the demo's decoder trains on (evenly strided over the episodes)."""
    decoder_epochs: int = 8
    """Epochs of the decoder stage: a fixed count, so the decoder is the same on a busy and an idle machine."""
    state_probe_steps: int = 2000
    """Adam steps of the Push-T state probe (pose from encoder latents, planning/state_probe.py) the demo fits; 0: no
    probe (no state errors, no state-cost diagnosis). Half of STATE_PROBE_CONFIG's 4000: on the cpu cache 48 s on one
    busy core, held-out agent / block / angle 80 px / 34 px / 41° vs 73 / 34 / 39 with 4000 steps."""
    state_probe_clips: int = 3072
    """Training clips whose frames the state probe reads (held-out clips: as many, at most)."""
    cost_quality_goals: int = 8
    """Held-out goals on which the demo scores its encoder's goal cost (and the random encoder's) with the simulator
    as the model (planning/cost_quality.py); 0: skip."""
    text_horizon: int = 16
    """Horizon of the text-conditioned vs unconditioned (and another clip's text) rollout comparison on held-out
    clips with their held-out paraphrases; 0: skip."""
    mix: PolicyMix = field(default_factory=PolicyMix)
    """The policies that drive the simulated episodes."""
    ladder_state_steps: int = 3000
    """Adam steps of the planning ladder's privileged state model (planning/ladder.py: the simulator with the state
    and the latent cost, the state model, the latent model at K = 1 and 4, random actions on the planning goals);
    0: no ladder."""
    text_goal_planners: tuple[str, ...] = ("cem",)
    """Planners run a second time on the same starts toward goals given as sentences (the model imagines the goal);
    empty: skip."""

    def __post_init__(self):
        positive(self, "demo", "episodes", "env_steps", "decoder_frames", "decoder_epochs", "state_probe_clips")
        nonneg(self, "demo", "goals", "state_probe_steps", "cost_quality_goals", "text_horizon", "ladder_state_steps")


__all__ = ["DecoderConfig", "DemoSizes", "PolicyMix", "RLConfig"]
