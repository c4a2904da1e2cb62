"""Settings of `latentwm pretrain-encoder`: self-supervised pretraining of a small ViT in the Hugging Face DINOv2
architecture on the user's own frames (`train/encoder_pretrain.py`), saved so every command loads it as it loads
real DINOv2 weights (`--encoder.name <out_dir>/encoder`)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from latentwm.config.base import ConfigError, nonempty, nonneg, positive, unit
from latentwm.config.registry import Source

PretrainObjective = Literal["dino", "masked-pixels", "time-contrastive"]


@dataclass(frozen=True)
class PretrainEncoderConfig:
    """Pretrain a small DINOv2-architecture ViT on the training episodes of a source (held-out episodes never seen),
    then save it with `save_pretrained` to <out_dir>/encoder (use: --encoder.name <out_dir>/encoder)."""

    source: Source = "pusht"
    """Dataset reader (as `latentwm encode --source`)."""
    data_dir: str = "data/pusht_episodes"
    """Where the source's episodes are."""
    out_dir: str = "runs/pretrain_encoder"
    """Checkpoints, logs (metrics.jsonl, tb/) and the result folder <out_dir>/encoder."""
    objective: PretrainObjective = "time-contrastive"
    """dino: DINO (CLS, multi-crop) + iBOT (masked patches) self-distillation with an EMA teacher (the teacher is
    saved); masked-pixels: SimMIM-style masked patch reconstruction; time-contrastive: graded TCN on the whole
    patch-token map (frames near in time close, far frames and other episodes far)."""
    hidden_size: int = 64
    """ViT width (transformers.Dinov2Config hidden_size): the latent dimension D of the encoder."""
    layers: int = 2
    """Transformer blocks (num_hidden_layers)."""
    heads: int = 4
    """Attention heads (num_attention_heads); divides hidden_size."""
    patch_size: int = 14
    mlp_ratio: int = 4
    image_size: int = 112
    """Training resolution (a multiple of patch_size); pass the same --encoder.image-size when using the encoder."""
    steps: int = 2000
    """Optimizer steps."""
    batch_size: int = 64
    """Frames per step; time-contrastive: episodes per batch × frames_per_episode."""
    frames_per_episode: int = 8
    """time-contrastive: frames drawn from each episode of a batch."""
    window: int = 40
    """time-contrastive: an episode's frames of a batch lie within this many env steps of each other."""
    sigma: float = 5.0
    """time-contrastive: targets ∝ exp(−|Δt| / sigma) over the same episode's frames (env steps)."""
    temperature: float = 0.1
    """time-contrastive: softmax temperature of the cosine similarities."""
    pixel_weight: float = 0.0
    """time-contrastive: weight of an added masked-pixel reconstruction term (0: off)."""
    mask_ratio: float = 0.0
    """Share of patches masked (dino's iBOT term, masked-pixels, the pixel term); 0: the objective's default
    (dino 0.3, masked-pixels 0.6)."""
    dino_centering: Literal["sinkhorn", "mean"] = "sinkhorn"
    """dino: how the teacher's outputs become targets — sinkhorn (DINOv2: Sinkhorn–Knopp, every prototype the same
    share of the batch) or mean (DINO v1: a running mean subtracted; on Push-T's near-identical frames the teacher
    turned uniform within 20 steps and stayed there)."""
    koleo_weight: float = 0.1
    """dino: weight of DINOv2's KoLeo term spreading the student's CLS features (0: off)."""
    freeze_prototypes: int = 0
    """dino: steps during which the heads' prototypes (last layers) take no update (DINO's freeze_last_layer)."""
    lr: float = 1e-3
    min_lr_ratio: float = 0.01
    """Linear warmup, then cosine to lr · min_lr_ratio."""
    weight_decay: float = 0.04
    warmup_steps: int = 100
    grad_clip: float = 3.0
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    """auto: bf16 autocast on CUDA, fp32 on the CPU."""
    max_minutes: float = 0.0
    """Safety cap on training time: past it the run checkpoints and exits with an error (rerun with --resume to
    finish); a capped run saves no encoder. 0: no cap."""
    seed: int = 0
    resume: bool = False
    """Continue from the latest complete checkpoint in out_dir (exact on the CPU)."""
    log_every: int = 10
    ckpt_every: int = 500
    keep_last: int = 2
    max_nonfinite: int = 10
    """Non-finite losses/gradients tolerated (step skipped, counted) before the run stops."""
    max_episodes: int = 0
    """Use at most this many training episodes (the first in key order); 0: all."""
    frame_stride: int = 1
    """Keep every k-th frame of an episode (frames are held in memory as uint8 at the source resolution:
    Push-T 240 × 200 frames × 96² × 3 ≈ 1.3 GB at stride 1)."""
    frame_size: int = 0
    """Video sources (droid, epic, video-folder): decode frames at this square size; 0: image_size. Push-T
    episodes are read at their stored size."""
    fps: float = 0.0
    """Video sources: sampling rate (0: native)."""
    source_options: str = ""
    """Further reader options as k=v pairs (as `latentwm encode --options`)."""
    eval_fraction: float = 0.1
    """Held-out share of episodes, never trained on: the dynamics run's data.eval_fraction (planning goals come
    from the held-out episodes)."""
    split_seed: int = 0
    """Seed of the episode split: the dynamics run's data.seed."""
    device: str = "auto"
    """auto (CUDA when available), cpu, cuda or cuda:N."""

    def __post_init__(self):
        nonempty(self, "pretrain_encoder", "out_dir")
        p = "pretrain"
        positive(
            self,
            p,
            "hidden_size",
            "layers",
            "heads",
            "patch_size",
            "mlp_ratio",
            "image_size",
            "steps",
            "batch_size",
            "frames_per_episode",
            "window",
            "sigma",
            "temperature",
            "lr",
            "log_every",
            "ckpt_every",
            "keep_last",
            "frame_stride",
        )
        nonneg(
            self,
            p,
            "pixel_weight",
            "koleo_weight",
            "freeze_prototypes",
            "weight_decay",
            "warmup_steps",
            "grad_clip",
            "max_minutes",
            "max_nonfinite",
            "max_episodes",
            "frame_size",
            "fps",
        )
        unit(self, p, "min_lr_ratio", "eval_fraction")
        if not 0 <= self.mask_ratio < 1:
            raise ConfigError(f"{p}.mask_ratio must be in [0, 1) (0: the objective's default), got {self.mask_ratio}")
        if self.eval_fraction >= 1:
            raise ConfigError(
                f"{p}.eval_fraction must be < 1 (some episodes must be left to train on), got {self.eval_fraction}"
            )
        if self.image_size % self.patch_size:
            raise ConfigError(
                f"{p}.image_size must be a multiple of {p}.patch_size {self.patch_size}, got {self.image_size}"
            )
        if self.hidden_size % self.heads:
            raise ConfigError(f"{p}.hidden_size {self.hidden_size} must be divisible by {p}.heads {self.heads}")
        if not self.data_dir:
            raise ConfigError(f"{p}.data_dir must name the episodes folder / dataset root")
        if not self.out_dir:
            raise ConfigError(f"{p}.out_dir must not be empty")
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", self.device):
            raise ConfigError(f"{p}.device must be auto, cpu, cuda, cuda:N or mps, got {self.device!r}")
        if self.objective == "time-contrastive":
            self._check_groups(p)

    def _check_groups(self, p: str) -> None:
        if self.frames_per_episode < 2:
            raise ConfigError(
                f"{p}.frames_per_episode must be >= 2 for time-contrastive, got {self.frames_per_episode}"
            )
        if self.batch_size % self.frames_per_episode or self.batch_size // self.frames_per_episode < 2:
            raise ConfigError(
                f"{p}.batch_size {self.batch_size} must be a multiple (>= 2×) of "
                f"{p}.frames_per_episode {self.frames_per_episode} for time-contrastive "
                "(episodes per batch × frames per episode)"
            )

    @property
    def episodes_per_batch(self) -> int:
        return self.batch_size // self.frames_per_episode


__all__ = ["PretrainEncoderConfig", "PretrainObjective"]
