"""The one training-loop core every trainer uses: step scheduling, autocast, the optimizer step (clipping, the
non-finite policy, scheduler, EMA), logging and progress, periodic evaluation, atomic checkpoints with exact resume.

Users (the dynamics trainer, the decoder trainer, the RL phases, the proprio probe) supply what differs — how one
step computes its loss and what their state holds — and get the same behaviour everywhere:

- **Non-finite policy** (`NonFiniteGuard`): a step whose loss or gradient is NaN/inf changes nothing (no optimizer,
  scheduler or EMA update; its data is consumed so a bad batch is not retried forever) and is counted; after
  `budget` such steps the run stops with `TrainingDiverged` naming the last good checkpoint. Skipped steps are logged.
  With a fused optimizer (the dynamics trainer) the check never waits on the device: the skip happens on the
  device (found_inf, a gated EMA; the LR schedule does advance) and the loop reads the count before every log row,
  evaluation and checkpoint, so a run stops at most `log_every` steps late and never saves after the budget is
  crossed. No host sync remains in such a step (tests/test_host_sync.py).
- **Resume**: an out dir with checkpoints is refused unless `resume` is set; with it, the newest verified checkpoint
  is loaded (RNG states included) and the loop continues at its step, bit-for-bit on the CPU.
- **EMA**: decay ramps as min(decay, (1 + step) / (10 + step)), so early averages are not dominated by the init.
- **Autocast**: bf16 on CUDA under precision "auto", fp32 on the CPU, as configured.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from latentwm.config import ConfigError
from latentwm.config.base import LatentwmError
from latentwm.engine import checkpoint as ckpt
from latentwm.engine.logging import RunLogger
from latentwm.io.lock import RunLock


class TrainingDiverged(LatentwmError, RuntimeError):
    """Too many non-finite steps; the last good checkpoint is intact."""


def lr_lambda(step: int, warmup: int, total: int, min_ratio: float) -> float:
    """Linear warmup to 1, then cosine to min_ratio at `total`."""
    if step < warmup:
        return (step + 1) / warmup
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * t))


def sample_seed(seed: int, k: int) -> int:
    """A generator seed for sample / step number k of a run seeded `seed` (what makes resume and DDP exact)."""
    return (seed * 1_000_003 + k * 7919 + 17) % (2**62)


def ema_decay_at(step: int, decay: float) -> float:
    return min(decay, (1 + step) / (10 + step))


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float, gate: torch.Tensor | None = None) -> None:
    """ema ← lerp(ema, model, 1 − decay); gate (0-dim, on the device): 1 updates, 0 leaves the EMA as it is —
    decided on the device, so a skipped step needs no host sync."""
    weight = 1.0 - decay if gate is None else gate.float() * (1.0 - decay)
    for pe, pm in zip(ema.parameters(), model.parameters()):
        pe.lerp_(pm.detach(), weight)


def autocast_args(precision: str, device: torch.device) -> dict:
    """torch.autocast kwargs: bf16 when asked, or under "auto" on CUDA; disabled (fp32) otherwise."""
    on = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    return dict(device_type=device.type, dtype=torch.bfloat16, enabled=on)


class NonFiniteGuard:
    """Counts skipped non-finite steps and stops the run beyond `budget` (see the module docstring)."""

    def __init__(self, name: str, budget: int, checkpoints: Path | None = None, field: str = "max_nonfinite"):
        self.name, self.budget, self.checkpoints, self.field, self.count = name, budget, checkpoints, field, 0
        self._pending: torch.Tensor | None = None  # deferred verdicts not yet read (a device int64 count)
        self.last_finite: torch.Tensor | None = None  # the last deferred step's verdict (0-dim bool, device)

    def record(self, finite: torch.Tensor) -> None:
        """The sync-free path: add one step's verdict (0-dim bool on the device) without reading it; `flush`
        reads them all at the next log, evaluation or checkpoint."""
        bad = (~finite).long()
        self._pending = bad if self._pending is None else self._pending + bad
        self.last_finite = finite

    def flush(self, step: int, log: RunLogger | None = None, verbose: bool = True) -> None:
        """Read the deferred verdicts (one host sync), report the skipped steps and stop beyond the budget."""
        if self._pending is None:
            return
        n, self._pending = int(self._pending), None
        if n:
            self._skipped(n, f"{n} non-finite step(s) skipped up to step {step}", step, log, verbose)

    def _skipped(self, n: int, what: str, step: int, log: RunLogger | None, verbose: bool) -> None:
        self.count += n
        if verbose:
            print(f"{self.name}: {what} ({self.count} so far)")
        if log is not None:
            log.scalars(step, {"nonfinite_steps": self.count})
        if self.count > self.budget:
            last = ckpt.latest_checkpoint(self.checkpoints) if self.checkpoints is not None else None
            raise TrainingDiverged(
                f"{self.name}: {self.count} non-finite steps (budget {self.field} = {self.budget}); stopping. Last "
                f"good checkpoint: "
                f"{last or 'none yet'}. Lower the learning rate, check the data for NaN/inf, or raise the budget."
            )

    def ok(self, value: torch.Tensor, step: int, log: RunLogger | None = None, verbose: bool = True) -> bool:
        """True when `value` (a loss or gradient norm) is finite; otherwise count the skipped step, maybe stop."""
        if bool(torch.isfinite(value).all()):
            return True
        self._skipped(1, f"step {step}: non-finite loss/gradient, step skipped", step, log, verbose)
        return False


def _plain_tensors_replicate():
    """FSDP2's parameters are DTensors; the device-side verdict is a plain tensor, to be read as replicated."""
    try:
        from torch.distributed.tensor.experimental import implicit_replication
    except ImportError:  # a torch built without distributed: no DTensors either
        return contextlib.nullcontext()
    return implicit_replication()


@dataclass(frozen=True)
class EmaUpdate:
    """An exponential moving average to update after each optimizer step: `ema` tracks `model` with `decay`
    (warmed up by `ema_decay_at`)."""

    ema: torch.nn.Module
    model: torch.nn.Module
    decay: float


def optimizer_step(
    opt: torch.optim.Optimizer,
    params,
    grad_clip: float | None,
    guard: NonFiniteGuard,
    step: int,
    *,
    sched=None,
    ema: EmaUpdate | None = None,
    log: RunLogger | None = None,
) -> torch.Tensor | None:
    """Clip, check, step (optimizer, scheduler, EMA). Returns the gradient norm, or None when the step was skipped
    as non-finite (gradients are then cleared; reported through `log`, printed unless `log` is a disabled logger,
    i.e. not the main rank).

    A fused optimizer (AdamW(fused=True)) takes the sync-free path: the verdict stays on the device — the fused
    kernel skips the update, the moments and the step count where `found_inf` is set, the EMA is gated the same
    way — and the guard reads it at the next log/checkpoint (`NonFiniteGuard.flush`). The norm is returned (maybe
    non-finite) and `guard.last_finite` holds the verdict; the LR schedule still advances over a skipped step.
    Any other optimizer reads the verdict on the host each step."""
    verbose = log is None or log.enabled
    params = list(params)
    if grad_clip:
        norm = torch.nn.utils.clip_grad_norm_(params, grad_clip)
    else:
        norm = torch.linalg.vector_norm(torch.stack([p.grad.detach().norm() for p in params if p.grad is not None]))
    if hasattr(norm, "full_tensor"):  # FSDP2 returns a DTensor
        norm = norm.full_tensor()
    if opt.defaults.get("fused"):
        finite = torch.isfinite(norm)
        with _plain_tensors_replicate():
            opt.found_inf = (~finite).float()  # type: ignore[attr-defined]  # fused AdamW reads it in step()
            opt.step()
            opt.found_inf = None  # type: ignore[attr-defined]  # read by this step only
            if ema is not None:
                ema_update(ema.ema, ema.model, ema_decay_at(step, ema.decay), gate=finite)
        guard.record(finite)
        if sched is not None:
            sched.step()
        return norm.detach()
    if not guard.ok(norm, step, log, verbose):
        opt.zero_grad(set_to_none=True)
        return None
    opt.step()
    if sched is not None:
        sched.step()
    if ema is not None:
        ema_update(ema.ema, ema.model, ema_decay_at(step, ema.decay))
    return norm.detach()


STEP_WEIGHT = "_step_weight"
"""A step_fn metric key: the step's weight in the running means (0-dim tensor; 0 = a deferred skipped step)."""


def _accumulate(acc: dict, metrics: dict, n_acc):
    """Add one step's metrics to the running sums without reading them (no host sync); returns the new count."""
    if not metrics:  # a step skipped on the host returns nothing to average
        return n_acc
    metrics = dict(metrics)
    w = metrics.pop(STEP_WEIGHT, None)
    for k, v in metrics.items():
        v = v.detach() if torch.is_tensor(v) else v
        if w is not None:  # a skipped step's metrics may be NaN: where(), not a product
            v = torch.where(w > 0, torch.as_tensor(v, device=w.device) * w, torch.zeros((), device=w.device))
        acc[k] = acc.get(k, 0.0) + v
    return n_acc + (1 if w is None else w)


class TimeCapReached(LatentwmError):
    """A run hit its wall-clock cap before its fixed step count: checkpointed and stopped, with a non-zero exit,
    never passed on as if finished."""


@dataclass(frozen=True)
class Schedule:
    """How long a `Loop` runs and when it acts: `total` steps; running means logged every `log_every` steps;
    `eval_fn(step)` every `eval_every` steps and at the end (None: never); max_minutes: a safety cap, not a budget
    (None: none) — past it the loop checkpoints (every rank at the same step) and raises TimeCapReached, so a
    run's result never depends on how fast the machine was."""

    total: int
    log_every: int = 10
    eval_every: int | None = None
    max_minutes: float | None = None


@dataclass(frozen=True)
class Checkpointing:
    """What a `Loop` saves and restores, and how often. state_fn() -> dict: rank 0's plain state (the loop adds
    "step"; called on every rank when collective_state, as FSDP2's full-state gather needs); load_fn(state) for
    resume; every / keep_last: atomic checkpoints every N steps (and at the end), the newest keep_last kept;
    sharded_fn: FSDP2's sharded checkpoints — `sharded_fn() -> dict` (every rank, no gather) written with DCP,
    each rank its shards; resume_flag: the flag named when an out dir with checkpoints is refused."""

    state_fn: Callable[[], dict]
    load_fn: Callable[[dict], None]
    every: int = 500
    keep_last: int = 3
    resume_flag: str = "--resume"
    collective_state: bool = False
    sharded_fn: Callable[[], dict] | None = None


class Loop:
    """Drive `step_fn(step) -> {name: tensor | float}` from the resumed step to schedule.total, with a progress
    bar, running means logged, evaluations and atomic checkpoints (`Schedule`, `Checkpointing`) into
    out_dir/checkpoints. dist: a DistInfo (collectives, rank); None = one process. guard: a NonFiniteGuard whose
    deferred verdicts are read before every log row, evaluation and checkpoint. log_prefix: the logged scalars'.
    """

    def __init__(
        self,
        name: str,
        out_dir: str | Path,
        schedule: Schedule,
        checkpointing: Checkpointing,
        *,
        logger: RunLogger | None = None,
        dist=None,
        guard: NonFiniteGuard | None = None,
        log_prefix: str = "train/",
    ):
        s, c = schedule, checkpointing
        self.name, self.out, self.total = name, Path(out_dir), s.total
        self.ckpt_dir = self.out / "checkpoints"
        self.state_fn, self.load_fn = c.state_fn, c.load_fn
        self.log_every, self.ckpt_every, self.keep_last = s.log_every, c.every, c.keep_last
        self.eval_every, self.max_minutes, self.dist = s.eval_every, s.max_minutes, dist
        self.is_main = dist is None or dist.is_main
        self.log = logger
        self.step, self.resume_flag, self.log_prefix = 0, c.resume_flag, log_prefix
        self.collective_state = c.collective_state  # FSDP2: gathering the full state is a collective (every rank)
        self.sharded_fn = c.sharded_fn
        self.guard = guard  # its deferred verdicts are read before every log row, evaluation and checkpoint

    # ------------------------------------------------------------------------------------------------ checkpoints
    def save(self) -> Path:
        d = self.dist
        sharded = self.sharded_fn() if self.sharded_fn is not None else None  # every rank: its own shards
        if self.is_main or (self.collective_state and sharded is None):  # full FSDP2: every rank joins the gather
            gathered = self.state_fn()
        state = {**gathered, "step": self.step} if self.is_main else {}
        return ckpt.save_checkpoint(
            self.ckpt_dir,
            self.step,
            state,
            rank=d.rank if d else 0,
            world_size=d.world_size if d else 1,
            barrier=d.barrier if d else (lambda: None),
            keep_last=self.keep_last,
            sharded_state=sharded,
        )

    def resume(self, resume: bool, map_location="cpu") -> Path | None:
        """Load the newest verified checkpoint when `resume`; refuse an out dir with checkpoints otherwise."""
        existing = ckpt.list_checkpoints(self.ckpt_dir)
        if not resume:
            if existing:
                raise ConfigError(
                    f"{self.name}: {self.out} already has checkpoints ({existing[-1].name}); pass "
                    f"{self.resume_flag} to continue it or choose another out_dir"
                )
            return None
        d = self.dist
        if d is not None and d.enabled:  # each rank hashes 1/W of the files (not W full reads); all must pass

            def agree(ok: bool) -> bool:
                return not bool(d.all_reduce_sum(torch.tensor(float(not ok), device=d.device)))

            latest = ckpt.resume_checkpoint(self.ckpt_dir, part=(d.rank, d.world_size), agree=agree)
        else:
            latest = ckpt.resume_checkpoint(self.ckpt_dir)
        if latest is None:
            return None
        st = ckpt.load_checkpoint(latest, rank=d.rank if d else 0, map_location=map_location, verified=True)
        self.load_fn(st)
        self.step = int(st["step"])
        if st.get("rng") is not None:
            ckpt.set_rng_state(st["rng"])
        if self.is_main:
            print(f"{self.name}: resumed from {latest} (step {self.step})")
            if self.log is not None:  # rows logged after this checkpoint belong to a future that is redone now
                self.log.truncate_after(self.step)
        return latest

    def fit(
        self,
        step_fn: Callable[[int], dict],
        *,
        resume: bool,
        map_location="cpu",
        before_run: Callable[[], None] | None = None,
        **run_kw,
    ) -> int:
        """Lock the out dir (rank 0; a second writer is refused, naming this process), resume or refuse existing
        checkpoints, call before_run() (e.g. to start the data stream at the resumed step), then `run`."""
        with RunLock(self.out, f"latentwm {self.name}", enabled=self.is_main, reuse=True):
            self.resume(resume, map_location)
            if before_run is not None:
                before_run()
            return self.run(step_fn, **run_kw)

    # ------------------------------------------------------------------------------------------------ the loop
    def run(
        self,
        step_fn: Callable[[int], dict],
        eval_fn: Callable[[int], object] | None = None,
        on_log: Callable[[int, dict, float], dict] | None = None,
    ) -> int:
        """Run to `total`; returns the step reached. on_log(step, means, seconds since the last row) -> the row to
        write (e.g. reduced over ranks, with throughput and the learning rate; kept as history by the caller)."""
        bar = tqdm(total=self.total, initial=self.step, desc=self.name, dynamic_ncols=True, disable=not self.is_main)
        acc: dict[str, torch.Tensor | float] = {}
        n_acc, t0, t_log = 0, time.monotonic(), time.monotonic()
        while self.step < self.total:
            metrics = step_fn(self.step)
            self.step += 1
            bar.update(1)
            n_acc = _accumulate(acc, metrics, n_acc)
            end = self.step == self.total
            at_log = self.step % self.log_every == 0 or end
            over = at_log and self._over_time(t0)
            do_eval = eval_fn is not None and self.eval_every and (self.step % self.eval_every == 0 or end or over)
            do_save = self.step % self.ckpt_every == 0 or end or over
            if self.guard is not None and (at_log or do_eval or do_save):  # the one host read of the verdicts
                self.guard.flush(self.step, self.log, self.is_main)
            if at_log and float(n_acc) > 0:
                means = {k: float(v) / float(n_acc) for k, v in acc.items()}
                if on_log is not None:
                    means = on_log(self.step, means, max(time.monotonic() - t_log, 1e-9))
                if self.is_main and self.log is not None:
                    self.log.scalars(self.step, means, prefix=self.log_prefix)
                bar.set_postfix({k: f"{means[k]:.4f}" for k in list(means)[:2]})
                acc, n_acc, t_log = {}, 0, time.monotonic()
            if do_eval and eval_fn is not None:
                eval_fn(self.step)
            if do_save:
                self.save()
            if over:
                bar.close()
                raise TimeCapReached(
                    f"{self.name}: stopped by its time cap ({self.max_minutes:g} min) at step {self.step} of "
                    f"{self.total}, checkpoint saved in {self.ckpt_dir}; a capped run is never treated as finished "
                    f"(its results would depend on the machine's speed): rerun with {self.resume_flag} to do the "
                    f"remaining {self.total - self.step} steps"
                )
        bar.close()
        return self.step

    def _over_time(self, t0: float) -> bool:
        """Checked at log steps only: under several ranks it is a collective (every rank stops at the same step)."""
        if self.max_minutes is None:
            return False
        over = time.monotonic() - t0 > self.max_minutes * 60
        if self.dist is not None and self.dist.enabled:
            over = bool(self.dist.all_reduce_sum(torch.tensor(float(over), device=self.dist.device)) > 0)
        return over


__all__ = [
    "Loop",
    "NonFiniteGuard",
    "STEP_WEIGHT",
    "TimeCapReached",
    "TrainingDiverged",
    "autocast_args",
    "ema_decay_at",
    "ema_update",
    "lr_lambda",
    "optimizer_step",
    "sample_seed",
]
