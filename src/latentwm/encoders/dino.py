"""Frozen DINOv2 / DINOv2-with-registers / DINOv3 encoder through Hugging Face transformers (DESIGN.md section 4).

uint8 frames → resize (bicubic, antialias) to image_size² → ImageNet mean/std → ViT → patch tokens only (CLS and
register tokens dropped) → LayerNorm without affine (RAE's normalization) → optionally per-channel dataset statistics.

Two exact rewrites of the frozen weights at load time make the wrapper cost no more than the bare model forward:
- the affine-free final LayerNorm: the model's own final norm gets weight 1 / bias 0, so `last_hidden_state` *is*
  LayerNorm(h) without affine, with the model's eps (no hooks, no copies of intermediate layers);
- the ImageNet normalization is folded into the patch-embedding convolution (it is linear, and the convolution is the
  first thing that sees the pixels): W' = W / (255·std_c), b' = b − Σ W·mean_c/std_c. The model then takes float
  pixels in [0, 255] straight from uint8, and channels-last frames need no transposed copy.
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


def _patch_conv(model: nn.Module) -> nn.Conv2d:
    pe = model.embeddings.patch_embeddings
    conv = getattr(pe, "projection", pe)
    if not isinstance(conv, nn.Conv2d):
        raise ValueError(f"encoder: cannot find the patch-embedding convolution of {type(model).__name__}")
    return conv


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
        norm, conv = _final_norm(backbone), _patch_conv(backbone)
        mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
        with torch.no_grad():
            norm.weight.fill_(1.0)  # RAE: the final LayerNorm without its affine
            norm.bias.zero_()
            w = conv.weight.double()  # fold (x/255 − mean)/std into the first (linear) layer
            shift = (w * (mean / std).double().view(1, 3, 1, 1)).sum((1, 2, 3))
            conv.weight.copy_(w / (255.0 * std.double()).view(1, 3, 1, 1))
            if conv.bias is None:
                conv.bias = nn.Parameter(torch.zeros(conv.out_channels, dtype=conv.weight.dtype))
            conv.bias.copy_(conv.bias.double() - shift)
        self.backbone.requires_grad_(False).eval()
        self.register_buffer("mean", mean.view(1, 3, 1, 1), persistent=False)  # kept for reference / decoders
        self.register_buffer("std", std.view(1, 3, 1, 1), persistent=False)
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

    def _check(self, frames) -> torch.Tensor:
        x = torch.as_tensor(frames)
        if x.dtype != torch.uint8:
            raise ValueError(f"encoder: frames must be uint8 (B, H, W, 3) or (B, 3, H, W), got dtype {x.dtype}")
        if x.dim() != 4 or (x.shape[-1] != 3 and x.shape[1] != 3):
            raise ValueError(f"encoder: frames must be (B, H, W, 3) or (B, 3, H, W) with 3 channels, got "
                             f"{tuple(x.shape)}")
        if x.shape[-1] == 3 and x.shape[1] != 3:
            x = x.permute(0, 3, 1, 2)  # a channels-last view: the convolution reads it without a copy
        return x

    def _pixels(self, frames) -> torch.Tensor:
        """Like `preprocess`, but frames already at image_size are converted into a reused buffer: a fresh
        float buffer per call costs page faults comparable to a small model's whole forward on the CPU."""
        x = self._check(frames)
        S = self.cfg.image_size
        if x.shape[-2:] != (S, S) or self.device.type != "cpu":
            return self.preprocess(frames)
        buf = getattr(self, "_buf", None)
        if buf is None or buf.shape != x.shape or buf.stride() != x.stride():
            buf = self._buf = torch.empty_strided(x.shape, x.stride(), dtype=torch.float32)
        return buf.copy_(x)

    def preprocess(self, frames: torch.Tensor | np.ndarray) -> torch.Tensor:
        """uint8 (B, H, W, 3) or (B, 3, H, W) -> float pixels in [0, 255], (B, 3, S, S), S = image_size.

        (The ImageNet normalization lives in the patch convolution, see the module docstring.)"""
        x = self._check(frames).to(self.device, non_blocking=True).float()
        S = self.cfg.image_size
        if x.shape[-2:] != (S, S):
            x = F.interpolate(x, size=(S, S), mode="bicubic", antialias=True, align_corners=False).clamp_(0, 255)
        return x

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
        outs = [self.forward_pixels(self._pixels(frames[i : i + self.cfg.batch_size]))
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
