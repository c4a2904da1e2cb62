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
import time
from dataclasses import asdict
from functools import partial
from pathlib import Path

import numpy as np
import torch

from latentwm.config import ConfigError, DecoderConfig
from latentwm.data.frame_pairs import FrameSet, load_frame_sets
from latentwm.data.latent_stats import compute_latent_stats
from latentwm.data.video import resize_frames
from latentwm.distributed import DistInfo, init_distributed, shutdown, unwrap, wrap_model
from latentwm.encoders.decoder import DECODER_SIZES, DecoderSpec, RAEDecoder, to_uint8
from latentwm.encoders.dino import DinoEncoder
from latentwm.engine.logging import RunLogger
from latentwm.engine.loop import (
    Checkpointing,
    EmaUpdate,
    Loop,
    NonFiniteGuard,
    Schedule,
    autocast_args,
    lr_lambda,
    optimizer_step,
    sample_seed,
)
from latentwm.eval.decoder_metrics import PerceptualLoss, recon_grid, reconstruction_metrics, save_png
from latentwm.model.layers import decay_groups
from latentwm.train.gan import PatchDiscriminator, adaptive_weight, hinge_d_loss

# ---------------------------------------------------------------------------------------------------------------
# Training


class DecoderTrainer:
    """`DecoderTrainer(cfg, train, held_out, facts, encoder).fit()`; facts as `load_frame_sets` returns them
    (online encoding: give the encoder; grid, width and statistics then come from it)."""

    def __init__(
        self,
        cfg: DecoderConfig,
        train: FrameSet,
        held_out: FrameSet,
        facts: dict,
        encoder=None,
        dist: DistInfo | None = None,
    ):
        self.cfg, self.train_set, self.eval_set, self.facts = cfg, train, held_out, dict(facts)
        self.dist = dist or init_distributed(cfg.device)
        self.device = self.dist.device
        if len(train) == 0:
            raise ConfigError("decoder: no training frames (every episode is held out?)")
        if cfg.batch_size % self.dist.world_size:
            raise ConfigError(
                f"decoder.batch_size ({cfg.batch_size}) must be divisible by the world size ({self.dist.world_size})"
            )
        self.encode_fn = None
        if train.latents is None:
            if encoder is None:
                raise ConfigError("decoder: frames without cached latents need an encoder (online encoding)")
            self.encode_fn = encoder.encode
            if "latent_stats" not in self.facts:
                sel = np.linspace(0, len(train) - 1, min(len(train), 1024)).round().astype(int)
                st = compute_latent_stats(
                    encoder.encode(train.frames[sel[i : i + 64]].permute(0, 3, 1, 2)).cpu()
                    for i in range(0, len(sel), 64)
                )
                self.facts["latent_stats"] = dict(mean=st.mean.tolist(), std=st.std.tolist())
            self.facts.update(
                encoder=encoder.weights_label, pool=encoder.pool, grid=encoder.grid, latent_dim=encoder.dim
            )
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
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt, partial(lr_lambda, warmup=cfg.warmup_steps, total=self.total_steps, min_ratio=cfg.min_lr_ratio)
        )
        self.disc = self.wrapped_disc = self.opt_d = None
        if cfg.adv_weight > 0:
            self.disc = PatchDiscriminator(cfg.disc_channels, self.spec.image_size).to(self.device)
            self.wrapped_disc = wrap_model(self.disc, "ddp", self.dist)
            self.opt_d = torch.optim.Adam(self.disc.parameters(), lr=cfg.disc_lr, betas=(0.5, 0.9))
        self.perceptual = PerceptualLoss(cfg.perceptual, self.device)
        self.autocast = autocast_args(cfg.precision, self.device)
        self.history: list = []  # (step, epoch, loss, adversarial weight) of every logged row
        self.mean_image = self._mean_image()
        self.log = RunLogger(self.out, enabled=self.dist.is_main, wandb=cfg.wandb, config=asdict(cfg))
        self.guard = NonFiniteGuard(
            "train-decoder", cfg.max_nonfinite, self.out / "checkpoints", "decoder.max_nonfinite"
        )
        self.loop = Loop(
            "train-decoder",
            self.out,
            Schedule(
                self.total_steps, cfg.log_every, self.steps_per_epoch * cfg.eval_every or None, cfg.max_minutes or None
            ),
            Checkpointing(self.state_dict, self.load_state_dict, cfg.ckpt_every, cfg.keep_last),
            logger=self.log,
            dist=self.dist,
        )

    def _mean_image(self) -> torch.Tensor:
        """Pixel-wise mean training frame at the output size (3, S, S) in [-1, 1]: the baseline."""
        tot = torch.zeros(3, self.spec.image_size, self.spec.image_size, dtype=torch.float64)
        for i in range(0, len(self.train_set), 256):
            f = self.train_set.frames[i : i + 256].permute(0, 3, 1, 2)
            tot += resize_frames(f, self.spec.image_size).double().sum(0)
        return (tot / len(self.train_set)).float()

    def adv_active(self, epoch: int) -> bool:
        return self.disc is not None and epoch >= self.cfg.disc_start_epoch

    # -------------------------------------------------------------------------------------------------- state
    def state_dict(self) -> dict:
        st = {
            "model": unwrap(self.model).state_dict(),
            "ema": self.ema.state_dict(),
            "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict(),
            "nonfinite": self.guard.count,
            "history": self.history,
            "config": asdict(self.cfg),
            "decoder_spec": asdict(self.spec),
            "perceptual": self.perceptual.kind,
            **{k: v for k, v in self.facts.items() if k != "skipped"},
        }
        if self.disc is not None:
            st.update(disc=self.disc.state_dict(), disc_optimizer=self.opt_d.state_dict())
        return st

    def load_state_dict(self, st: dict) -> None:
        if st["decoder_spec"] != asdict(self.spec):
            raise ConfigError(
                f"decoder: {st['path']} holds a decoder {st['decoder_spec']}, this run builds "
                f"{asdict(self.spec)}; use another out_dir"
            )
        unwrap(self.model).load_state_dict(st["model"])
        self.ema.load_state_dict(st["ema"])
        self.opt.load_state_dict(st["optimizer"])
        self.sched.load_state_dict(st["scheduler"])
        if self.disc is not None and "disc" in st:
            self.disc.load_state_dict(st["disc"])
            self.opt_d.load_state_dict(st["disc_optimizer"])
        self.guard.count = st.get("nonfinite", 0)
        self.history = list(st.get("history", []))

    @property
    def step(self) -> int:
        return self.loop.step

    def save(self) -> Path:
        return self.loop.save()

    # -------------------------------------------------------------------------------------------------- loop
    def _indices(self, step: int) -> torch.Tensor:
        """This rank's frames of optimizer step `step`: a (seed, epoch)-seeded permutation, sliced by position."""
        epoch, pos = divmod(step, self.steps_per_epoch)
        perm = torch.randperm(
            len(self.train_set), generator=torch.Generator().manual_seed(sample_seed(self.cfg.seed, 1_000_000 + epoch))
        )
        G = self.cfg.batch_size
        m = G // self.dist.world_size
        start = pos * G + self.dist.rank * m
        return perm[start : start + m]

    def train_step(self, step: int) -> dict:
        """One decoder step (and, once adversarial training is on, one discriminator step); {} when skipped."""
        cfg = self.cfg
        lat, target = self.train_set.batch(self._indices(step), self.device, self.spec.image_size, self.encode_fn)
        self._frames += cfg.batch_size
        gen = torch.Generator(device=self.device).manual_seed(
            sample_seed(cfg.seed, step * self.dist.world_size + self.dist.rank)
        )
        with torch.autocast(**self.autocast):
            pred = self.wrapped(lat, noise_tau=cfg.noise_tau, generator=gen).float()  # (B, 3, S, S)
        l1 = (pred - target).abs().mean()
        perc = self.perceptual(pred, target)
        rec = cfg.l1_weight * l1 + cfg.perceptual_weight * perc
        loss, m = rec, {"l1": l1.detach(), "perceptual": perc.detach(), "adv_weight": 0.0}
        adv = self.adv_active(step // self.steps_per_epoch)
        if adv:
            with torch.autocast(**self.autocast):
                g_loss = -self.disc(pred).float().mean()  # unwrapped: its gradients are discarded below
            w = cfg.adv_weight * adaptive_weight(rec, g_loss, unwrap(self.model).last_layer)
            loss = rec + w * g_loss
            m.update(g_loss=g_loss.detach(), adv_weight=w)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = optimizer_step(
            self.opt,
            self.model.parameters(),
            cfg.grad_clip,
            self.guard,
            step,
            sched=self.sched,
            ema=EmaUpdate(self.ema, unwrap(self.model), cfg.ema_decay),
            log=self.log,
        )
        if grad_norm is None:
            return {}
        if adv:
            m.update(self._disc_step(target, pred.detach(), step))
        return {**m, "loss": loss.detach(), "grad_norm": grad_norm}

    def _disc_step(self, real_img: torch.Tensor, fake_img: torch.Tensor, step: int) -> dict:
        self.opt_d.zero_grad(set_to_none=True)
        with torch.autocast(**self.autocast):
            real, fake = self.wrapped_disc(torch.cat([real_img, fake_img])).float().chunk(2)
        d_loss = hinge_d_loss(real, fake)
        d_loss.backward()
        if self.guard.ok(d_loss.detach(), step, self.log, verbose=self.dist.is_main):
            self.opt_d.step()
        return dict(d_loss=d_loss.detach(), logits_real=real.mean().detach(), logits_fake=fake.mean().detach())

    def _log_row(self, step: int, means: dict, seconds: float) -> dict:
        spe = self.steps_per_epoch
        row = {**means, "lr": self.sched.get_last_lr()[0], "epoch": step / spe, "frames_per_s": self._frames / seconds}
        self._frames = 0
        self.history.append((step, (step - 1) // spe, row["loss"], row["adv_weight"]))
        return row

    def _evaluate_at(self, step: int) -> None:
        self.last_eval = (step, self.evaluate())

    def fit(self, stop_at: int | None = None) -> dict:
        """Train to `epochs` (or `stop_at` steps, or the time budget); returns the final held-out metrics."""
        t0 = time.monotonic()
        self.loop.total = min(self.total_steps, stop_at or self.total_steps)
        self.last_eval: tuple[int, dict] = (-1, {})
        self._frames = 0
        self.loop.fit(
            self.train_step,
            resume=self.cfg.resume,
            map_location=self.device,
            eval_fn=self._evaluate_at,
            on_log=self._log_row,
        )
        res = self.last_eval[1] if self.last_eval[0] == self.step else self.evaluate()
        if self.dist.is_main:
            res.update(
                step=self.step,
                epochs=self.step / self.steps_per_epoch,
                train_frames=len(self.train_set),
                train_seconds=time.monotonic() - t0,
                perceptual=self.perceptual.kind,
                decoder=asdict(self.spec),
                parameters=self.model.num_parameters(),
                encoder=self.facts.get("encoder"),
            )
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
            sel = torch.from_numpy(
                np.unique(np.linspace(0, len(data) - 1, min(len(data), self.cfg.eval_frames)).round().astype(np.int64))
            )
            S = self.spec.image_size

            def pairs():
                for i in range(0, len(sel), 64):
                    yield data.batch(sel[i : i + 64], self.device, S, self.encode_fn)

            with torch.autocast(**self.autocast):
                res = reconstruction_metrics(pairs(), self.ema, self.perceptual.lpips, self.mean_image)
            res["split"] = split
            k = min(self.cfg.grid_images, len(sel))
            if k:
                lat, target = data.batch(
                    sel[np.linspace(0, len(sel) - 1, k).round().astype(np.int64)], self.device, S, self.encode_fn
                )
                grid = recon_grid(to_uint8(target).cpu().numpy(), to_uint8(self.ema(lat)).cpu().numpy())
                save_png(self.out / "eval" / f"recon_step{self.step:08d}.png", grid)
                self.log.image(self.step, "eval/reconstructions", grid)
            self.log.scalars(self.step, {k: v for k, v in res.items() if isinstance(v, float)}, prefix="eval/")
            print(
                f"step {self.step}: {split} PSNR {res['psnr']:.2f} dB (mean image {res['mean_image_psnr']:.2f}), "
                f"SSIM {res['ssim']:.3f}",
                flush=True,
            )
        self.dist.barrier()
        return res


def train_decoder(cfg: DecoderConfig) -> dict:
    """`latentwm train-decoder`: load pairs (cache or online encoder), train, write metrics.json."""
    dist = init_distributed(cfg.device)
    try:
        encoder = None
        train, held, facts = load_frame_sets(cfg, show_progress=dist.is_main)
        if not cfg.cache_dir:
            encoder = DinoEncoder.from_config(cfg.encoder, device=dist.device)
        if dist.is_main:
            print(
                f"train-decoder: {len(train)} training / {len(held)} held-out frames; decoder "
                f"{cfg.size} {DECODER_SIZES[cfg.size]}, patch {cfg.patch_size}"
            )
        return DecoderTrainer(cfg, train, held, facts, encoder=encoder, dist=dist).fit()
    finally:
        shutdown(dist)


def run_train_decoder(cfg: DecoderConfig) -> dict:
    """`latentwm train-decoder`: train, then print the held-out figures (rank 0)."""
    res = train_decoder(cfg)
    if res:
        print(
            f"held-out PSNR {res['psnr']:.2f} dB (mean image {res['mean_image_psnr']:.2f} dB), SSIM "
            f"{res['ssim']:.3f}; decoder and metrics.json in {cfg.out_dir}"
        )
    return res
