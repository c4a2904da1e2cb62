"""Frozen DINOv2 / DINOv2-with-registers / DINOv3 encoder through Hugging Face transformers (DESIGN.md section 4).

uint8 frames → resize (bicubic, antialias) to image_size² → ImageNet mean/std → ViT → patch tokens only (CLS and
register tokens dropped) → LayerNorm without affine (RAE's normalization) → optionally per-channel dataset statistics.

The affine-free final LayerNorm is obtained by setting the model's own final norm to weight 1 / bias 0 at load time:
`last_hidden_state` then *is* LayerNorm(h) without affine, with the model's eps, at zero extra cost over the bare
model forward (no hooks, no copies of intermediate layers).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from latentwm.config import EncoderConfig
from latentwm.data.episodes import NormStats, compute_norm_stats
from latentwm.encoders.presets import ENCODER_PRESETS

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# transformers model_type -> (model class name, config class name)
_FAMILIES = {
    "dinov2": ("Dinov2Model", "Dinov2Config"),
    "dinov2_with_registers": ("Dinov2WithRegistersModel", "Dinov2WithRegistersConfig"),
    "dinov3_vit": ("DINOv3ViTModel", "DINOv3ViTConfig"),
}
_PRESET_FAMILY = {"dinov2": "dinov2", "dinov2-reg": "dinov2_with_registers", "dinov3": "dinov3_vit"}


class EncoderWeightsMissing(RuntimeError):
    """Pretrained weights are not on this machine (and downloading is off)."""


def _classes(model_type: str):
    import transformers

    if model_type not in _FAMILIES:
        raise ValueError(f"encoder: unsupported model type {model_type!r}; expected one of {sorted(_FAMILIES)}")
    m, c = _FAMILIES[model_type]
    return getattr(transformers, m), getattr(transformers, c)


def _final_norm(model: nn.Module) -> nn.Module:
    for name in ("layernorm", "norm"):
        if isinstance(getattr(model, name, None), nn.LayerNorm):
            return getattr(model, name)
    raise ValueError(f"encoder: cannot find the final LayerNorm of {type(model).__name__}")


def load_backbone(cfg: EncoderConfig) -> tuple[nn.Module, str]:
    """(transformers model, weights label) for a preset or a local folder / hub id."""
    preset = ENCODER_PRESETS.get(cfg.name)
    if preset is not None and preset.hub_id is None:  # random weights, built from a config: never downloaded
        model_cls, config_cls = _classes(_PRESET_FAMILY[preset.family])
        torch.manual_seed(cfg.seed)
        conf = config_cls(image_size=cfg.image_size, **preset.tiny_config)
        return model_cls(conf), f"random:{cfg.name}"
    source = preset.hub_id if preset is not None else cfg.name
    from transformers import AutoConfig

    try:
        conf = AutoConfig.from_pretrained(source, local_files_only=cfg.local_files_only)
        model_cls, _ = _classes(conf.model_type)
        model = model_cls.from_pretrained(source, local_files_only=cfg.local_files_only)
    except (OSError, ValueError) as e:
        if isinstance(e, ValueError) and "unsupported model type" in str(e):
            raise
        where = "the local folder" if Path(source).exists() else "the Hugging Face cache"
        raise EncoderWeightsMissing(
            f"encoder {cfg.name!r}: no weights for {source!r} in {where} "
            f"(HF_HOME={os.environ.get('HF_HOME', '~/.cache/huggingface')}, local_files_only="
            f"{cfg.local_files_only}). On a machine with internet run `huggingface-cli download {source}` (DINOv3 "
            "checkpoints are gated: accept their license on the hub first) and copy the cache here, or save the "
            "model with `save_pretrained(folder)` and pass `--encoder.name /path/to/folder`. "
            f"Cause: {type(e).__name__}: {e}") from e
    return model, f"pretrained:{source}"


class DinoEncoder(nn.Module):
    """Frozen patch-token encoder. `encode(frames)` -> (B, N, D) float32 latents on `device`.

    Always in eval mode and without gradients; bf16 autocast on CUDA. `weights_label` says what the weights are
    ("random:tiny-random" or "pretrained:facebook/dinov2-small"); everything that stores latents records it.
    """

    def __init__(self, backbone: nn.Module, cfg: EncoderConfig, weights_label: str):
        super().__init__()
        self.cfg, self.backbone, self.weights_label = cfg, backbone, weights_label
        bc = backbone.config
        self.patch_size = bc.patch_size if isinstance(bc.patch_size, int) else bc.patch_size[0]
        if cfg.image_size % self.patch_size:
            raise ValueError(f"encoder.image_size {cfg.image_size} is not a multiple of the patch size "
                             f"{self.patch_size} of {cfg.name!r}")
        self.skip = 1 + int(getattr(bc, "num_register_tokens", 0) or 0)  # CLS + registers come first
        norm = _final_norm(backbone)
        with torch.no_grad():  # RAE: the final LayerNorm without its affine
            norm.weight.fill_(1.0)
            norm.bias.zero_()
        self.backbone.requires_grad_(False).eval()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("_scale", 1.0 / (255.0 * self.std), persistent=False)
        self.register_buffer("_shift", -self.mean / self.std, persistent=False)
        self.stats: NormStats | None = None
        self._stat_tensors: tuple[torch.Tensor, torch.Tensor] | None = None

    @classmethod
    def from_config(cls, cfg: EncoderConfig, device: torch.device | str | None = None) -> DinoEncoder:
        backbone, label = load_backbone(cfg)
        return cls(backbone, cfg, label).to(device or "cpu")

    def train(self, mode: bool = True) -> DinoEncoder:
        return super().train(False)  # frozen: never leaves eval mode (no dropout, fixed norms)

    @property
    def is_random(self) -> bool:
        return self.weights_label.startswith("random")

    @property
    def dim(self) -> int:
        return int(self.backbone.config.hidden_size)

    @property
    def grid(self) -> int:
        return self.cfg.image_size // self.patch_size

    @property
    def num_tokens(self) -> int:
        return self.grid**2

    @property
    def device(self) -> torch.device:
        return self.mean.device

    def set_stats(self, stats: NormStats | None) -> None:
        """Per-channel dataset statistics applied after the LayerNorm: (x − mean) / std."""
        self.stats = stats
        self._stat_tensors = None if stats is None else (
            torch.as_tensor(stats.mean, dtype=torch.float32, device=self.device),
            torch.as_tensor(stats.std, dtype=torch.float32, device=self.device))

    def preprocess(self, frames: torch.Tensor | np.ndarray) -> torch.Tensor:
        """uint8 (B, H, W, 3) or (B, 3, H, W) -> normalized float (B, 3, S, S), S = image_size."""
        x = torch.as_tensor(frames)
        if x.dtype != torch.uint8:
            raise ValueError(f"encoder: frames must be uint8 (B, H, W, 3) or (B, 3, H, W), got dtype {x.dtype}")
        if x.dim() != 4 or (x.shape[-1] != 3 and x.shape[1] != 3):
            raise ValueError(f"encoder: frames must be (B, H, W, 3) or (B, 3, H, W) with 3 channels, got "
                             f"{tuple(x.shape)}")
        if x.shape[-1] == 3 and x.shape[1] != 3:
            x = x.permute(0, 3, 1, 2).contiguous()  # reorder while still 1 byte per value: 10× cheaper
        x = x.to(self.device, non_blocking=True)
        S = self.cfg.image_size
        if x.shape[-2:] != (S, S):
            x = F.interpolate(x.float().div_(255.0), size=(S, S), mode="bicubic", antialias=True,
                              align_corners=False).clamp_(0, 1)
            return ((x - self.mean) / self.std).contiguous()
        # already at size: one conversion and two in-place passes, x·(1/(255·std)) − mean/std
        return x.float().mul_(self._scale).add_(self._shift)

    @torch.inference_mode()
    def forward_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """Preprocessed (B, 3, S, S) -> patch latents (B, N, D) float32 (LayerNorm-ed, stats applied if set)."""
        with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
            h = self.backbone(pixel_values=pixels).last_hidden_state
        x = h[:, self.skip:].float()
        if self._stat_tensors is not None:
            m, s = self._stat_tensors
            x = (x - m) / s
        return x

    @torch.inference_mode()
    def encode(self, frames: torch.Tensor | np.ndarray) -> torch.Tensor:
        """uint8 frames (B, H, W, 3) or (B, 3, H, W) -> (B, N, D) float32, in chunks of cfg.batch_size."""
        n = len(frames)
        outs = [self.forward_pixels(self.preprocess(frames[i : i + self.cfg.batch_size]))
                for i in range(0, n, self.cfg.batch_size)]
        if not outs:
            return torch.zeros(0, self.num_tokens, self.dim, device=self.device)
        return torch.cat(outs)

    def encode_video(self, clips: torch.Tensor | np.ndarray) -> torch.Tensor:
        """uint8 clips (B, T, H, W, 3) -> (B, T, N, D)."""
        B, T = clips.shape[:2]
        flat = clips.reshape(B * T, *clips.shape[2:])
        return self.encode(flat).reshape(B, T, self.num_tokens, self.dim)


def compute_latent_stats(latents) -> NormStats:
    """Per-channel mean/std over every token of an iterable of (..., D) latents (float64 sums)."""
    return compute_norm_stats([np.asarray(x, dtype=np.float64).reshape(-1, np.shape(x)[-1]) for x in latents])
