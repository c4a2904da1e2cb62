"""`latentwm pretrain-encoder`: self-supervised pretraining of a small ViT in the Hugging Face DINOv2 architecture
(`transformers.Dinov2Model`) on the user's own frames, saved with `save_pretrained` so that every command loads it
exactly as it loads real DINOv2 weights (`--encoder.name <out_dir>/encoder`; weights label
`pretrained:<folder>#<hash>`), frozen from then on.

- **Data**: the frames of the *training* episodes of any source reader (`data.sources.load_source`), split by
  `split_episodes` over "dataset/episode_id" keys with the dynamics run's eval_fraction and seed — the held-out
  episodes (where planning goals come from) are never read. Every `frame_stride`-th frame of every camera is held in
  memory as uint8 at the source resolution (the objective crops/resizes on the device); each camera of an episode is
  one sequence; sequences shorter than 2 frames are skipped and counted.
- **Batches** are a function of (seed, step) (`sample_seed`), so a resumed run is bit-identical on the CPU:
  time-contrastive draws `batch_size / frames_per_episode` sequences and, from each, `frames_per_episode` frames
  within `window` env steps; the other objectives draw frames uniformly.
- **Objectives** (`encoders/ssl.py`): dino (the EMA teacher is what is saved, as DINO/DINOv2 release it; teacher
  momentum follows a cosine from 0.99 to 1 over the run), masked-pixels, time-contrastive.
- **Loop** (`engine/loop.py`): AdamW (no decay on norms, biases, tokens, position embeddings), linear warmup + cosine,
  gradient clipping, the non-finite policy, bf16 autocast on CUDA, atomic checkpoints (objective state: student,
  teacher, heads, centers; optimizer; scheduler), resume-or-refuse, max_minutes, metrics.jsonl + TensorBoard.
- **Output**: `<out_dir>/encoder/` (config.json, model.safetensors, pretrain.json) written to a temporary folder and
  renamed into place, so a crash never leaves a folder that loads half-written.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from latentwm.config import ConfigError, PretrainEncoderConfig
from latentwm.data.clips import split_episodes
from latentwm.data.episodes import EpisodeError, frames_at
from latentwm.data.sources import load_source, parse_options
from latentwm.data.video import VideoError
from latentwm.encoders.dino import weights_hash
from latentwm.encoders.ssl import OBJECTIVES, DinoIbot, DinoRecipe
from latentwm.engine.logging import RunLogger
from latentwm.engine.loop import (
    Checkpointing,
    Loop,
    NonFiniteGuard,
    Schedule,
    autocast_args,
    lr_lambda,
    optimizer_step,
    sample_seed,
)
from latentwm.io.files import fsync_dir
from latentwm.io.lock import RunLock

NAME = "pretrain-encoder"
RESUMABLE = frozenset(
    {"out_dir", "resume", "steps", "log_every", "ckpt_every", "keep_last", "max_minutes", "max_nonfinite", "device"}
)
"""Settings a resumed pretraining may change: how long and how often, not what is learned from what."""
NOT_LOSSES = ("lr", "frames_per_s", "grad_norm", "teacher_momentum", "teacher_entropy")
NO_DECAY = ("cls_token", "mask_token", "register_tokens", "position_embeddings", "original0")


# ---------------------------------------------------------------------------------------------------------------
# Training frames


@dataclass
class TrainFrames:
    """The training frames in memory: per sequence (one camera of one episode) uint8 (T, H, W, 3) frames and their
    env-step times (T,); plus what was left out."""

    seqs: list[np.ndarray]
    times: list[np.ndarray]
    keys: list[str]  # "dataset/episode_id" of each sequence's episode
    held_out: list[str]  # held-out episode keys (never read)
    skipped_short: list[str] = field(default_factory=list)  # sequences with < 2 frames
    skipped_bad: list[dict] = field(default_factory=list)  # unreadable episodes {item, error}

    def __post_init__(self):
        self.cum = np.cumsum([0] + [len(s) for s in self.seqs])

    @property
    def frames(self) -> int:
        return int(self.cum[-1])

    @property
    def episodes(self) -> int:
        return len(set(self.keys))

    @property
    def nbytes(self) -> int:
        return sum(s.nbytes for s in self.seqs)

    def facts(self) -> dict:
        return dict(
            train_frames=self.frames,
            train_sequences=len(self.seqs),
            train_episodes=self.episodes,
            held_out_episodes=len(self.held_out),
            skipped_short=len(self.skipped_short),
            skipped_unreadable=len(self.skipped_bad),
            frame_shape=list(self.seqs[0].shape[1:]),
            memory_mb=round(self.nbytes / 2**20, 1),
        )


def _items(cfg: PretrainEncoderConfig) -> list:
    try:
        items = load_source(
            cfg.source,
            cfg.data_dir,
            size=None if cfg.source == "pusht" else (cfg.frame_size or cfg.image_size),
            fps=cfg.fps or None,
            options=parse_options(cfg.source_options),
        )
    except ValueError as e:
        raise ConfigError(f"pretrain (--source {cfg.source} --data-dir {cfg.data_dir}): {e}") from e
    if not items:
        raise ConfigError(f"pretrain.data_dir: no {cfg.source} episodes found in {cfg.data_dir}")
    return sorted(items, key=lambda kv: kv[0])


def load_training_frames(cfg: PretrainEncoderConfig, show_progress: bool = True) -> TrainFrames:
    """The frames of cfg's training episodes (held-out episodes, as `split_episodes` chooses them over the item keys
    "dataset/episode_id", are never loaded); ConfigError when nothing usable is left."""
    items = _items(cfg)
    held = split_episodes([k for k, _ in items], cfg.eval_fraction, cfg.split_seed)
    todo = [kv for kv in items if kv[0] not in held]
    todo = todo[: cfg.max_episodes] if cfg.max_episodes else todo
    seqs, times, keys, short, bad = [], [], [], [], []
    for key, loader in tqdm(todo, desc="load frames", unit="ep", disable=not show_progress, dynamic_ncols=True):
        try:
            ep = loader()
            t = np.arange(0, len(ep), cfg.frame_stride)
            cams = {cam: np.ascontiguousarray(frames_at(ep.frames[cam], t)) for cam in ep.cameras}
        except (EpisodeError, VideoError) as e:
            bad.append(dict(item=key, error=str(e)))
            print(f"{NAME}: skipping {key}: {e}")
            continue
        for cam, frames in cams.items():
            if len(frames) < 2:
                short.append(f"{key}:{cam}")
                continue
            seqs.append(frames)
            times.append(t * ep.frame_skip)  # env steps
            keys.append(key)
    out = TrainFrames(seqs, times, keys, sorted(held), short, bad)
    _check_frames(cfg, out, len(items))
    return out


def _check_frames(cfg: PretrainEncoderConfig, data: TrainFrames, n_items: int) -> None:
    if not data.seqs:
        raise ConfigError(
            f"pretrain.data_dir: no training frames in {cfg.data_dir} ({n_items} episodes, "
            f"{len(data.held_out)} held out, {len(data.skipped_short)} sequences shorter than 2 frames "
            f"at frame_stride {cfg.frame_stride}, {len(data.skipped_bad)} unreadable)"
        )
    shapes = sorted({s.shape[1:] for s in data.seqs})
    if len(shapes) > 1:
        raise ConfigError(
            f"pretrain.data_dir: frames of {cfg.data_dir} have different shapes {shapes}; set "
            "--frame-size to decode them at one size"
        )
    if cfg.objective == "time-contrastive" and len(data.seqs) < 2:
        raise ConfigError(
            f"pretrain.objective time-contrastive needs at least 2 training sequences (other "
            f"episodes are its negatives); {cfg.data_dir} has {len(data.seqs)} after holding out "
            f"{len(data.held_out)} (pretrain.eval_fraction {cfg.eval_fraction})"
        )


def sample_batch(data: TrainFrames, cfg: PretrainEncoderConfig, step: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(frames (B, H, W, 3) uint8, sequence ids (B,), env-step times (B,)) of optimizer step `step`, a pure function
    of (cfg.seed, step). time-contrastive: groups of frames_per_episode frames of one sequence, within `window` env
    steps (distinct frames when the window holds enough); otherwise frames uniform over all training frames."""
    rng = np.random.default_rng([sample_seed(cfg.seed, step), 0xDA7A])
    if cfg.objective != "time-contrastive":
        flat = rng.integers(0, data.frames, cfg.batch_size)
        seq = np.searchsorted(data.cum, flat, side="right") - 1
        idx = flat - data.cum[seq]
    else:
        E, k, n = cfg.episodes_per_batch, cfg.frames_per_episode, len(data.seqs)
        seq = np.repeat(rng.choice(n, E, replace=n < E), k)
        idx = np.empty(E * k, dtype=np.int64)
        for g in range(E):
            s = seq[g * k]
            L, dt = len(data.seqs[s]), int(data.times[s][1] - data.times[s][0])  # env steps between frames
            w = min(L, max(2, cfg.window // dt))  # frames less than `window` env steps apart
            start = rng.integers(0, L - w + 1)
            idx[g * k : (g + 1) * k] = np.sort(start + rng.choice(w, k, replace=w < k))
    frames = np.stack([data.seqs[s][i] for s, i in zip(seq, idx)])
    times = np.array([data.times[s][i] for s, i in zip(seq, idx)], dtype=np.int64)
    return frames, seq.astype(np.int64), times


# ---------------------------------------------------------------------------------------------------------------
# Model and trainer


def build_backbone(cfg: PretrainEncoderConfig) -> torch.nn.Module:
    """A randomly initialized `transformers.Dinov2Model` of cfg's size (seeded by cfg.seed)."""
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(cfg.seed)
    return Dinov2Model(
        Dinov2Config(
            hidden_size=cfg.hidden_size,
            num_hidden_layers=cfg.layers,
            num_attention_heads=cfg.heads,
            mlp_ratio=cfg.mlp_ratio,
            patch_size=cfg.patch_size,
            image_size=cfg.image_size,
        )
    )


def objective_kwargs(cfg: PretrainEncoderConfig) -> dict:
    mask = dict(mask_ratio=cfg.mask_ratio) if cfg.mask_ratio else {}
    if cfg.objective == "time-contrastive":
        return dict(temperature=cfg.temperature, sigma=cfg.sigma, pixel_weight=cfg.pixel_weight, **mask)
    if cfg.objective == "dino":
        return dict(centering=cfg.dino_centering, koleo_weight=cfg.koleo_weight,
                    freeze_prototypes=cfg.freeze_prototypes, **mask)  # fmt: skip
    return mask


def make_objective(cfg: PretrainEncoderConfig, backbone: torch.nn.Module) -> torch.nn.Module:
    """The SSL objective of `cfg` around `backbone`; dino's settings go in as its recipe (objective_kwargs stays
    plain data: it is part of the checkpoint's spec)."""
    kw = objective_kwargs(cfg)
    if cfg.objective == "dino":
        return DinoIbot(backbone, cfg.image_size, DinoRecipe(**kw))
    return OBJECTIVES[cfg.objective](backbone, cfg.image_size, **kw)


def teacher_momentum(step: int, total: int, base: float = 0.99) -> float:
    """DINO's teacher momentum: a cosine from `base` at step 0 to 1 at `total`."""
    return 1.0 - (1.0 - base) * (math.cos(math.pi * min(step, total) / max(total, 1)) + 1) / 2


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class EncoderPretrainer:
    """`EncoderPretrainer(cfg, data).fit()`, then `save_encoder()` -> the folder `--encoder.name` takes."""

    def __init__(self, cfg: PretrainEncoderConfig, data: TrainFrames, device: torch.device | str | None = None):
        self.cfg, self.data, self.out = cfg, data, Path(cfg.out_dir)
        self.device = torch.device(device) if device is not None else resolve_device(cfg.device)
        self.backbone = build_backbone(cfg)
        self.objective = make_objective(cfg, self.backbone)
        self.objective.to(self.device).train()
        self.params = list(self.objective.student_parameters())
        self.opt = torch.optim.AdamW(self._groups(), lr=cfg.lr, betas=(0.9, 0.999))
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt, partial(lr_lambda, warmup=cfg.warmup_steps, total=cfg.steps, min_ratio=cfg.min_lr_ratio)
        )
        self.autocast = autocast_args(cfg.precision, self.device)
        self.log = RunLogger(self.out, config=asdict(cfg))
        self.guard = NonFiniteGuard(NAME, cfg.max_nonfinite, self.out / "checkpoints", "pretrain.max_nonfinite")
        self.loop = Loop(
            NAME,
            self.out,
            Schedule(cfg.steps, cfg.log_every, max_minutes=cfg.max_minutes or None),
            Checkpointing(self.state_dict, self.load_state_dict, cfg.ckpt_every, cfg.keep_last),
            logger=self.log,
        )
        self.last: dict = {}  # the last logged row (running means of the losses)
        self.seconds, self._frames = 0.0, 0  # training seconds of earlier invocations (resume); frames since a row
        self._t0: float | None = None  # when this invocation's fit started

    def _groups(self) -> list[dict]:
        """AdamW groups: weight decay on matrices, none on norms, biases, tokens and position embeddings."""
        names = {id(p): n for n, p in self.objective.named_parameters()}
        decay, no_decay = [], []
        for p in self.params:
            plain = p.ndim < 2 or names.get(id(p), "").endswith(NO_DECAY)
            (no_decay if plain else decay).append(p)
        return [{"params": decay, "weight_decay": self.cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]

    @property
    def spec(self) -> dict:
        """What a checkpoint must match to be resumed by this run."""
        c = self.cfg
        return dict(
            objective=c.objective,
            hidden_size=c.hidden_size,
            layers=c.layers,
            heads=c.heads,
            patch_size=c.patch_size,
            mlp_ratio=c.mlp_ratio,
            image_size=c.image_size,
            objective_kwargs=objective_kwargs(c),
        )

    @property
    def step(self) -> int:
        return self.loop.step

    # -------------------------------------------------------------------------------------------------- state
    def state_dict(self) -> dict:
        return {
            "objective": self.objective.state_dict(),
            "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict(),
            "nonfinite": self.guard.count,
            "spec": self.spec,
            "config": asdict(self.cfg),
            "last": self.last,
            "seconds": self.seconds + self._elapsed(),
        }

    def load_state_dict(self, st: dict) -> None:
        now = asdict(self.cfg)
        changed = [
            f"{k}: {v!r} -> {now[k]!r}"
            for k, v in sorted((st.get("config") or {}).items())
            if k in now and k not in RESUMABLE and json.dumps(v) != json.dumps(now[k])
        ]
        if st.get("spec") != self.spec and not changed:
            changed = [f"spec: {st.get('spec')!r} -> {self.spec!r}"]
        if changed:
            raise ConfigError(
                f"{NAME}: the checkpoints in {self.out} were trained with other settings "
                f"({'; '.join(changed)}); only {', '.join(sorted(RESUMABLE))} may change on resume: "
                "use the same settings or another out_dir"
            )
        self.objective.load_state_dict(st["objective"])
        self.opt.load_state_dict(st["optimizer"])
        self.sched.load_state_dict(st["scheduler"])
        self.guard.count = int(st.get("nonfinite", 0))
        self.last = dict(st.get("last") or {})
        self.seconds = float(st.get("seconds", 0.0))

    def _elapsed(self) -> float:
        return 0.0 if self._t0 is None else time.monotonic() - self._t0

    # -------------------------------------------------------------------------------------------------- loop
    def train_step(self, step: int) -> dict:
        """One optimizer step (and teacher update); {} when the step was skipped as non-finite."""
        cfg = self.cfg
        frames, seq, times = sample_batch(self.data, cfg, step)
        x = torch.from_numpy(frames).to(self.device, non_blocking=True)
        gen = torch.Generator().manual_seed(sample_seed(cfg.seed, step))  # crops and masks (drawn on the CPU)
        kw = (
            dict(episode=torch.from_numpy(seq), time=torch.from_numpy(times))
            if cfg.objective == "time-contrastive"
            else {}
        )
        with torch.autocast(**self.autocast):
            out = self.objective.loss(x, gen, **kw)
        loss = out["loss"].float()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if isinstance(self.objective, DinoIbot):
            self.objective.cancel_prototype_grads(step)
        norm = optimizer_step(self.opt, self.params, cfg.grad_clip, self.guard, step, sched=self.sched, log=self.log)
        self._frames += len(frames)
        if norm is None:
            return {}
        m = teacher_momentum(step, cfg.steps)
        self.objective.update_teacher(m)
        metrics = {k: v.detach().float() for k, v in out.items()}
        metrics.update(loss=loss.detach(), grad_norm=norm)
        if cfg.objective == "dino":
            metrics["teacher_momentum"] = m
        return metrics

    def _log_row(self, step: int, means: dict, seconds: float) -> dict:
        row = {**means, "lr": self.sched.get_last_lr()[0], "frames_per_s": self._frames / seconds}
        self._frames = 0
        self.last = dict(row)
        return row

    def fit(self, stop_at: int | None = None) -> int:
        """Train to cfg.steps (or `stop_at` steps, or the time budget); returns the step reached."""
        self._t0 = time.monotonic()
        self.loop.total = min(self.cfg.steps, stop_at or self.cfg.steps)
        try:
            self.loop.fit(self.train_step, resume=self.cfg.resume, map_location=self.device, on_log=self._log_row)
        finally:
            self.log.close()
        return self.step

    # -------------------------------------------------------------------------------------------------- output
    @property
    def saved_backbone(self) -> torch.nn.Module:
        """What is released: DINO's EMA teacher (as DINO/DINOv2 do), the trained backbone otherwise."""
        teacher = getattr(self.objective, "teacher", None)
        return self.backbone if teacher is None else teacher

    def summary(self, wall_time_s: float) -> dict:
        cfg = self.cfg
        return dict(
            config=asdict(cfg),
            objective=cfg.objective,
            objective_kwargs=objective_kwargs(cfg),
            steps_done=self.step,
            steps=cfg.steps,
            complete=self.step >= cfg.steps,
            weights="teacher" if cfg.objective == "dino" else "student",
            final_losses={k: v for k, v in self.last.items() if k not in NOT_LOSSES},
            final_lr=self.last.get("lr"),
            final_grad_norm=self.last.get("grad_norm"),
            final_teacher_entropy=self.last.get("teacher_entropy"),
            parameters=sum(p.numel() for p in self.backbone.parameters()),
            **self.data.facts(),
            held_out=self.data.held_out,
            wall_time_s=round(wall_time_s, 2),
            train_seconds_total=round(self.seconds + self._elapsed(), 2),
            nonfinite_steps=self.guard.count,
            usage=f"--encoder.name {self.out / 'encoder'} --encoder.image-size {cfg.image_size}",
        )

    def save_encoder(self, wall_time_s: float = 0.0) -> Path:
        """Write <out_dir>/encoder (save_pretrained + pretrain.json) atomically; returns it."""
        info = self.summary(wall_time_s)
        return save_encoder_folder(self.saved_backbone, self.out / "encoder", info)


def save_encoder_folder(backbone: torch.nn.Module, final: Path, info: dict) -> Path:
    """`backbone.save_pretrained` + pretrain.json into a temporary folder beside `final`, renamed into place (an old
    folder is moved aside first and removed after), so `final` is either the old or the new complete folder."""
    final = Path(final)
    tmp, old = final.with_name(f".{final.name}.tmp-{os.getpid()}"), final.with_name(f".{final.name}.old-{os.getpid()}")
    for p in (tmp, old):
        shutil.rmtree(p, ignore_errors=True)
    try:
        backbone.save_pretrained(tmp, safe_serialization=True)
        info = dict(info, weights_hash=weights_hash(tmp))
        (tmp / "pretrain.json").write_text(json.dumps(info, indent=1))
        umask = os.umask(0)
        os.umask(umask)
        for f in tmp.iterdir():  # transformers may write 0600 files; the folder is meant to be shared
            os.chmod(f, 0o666 & ~umask)
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        fsync_dir(tmp)
        if final.exists():
            os.replace(final, old)
        os.replace(tmp, final)
        fsync_dir(final.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)
    return final


def run_pretrain_encoder(cfg: PretrainEncoderConfig) -> Path:
    """`latentwm pretrain-encoder`: load the training frames, train, save <out_dir>/encoder; returns that folder."""
    t0 = time.monotonic()
    with RunLock(cfg.out_dir, f"latentwm {NAME}", reuse=True):
        data = load_training_frames(cfg)
        f = data.facts()
        print(
            f"{NAME}: {f['train_frames']} frames of {f['train_sequences']} sequences from {f['train_episodes']} "
            f"training episodes ({f['held_out_episodes']} held out, {f['skipped_short']} sequences shorter than "
            f"2 frames and {f['skipped_unreadable']} unreadable episodes skipped), {f['memory_mb']} MB in memory; "
            f"objective {cfg.objective}"
        )
        trainer = EncoderPretrainer(cfg, data)
        trainer.fit()
        folder = trainer.save_encoder(time.monotonic() - t0)
    print(
        f"{NAME}: encoder saved to {folder} after {trainer.step} steps; use it with:\n  --encoder.name {folder} "
        f"--encoder.image-size {cfg.image_size}"
    )
    return folder


__all__ = [
    "EncoderPretrainer",
    "TrainFrames",
    "build_backbone",
    "load_training_frames",
    "objective_kwargs",
    "run_pretrain_encoder",
    "sample_batch",
    "save_encoder_folder",
    "teacher_momentum",
]
