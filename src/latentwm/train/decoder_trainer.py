"""`latentwm train-decoder`: fit the RAE-style decoder (encoders/decoder.py) on (latent, frame) pairs.

Pairs (data/frame_pairs.py): frames of the episodes in `episodes_dir` with their latents read from the latent cache
(`cache_dir`, matched by dataset/episode/camera) or — with an empty cache_dir — encoded online on the device by the
frozen encoder, batch by batch; held out by the dynamics model's own episode split.

Loss: L1 + a perceptual term (LPIPS when the package and its weights are on the machine, else 1 − SSIM with a
notice) + optionally, from epoch `disc_start_epoch` on, a hinge-GAN term with VQGAN's adaptive weight
‖∇_last L_rec‖ / ‖∇_last L_G‖ (the discriminator trains from the same epoch). Input latents get RAE's noise
augmentation σ = τ_n·U(0, 1). AdamW with warmup + cosine, EMA weights (what metrics and checkpoints' users
take), atomic checkpoints with exact resume (data order is a function of (seed, epoch), noise of (seed, step)),
DDP under torchrun, bf16 autocast on CUDA.
"""

from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from latentwm.config import ConfigError, EncoderConfig, get_preset
from latentwm.data.frame_pairs import FrameSet, load_frame_sets
from latentwm.encoders.decoder import DECODER_SIZES, DecoderSpec, RAEDecoder, resize_frames, to_uint8
from latentwm.eval.decoder_metrics import PerceptualLoss, recon_grid, reconstruction_metrics, save_png
from latentwm.train import checkpoint as ckpt
from latentwm.train.distributed import DistInfo, init_distributed, shutdown, unwrap, wrap_model
from latentwm.train.logging import RunLogger
from latentwm.model.layers import decay_groups
from latentwm.train.trainer import ema_update, lr_lambda, sample_seed


@dataclass(frozen=True)
class DecoderConfig:
    """Train the RAE-style latents → pixels decoder on frames and their latents."""

    episodes_dir: str = "data/pusht_episodes"
    """Raw episodes (the frames to reconstruct), read with `source`."""
    source: Literal["pusht", "droid", "epic", "video-folder"] = "pusht"
    source_options: str = ""
    """Reader options as k=v pairs (as `latentwm encode --options`)."""
    cache_dir: str = "data/pusht_latents"
    """Latent cache of those episodes (`latentwm encode`); empty: encode frames online with `encoder`."""
    encoder: EncoderConfig = field(default_factory=lambda: get_preset("cpu").encoder)
    """The frozen encoder (online encoding only; a cache records its own)."""
    out_dir: str = "runs/decoder"
    size: Literal["tiny", "cpu", "B", "L", "XL"] = "cpu"
    """Decoder width/depth: RAE's ViT-B / L / XL, or the small tiny / cpu sizes."""
    patch_size: int = 8
    """Output pixels per token side: images are token grid × patch_size pixels square (independent of the
    encoder's patch)."""
    epochs: int = 30
    batch_size: int = 32
    """Frames per optimizer step across all ranks."""
    lr: float = 4e-4
    min_lr_ratio: float = 0.1
    warmup_steps: int = 100
    weight_decay: float = 0.05
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    noise_tau: float = 0.8
    """Noise augmentation of the standardized input latents: σ = noise_tau · U(0, 1) per frame (0: off)."""
    l1_weight: float = 1.0
    perceptual: Literal["auto", "ssim", "off"] = "auto"
    """auto: LPIPS when available locally, else pixel SSIM (with a notice); ssim: always SSIM; off: none."""
    perceptual_weight: float = 1.0
    adv_weight: float = 0.0
    """Adversarial term's scale on top of the adaptive weight (0: no discriminator)."""
    disc_start_epoch: int = 5
    """Epochs of reconstruction-only warm-up before the discriminator and the adversarial term switch on."""
    disc_lr: float = 1e-4
    disc_channels: int = 32
    frame_stride: int = 1
    """Use every k-th frame of an episode (neighbouring frames are near-duplicates)."""
    max_frames: int = 50_000
    """Cap on frames held in memory per split (evenly subsampled beyond it)."""
    eval_fraction: float = 0.1
    """Held-out share of episodes (the dynamics model's split: same fraction and seed → same episodes)."""
    eval_frames: int = 256
    """Held-out frames scored at every evaluation (evenly spaced)."""
    grid_images: int = 8
    """Originals vs reconstructions shown in each evaluation's picture."""
    max_minutes: float = 0.0
    """Stop (with a checkpoint and a final evaluation) after this much training time; 0: no limit."""
    log_every: int = 20
    eval_every: int = 1
    """Evaluate every this many epochs."""
    ckpt_every: int = 500
    keep_last: int = 2
    resume: bool = False
    """Continue from the latest complete checkpoint in out_dir."""
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    device: str = "auto"
    seed: int = 0
    wandb: bool = False

    def __post_init__(self):
        for n in ("patch_size", "epochs", "batch_size", "lr", "grad_clip", "frame_stride", "max_frames",
                  "eval_frames", "log_every", "eval_every", "ckpt_every", "keep_last", "disc_lr", "disc_channels"):
            if getattr(self, n) <= 0:
                raise ConfigError(f"decoder.{n} must be > 0, got {getattr(self, n)!r}")
        for n in ("warmup_steps", "weight_decay", "noise_tau", "l1_weight", "perceptual_weight", "adv_weight",
                  "disc_start_epoch", "max_minutes", "grid_images"):
            if getattr(self, n) < 0:
                raise ConfigError(f"decoder.{n} must be >= 0, got {getattr(self, n)!r}")
        for n in ("min_lr_ratio", "ema_decay", "eval_fraction"):
            if not 0 <= getattr(self, n) <= 1:
                raise ConfigError(f"decoder.{n} must be in [0, 1], got {getattr(self, n)!r}")
        if self.l1_weight == 0 and (self.perceptual == "off" or self.perceptual_weight == 0):
            raise ConfigError("decoder: l1_weight and the perceptual term are both off; nothing to train")


def default_decoder_config(preset: str) -> DecoderConfig:
    """CPU presets: the small decoder, no discriminator; GPU presets: RAE's ViT-B decoder with the GAN term."""
    enc = get_preset(preset).encoder
    if preset in ("tiny", "smoke"):
        return DecoderConfig(encoder=enc, size="tiny", patch_size=4, epochs=5, batch_size=16)
    if preset == "cpu":
        return DecoderConfig(encoder=enc)
    return DecoderConfig(encoder=enc, cache_dir="", size="B", patch_size=16, epochs=16, batch_size=64, lr=2e-4,
                         warmup_steps=1000, adv_weight=0.75, disc_start_epoch=6, disc_channels=64, ckpt_every=2000)


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
            layers += [nn.Conv2d(ch, nxt, 4, 2 if i < n else 1, 1), nn.GroupNorm(math.gcd(8, nxt), nxt),
                       nn.LeakyReLU(0.2)]
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


# ---------------------------------------------------------------------------------------------------------------
# Training


class DecoderTrainer:
    """`DecoderTrainer(cfg, train, held_out, facts, encoder).fit()`; facts as `load_frame_sets` returns them
    (online encoding: give the encoder; grid, width and statistics then come from it)."""

    def __init__(self, cfg: DecoderConfig, train: FrameSet, held_out: FrameSet, facts: dict, encoder=None,
                 dist: DistInfo | None = None):
        self.cfg, self.train_set, self.eval_set, self.facts = cfg, train, held_out, dict(facts)
        self.dist = dist or init_distributed(cfg.device)
        self.device = self.dist.device
        if len(train) == 0:
            raise ConfigError("decoder: no training frames (every episode is held out?)")
        if cfg.batch_size % self.dist.world_size:
            raise ConfigError(f"decoder.batch_size ({cfg.batch_size}) must be divisible by the world size "
                              f"({self.dist.world_size})")
        self.encode_fn = None
        if train.latents is None:
            if encoder is None:
                raise ConfigError("decoder: frames without cached latents need an encoder (online encoding)")
            self.encode_fn = encoder.encode
            if "latent_stats" not in self.facts:
                from latentwm.encoders.dino import compute_latent_stats

                sel = np.linspace(0, len(train) - 1, min(len(train), 1024)).round().astype(int)
                st = compute_latent_stats(encoder.encode(train.frames[sel[i: i + 64]].permute(0, 3, 1, 2)).cpu()
                                          for i in range(0, len(sel), 64))
                self.facts["latent_stats"] = dict(mean=st.mean.tolist(), std=st.std.tolist())
            self.facts.update(encoder=encoder.weights_label, pool=encoder.pool, grid=encoder.grid,
                              latent_dim=encoder.dim)
        self.spec = DecoderSpec(self.facts["latent_dim"], self.facts["grid"], cfg.patch_size, cfg.size)
        self.out = Path(cfg.out_dir)
        torch.manual_seed(cfg.seed)  # identical initial weights on every rank
        self.model = RAEDecoder(self.spec).to(self.device)
        self.model.set_stats(self.facts["latent_stats"]["mean"], self.facts["latent_stats"]["std"])
        self.ema = copy.deepcopy(self.model).requires_grad_(False).eval()
        self.wrapped = wrap_model(self.model, "ddp", self.dist)
        self.opt = torch.optim.AdamW(decay_groups(self.model, cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.95))
        self.steps_per_epoch = max(1, len(train) // cfg.batch_size)
        self.total_steps = cfg.epochs * self.steps_per_epoch
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, partial(
            lr_lambda, warmup=cfg.warmup_steps, total=self.total_steps, min_ratio=cfg.min_lr_ratio))
        self.disc = self.wrapped_disc = self.opt_d = None
        if cfg.adv_weight > 0:
            self.disc = PatchDiscriminator(cfg.disc_channels, self.spec.image_size).to(self.device)
            self.wrapped_disc = wrap_model(self.disc, "ddp", self.dist)
            self.opt_d = torch.optim.Adam(self.disc.parameters(), lr=cfg.disc_lr, betas=(0.5, 0.9))
        self.perceptual = PerceptualLoss(cfg.perceptual, self.device)
        use_bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and self.device.type == "cuda")
        self.autocast = dict(device_type=self.device.type, dtype=torch.bfloat16, enabled=use_bf16)
        self.step, self.history = 0, []
        self.mean_image = self._mean_image()
        self.log = RunLogger(self.out, enabled=self.dist.is_main, wandb=cfg.wandb, config=asdict(cfg))

    def _mean_image(self) -> torch.Tensor:
        """Pixel-wise mean training frame at the output size (3, S, S) in [-1, 1]: the baseline."""
        tot = torch.zeros(3, self.spec.image_size, self.spec.image_size, dtype=torch.float64)
        for i in range(0, len(self.train_set), 256):
            f = self.train_set.frames[i: i + 256].permute(0, 3, 1, 2)
            tot += resize_frames(f, self.spec.image_size).double().sum(0)
        return (tot / len(self.train_set)).float()

    def adv_active(self, epoch: int) -> bool:
        return self.disc is not None and epoch >= self.cfg.disc_start_epoch

    # -------------------------------------------------------------------------------------------------- state
    def state_dict(self) -> dict:
        st = {"model": unwrap(self.model).state_dict(), "ema": self.ema.state_dict(),
              "optimizer": self.opt.state_dict(), "scheduler": self.sched.state_dict(), "step": self.step,
              "history": self.history, "config": asdict(self.cfg), "decoder_spec": asdict(self.spec),
              "perceptual": self.perceptual.kind, **{k: v for k, v in self.facts.items() if k != "skipped"}}
        if self.disc is not None:
            st.update(disc=self.disc.state_dict(), disc_optimizer=self.opt_d.state_dict())
        return st

    def save(self) -> Path:
        return ckpt.save_checkpoint(self.out / "checkpoints", self.step, self.state_dict() if self.dist.is_main
                                    else {}, rank=self.dist.rank, world_size=self.dist.world_size,
                                    barrier=self.dist.barrier, keep_last=self.cfg.keep_last)

    def restore(self) -> Path | None:
        latest = ckpt.latest_checkpoint(self.out / "checkpoints")
        if latest is None:
            return None
        st = ckpt.load_checkpoint(latest, rank=self.dist.rank, map_location=self.device)
        if st["decoder_spec"] != asdict(self.spec):
            raise ConfigError(f"decoder: {latest} holds a decoder {st['decoder_spec']}, this run builds "
                              f"{asdict(self.spec)}; use another out_dir")
        unwrap(self.model).load_state_dict(st["model"])
        self.ema.load_state_dict(st["ema"])
        self.opt.load_state_dict(st["optimizer"])
        self.sched.load_state_dict(st["scheduler"])
        if self.disc is not None and "disc" in st:
            self.disc.load_state_dict(st["disc"])
            self.opt_d.load_state_dict(st["disc_optimizer"])
        self.step, self.history = st["step"], list(st.get("history", []))
        if st["rng"] is not None:
            ckpt.set_rng_state(st["rng"])
        return latest

    # -------------------------------------------------------------------------------------------------- loop
    def _indices(self, step: int) -> torch.Tensor:
        """This rank's frames of optimizer step `step`: a (seed, epoch)-seeded permutation, sliced by position."""
        epoch, pos = divmod(step, self.steps_per_epoch)
        perm = torch.randperm(len(self.train_set), generator=torch.Generator().manual_seed(
            sample_seed(self.cfg.seed, 1_000_000 + epoch)))
        G = self.cfg.batch_size
        m = G // self.dist.world_size
        start = pos * G + self.dist.rank * m
        return perm[start: start + m]

    def train_step(self) -> dict:
        cfg, step = self.cfg, self.step
        epoch = step // self.steps_per_epoch
        lat, target = self.train_set.batch(self._indices(step), self.device, self.spec.image_size, self.encode_fn)
        gen = torch.Generator(device=self.device).manual_seed(
            sample_seed(cfg.seed, step * self.dist.world_size + self.dist.rank))
        with torch.autocast(**self.autocast):
            pred = self.wrapped(lat, noise_tau=cfg.noise_tau, generator=gen).float()  # (B, 3, S, S)
        l1 = (pred - target).abs().mean()
        perc = self.perceptual(pred, target)
        rec = cfg.l1_weight * l1 + cfg.perceptual_weight * perc
        loss, m = rec, {"l1": l1.detach(), "perceptual": perc.detach()}
        adv = self.adv_active(epoch)
        if adv:
            with torch.autocast(**self.autocast):
                g_loss = -self.disc(pred).float().mean()  # unwrapped: its gradients are discarded below
            w = cfg.adv_weight * adaptive_weight(rec, g_loss, unwrap(self.model).last_layer)
            loss = rec + w * g_loss
            m.update(g_loss=g_loss.detach(), adv_weight=w)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        if torch.isfinite(grad_norm):
            self.opt.step()
            ema_update(self.ema, unwrap(self.model), min(cfg.ema_decay, (1 + step) / (10 + step)))
        self.sched.step()
        if adv:
            self.opt_d.zero_grad(set_to_none=True)
            with torch.autocast(**self.autocast):
                real, fake = self.wrapped_disc(torch.cat([target, pred.detach()])).float().chunk(2)
            d_loss = 0.5 * (F.relu(1 - real).mean() + F.relu(1 + fake).mean())
            d_loss.backward()
            self.opt_d.step()
            m.update(d_loss=d_loss.detach(), logits_real=real.mean().detach(), logits_fake=fake.mean().detach())
        m.update(loss=loss.detach(), grad_norm=grad_norm.detach())
        self.step += 1
        out = {k: float(v) for k, v in m.items()}
        out.setdefault("adv_weight", 0.0)
        return out

    def fit(self, stop_at: int | None = None) -> dict:
        """Train to `epochs` (or `stop_at` steps, or the time budget); returns the final held-out metrics."""
        cfg = self.cfg
        existing = ckpt.list_checkpoints(self.out / "checkpoints")
        if cfg.resume:
            where = self.restore()
            if where is not None and self.dist.is_main:
                print(f"resumed from {where} (step {self.step})")
        elif existing:
            raise ConfigError(f"decoder.out_dir {self.out} already has checkpoints ({existing[-1].name}); pass "
                              "--resume to continue it or choose another out_dir")
        end = min(self.total_steps, stop_at or self.total_steps)
        from tqdm.auto import tqdm

        bar = tqdm(total=end, initial=self.step, desc="train-decoder", dynamic_ncols=True,
                   disable=not self.dist.is_main)
        t0, t_log, acc, n_acc, res = time.monotonic(), time.monotonic(), {}, 0, None
        while self.step < end:
            m = self.train_step()
            bar.update(1)
            for k, v in m.items():
                acc[k] = acc.get(k, 0.0) + v
            n_acc += 1
            step, spe = self.step, self.steps_per_epoch
            if step % cfg.log_every == 0 or step == end:
                vals = {k: v / n_acc for k, v in acc.items()}
                vals.update(lr=self.sched.get_last_lr()[0], epoch=step / spe,
                            frames_per_s=n_acc * cfg.batch_size / max(time.monotonic() - t_log, 1e-9))
                self.log.scalars(step, vals, prefix="train/")
                self.history.append((step, (step - 1) // spe, vals["loss"], vals["adv_weight"]))
                bar.set_postfix(loss=f"{vals['loss']:.4f}", l1=f"{vals['l1']:.4f}")
                acc, n_acc, t_log = {}, 0, time.monotonic()
            over = cfg.max_minutes > 0 and time.monotonic() - t0 > cfg.max_minutes * 60
            if self.dist.enabled:  # every rank stops at the same step
                over = bool(self.dist.all_reduce_sum(torch.tensor(float(over), device=self.device)) > 0)
            if step % spe == 0 and (step // spe) % cfg.eval_every == 0 and step < end and not over:
                res = self.evaluate()
            if step % cfg.ckpt_every == 0 and step < end and not over:
                self.save()
            if over:
                if self.dist.is_main:
                    print(f"train-decoder: time budget of {cfg.max_minutes} min reached at step {step}")
                break
        bar.close()
        self.save()
        res = self.evaluate()
        if self.dist.is_main:
            res.update(step=self.step, epochs=self.step / self.steps_per_epoch, train_frames=len(self.train_set),
                       train_seconds=time.monotonic() - t0, perceptual=self.perceptual.kind,
                       decoder=asdict(self.spec), parameters=self.model.num_parameters(),
                       encoder=self.facts.get("encoder"))
            (self.out / "metrics.json").write_text(json.dumps(res, indent=1))
        self.log.close()
        return res

    @torch.no_grad()
    def evaluate(self) -> dict:
        """EMA decoder on held-out frames (training frames when nothing is held out): PSNR, SSIM (LPIPS), the
        mean-image baseline, and a picture of originals over reconstructions (eval/recon_step*.png)."""
        res: dict = {}
        if self.dist.is_main:
            data, split = (self.eval_set, "eval") if len(self.eval_set) else (self.train_set, "train")
            sel = torch.from_numpy(np.unique(np.linspace(0, len(data) - 1, min(len(data), self.cfg.eval_frames))
                                             .round().astype(np.int64)))
            S = self.spec.image_size

            def pairs():
                for i in range(0, len(sel), 64):
                    yield data.batch(sel[i: i + 64], self.device, S, self.encode_fn)

            with torch.autocast(**self.autocast):
                res = reconstruction_metrics(pairs(), self.ema, self.perceptual.lpips, self.mean_image)
            res["split"] = split
            k = min(self.cfg.grid_images, len(sel))
            if k:
                lat, target = data.batch(sel[np.linspace(0, len(sel) - 1, k).round().astype(np.int64)], self.device,
                                         S, self.encode_fn)
                grid = recon_grid(to_uint8(target).cpu().numpy(), to_uint8(self.ema(lat)).cpu().numpy())
                save_png(self.out / "eval" / f"recon_step{self.step:08d}.png", grid)
                self.log.image(self.step, "eval/reconstructions", grid)
            self.log.scalars(self.step, {k: v for k, v in res.items() if isinstance(v, float)}, prefix="eval/")
            print(f"step {self.step}: {split} PSNR {res['psnr']:.2f} dB (mean image {res['mean_image_psnr']:.2f}), "
                  f"SSIM {res['ssim']:.3f}", flush=True)
        self.dist.barrier()
        return res


def train_decoder(cfg: DecoderConfig) -> dict:
    """`latentwm train-decoder`: load pairs (cache or online encoder), train, write metrics.json."""
    dist = init_distributed(cfg.device)
    try:
        encoder = None
        train, held, facts = load_frame_sets(cfg, show_progress=dist.is_main)
        if not cfg.cache_dir:
            from latentwm.encoders.dino import DinoEncoder

            encoder = DinoEncoder.from_config(cfg.encoder, device=dist.device)
        if dist.is_main:
            print(f"train-decoder: {len(train)} training / {len(held)} held-out frames; decoder "
                  f"{cfg.size} {DECODER_SIZES[cfg.size]}, patch {cfg.patch_size}")
        return DecoderTrainer(cfg, train, held, facts, encoder=encoder, dist=dist).fit()
    finally:
        shutdown(dist)
