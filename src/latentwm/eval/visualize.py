"""Pictures people look at: PCA-of-features or decoded videos, side-by-side rollouts, GIFs and plots.

Until a decoder is trained, latents are shown as a PCA of the DINO features: the three leading principal components of
the *ground-truth* tokens of a clip map to RGB, and predictions are projected with the same basis and scale, so
colours are comparable between real and predicted frames.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
import torch
from PIL import Image

from latentwm.encoders.decoder import decode_latents

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the headless backend)


class FeaturePCA:
    """3-component PCA fitted on latents (..., N, D); maps latents to RGB images on the token grid."""

    def __init__(self, latents: torch.Tensor):
        x = latents.reshape(-1, latents.shape[-1]).float()
        self.mean = x.mean(0)
        _, _, v = torch.pca_lowrank(x - self.mean, q=min(3, x.shape[-1]), center=False)
        self.basis = v[:, :3]  # (D, 3)
        p = (x - self.mean) @ self.basis
        self.lo, self.hi = torch.quantile(p, 0.01, dim=0), torch.quantile(p, 0.99, dim=0)

    def to_rgb(self, latents: torch.Tensor, size: int = 128) -> np.ndarray:
        """latents (T, N, D) on a square grid -> (T, size, size, 3) uint8 (nearest upsampling keeps tokens visible)."""
        T, N, _ = latents.shape
        g = int(round(N**0.5))
        if g * g != N:
            raise ValueError(f"to_rgb: {N} tokens are not a square grid")
        p = ((latents.float() - self.mean) @ self.basis - self.lo) / (self.hi - self.lo).clamp_min(1e-6)
        img = p.clamp(0, 1).reshape(T, g, g, -1).permute(0, 3, 1, 2)
        if img.shape[1] < 3:
            img = torch.cat([img, img[:, :1].expand(-1, 3 - img.shape[1], -1, -1)], 1)
        img = torch.nn.functional.interpolate(img, size=(size, size), mode="nearest")
        return (img.permute(0, 2, 3, 1).numpy() * 255).astype(np.uint8)


def side_by_side(*videos: np.ndarray, gap: int = 4) -> np.ndarray:
    """Concatenate (T, H, W, 3) videos horizontally with a white gap; shorter ones hold their last frame."""
    T = max(len(v) for v in videos)
    H = max(v.shape[1] for v in videos)
    cols = []
    for i, v in enumerate(videos):
        v = np.concatenate([v, np.repeat(v[-1:], T - len(v), 0)]) if len(v) < T else v
        if v.shape[1] < H:
            v = np.pad(v, ((0, 0), (0, H - v.shape[1]), (0, 0), (0, 0)), constant_values=255)
        cols.append(v)
        if i < len(videos) - 1:
            cols.append(np.full((T, H, gap, 3), 255, np.uint8))
    return np.concatenate(cols, axis=2)


def decoded_frames(decoder, latents: torch.Tensor, latent_stats=None, size: int = 128) -> np.ndarray:
    """Latents (T, N, D) -> (T, size, size, 3) uint8 pixels through a trained decoder (`encoders.decoder`).

    decoder: an RAEDecoder (`engine.checkpoint.load_decoder(run)[0]`). latent_stats: the NormStats (or its dict) the
    latents were normalized with — a dynamics checkpoint's `data_stats["latents"]`; None when they are the encoder's
    own LayerNorm-ed latents. Frames with proprio channels after the encoder's (model.proprio_dim, data/proprio.py)
    are decoded from their encoder channels."""
    latents = latents[..., : decoder.spec.latent_dim]
    img = torch.from_numpy(decode_latents(decoder, latents.detach().cpu(), latent_stats)).permute(0, 3, 1, 2)
    if img.shape[-1] != size:
        img = (
            torch.nn.functional.interpolate(
                img.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False
            )
            .round()
            .clamp(0, 255)
            .to(torch.uint8)
        )
    return img.permute(0, 2, 3, 1).contiguous().numpy()


def rollout_video(
    context: torch.Tensor, truth: torch.Tensor, pred: torch.Tensor, size: int = 128, decoder=None, latent_stats=None
) -> np.ndarray:
    """Real | predicted video of one clip: context (C, N, D), truth and pred (H, N, D) -> (C + H, h, w, 3).

    Frames are decoded to pixels when a decoder is given (`decoded_frames`, with the latent_stats the latents are
    normalized with), PCA-of-features otherwise. Context frames appear on both sides (the prediction starts after
    them); predicted frames get a red border.
    """
    if decoder is not None:
        real = decoded_frames(decoder, torch.cat([context, truth]), latent_stats, size)
        fake = decoded_frames(decoder, torch.cat([context, pred]), latent_stats, size)
    else:
        pca = FeaturePCA(torch.cat([context, truth]))
        real = pca.to_rgb(torch.cat([context, truth]), size)
        fake = pca.to_rgb(torch.cat([context, pred]), size)
    fake[len(context) :, :3] = fake[len(context) :, -3:] = (220, 40, 40)
    fake[len(context) :, :, :3] = fake[len(context) :, :, -3:] = (220, 40, 40)
    return side_by_side(real, fake)


def write_rollout_gifs(
    examples, out_dir: str | Path, decoder=None, latent_stats=None, prefix: str = "rollout", fps: float = 2.0
) -> list[Path]:
    """One real | predicted GIF per clip of rollout_errors' "examples" (EvalOptions.keep_predictions: a list of
    (truth (B, H, N, D), pred (B, H, N, D), context (B, C, N, D)) batches): `out_dir/<prefix>_<i>.gif`."""
    paths = []
    for truth, pred, ctx in examples:
        for b in range(truth.shape[0]):
            video = rollout_video(ctx[b], truth[b], pred[b], decoder=decoder, latent_stats=latent_stats)
            paths.append(save_gif(Path(out_dir) / f"{prefix}_{len(paths)}.gif", video, fps=fps))
    return paths


def save_gif(path: str | Path, frames: np.ndarray, fps: float = 4.0) -> Path:
    """frames (T, H, W, 3) uint8 -> looping GIF."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    imgs = [Image.fromarray(f) for f in frames]
    imgs[0].save(path, save_all=True, append_images=imgs[1:], duration=int(1000 / fps), loop=0)
    return path


def plot_curves(
    path: str | Path, series: dict[str, tuple[list, list]], title: str, xlabel: str, ylabel: str, logy: bool = False
) -> Path:
    """series: name -> (xs, ys). Writes a PNG."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, (xs, ys) in series.items():
        ax.plot(xs, ys, label=name, marker="o" if len(xs) < 30 else None)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    if logy:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
