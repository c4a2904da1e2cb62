"""Self-supervised objectives that pretrain a small ViT in the Hugging Face DINOv2 architecture on the user's frames
(`latentwm pretrain-encoder`, `train/encoder_pretrain.py` drives them).

- `DinoIbot`: DINOv2's recipe scaled down. A student and a momentum (EMA) teacher; multi-crop views (2 global, a
  few local); the DINO loss on the CLS token (teacher outputs centered and sharpened, student cross-entropy against
  them across views) and iBOT's masked-patch loss (the student sees the global views with blocks of patches
  replaced by the mask token and predicts the teacher's patch distributions there). What keeps the teacher from
  collapsing: sharpening (a low teacher temperature) and centering — DINOv2's Sinkhorn–Knopp balancing by default,
  DINO v1's running mean as an option — with DINOv2's KoLeo term spreading the student's features and, optionally,
  DINO's frozen prototypes early on (`DinoRecipe`). On near-identical frames (Push-T) neither centering has been
  enough at the demo's size: the teacher maps every frame to one output and the targets stay uniform
  (`teacher_entropy` → 1, logged).
- `MaskedPixels`: SimMIM/MAE-style: random patches replaced by the mask token, a linear head predicts the
  per-patch-normalized pixels of the masked patches (L1). Keeps spatial layout by construction.

Both return a scalar loss from `loss(frames, gen)` with frames uint8 (B, H, W, 3) or float (B, 3, H, W) pixels in
[0, 255]; `backbone` is the transformers model that is saved (`save_pretrained`) and later loaded frozen by
`encoders/dino.py` exactly like real DINOv2 weights. Pixels are ImageNet-normalized here as `DinoEncoder` does on
the unfolded path, so the saved weights expect what every DINOv2 checkpoint expects.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize_pixels(frames: torch.Tensor) -> torch.Tensor:
    """uint8 (B, H, W, 3) / float (B, 3, H, W) in [0, 255] -> float (B, 3, H, W), ImageNet-normalized."""
    x = frames.permute(0, 3, 1, 2) if frames.shape[-1] == 3 and frames.shape[1] != 3 else frames
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1) * 255
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1) * 255
    return (x.float() - mean) / std


def random_crops(x: torch.Tensor, size: int, scale: tuple[float, float], gen: torch.Generator) -> torch.Tensor:
    """A random resized crop per image: x (B, 3, H, W) -> (B, 3, size, size); square crops covering a fraction in
    `scale` of the area, anywhere inside the frame (bilinear, one batched grid_sample)."""
    B = x.shape[0]
    s = torch.empty(B).uniform_(*scale, generator=gen).sqrt()  # side as a fraction of the frame
    cx = (torch.rand(B, generator=gen) * 2 - 1) * (1 - s)  # centre, in [-1, 1] coordinates, crop inside the frame
    cy = (torch.rand(B, generator=gen) * 2 - 1) * (1 - s)
    theta = torch.zeros(B, 2, 3)
    theta[:, 0, 0], theta[:, 1, 1], theta[:, 0, 2], theta[:, 1, 2] = s, s, cx, cy
    grid = F.affine_grid(theta.to(x.device), (B, 3, size, size), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def block_mask(B: int, grid: int, ratio: float, gen: torch.Generator) -> torch.Tensor:
    """(B, grid²) bool: rectangles of patches masked until about `ratio` of the grid is covered (iBOT's blockwise
    masking: masked regions are contiguous, so they cannot be filled in from an adjacent visible patch alone)."""
    m = torch.zeros(B, grid, grid, dtype=torch.bool)
    target = int(round(ratio * grid * grid))
    for b in range(B):
        for _ in range(64):
            if int(m[b].sum()) >= target:
                break
            area = max(1, int(torch.randint(1, max(2, target - int(m[b].sum()) + 1), (1,), generator=gen)))
            aspect = math.exp(float(torch.empty(1).uniform_(math.log(0.3), math.log(3.3), generator=gen)))
            h = max(1, min(grid, int(round(math.sqrt(area * aspect)))))
            w = max(1, min(grid, int(round(math.sqrt(area / aspect)))))
            top = int(torch.randint(0, grid - h + 1, (1,), generator=gen))
            left = int(torch.randint(0, grid - w + 1, (1,), generator=gen))
            m[b, top : top + h, left : left + w] = True
    return m.flatten(1)


class ProjectionHead(nn.Module):
    """DINO's head: MLP to a bottleneck, L2-normalized, then a weight-normalized linear layer to K prototypes."""

    def __init__(self, dim: int, out_dim: int, hidden: int, bottleneck: int):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, bottleneck)
        )
        self.last = nn.utils.parametrizations.weight_norm(nn.Linear(bottleneck, out_dim, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.last(F.normalize(self.mlp(x), dim=-1))


@torch.no_grad()
def sinkhorn_knopp(logits: torch.Tensor, temp: float, iters: int = 3) -> torch.Tensor:
    """Teacher targets by Sinkhorn–Knopp (SwAV, DINOv2): logits (B, K) -> (B, K), each row a distribution and every
    prototype given (after enough iterations) the same share of the batch. Against the collapse where one prototype
    wins every image, the balancing is enforced within each batch rather than by a running center that lags the
    teacher."""
    q = torch.exp((logits.float() - logits.float().max()) / temp).T  # (K, B), shifted: exp cannot overflow
    q = q / q.sum()
    K, B = q.shape
    for _ in range(iters):
        q = q / q.sum(1, keepdim=True).clamp_min(1e-30) / K  # every prototype the same total mass
        q = q / q.sum(0, keepdim=True).clamp_min(1e-30) / B  # every image one unit of mass
    return (q * B).T


def koleo(x: torch.Tensor) -> torch.Tensor:
    """KoLeo (DINOv2): −mean log distance of each L2-normalized row of x (B, D) to its nearest other row; it spreads
    the batch's features over the sphere, against the collapse where every image maps to one point."""
    x = F.normalize(x.float(), dim=-1)
    d = torch.cdist(x, x)
    d = d + torch.eye(len(x), device=x.device) * 1e9  # never oneself
    return -torch.log(d.min(1).values + 1e-8).mean()


@dataclass(frozen=True)
class DinoRecipe:
    """DINOv2's recipe knobs, scaled down; each with the recipe's value unless a config sets it.

    out_dim: prototypes K of both heads; local_crops / local_size: the small views (None: half the image, in whole
    patches); mask_ratio: iBOT's share of masked patches; student_temp / teacher_temp: softmax temperatures;
    centering: how the teacher's outputs become targets — "sinkhorn" (DINOv2: batch-balanced, Sinkhorn–Knopp) or
    "mean" (DINO v1: an EMA of the mean output subtracted, momentum center_momentum); koleo_weight: weight of the
    KoLeo spreading term on the student's CLS features (0: off)."""

    out_dim: int = 1024
    local_crops: int = 4
    local_size: int | None = None
    mask_ratio: float = 0.3
    student_temp: float = 0.1
    teacher_temp: float = 0.05
    centering: str = "sinkhorn"
    center_momentum: float = 0.9
    koleo_weight: float = 0.1
    freeze_prototypes: int = 0
    """Steps during which the heads' last layers (the prototypes) take no update (DINO's freeze_last_layer: a young
    teacher's targets are near uniform, and prototypes fitted to them early can settle into a head whose targets stay
    uniform; on Push-T 500 frozen steps did not prevent it)."""

    def __post_init__(self):
        if self.centering not in ("sinkhorn", "mean"):
            raise ValueError(f"DinoRecipe.centering must be 'sinkhorn' or 'mean', got {self.centering!r}")


class DinoIbot(nn.Module):
    """DINO (CLS, across views) + iBOT (masked patches) self-distillation; see the module docstring.

    backbone: the student (trained, saved); the teacher is an EMA copy updated by `update_teacher(momentum)`.
    """

    def __init__(self, backbone: nn.Module, image_size: int, recipe: DinoRecipe = DinoRecipe()):
        super().__init__()
        import copy

        r = recipe
        dim = backbone.config.hidden_size
        self.backbone = backbone
        self.head = ProjectionHead(dim, r.out_dim, 4 * dim, max(32, dim))
        self.patch_head = ProjectionHead(dim, r.out_dim, 4 * dim, max(32, dim))
        self.teacher = copy.deepcopy(backbone).requires_grad_(False)
        self.teacher_head = copy.deepcopy(self.head).requires_grad_(False)
        self.teacher_patch_head = copy.deepcopy(self.patch_head).requires_grad_(False)
        self.register_buffer("center", torch.zeros(r.out_dim))
        self.register_buffer("patch_center", torch.zeros(r.out_dim))
        patch = backbone.config.patch_size
        self.image_size, self.patch, self.local_crops = image_size, patch, r.local_crops
        self.local_size = r.local_size or max(patch * 2, (image_size // 2) // patch * patch)
        self.recipe = r

    def cancel_prototype_grads(self, step: int) -> None:
        """Drop the prototypes' gradients while step < recipe.freeze_prototypes (call between backward and the
        optimizer step); a parameter without a gradient is left alone by AdamW, weight decay included."""
        if step < self.recipe.freeze_prototypes:
            for p in (*self.head.last.parameters(), *self.patch_head.last.parameters()):
                p.grad = None

    def _targets(self, logits: torch.Tensor, center: torch.Tensor) -> torch.Tensor:
        """The teacher's logits (M, K) -> target distributions (M, K), by the recipe's centering."""
        if self.recipe.centering == "sinkhorn":
            return sinkhorn_knopp(logits, self.recipe.teacher_temp)
        return F.softmax((logits - center) / self.recipe.teacher_temp, -1)

    def student_parameters(self):
        return [*self.backbone.parameters(), *self.head.parameters(), *self.patch_head.parameters()]

    @torch.no_grad()
    def update_teacher(self, momentum: float) -> None:
        for t, s in (
            (self.teacher, self.backbone),
            (self.teacher_head, self.head),
            (self.teacher_patch_head, self.patch_head),
        ):
            for pt, ps in zip(t.parameters(), s.parameters()):
                pt.lerp_(ps.detach(), 1 - momentum)

    def loss(self, frames: torch.Tensor, gen: torch.Generator, pair: torch.Tensor | None = None) -> dict:
        x = normalize_pixels(frames)
        B, S, g = x.shape[0], self.image_size, self.image_size // self.patch
        glob = torch.cat([random_crops(x, S, (0.6, 1.0), gen) for _ in range(2)])  # (2B, 3, S, S)
        r = self.recipe
        mask = block_mask(2 * B, g, r.mask_ratio, gen).to(x.device)
        mask[torch.rand(2 * B, generator=gen).to(x.device) < 0.5] = False  # iBOT: half the images unmasked
        with torch.no_grad():
            th = self.teacher(pixel_values=glob).last_hidden_state  # (2B, 1 + N, D)
            t_cls = self.teacher_head(th[:, 0])
            t_patch = self.teacher_patch_head(th[:, 1:])
            p_cls = self._targets(t_cls, self.center).chunk(2)
            m_flat = mask.flatten()
            p_patch = torch.zeros(t_patch.shape, dtype=torch.float32, device=t_patch.device)
            if m_flat.any():  # iBOT's targets: the masked patches' (balanced among themselves under sinkhorn)
                flat = self._targets(t_patch.flatten(0, 1)[m_flat], self.patch_center).float()
                p_patch = p_patch.flatten(0, 1).index_put((m_flat.nonzero()[:, 0],), flat).view_as(t_patch)
        sh = self.backbone(pixel_values=glob, bool_masked_pos=mask).last_hidden_state
        s_cls = [F.log_softmax(self.head(sh[:, 0]) / r.student_temp, -1).chunk(2)]
        if self.local_crops:
            loc = torch.cat([random_crops(x, self.local_size, (0.1, 0.4), gen) for _ in range(self.local_crops)])
            local = self.head(self.backbone(pixel_values=loc).last_hidden_state[:, 0])
            s_cls.append(F.log_softmax(local / r.student_temp, -1).chunk(self.local_crops))
        views = [v for group in s_cls for v in group]
        spread = koleo(sh[:, 0].chunk(2)[0]) if r.koleo_weight else torch.zeros((), device=x.device)
        dino, n = 0.0, 0
        for i, p in enumerate(p_cls):
            for j, q in enumerate(views):
                if j != i:  # never the same global view
                    dino = dino + (-(p * q).sum(-1)).mean()
                    n += 1
        dino = dino / n
        s_patch = F.log_softmax(self.patch_head(sh[:, 1:]) / r.student_temp, -1)
        m = mask.float()
        ibot = ((-(p_patch * s_patch).sum(-1)) * m).sum() / m.sum().clamp_min(1.0)
        with torch.no_grad():
            if r.centering == "mean":  # the running centers only mean centering reads
                self.center.lerp_(t_cls.float().mean(0), 1 - r.center_momentum)
                self.patch_center.lerp_(t_patch.float().mean((0, 1)), 1 - r.center_momentum)
            # DINO's two collapse modes read off the teacher: one dimension dominating (entropy → 0) or a uniform
            # output (entropy → 1, as a share of log out_dim).
            pt = torch.cat(p_cls).float()
            entropy = -(pt * pt.clamp_min(1e-12).log()).sum(-1).mean() / math.log(pt.shape[-1])
        loss = dino + ibot + r.koleo_weight * spread
        return {"loss": loss, "dino": dino.detach(), "ibot": ibot.detach(), "koleo": spread.detach(),
                "teacher_entropy": entropy}  # fmt: skip


class MaskedPixels(nn.Module):
    """SimMIM/MAE-style masked patch reconstruction; see the module docstring."""

    def __init__(self, backbone: nn.Module, image_size: int, mask_ratio: float = 0.6):
        super().__init__()
        dim, patch = backbone.config.hidden_size, backbone.config.patch_size
        self.backbone, self.image_size, self.patch, self.mask_ratio = backbone, image_size, patch, mask_ratio
        self.decoder = nn.Linear(dim, patch * patch * 3)

    def student_parameters(self):
        return [*self.backbone.parameters(), *self.decoder.parameters()]

    def update_teacher(self, momentum: float) -> None:
        pass

    def loss(self, frames: torch.Tensor, gen: torch.Generator, pair: torch.Tensor | None = None) -> dict:
        x = normalize_pixels(frames)
        S, p = self.image_size, self.patch
        x = random_crops(x, S, (0.6, 1.0), gen)
        g = S // p
        mask = block_mask(x.shape[0], g, self.mask_ratio, gen).to(x.device)
        h = self.backbone(pixel_values=x, bool_masked_pos=mask).last_hidden_state[:, 1:]  # (B, N, D)
        pred = self.decoder(h)  # (B, N, p·p·3)
        target = x.reshape(-1, 3, g, p, g, p).permute(0, 2, 4, 3, 5, 1).reshape(x.shape[0], g * g, p * p * 3)
        target = (target - target.mean(-1, keepdim=True)) / (target.std(-1, keepdim=True) + 1e-6)
        err = (pred - target).abs().mean(-1)
        m = mask.float()
        loss = (err * m).sum() / m.sum().clamp_min(1.0)
        return {"loss": loss}


class TimeContrastive(nn.Module):
    """Time-contrastive learning (TCN, Sermanet et al. 2018) on the whole patch-token map, with graded targets.

    A batch holds a few frames from each of several episodes. For each frame, a softmax over the similarities to
    every other frame of the batch (L2-normalized flattened token maps (B, N·D), temperature τ) is pulled toward
    targets ∝ exp(−|Δt| / σ) over the same episode's frames and 0 for other episodes: near frames close, far frames
    further, other episodes far. Distances in the space planning compares frames in (all tokens) are trained to
    grow with time apart, and so with how far the state moved, which is what a goal cost needs. An optional
    masked-pixel term keeps what a single frame shows.
    """

    def __init__(
        self,
        backbone: nn.Module,
        image_size: int,
        temperature: float = 0.1,
        sigma: float = 4.0,
        pixel_weight: float = 0.0,
        mask_ratio: float = 0.6,
    ):
        super().__init__()
        self.backbone, self.image_size, self.temperature, self.sigma = backbone, image_size, temperature, sigma
        self.pixels = MaskedPixels(backbone, image_size, mask_ratio) if pixel_weight > 0 else None
        self.pixel_weight = pixel_weight

    def student_parameters(self):
        return [*self.backbone.parameters(), *([] if self.pixels is None else self.pixels.decoder.parameters())]

    def update_teacher(self, momentum: float) -> None:
        pass

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        h = self.backbone(pixel_values=x).last_hidden_state[:, 1:]  # (B, N, D), final LayerNorm
        h = F.layer_norm(h, h.shape[-1:])  # what the frozen encoder outputs (the norm's affine is dropped there)
        return F.normalize(h.flatten(1), dim=-1)

    def loss(
        self,
        frames: torch.Tensor,
        gen: torch.Generator,
        episode: torch.Tensor | None = None,
        time: torch.Tensor | None = None,
    ) -> dict:
        """frames (B, …); episode (B,) int ids and time (B,) env steps of each frame."""
        if episode is None or time is None:
            raise ValueError("time-contrastive pretraining needs each frame's episode and time step")
        S = self.image_size
        x = F.interpolate(normalize_pixels(frames), size=(S, S), mode="bilinear", align_corners=False)
        z = self.embed(x)  # (B, N·D)
        eye = torch.eye(len(z), dtype=torch.bool, device=z.device)
        sim = (z @ z.T / self.temperature).masked_fill(eye, float("-inf"))
        ep, t = episode.to(z.device), time.to(z.device).float()
        w = torch.exp(-(t[:, None] - t[None, :]).abs() / self.sigma) * (ep[:, None] == ep[None, :])
        w = w.masked_fill(eye, 0.0)
        target = w / w.sum(1, keepdim=True).clamp_min(1e-12)
        tcn = -(target * F.log_softmax(sim, -1).masked_fill(eye, 0.0)).sum(1).mean()
        out = {"loss": tcn, "tcn": tcn.detach()}
        if self.pixels is not None:
            px = self.pixels.loss(frames, gen)["loss"]
            out.update(loss=tcn + self.pixel_weight * px, pixels=px.detach())
        return out


OBJECTIVES = {"dino": DinoIbot, "masked-pixels": MaskedPixels, "time-contrastive": TimeContrastive}

__all__ = [
    "OBJECTIVES",
    "DinoIbot",
    "DinoRecipe",
    "MaskedPixels",
    "ProjectionHead",
    "block_mask",
    "koleo",
    "normalize_pixels",
    "random_crops",
    "sinkhorn_knopp",
]
