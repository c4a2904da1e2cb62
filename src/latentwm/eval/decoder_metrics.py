"""Reconstruction quality of a latents → pixels decoder: PSNR, SSIM, LPIPS (when available) and a picture.

Images are float (B, 3, H, W) in [-1, 1] (the decoder's output range) unless a function says otherwise. PSNR and SSIM
are computed per image on [0, 1] and averaged; SSIM uses the usual 11-tap Gaussian window (σ = 1.5) per channel,
without padding (Wang et al. 2004). The same SSIM is the training loss's stand-in for LPIPS when LPIPS is missing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

# torchvision file names of the LPIPS backbones: present in the torch hub cache means "available locally"
_LPIPS_BACKBONES = {"alex": "alexnet-owt-7be5be79.pth", "vgg": "vgg16-397923af.pth"}
_notices: set[str] = set()


def psnr(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB of [-1, 1] images (B, 3, H, W) → (B,), on the [0, 1] scale (peak 1)."""
    mse = ((pred.float().clamp(-1, 1) - target.float()) / 2).pow(2).mean(dim=(1, 2, 3))
    return -10 * torch.log10(mse.clamp_min(1e-10))


def _gaussian(size: int, sigma: float, device) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float32, device=device) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def ssim(pred: torch.Tensor, target: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Per-image SSIM of [-1, 1] images (B, 3, H, W) → (B,), computed on [0, 1]; differentiable."""
    x, y = (pred.float() + 1) / 2, (target.float() + 1) / 2
    C = x.shape[1]
    window = min(window, x.shape[-1], x.shape[-2])
    g = _gaussian(window, sigma, x.device)
    kh = g.view(1, 1, window, 1).expand(C, 1, window, 1)  # separable: rows, then columns
    kw = g.view(1, 1, 1, window).expand(C, 1, 1, window)

    def blur(t):
        return F.conv2d(F.conv2d(t, kh, groups=C), kw, groups=C)

    mx, my = blur(x), blur(y)
    sxx, syy, sxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return s.mean(dim=(1, 2, 3))


def notice_once(msg: str) -> None:
    if msg not in _notices:
        _notices.add(msg)
        print(msg, flush=True)


def load_lpips(device="cpu", net: str = "alex"):
    """A frozen LPIPS network when the `lpips` package and its backbone weights are on this machine, else
    (None, why). Never downloads: the backbone must already be in the torch hub cache (torchvision's file)."""
    try:
        import lpips  # noqa: F401  (pulls torchvision)
    except Exception as e:  # ImportError, or a broken torchvision
        return None, f"the `lpips` package is not importable ({type(e).__name__}: {e})"
    hub = Path(torch.hub.get_dir()) / "checkpoints" / _LPIPS_BACKBONES[net]
    if not hub.exists():
        return None, f"the {net} backbone weights of LPIPS are not in the torch hub cache ({hub})"
    try:
        model = lpips.LPIPS(net=net, verbose=False)
    except Exception as e:  # a failed download attempt or a damaged file
        return None, f"LPIPS could not be built ({type(e).__name__}: {e})"
    return model.to(device).eval().requires_grad_(False), ""


class PerceptualLoss(torch.nn.Module):
    """LPIPS(pred, target) when available, otherwise 1 − SSIM (pixel space); `kind` says which ("lpips"/"ssim",
    or "off": always 0).

    mode "auto" tries LPIPS and prints one notice naming the fallback; "ssim" never tries it."""

    def __init__(self, mode: str = "auto", device="cpu"):
        super().__init__()
        self.lpips, self.kind = None, "off" if mode == "off" else "ssim"
        if mode == "auto":
            self.lpips, why = load_lpips(device)
            if self.lpips is None:
                notice_once(
                    f"decoder: LPIPS unavailable ({why}); training with L1 + pixel SSIM instead. "
                    "Install `lpips` and put its backbone weights in the torch hub cache to use LPIPS."
                )
            else:
                self.kind = "lpips"
        elif mode not in ("ssim", "off"):
            raise ValueError(f"perceptual loss mode must be 'auto', 'ssim' or 'off', got {mode!r}")

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.kind == "off":
            return torch.zeros((), device=pred.device)
        if self.lpips is not None:
            return self.lpips(pred.float(), target.float()).mean()
        return 1.0 - ssim(pred, target).mean()


@torch.no_grad()
def reconstruction_metrics(pairs, decoder, lpips_model=None, mean_image: torch.Tensor | None = None) -> dict:
    """Mean PSNR / SSIM (/ LPIPS) of `decoder` over `pairs`, an iterable of (latents (B, N, D), target [-1, 1]
    (B, 3, H, W)) on the decoder's device. mean_image (3, H, W): also score it as the prediction of every frame
    (the mean-image baseline: what a decoder that ignores its input would reach at best in MSE)."""
    tot = {"psnr": 0.0, "ssim": 0.0, "lpips": 0.0, "mean_image_psnr": 0.0, "mean_image_ssim": 0.0}
    n = 0
    for lat, target in pairs:
        pred = decoder(lat).clamp(-1, 1)
        tot["psnr"] += float(psnr(pred, target).sum())
        tot["ssim"] += float(ssim(pred, target).sum())
        if lpips_model is not None:
            tot["lpips"] += float(lpips_model(pred, target).sum())
        if mean_image is not None:
            m = mean_image.to(target.device).expand_as(target)
            tot["mean_image_psnr"] += float(psnr(m, target).sum())
            tot["mean_image_ssim"] += float(ssim(m, target).sum())
        n += len(target)
    if n == 0:
        raise ValueError("reconstruction_metrics: no frames to evaluate")
    out = {k: v / n for k, v in tot.items()}
    if lpips_model is None:
        out.pop("lpips")
    if mean_image is None:
        out.pop("mean_image_psnr"), out.pop("mean_image_ssim")
    out["frames"] = n
    return out


def recon_grid(originals: np.ndarray, recons: np.ndarray, gap: int = 2) -> np.ndarray:
    """Two rows, originals over reconstructions: (K, H, W, 3) uint8 each → (2H + 3·gap, K·W + (K+1)·gap, 3)."""
    if originals.shape != recons.shape:
        raise ValueError(f"recon_grid: originals {originals.shape} and reconstructions {recons.shape} differ")
    K, H, W, _ = originals.shape
    out = np.full((2 * H + 3 * gap, K * W + (K + 1) * gap, 3), 255, np.uint8)
    for k in range(K):
        x = gap + k * (W + gap)
        out[gap : gap + H, x : x + W] = originals[k]
        out[2 * gap + H : 2 * gap + 2 * H, x : x + W] = recons[k]
    return out


def save_png(path: str | Path, image: np.ndarray) -> Path:
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)
    return path
