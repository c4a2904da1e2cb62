"""The DH head (RAE's DiT-DH): a wide, shallow transformer on one frame's latent tokens after the backbone.

RAE ("Diffusion Transformers with Representation Autoencoders") argues that denoising high-dimensional encoder
tokens needs a network at least as wide as the token, and that a cheap way to get that width is a shallow, wide
head after a narrower backbone (DiT-DH). Here:

    h (…, N', W) final-normed backbone latent tokens ──Linear──▶ (…, N', W_dh)
        ──▶ dh_blocks × [adaLN(c) → space attention over the frame's N' tokens (2D RoPE, non-causal)  ─ gate ─▶ +
                         adaLN(c) → SwiGLU MLP                                                    ─ gate ─▶ +]
        ──▶ RMSNorm ──Linear (zero init)──▶ (…, N', patch_dim)

c (…, W) is the frame's shortcut embedding, the same `tau_mlp(tau_features(τ)) + step_embed(d)` vector the
backbone's shortcut token carries (DynamicsModel hands the head the shortcut slot of the tokens `_tokens` built),
so the head knows how noisy its input is and how far it is asked to jump.

Width. W_dh = model.dh_width, or by default max(2·W, patch_dim) with patch_dim = latent_dim · patch_group²: the
width of the token the head must output. The issue writes "latent dim"; with patch_group 1 the two are equal, and
with 2×2 grouping the token the head denoises is the 4·D-wide concatenation, so RAE's width ≥ token-dimension
argument applies to patch_dim (base preset: max(2048, 3072) = 3072).

Attention is among the frame's own latent tokens only — no registers or condition tokens, no time attention, no KV
cache — so the head is a per-frame function of (that frame's backbone features, that frame's τ and d): causality and
cached generation are those of the backbone by construction. Heads: model.dh_heads or model.heads, full multi-head
(kv heads = heads): the head never caches keys, so grouped-query attention would save nothing worth its quality cost.

Init (DiT's adaLN-zero): every block's modulation Linear (shift, scale, gate for attention and MLP) is zero, so each
gate is 0 and each block is the identity: at step 0 the head is its input projection followed by the final norm and
the zero output Linear, i.e. x̂ = 0 exactly, like the plain head. The attention / MLP output projections keep their
N(0, 0.02) init (unlike the backbone's zero ones): a zero gate times a zero projection would have zero gradient in
both and never train.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import cast

import torch
import torch.nn as nn
import torch.nn.functional as F

from latentwm.config import ModelConfig
from latentwm.model.layers import Attention, RMSNorm, SwiGLU, linear_flops, rope_2d


@dataclass(frozen=True)
class DHShape:
    """The head's resolved sizes (every default filled in); the FLOP and parameter arithmetic lives here so
    `approx_param_count` can use it without building a module."""

    cond_width: int
    """W: the backbone width (input tokens and the shortcut embedding)."""
    out_dim: int
    """patch_dim = token_dim · patch_group²: features per (grouped) latent token."""
    grid: int
    """Side of the (grouped) latent token grid; N' = grid²."""
    blocks: int
    width: int
    """W_dh."""
    heads: int
    mlp_hidden: int
    softcap: float | None
    attention: str
    rope_base: float

    @classmethod
    def from_config(cls, cfg: ModelConfig) -> DHShape:
        g, width = cfg.patch_group, cfg.dh_resolved_width
        return cls(
            cond_width=cfg.width,
            out_dim=cfg.token_dim * g * g,
            grid=cfg.latent_grid // g,
            blocks=cfg.dh_blocks,
            width=width,
            heads=cfg.dh_resolved_heads,
            mlp_hidden=int(round(2 / 3 * cfg.mlp_ratio * width / 8)) * 8,
            softcap=cfg.softcap,
            attention=cfg.attention,
            rope_base=cfg.rope_base,
        )

    @property
    def tokens(self) -> int:
        """N'."""
        return self.grid**2

    @property
    def head_dim(self) -> int:
        return self.width // self.heads

    def flops_per_frame(self) -> int:
        """Matmul FLOPs (2 per multiply-add) of the head on one frame: input projection, per block the modulation
        (one row), q/k/v/o, the N'×N' attention (logits + weighted values) and the SwiGLU, then the output Linear."""
        n, w, wd = self.tokens, self.cond_width, self.width
        block = (
            linear_flops(1, w, 6 * wd)
            + 4 * linear_flops(n, wd, wd)
            + 2 * 2 * n * n * wd
            + linear_flops(n, wd, 2 * self.mlp_hidden)
            + linear_flops(n, self.mlp_hidden, wd)
        )
        return linear_flops(n, w, wd) + self.blocks * block + linear_flops(n, wd, self.out_dim)

    def num_parameters(self) -> int:
        """Exact parameter count of `DHHead(self)` (a test holds it equal)."""
        w, wd, e = self.cond_width, self.width, self.head_dim
        block = (
            4 * wd * wd
            + 2 * e  # q, kv, o; q/k norms
            + 3 * wd * self.mlp_hidden  # SwiGLU up (2×) and down
            + 2 * wd  # the two pre-norms
            + w * 6 * wd
            + 6 * wd
        )  # adaLN modulation
        return (w * wd + wd) + self.blocks * block + wd + (wd * self.out_dim + self.out_dim)


def _modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x (B', N', W_dh) normed; shift, scale (B', 1, W_dh) -> x·(1 + scale) + shift (DiT's adaLN)."""
    return x * (1 + scale) + shift


class DHBlock(nn.Module):
    """Pre-RMSNorm block with adaLN-zero modulation from the frame's shortcut embedding."""

    def __init__(self, shape: DHShape):
        super().__init__()
        wd = shape.width
        self.norm1 = RMSNorm(wd)
        self.attn = Attention(wd, shape.heads, shape.heads, shape.softcap, shape.attention)
        self.norm2 = RMSNorm(wd)
        self.mlp = SwiGLU(wd, shape.mlp_hidden)
        self.modulation = nn.Linear(shape.cond_width, 6 * wd)  # zero-initialised by DHHead.reset_parameters

    def forward(self, x: torch.Tensor, c: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """x (B', N', W_dh) residual stream; c (B', W) shortcut embedding; cos/sin (N', E/2) -> (B', N', W_dh)."""
        mod = self.modulation(F.silu(c))[:, None]  # (B', 1, 6·W_dh)
        sh1, sc1, g1, sh2, sc2, g2 = mod.chunk(6, dim=-1)
        x = x + g1 * self.attn(_modulate(self.norm1(x), sh1, sc1), cos, sin)
        return x + g2 * self.mlp(_modulate(self.norm2(x), sh2, sc2))


class DHHead(nn.Module):
    """Wide, shallow per-frame head: backbone latent tokens + shortcut embedding -> predicted grouped latents."""

    def __init__(self, shape: DHShape):
        super().__init__()
        if shape.width % shape.heads or (shape.width // shape.heads) % 4:
            raise ValueError(
                f"DH head: width {shape.width} must split into {shape.heads} heads of a dim divisible by 4 (2D RoPE)"
            )
        self.shape = shape
        self.proj = nn.Linear(shape.cond_width, shape.width)
        self.blocks = nn.ModuleList(DHBlock(shape) for _ in range(shape.blocks))
        self.norm = RMSNorm(shape.width)
        self.out = nn.Linear(shape.width, shape.out_dim)
        self._rope: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.reset_parameters()

    @classmethod
    def from_config(cls, cfg: ModelConfig) -> DHHead:
        return cls(DHShape.from_config(cfg))

    def reset_parameters(self) -> None:
        """N(0, 0.02) matrices, zero biases, unit norms; zero modulation (adaLN-zero) and zero output Linear.
        DynamicsModel's generic init overwrites the whole model first, so it calls this afterwards."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, RMSNorm):
                nn.init.ones_(m.weight)
        for blk in cast("Iterable[DHBlock]", self.blocks):  # nn.ModuleList iterates as nn.Module
            nn.init.zeros_(blk.modulation.weight)
            nn.init.zeros_(blk.modulation.bias)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def rope(self, device) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin (N', E/2): latent (r, c) at 2D position (r + 1, c + 1), as in the backbone's space blocks.
        Constant, so memoized per device (not a buffer: nothing to save)."""
        key = str(device)
        if key not in self._rope or torch.compiler.is_compiling():
            idx = torch.arange(self.shape.tokens, device=device)
            table = rope_2d(
                idx // self.shape.grid + 1, idx % self.shape.grid + 1, self.shape.head_dim, self.shape.rope_base
            )
            if torch.compiler.is_compiling():
                return table
            self._rope[key] = table
        return self._rope[key]

    def forward(self, h: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """h (..., N', W) final-normed backbone latent tokens of each frame; cond (..., W) that frame's shortcut
        embedding -> (..., N', patch_dim) grouped prediction (the caller ungroups)."""
        lead, (n, w) = h.shape[:-2], h.shape[-2:]
        if n != self.shape.tokens or w != self.shape.cond_width or tuple(cond.shape) != (*lead, w):
            raise ValueError(
                f"DH head: expected h (..., {self.shape.tokens}, {self.shape.cond_width}) and cond "
                f"(..., {self.shape.cond_width}) with the same leading dims, got {tuple(h.shape)} and "
                f"{tuple(cond.shape)}"
            )
        # the residual stream in the parameters' dtype (fp32 under bf16 autocast), as the backbone's
        x = self.proj(h.reshape(-1, n, w)).to(self.proj.weight.dtype)  # (B', N', W_dh)
        c = cond.reshape(-1, w)  # (B', W)
        cos, sin = self.rope(h.device)
        for blk in self.blocks:
            x = blk(x, c, cos, sin)
        return self.out(self.norm(x)).reshape(*lead, n, self.shape.out_dim)


__all__ = ["DHHead", "DHShape", "DHBlock"]
