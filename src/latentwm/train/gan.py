"""The decoder's optional adversarial term: a PatchGAN hinge discriminator and VQGAN's adaptive weight."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class PatchDiscriminator(nn.Module):
    """PatchGAN-style hinge discriminator: (B, 3, H, W) in [-1, 1] → (B, 1, h, w) logits. GroupNorm rather than
    BatchNorm: real and fake share one batch, and DDP ranks need no synchronized statistics."""

    def __init__(self, channels: int, image_size: int):
        super().__init__()
        n = max(1, min(3, int(math.log2(max(image_size, 2))) - 4))  # 32 px: 1, 64: 2, ≥ 128: 3 layers
        layers: list[nn.Module] = [nn.Conv2d(3, channels, 4, 2, 1), nn.LeakyReLU(0.2)]
        ch = channels
        for i in range(1, n + 1):
            nxt = channels * min(2**i, 8)
            layers += [
                nn.Conv2d(ch, nxt, 4, 2 if i < n else 1, 1),
                nn.GroupNorm(math.gcd(8, nxt), nxt),
                nn.LeakyReLU(0.2),
            ]
            ch = nxt
        layers.append(nn.Conv2d(ch, 1, 4, 1, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def adaptive_weight(rec: torch.Tensor, g_loss: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
    """VQGAN: ‖∇_last rec‖ / (‖∇_last g_loss‖ + 1e-4), clamped to [0, 1e4], no gradient."""
    g_rec = torch.autograd.grad(rec, last, retain_graph=True)[0]
    g_adv = torch.autograd.grad(g_loss, last, retain_graph=True)[0]
    return (g_rec.norm() / (g_adv.norm() + 1e-4)).clamp(0, 1e4).detach()


def hinge_d_loss(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """Discriminator hinge loss on real / fake logits."""
    return 0.5 * (F.relu(1 - real).mean() + F.relu(1 + fake).mean())


__all__ = ["PatchDiscriminator", "adaptive_weight", "hinge_d_loss"]
