"""RAE-style decoder: frozen-encoder latents (B, N, D) → pixels (docs/design.md section 8).

latents (LayerNorm-ed patch tokens, exactly what `DinoEncoder.encode` returns and the latent cache stores) →
per-channel standardization with the training set's statistics (buffers, saved with the weights) → linear to the
decoder width → a learned CLS-like token prepended, fixed 2-D sin-cos positions added → pre-norm ViT blocks → norm →
linear to p·p·3 pixels per token → unpatchify to (B, 3, g·p, g·p) in [-1, 1] (unclamped while training).

The decoder's patch size p is its own: a 16×16 grid of DINOv2 tokens (14 px each at 224) decodes to 256 px with
p = 16; only the token grid g = √N and the width D come from the encoder, so DINOv2, DINOv2-with-registers (the
registers are dropped by the encoder) and DINOv3 latents all fit, pooled caches (N/4 tokens) too.

Noise augmentation (RAE): during training the standardized latents get Gaussian noise of std σ = τ_n·U(0, 1) per
sample, so the decoder also renders the slightly-off latents a world model predicts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from latentwm.data.episodes import NormStats


@dataclass(frozen=True)
class DecoderSize:
    width: int
    depth: int
    heads: int
    mlp_ratio: float = 4.0


# B / L / XL follow the RAE paper's ViT decoders; tiny (tests) and cpu (the CPU demo / benchmark) are small.
DECODER_SIZES: dict[str, DecoderSize] = {
    "tiny": DecoderSize(32, 2, 2, 2.0),
    "cpu": DecoderSize(128, 4, 4, 4.0),
    "B": DecoderSize(768, 12, 12, 4.0),
    "L": DecoderSize(1024, 24, 16, 4.0),
    "XL": DecoderSize(1152, 28, 16, 4.0),
}


@dataclass(frozen=True)
class DecoderSpec:
    """What builds a decoder: latent width D, token grid g (N = g²), output patch size p, size preset."""

    latent_dim: int
    grid: int
    patch_size: int = 16
    size: str = "cpu"

    def __post_init__(self):
        for n in ("latent_dim", "grid", "patch_size"):
            if getattr(self, n) <= 0:
                raise ValueError(f"decoder.{n} must be > 0, got {getattr(self, n)}")
        if self.size not in DECODER_SIZES:
            raise ValueError(f"decoder.size must be one of {sorted(DECODER_SIZES)}, got {self.size!r}")

    @property
    def image_size(self) -> int:
        return self.grid * self.patch_size

    @property
    def num_tokens(self) -> int:
        return self.grid**2


def sincos_2d(grid: int, dim: int) -> torch.Tensor:
    """Fixed 2-D sin-cos positions (grid², dim), row-major like the encoder's tokens: half the channels encode
    the row, half the column (MAE's layout); dim must be a multiple of 4."""
    if dim % 4:
        raise ValueError(f"sincos_2d: width {dim} must be a multiple of 4")
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim // 4))
    pos = torch.arange(grid, dtype=torch.float64)
    out = torch.outer(pos, omega)  # (g, dim/4)
    emb1d = torch.cat([out.sin(), out.cos()], 1)  # (g, dim/2)
    rows = emb1d[:, None, :].expand(grid, grid, -1)
    cols = emb1d[None, :, :].expand(grid, grid, -1)
    return torch.cat([rows, cols], -1).reshape(grid * grid, dim).float()


def noise_augment(
    z: torch.Tensor, tau: float, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """z (B, ...) + σ·ε with σ = tau·U(0, 1) drawn per sample; returns (noisy z, σ (B,))."""
    B = z.shape[0]
    sigma = tau * torch.rand(B, generator=generator, device=z.device, dtype=torch.float32)
    eps = torch.randn(z.shape, generator=generator, device=z.device, dtype=torch.float32)
    return z + (sigma.view(B, *([1] * (z.dim() - 1))) * eps).to(z.dtype), sigma


class Block(nn.Module):
    """Pre-norm ViT block: multi-head self-attention (SDPA) + GELU MLP."""

    def __init__(self, width: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv, self.proj = nn.Linear(width, 3 * width), nn.Linear(width, width)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, L, W)
        B, L, W = x.shape
        q, k, v = self.qkv(self.norm1(x)).reshape(B, L, 3, self.heads, W // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v)  # (B, heads, L, W/heads)
        x = x + self.proj(a.transpose(1, 2).reshape(B, L, W))
        return x + self.mlp(self.norm2(x))


class RAEDecoder(nn.Module):
    """`decoder(latents)` (B, N, D) LayerNorm-ed latents → (B, 3, g·p, g·p) pixels in [-1, 1] (unclamped)."""

    def __init__(self, spec: DecoderSpec):
        super().__init__()
        self.spec = spec
        s = DECODER_SIZES[spec.size]
        if s.width % s.heads:
            raise ValueError(f"decoder size {spec.size!r}: width {s.width} not divisible by heads {s.heads}")
        self.embed = nn.Linear(spec.latent_dim, s.width)
        self.cls = nn.Parameter(torch.zeros(1, 1, s.width))
        self.register_buffer("pos", sincos_2d(spec.grid, s.width)[None], persistent=False)  # (1, N, W)
        self.blocks = nn.ModuleList(Block(s.width, s.heads, s.mlp_ratio) for _ in range(s.depth))
        self.norm = nn.LayerNorm(s.width)
        self.head = nn.Linear(s.width, spec.patch_size**2 * 3)
        # input standardization (x − mean)·scale: the training set's latent statistics, set by `set_stats`
        self.register_buffer("in_mean", torch.zeros(spec.latent_dim))
        self.register_buffer("in_scale", torch.ones(spec.latent_dim))
        nn.init.normal_(self.cls, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    @property
    def image_size(self) -> int:
        return self.spec.image_size

    @property
    def last_layer(self) -> torch.Tensor:
        """The output projection's weight: where VQGAN's adaptive adversarial weight compares gradient norms."""
        return self.head.weight

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def set_stats(self, mean, std, eps: float = 1e-5) -> None:
        """Per-channel statistics (D,) of the training latents; the decoder standardizes its input with them."""
        mean = torch.as_tensor(np.asarray(mean), dtype=torch.float32)
        std = torch.as_tensor(np.asarray(std), dtype=torch.float32)
        if mean.shape != (self.spec.latent_dim,) or std.shape != (self.spec.latent_dim,):
            raise ValueError(
                f"decoder.set_stats: mean/std must be ({self.spec.latent_dim},), got "
                f"{tuple(mean.shape)} / {tuple(std.shape)}"
            )
        self.in_mean.copy_(mean)
        self.in_scale.copy_(1.0 / (std + eps))

    def check(self, latents: torch.Tensor) -> None:
        N, D = self.spec.num_tokens, self.spec.latent_dim
        if latents.dim() != 3 or latents.shape[1:] != (N, D):
            raise ValueError(
                f"decoder: latents must be (B, {N}, {D}) (grid {self.spec.grid}², width {D}), got "
                f"{tuple(latents.shape)}"
            )

    def unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, p·p·3) → (B, 3, g·p, g·p); token n covers row n // g, column n % g."""
        B, g, p = x.shape[0], self.spec.grid, self.spec.patch_size
        return x.reshape(B, g, g, p, p, 3).permute(0, 5, 1, 3, 2, 4).reshape(B, 3, g * p, g * p)

    def forward(
        self, latents: torch.Tensor, noise_tau: float = 0.0, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """latents (B, N, D) → (B, 3, H, W); noise_tau > 0 adds the training noise augmentation."""
        self.check(latents)
        z = (latents.float() - self.in_mean) * self.in_scale  # (B, N, D), standardized
        if noise_tau > 0:
            z, _ = noise_augment(z, noise_tau, generator)
        h = self.embed(z) + self.pos  # (B, N, W)
        h = torch.cat([self.cls.expand(h.shape[0], -1, -1).to(h.dtype), h], 1)  # (B, 1 + N, W)
        for blk in self.blocks:
            h = blk(h)
        return self.unpatchify(self.head(self.norm(h))[:, 1:].float())

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
        """latents (..., N, D) → uint8 frames (..., H, W, 3) on the CPU, in chunks (no gradients)."""
        lead = latents.shape[:-2]
        flat = latents.reshape(-1, *latents.shape[-2:])
        dev = self.in_mean.device
        outs = [to_uint8(self(flat[i : i + batch_size].to(dev))).cpu() for i in range(0, len(flat), batch_size)]
        S = self.image_size
        out = torch.cat(outs) if outs else torch.zeros(0, S, S, 3, dtype=torch.uint8)
        return out.reshape(*lead, S, S, 3)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) in [-1, 1] → (B, H, W, 3) uint8."""
    return ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1)


def decode_latents(decoder: RAEDecoder, latents: torch.Tensor, latent_stats=None, batch_size: int = 64) -> np.ndarray:
    """Latents (..., N, D) → uint8 frames (..., H, W, 3) as numpy.

    latent_stats: the NormStats a world model's latents were normalized with (a dynamics checkpoint's
    `data_stats["latents"]`, as dict or NormStats); they are first brought back to the encoder's LayerNorm-ed space
    (x·std + mean), which is what the decoder takes. None: the latents are already in that space (cache, encoder).
    """
    x = torch.as_tensor(latents).float()
    if latent_stats is not None:
        if isinstance(latent_stats, dict):
            latent_stats = NormStats.from_dict(latent_stats)
        x = x * torch.as_tensor(latent_stats.std, dtype=torch.float32) + torch.as_tensor(
            latent_stats.mean, dtype=torch.float32
        )
    return decoder.decode(x, batch_size).numpy()


def approx_decode_flops(spec: DecoderSpec) -> float:
    """Forward FLOPs per frame (matmuls only): 2·params-per-token·tokens + attention."""
    s = DECODER_SIZES[spec.size]
    L, W = spec.num_tokens + 1, s.width
    per_block = 2 * L * (4 * W * W + 2 * W * int(W * s.mlp_ratio)) + 4 * L * L * W
    io = 2 * spec.num_tokens * (spec.latent_dim * W + W * 3 * spec.patch_size**2)
    return float(s.depth * per_block + io)
