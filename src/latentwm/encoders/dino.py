"""Frozen DINOv2 / DINOv2-with-registers / DINOv3 encoder through Hugging Face transformers (docs/design.md section 4).

uint8 frames → resize (bicubic, antialias) to image_size² → ImageNet mean/std → ViT → patch tokens only (CLS and
register tokens dropped) → LayerNorm without affine (RAE's normalization) → optionally 2×2 average pooling of the
token grid (`cfg.pool`; N → N/4, a 4× smaller latent cache) → optionally per-channel dataset statistics.

Two exact rewrites of the frozen weights at load time keep the wrapper as cheap as the bare model forward:
- LayerNorm without affine: the model's own final norm gets weight 1 / bias 0, so `last_hidden_state` *is*
  LayerNorm(h) without affine, with the model's eps (RAE sets that norm's weight/bias to None: the same function).
  No `output_hidden_states=True` (a tuple of every layer) and no hooks.
- CPU (fp32) only: the ImageNet normalization is folded into the patch-embedding convolution (linear, and the first
  thing that sees the pixels): W' = W / (255·std_c), b' = b − Σ W·mean_c/std_c. The model then takes float pixels in
  [0, 255] straight from uint8; a separate per-channel pass over channels-last pixels would cost more than a tiny
  model's whole 5% overhead budget. Not on CUDA: under bf16 autocast the uncentred [0, 255] input and the large
  folded bias lose precision (patch-embedding error ~3× the unfolded one on a random ViT-S, measured), while an
  elementwise normalization costs nothing there. `encoder.folded` says which; `preprocess` returns what `backbone`
  expects either way.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from latentwm.config import ConfigError, EncoderConfig
from latentwm.config.base import LatentwmError
from latentwm.config.registry import ENCODER_PRESETS
from latentwm.data.cache_integrity import same_encoder
from latentwm.data.episodes import NormStats
from latentwm.data.latent_stats import STATS_EPS

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# transformers model_type (config.json) -> (model class, config class)
_FAMILIES = {
    "dinov2": ("Dinov2Model", "Dinov2Config"),
    "dinov2_with_registers": ("Dinov2WithRegistersModel", "Dinov2WithRegistersConfig"),
    "dinov3_vit": ("DINOv3ViTModel", "DINOv3ViTConfig"),
}
_PRESET_FAMILY = {"dinov2": "dinov2", "dinov2-reg": "dinov2_with_registers", "dinov3": "dinov3_vit"}


class EncoderWeightsMissing(LatentwmError, RuntimeError):
    """Pretrained weights are not on this machine (and downloading is off); the message says how to get them."""


# ---------------------------------------------------------------------------------------------------------------
# Dataset statistics of the latents


def pool_tokens(x: torch.Tensor, grid: int, pool: int) -> torch.Tensor:
    """Average-pool row-major patch tokens (B, grid², D) over pool×pool cells -> (B, (grid/pool)², D), row-major."""
    B, N, D = x.shape
    if N != grid * grid or grid % pool:
        raise ValueError(f"pool_tokens: {N} tokens are not a {grid}×{grid} grid divisible by {pool}")
    g = grid // pool
    return x.reshape(B, g, pool, g, pool, D).mean((2, 4)).reshape(B, g * g, D)


# ---------------------------------------------------------------------------------------------------------------
# Loading


def _classes(model_type: str):
    import transformers

    if model_type not in _FAMILIES:
        raise ValueError(f"encoder: unsupported model type {model_type!r}; expected one of {sorted(_FAMILIES)}")
    m, c = _FAMILIES[model_type]
    return getattr(transformers, m), getattr(transformers, c)


def _missing(cfg: EncoderConfig, source: str, local: bool, cause: Exception | None) -> EncoderWeightsMissing:
    from huggingface_hub import constants

    if local:
        what = "does not hold a loadable transformers model" if Path(source).expanduser().exists() else "does not exist"
        msg = (
            f"encoder {cfg.name!r}: the local folder {source!r} {what} (expected config.json + "
            "model.safetensors, as written by `model.save_pretrained(folder)` or `hf download --local-dir`)."
        )
    else:
        gated = (
            (
                " DINOv3 checkpoints are gated: first accept their license on the model page "
                f"(https://huggingface.co/{source}) and log in (`hf auth login`)."
            )
            if "dinov3" in source
            else ""
        )
        msg = (
            f"encoder {cfg.name!r}: weights of {source!r} are not in the Hugging Face cache "
            f"{constants.HF_HUB_CACHE} (HF_HOME={os.environ.get('HF_HOME', '<unset>')}, "
            f"local_files_only={cfg.local_files_only}). On a machine with internet run `hf download {source}` "
            f"(`huggingface-cli download {source}` with huggingface_hub < 1.0) and copy the cache here "
            f"(or point HF_HOME at it), or pass a local folder: --encoder.name /path/to/folder.{gated}"
        )
    if cause is not None:
        msg += f" Cause: {type(cause).__name__}: {cause}"
    return EncoderWeightsMissing(msg)


WEIGHT_FILES = ("*.safetensors", "pytorch_model.bin")


def weights_hash(folder: str | os.PathLike) -> str:
    """First 12 hex digits of a SHA-256 over a local model folder's weight files (every *.safetensors, or
    pytorch_model.bin), sorted by name: names and bytes."""
    files = sorted({p for pat in WEIGHT_FILES for p in Path(folder).glob(pat) if p.is_file()})
    h = hashlib.sha256()
    for p in files:
        h.update(p.name.encode() + b"\0")
        with open(p, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                h.update(block)
    return h.hexdigest()[:12]


def load_backbone(cfg: EncoderConfig) -> tuple[nn.Module, str]:
    """(untouched transformers model in fp32, weights label) for a preset, a hub id or a local folder.

    The label identifies the weights, so that latents of two encoders are never mistaken for each other:
    `random:<preset>:seed<seed>:<image_size>px` (random weights depend on the seed, and on the image size through
    the position embeddings), `pretrained:<folder>#<weights_hash>` for a local folder (its files may change),
    `pretrained:<hub id>` for the Hugging Face hub."""
    preset = ENCODER_PRESETS.get(cfg.name)
    if preset is not None and preset.hub_id is None:  # random weights from a config: deterministic, never downloaded
        model_cls, config_cls = _classes(_PRESET_FAMILY[preset.family])
        torch.manual_seed(cfg.seed)
        return (
            model_cls(config_cls(image_size=cfg.image_size, **preset.tiny_config)),
            f"random:{cfg.name}:seed{cfg.seed}:{cfg.image_size}px",
        )
    source = preset.hub_id if preset is not None else cfg.name
    path = Path(source).expanduser()
    local = path.exists() or path.is_absolute() or source.startswith((".", "~")) or source.count("/") > 1
    if local and not path.is_dir():
        raise _missing(cfg, source, True, None)
    from transformers import AutoConfig

    try:
        src = str(path) if local else source
        conf = AutoConfig.from_pretrained(src, local_files_only=cfg.local_files_only)
        model_cls, _ = _classes(conf.model_type)
        # dtype: transformers 5 loads in the checkpoint's dtype by default ("auto"); keep fp32 master weights
        # (bf16 happens under autocast on CUDA only).
        model = model_cls.from_pretrained(src, local_files_only=cfg.local_files_only, dtype=torch.float32)
    except (OSError, ValueError) as e:
        if "unsupported model type" in str(e):
            raise
        raise _missing(cfg, source, local, e) from e
    return model, f"pretrained:{source}#{weights_hash(path)}" if local else f"pretrained:{source}"


def _final_norm(model: nn.Module) -> nn.LayerNorm:
    for name in ("layernorm", "norm"):  # Dinov2*: layernorm; DINOv3ViTModel: norm
        if isinstance(getattr(model, name, None), nn.LayerNorm):
            return getattr(model, name)
    raise ValueError(f"encoder: cannot find the final LayerNorm of {type(model).__name__}")


def _patch_conv(model: nn.Module) -> nn.Conv2d:
    pe = model.embeddings.patch_embeddings  # Dinov2*: a module with .projection; DINOv3: the Conv2d itself
    conv = getattr(pe, "projection", pe)
    if not isinstance(conv, nn.Conv2d):
        raise ValueError(f"encoder: cannot find the patch-embedding convolution of {type(model).__name__}")
    return conv


# ---------------------------------------------------------------------------------------------------------------
# The encoder


class DinoEncoder(nn.Module):
    """Frozen patch-token encoder: `encode(frames)` -> (B, N, D) float32 latents on `device`.

    Always in eval mode and without gradients; bf16 autocast on CUDA. `weights_label` says what the weights are
    ("random:tiny-random:seed0:56px", "pretrained:facebook/dinov2-small" or "pretrained:/models/dino#<hash>", see
    `load_backbone`); everything that stores latents records it.
    """

    def __init__(self, backbone: nn.Module, cfg: EncoderConfig, weights_label: str, fold_normalization: bool = True):
        super().__init__()
        self.cfg, self.backbone, self.weights_label, self.folded = cfg, backbone, weights_label, fold_normalization
        bc = backbone.config
        self._patch = bc.patch_size if isinstance(bc.patch_size, int) else bc.patch_size[0]
        if cfg.image_size % self._patch:
            raise ConfigError(
                f"encoder.image_size must be a multiple of the patch size {self._patch} of "
                f"{cfg.name!r}, got {cfg.image_size}"
            )
        if (cfg.image_size // self._patch) % cfg.pool:
            raise ConfigError(
                f"encoder.pool {cfg.pool} needs an even patch grid; image_size {cfg.image_size} / "
                f"patch {self._patch} = {cfg.image_size // self._patch}"
            )
        self.skip = 1 + int(getattr(bc, "num_register_tokens", 0) or 0)  # CLS + registers come first
        mean, std = torch.tensor(IMAGENET_MEAN, dtype=torch.float64), torch.tensor(IMAGENET_STD, dtype=torch.float64)
        norm = _final_norm(backbone)
        with torch.no_grad():
            norm.weight.fill_(1.0)  # RAE: the final LayerNorm without its affine
            norm.bias.zero_()
            if fold_normalization:  # (x/255 − mean)/std folded into the first (linear) layer, in float64
                conv = _patch_conv(backbone)
                w = conv.weight.double()
                shift = (w * (mean / std).view(1, 3, 1, 1)).sum((1, 2, 3))
                conv.weight.copy_(w / (255.0 * std).view(1, 3, 1, 1))
                if conv.bias is None:
                    conv.bias = nn.Parameter(
                        torch.zeros(conv.out_channels, dtype=conv.weight.dtype, device=conv.weight.device)
                    )
                conv.bias.copy_(conv.bias.double() - shift)
        self.backbone.requires_grad_(False).eval()
        # pixels in [0, 255] -> ImageNet-normalized, for the unfolded path: (x − 255·mean) · 1/(255·std)
        self.register_buffer("px_shift", (255 * mean).float().view(1, 3, 1, 1), persistent=False)
        self.register_buffer("px_scale", (1 / (255 * std)).float().view(1, 3, 1, 1), persistent=False)
        self.register_buffer("stat_mean", None, persistent=False)  # (D,), set by set_stats
        self.register_buffer("stat_scale", None, persistent=False)  # (D,) = 1 / (std + eps)
        self.stats: NormStats | None = None
        self._buf: torch.Tensor | None = None

    @classmethod
    def from_config(cls, cfg: EncoderConfig, device: torch.device | str | None = None) -> DinoEncoder:
        device = torch.device(device or "cpu")
        backbone, label = load_backbone(cfg)
        return cls(backbone, cfg, label, fold_normalization=device.type == "cpu").to(device)

    def train(self, mode: bool = True) -> DinoEncoder:
        return super().train(False)  # frozen: never leaves eval mode (no dropout, fixed norms)

    @property
    def is_random(self) -> bool:
        return self.weights_label.startswith("random:")

    @property
    def dim(self) -> int:
        return int(self.backbone.config.hidden_size)

    @property
    def patch_size(self) -> int:
        return self._patch

    @property
    def patch_grid(self) -> int:
        """Side of the ViT's patch grid (before pooling)."""
        return self.cfg.image_size // self._patch

    @property
    def pool(self) -> int:
        return self.cfg.pool

    @property
    def grid(self) -> int:
        """Side of the output token grid: patch_grid / pool."""
        return self.patch_grid // self.cfg.pool

    @property
    def num_tokens(self) -> int:
        return self.grid**2

    @property
    def device(self) -> torch.device:
        return self.px_shift.device

    def set_stats(self, stats: NormStats | None) -> None:
        """Apply per-channel dataset statistics after the LayerNorm: (x − mean) / (std + eps); None turns it off.

        Stats that name another encoder (LatentStats.encoder ≠ weights_label) are refused: they would silently
        mis-scale every channel."""
        if stats is not None:
            other = getattr(stats, "encoder", "")
            if other and not same_encoder(other, self.weights_label):
                raise ValueError(f"encoder: stats were computed with {other!r}, this encoder is {self.weights_label!r}")
            if np.shape(stats.mean) != (self.dim,) or np.shape(stats.std) != (self.dim,):
                raise ValueError(
                    f"encoder: stats must have mean/std of shape ({self.dim},), got "
                    f"{np.shape(stats.mean)} / {np.shape(stats.std)}"
                )
        self.stats = stats
        f32 = dict(dtype=torch.float32, device=self.device)
        self.stat_mean = None if stats is None else torch.as_tensor(np.asarray(stats.mean), **f32)
        self.stat_scale = None if stats is None else torch.as_tensor(1 / (np.asarray(stats.std) + STATS_EPS), **f32)

    def _check(self, frames) -> torch.Tensor:
        """uint8 (B, H, W, 3) or (B, 3, H, W) -> a (B, 3, H, W) view (channels-last memory for the former)."""
        if isinstance(frames, np.ndarray) and any(s < 0 for s in frames.strides):
            frames = np.ascontiguousarray(frames)  # e.g. x[..., ::-1] (BGR → RGB): torch cannot view it
        x = torch.as_tensor(frames)
        if x.dtype != torch.uint8:
            raise ValueError(
                f"encoder: frames must be uint8 in [0, 255], shaped (B, H, W, 3) or (B, 3, H, W); got "
                f"dtype {x.dtype} (from floats in [0, 1]: (x * 255).round().to(torch.uint8))"
            )
        if x.dim() != 4 or (x.shape[-1] != 3 and x.shape[1] != 3):
            raise ValueError(
                f"encoder: frames must be (B, H, W, 3) or (B, 3, H, W) with 3 channels, got shape {tuple(x.shape)}"
            )
        if x.shape[-1] == 3 and x.shape[1] != 3:
            x = x.permute(0, 3, 1, 2)  # a view: the convolution reads channels-last memory without a copy
        return x

    def _pixels(self, x: torch.Tensor, reuse: bool) -> torch.Tensor:
        """Checked uint8 (B, 3, H, W) -> what `backbone` takes, (B, 3, S, S) float32 on `device`."""
        S = self.cfg.image_size
        if reuse and self.device.type == "cpu" and x.shape[-2:] == (S, S):
            # Frames already at image_size: convert into a reused buffer. A fresh 4·B·3·S² byte buffer per call
            # costs page faults comparable to a small model's whole forward on the CPU.
            if self._buf is None or (self._buf.shape, self._buf.stride()) != (x.shape, x.stride()):
                self._buf = torch.empty_strided(x.shape, x.stride(), dtype=torch.float32)
            p = self._buf.copy_(x)
        else:
            p = x.to(self.device, non_blocking=True).float()  # uint8 crosses to the GPU: 4× less traffic
            if p.shape[-2:] != (S, S):
                p = F.interpolate(p, size=(S, S), mode="bicubic", antialias=True, align_corners=False).clamp_(0, 255)
        if not self.folded:
            p = p.sub_(self.px_shift).mul_(self.px_scale)
        return p

    def preprocess(self, frames: torch.Tensor | np.ndarray) -> torch.Tensor:
        """uint8 (B, H, W, 3) or (B, 3, H, W) -> (B, 3, S, S) float32 backbone input, S = image_size: pixels in
        [0, 255] when the normalization is folded into the weights (CPU), ImageNet-normalized otherwise (CUDA)."""
        return self._pixels(self._check(frames), reuse=False)

    @torch.no_grad()  # not inference_mode: see `encode`
    def forward_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """`preprocess` output (B, 3, S, S) -> (B, N, D) float32 latents (stats applied if set)."""
        with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
            h = self.backbone(pixel_values=pixels).last_hidden_state  # (B, skip + N, D), LayerNorm-ed, no affine
        x = h[:, self.skip :].float()  # (B, N, D) patch tokens only (a view: CLS and registers are never copied)
        if self.cfg.pool > 1:  # after the LayerNorm, so stats describe the pooled tokens the cache stores
            x = pool_tokens(x, self.patch_grid, self.cfg.pool)
        if self.stat_mean is not None:
            x = (x - self.stat_mean) * self.stat_scale
        return x

    forward = forward_pixels

    def encode(self, frames: torch.Tensor | np.ndarray) -> torch.Tensor:
        """uint8 frames (B, H, W, 3) or (B, 3, H, W) -> (B, N, D) float32 on `device`, in chunks of batch_size.

        No gradients, under `torch.no_grad` rather than `inference_mode`: inference tensors cannot enter autograd
        later ("inference tensors cannot be saved for backward", e.g. context latents in the gradient planner) and
        turning them into ordinary tensors costs a full copy of the output (~2% of a tiny model's CPU forward);
        inference_mode saves nothing measurable on a ViT's few large ops. One chunk comes back without a copy, as
        a view of the model's output that skips the CLS/register rows (not contiguous: numpy takes it as is, call
        `.contiguous()` for APIs that need it)."""
        bs = self.cfg.batch_size
        outs = [
            self.forward_pixels(self._pixels(self._check(frames[i : i + bs]), reuse=True))
            for i in range(0, len(frames), bs)
        ]
        if not outs:
            return torch.zeros(0, self.num_tokens, self.dim, device=self.device)
        return outs[0] if len(outs) == 1 else torch.cat(outs)

    def encode_video(self, clips: torch.Tensor | np.ndarray) -> torch.Tensor:
        """uint8 clips (B, T, H, W, 3) or (B, T, 3, H, W) -> (B, T, N, D)."""
        if clips.ndim != 5:
            raise ValueError(
                f"encoder: clips must be (B, T, H, W, 3) or (B, T, 3, H, W), got shape {tuple(clips.shape)}"
            )
        B, T = clips.shape[:2]
        return self.encode(clips.reshape(B * T, *clips.shape[2:])).reshape(B, T, self.num_tokens, self.dim)
