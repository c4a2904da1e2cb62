"""Shortcut forcing (Dreamer 4): the training loss of the dynamics model, exactly as docs/design.md section 5 writes it.

Convention: τ ∈ [0, 1] is the signal level (0 pure noise, 1 clean), z_τ = (1 − τ)·ε + τ·x. The network predicts the
clean latent x̂ = f(z_τ, τ, d, context) (x-prediction); its implied velocity is v̂ = (x̂ − z_τ)/(1 − τ).

- Diffusion forcing: every frame of every sequence has its own step size d_t and signal level τ_t on d_t's grid.
- Flow term (d = 1/K_max): ‖x̂ − x‖².
- Bootstrap term (d > 1/K_max): two no-grad half steps of the model give v* = (b₁ + b₂)/2; the loss is
  (1 − τ)²‖v̂ − v*‖² = ‖x̂ − (z_τ + (1 − τ)·v*)‖², so both terms are squared errors on x̂ with different targets.
- Noise shift (objective.noise_shift = s): each frame's uniform level draw u becomes u/(s − (s − 1)u) before it
  snaps to d's grid, so s > 1 trains more frames at the noisy levels (SD3's shift); s = 1 is the uniform grid.
- Weight w(τ) = 0.9τ + 0.1; `valid` masks padding; the loss is the mean over valid frames of w·(mean over tokens).
  Padded frames are replaced by zeros before anything is computed (torch.where, not a 0 weight: 0·NaN = NaN), so
  whatever they hold, loss and gradients equal those of the zero-padded batch.
- Condition dropout (for classifier-free guidance): each sequence's actions and, independently, its text are
  replaced by the null condition (action_mask / text_mask all False: the learned no-action / no-text vectors) with
  probability objective.action_dropout / text_dropout. The draws come after every other draw of the sample's own
  generator, so they change nothing else; the bootstrap teacher sees the same dropped conditions.
- Bootstrap sequences: a stratified choice, not a coin flip per sequence. Sequence j of a stream bootstraps iff
  (j·p mod q) ≥ q − p for the bootstrap fraction f = p/q: every run of L consecutive sequences holds ⌊f·L⌋ or ⌈f·L⌉
  of them — exactly f·L when that is whole — and the long-run fraction is exactly f. With per-sample seeds, j is
  the sample's position in the trainer's stream (recovered from its seed, see `stream_position`), so a sample's
  choice depends on its own seed only (DDP equals one process) and every global batch is exact.
- v-prediction (model.prediction "v"): the network outputs v̂ and the model returns x̂ = z + (1 − τ)·v̂,
  so v̂ = (x̂ − z)/(1 − τ) is recovered exactly (τ < 1 on every grid) and the loss is taken in v-space:
  flow ‖v̂ − (x − ε)‖², bootstrap ‖v̂ − v*‖². Both equal the x-space error divided by (1 − τ)²: relative to x-space a
  frame at level τ weighs 1/(1 − τ)² more (noisy frames least, near-clean ones up to k_max² times more); w(τ) still
  applies on top. The gradient is that of the v-loss (the conversion is linear in the network's output).
- Teacher forcing (objective.teacher_forcing): every pass — the student's and the bootstrap teacher's half steps —
  also carries the clip's clean frames as a second stream, and each noisy frame attends to the clean frames before
  it and to itself (`DynamicsModel.forward(history=History(x, stream=True))`): the history sampling commits to the
  KV cache, for every frame of the clip, at about twice the compute. Diffusion forcing's noisy histories are then
  not trained on.
- Previous frame (model.previous_frame): every pass gets the clean clip as `History(x)` (no stream), from which the
  model reads x_{t−1} beside each frame t — sampling gives it the last committed frame instead.
- Clean context (objective.clean_context = p): with probability p per sequence a random prefix of 1..T−1
  frames is clean (τ = 1, d = 1/k_max, z = x) — the level at which sampling commits context — and left out of the
  loss (its target would be its input), so the model learns from histories it will actually see. Its draws come
  after the condition dropout's and only when p > 0, so p = 0 is bit-identical to training without it. The
  bootstrap teacher sees the same clean prefix (clean frames take no half step). The loss is still divided by the
  valid-frame count: every noisy frame keeps its weight, the clean ones add nothing.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction

import torch

from latentwm.conditions import NO_CONDITIONS, Conditions, History
from latentwm.config import ObjectiveConfig

# model(z (B,T,N,D), tau (B,T), step (B,T), actions (B,T,A) | None, action_mask (B,T) | None,
#       *, text=(B,T,E), text_mask=(B,T)) -> x̂ (B,T,N,D); the text keywords are passed only when there is text
Denoiser = Callable[..., torch.Tensor]


def corrupt(x: torch.Tensor, tau: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """z_τ = (1 − τ)·ε + τ·x for x, ε (B, T, N, D) and τ (B, T)."""
    t = tau[..., None, None]
    return (1.0 - t) * noise + t * x


def velocity(x_hat: torch.Tensor, z: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
    """v̂ = (x̂ − z)/(1 − τ); τ (B, T) < 1 by construction of the grids."""
    return (x_hat - z) / (1.0 - tau)[..., None, None]


def shift_levels(u: torch.Tensor, shift: float) -> torch.Tensor:
    """u ↦ u / (s − (s − 1)·u): a uniform draw in [0, 1) moved toward 0 (noise) for s > 1 — SD3's timestep shift,
    written for the signal level. Monotone, keeps 0 and 1; s = 1 returns u itself."""
    if shift == 1.0:
        return u
    return u / (shift - (shift - 1.0) * u)


def levels_from_draws(
    bootstrap: torch.Tensor, exp: torch.Tensor, u: torch.Tensor, k_max: int, shift: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-frame step sizes and signal levels (diffusion forcing) from uniform draws.

    bootstrap (B,) bool: sequences trained with d > 1/k_max — d = 2^(exp+1)/k_max, uniform over {2/k_max, …, 1};
    the others use d = 1/k_max. exp (B, T) ints in [0, log2 k_max); u (B, T) uniform in [0, 1).
    τ is on d's grid {0, d, …, 1 − d}: uniform for shift 1, else the grid cell of `shift_levels(u, shift)` (more
    of the noisy levels, where the prediction must come from the context and the conditions rather than from
    the frame's own input). Returns (tau (B, T), step (B, T)) float32.
    """
    u = shift_levels(u, shift)
    coarse = torch.pow(2.0, exp.float() + 1.0) / k_max
    step = torch.where(bootstrap[:, None], coarse, torch.full_like(coarse, 1.0 / k_max))
    n_grid = torch.round(1.0 / step)
    tau = torch.floor(u * n_grid).clamp(max=n_grid - 1) * step
    return tau, step


def sample_levels(
    batch: int,
    frames: int,
    k_max: int,
    bootstrap: torch.Tensor,
    device: torch.device | None = None,
    shift: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(tau, step) (B, T) for `bootstrap` (B,) bool sequences, drawn from the global RNG."""
    levels = max(1, int(math.log2(k_max)))
    exp = torch.randint(0, levels, (batch, frames), device=device)
    return levels_from_draws(bootstrap.to(device), exp, torch.rand(batch, frames, device=device), k_max, shift)


SEED_STRIDE, SEED_MODULUS = 7919, 2**62
"""`train.loop.sample_seed(seed, k) = (c(seed) + SEED_STRIDE·k) mod SEED_MODULUS`: the trainer's per-sample seeds
step by SEED_STRIDE along its sample stream (a test holds the two in step)."""
_SEED_STRIDE_INV = pow(SEED_STRIDE, -1, SEED_MODULUS)


def stream_position(seed: int) -> int:
    """The position k of a trainer sample in its run's sample stream, up to a constant of the run: k + C(run seed)
    (mod 2^62) for seed = sample_seed(run_seed, k). Consecutive samples get consecutive positions (a run wraps
    around 2^62 at most once in 2^62 / batch batches). For other seeds, a pseudo-random number."""
    return int(seed) * _SEED_STRIDE_INV % SEED_MODULUS


def stratified_choice(positions: Sequence[int], fraction: float) -> list[bool]:
    """Which of the sequences at stream `positions` bootstrap: (j·p mod q) ≥ q − p for fraction ≈ p/q.

    Any L consecutive positions hold ⌊f·L⌋ or ⌈f·L⌉ chosen ones (exactly f·L when it is whole); each position's
    answer depends on that position alone.
    """
    frac = Fraction(min(max(float(fraction), 0.0), 1.0)).limit_denominator(4096)
    p, q = frac.numerator, frac.denominator
    return [int(j) * p % q >= q - p for j in positions]


def ramp_weight(tau: torch.Tensor) -> torch.Tensor:
    """w(τ) = 0.9τ + 0.1: frames near clean drive rollouts, so they weigh most."""
    return 0.9 * tau + 0.1


@dataclass(frozen=True)
class TrainStep:
    """Where a micro-batch sits in training, for the objectives. global_step: the optimizer step (the bootstrap's
    warm-up schedule); teacher: the model for the no-grad bootstrap passes (None: the trained model itself);
    seeds: per-sample seeds of the random draws (None: the global RNG); normalizer: the loss's denominator (None:
    this batch's own count); collective_safe: every rank runs the same passes (FSDP's all-gathers must match)."""

    global_step: int = 0
    teacher: Denoiser | None = None
    seeds: list[int] | None = None
    normalizer: float | torch.Tensor | None = None
    collective_safe: bool = False


STANDALONE = TrainStep()
"""A call outside a trainer: step 0, the model as its own teacher, the global RNG, this batch's own normalizer."""


def drop_conditions(cond: Conditions, drop_action: torch.Tensor, drop_text: torch.Tensor) -> Conditions:
    """cond with the dropped sequences' conditions masked out: drop_action / drop_text (B,) bool. A mask left None
    with its tensor given (all present) becomes explicit; an absent condition stays absent."""

    def drop(x, mask, gone):
        if x is None:
            return mask
        if mask is None:
            mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
        return mask & ~gone[:, None]

    return cond.replace(
        action_mask=drop(cond.actions, cond.action_mask, drop_action),
        text_mask=drop(cond.text, cond.text_mask, drop_text),
    )


def denoise(model: Denoiser, z: torch.Tensor, tau, step, cond: Conditions | None) -> torch.Tensor:
    """The model's whole-clip pass model(z (B, T, N, D), tau, step, ...) under cond's actions and text."""
    c = cond if cond is not None else NO_CONDITIONS
    kw = {} if c.text is None else {"text": c.text, "text_mask": c.text_mask}
    return model(z, tau, step, c.actions, c.action_mask, **kw)


@torch.no_grad()
def bootstrap_velocity(
    model: Denoiser, z: torch.Tensor, tau: torch.Tensor, step: torch.Tensor, cond: Conditions | None = None
) -> torch.Tensor:
    """v* = (b₁ + b₂)/2 from two half steps of size d/2 (every frame advances its own half step).

    z (B, T, N, D); tau, step (B, T); cond: the clip's conditions (actions (B, T, A), text (B, T, E), masks
    (B, T)). Returns (B, T, N, D). Clean-context frames (τ = 1) stay as they are in both passes (v* = 0 there:
    they are not in the loss).
    """
    half = step / 2
    moving = tau < 1.0  # (B, T); all True without clean context, where then picks the very same values
    zero = torch.zeros((), device=z.device)
    half_in = torch.where(moving, half, step)
    b1 = torch.where(moving[..., None, None], velocity(denoise(model, z, tau, half_in, cond), z, tau), zero)
    z_mid = z + b1 * half[..., None, None]
    tau_mid = torch.where(moving, tau + half, tau)
    b2 = torch.where(
        moving[..., None, None], velocity(denoise(model, z_mid, tau_mid, half_in, cond), z_mid, tau_mid), zero
    )
    return (b1 + b2) / 2


def bootstrap_target(
    model: Denoiser, z: torch.Tensor, tau: torch.Tensor, step: torch.Tensor, cond: Conditions | None = None
) -> torch.Tensor:
    """x-space target z + (1 − τ)·v* of `bootstrap_velocity` (same arguments). Returns (B, T, N, D)."""
    v_star = bootstrap_velocity(model, z, tau, step, cond)
    return z + (1.0 - tau)[..., None, None] * v_star


def clean_prefix(
    tau: torch.Tensor, step: torch.Tensor, u: torch.Tensor, p: float, k_max: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """tau, step (B, T) with a clean prefix (τ = 1, d = 1/k_max) of 1..T−1 frames in the sequences whose
    u[:, 0] < p; u (B, 2) uniform in [0, 1) (u[:, 1] picks the length). T = 1: nothing is clean."""
    T = tau.shape[1]
    length = 1 + torch.floor(u[:, 1] * (T - 1)).clamp(max=max(T - 2, 0))  # (B,) in 1..T−1
    on = (u[:, 0] < p) & (T > 1)
    prefix = on[:, None] & (torch.arange(T, device=tau.device)[None] < length[:, None])  # (B, T)
    return torch.where(prefix, 1.0, tau), torch.where(prefix, 1.0 / k_max, step)


class ShortcutForcing:
    """The loss: `loss, metrics = objective(model, x, Conditions(actions, action_mask), valid, TrainStep(step))`.

    Metrics are detached tensors (no host sync): total, flow and bootstrap losses (unweighted means over their
    frames) and the loss per τ bucket, plus the fraction of bootstrap frames.
    """

    def __init__(self, cfg: ObjectiveConfig, k_max: int, prediction: str = "x", previous_frame: bool = False):
        if prediction not in ("x", "v"):
            raise ValueError(
                f"ShortcutForcing trains x- or v-prediction models, got model.prediction "
                f"{prediction!r} (next: objectives.next_frame.NextFrameRegression)"
            )
        self.cfg, self.k_max, self.v_space = cfg, k_max, prediction == "v"
        self.previous_frame = previous_frame  # the model reads x_{t−1} from the clean clip (model.previous_frame)

    def active(self, global_step: int) -> bool:
        """Bootstrap targets are used only after the flow-only warm-up (they are meaningless for a random model)."""
        return global_step >= self.cfg.bootstrap_start and self.cfg.bootstrap_fraction > 0 and self.k_max > 1

    def draw(self, x: torch.Tensor, global_step: int, seeds: list[int] | None = None):
        """`_draw` with the bootstrap rows on x's device (see there)."""
        _, *rest = self._draw(x, global_step, seeds)
        return tuple(rest)

    def _draw(self, x: torch.Tensor, global_step: int, seeds: list[int] | None = None):
        """Random inputs of one step: bootstrap rows as a host list of B bools (what the loss branches on, no
        device sync) and as a (B,) bool tensor on x's device (`draw` returns only the tensor), tau (B, T),
        step (B, T), noise like x (B, T, N, D), and the condition dropout drop_action, drop_text (B,) bool.
        Clean-context frames have τ = 1 (no other frame does).

        With `seeds` (one int per sample) every sample's draws come from its own generator, so a sample gets the
        same noise whatever the batch split across ranks or accumulation steps (DDP equals one process) and a
        resumed run repeats them exactly. Without seeds the global RNG is used. Which sequences bootstrap is the
        stratified choice of the module docstring: exact per batch, a function of each sample's own seed.
        """
        B, T = x.shape[:2]
        dev = x.device
        levels = max(1, int(math.log2(self.k_max)))
        f = self.cfg.bootstrap_fraction
        if seeds is None:
            # positions: a random phase, then a random order, so each batch holds ⌊f·B⌋ or ⌈f·B⌉ (f·B when whole)
            phase = int(torch.randint(0, 2**31 - 1, ()))
            picked = torch.tensor(stratified_choice(range(phase, phase + B), f), dtype=torch.bool)
            chosen = picked[torch.randperm(B)].tolist()
            exp = torch.randint(0, levels, (B, T), device=dev)
            u = torch.rand(B, T, device=dev)
            noise = torch.randn_like(x)
            cond_u = torch.rand(B, 2, device=dev)
            clean_u = torch.rand(B, 2, device=dev) if self.cfg.clean_context > 0 else None
        else:
            if len(seeds) != B:
                raise ValueError(f"draw: {len(seeds)} seeds for a batch of {B}")
            exp, u, noise, cond_u, clean_u = self._seeded_draws(x, seeds, levels)
            chosen = stratified_choice([stream_position(s) for s in seeds], f)
        # the rows are chosen on the host, as a list: the loss reads which ones bootstrap without a device sync
        active = self.active(global_step)
        boot_host = [bool(c) and active for c in chosen]
        boot = torch.tensor(boot_host, dtype=torch.bool, device=dev)  # (B,)
        tau, step = levels_from_draws(boot, exp, u, self.k_max, self.cfg.noise_shift)
        if clean_u is not None:
            tau, step = clean_prefix(tau, step, clean_u, self.cfg.clean_context, self.k_max)
        drop_action = cond_u[:, 0] < self.cfg.action_dropout
        drop_text = cond_u[:, 1] < self.cfg.text_dropout
        return boot_host, boot, tau, step, noise, drop_action, drop_text

    def _seeded_draws(self, x: torch.Tensor, seeds: list[int], levels: int):
        """exp, u (B, T), noise like x, cond_u (B, 2) and clean_u (B, 2) or None, each sample from its own seed."""
        T, dev = x.shape[1], x.device
        exps, us, noises, conds, cleans = [], [], [], [], []
        for s in seeds:
            g = torch.Generator(device=dev).manual_seed(int(s))
            torch.rand((1,), generator=g, device=dev)  # was the coin flip; kept so the draws after it stay
            exps.append(torch.randint(0, levels, (T,), generator=g, device=dev))
            us.append(torch.rand((T,), generator=g, device=dev))
            noises.append(torch.randn(x.shape[1:], generator=g, device=dev, dtype=x.dtype))
            conds.append(torch.rand((2,), generator=g, device=dev))  # after the above: they stay as they were
            if self.cfg.clean_context > 0:  # last of all, so the draws above do not depend on it
                cleans.append(torch.rand((2,), generator=g, device=dev))
        clean_u = torch.stack(cleans) if cleans else None
        return torch.stack(exps), torch.stack(us), torch.stack(noises), torch.stack(conds), clean_u

    def __call__(
        self,
        model: Denoiser,
        x: torch.Tensor,
        cond: Conditions | None = None,
        valid: torch.Tensor | None = None,
        at: TrainStep = STANDALONE,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """x (B, T, N, D) clean latents; cond: the clip's conditions (actions (B, T, A), text (B, T, E) sentence
        embeddings per frame, their masks (B, T) bool; None: none); valid (B, T) bool.

        at (TrainStep): the global step (bootstrap schedule), the teacher for the no-grad half steps (defaults to
        `model`; pass the unwrapped module under DDP/FSDP), per-sample seeds for the random draws (see `draw`),
        the normalizer and collective_safe. The loss is Σ w·ℓ over valid frames divided by at.normalizer
        (default: this batch's valid-frame count); a trainer passes the global count of the whole optimizer step
        (all micro-batches, all ranks) so that accumulation and DDP give exactly the single-process gradient.
        collective_safe (FSDP): the teacher passes run on the whole batch whenever the bootstrap is active, so
        every rank runs the same number of forwards (their all-gathers must match).
        """
        B, T = x.shape[:2]
        device = x.device
        if valid is not None:  # padding may hold anything (NaN): the model and the loss see zeros there
            x = torch.where(valid[..., None, None], x, torch.zeros((), dtype=x.dtype, device=device))
        boot_host, boot, tau, step, noise, drop_a, drop_t = self._draw(x, at.global_step, at.seeds)
        cond = drop_conditions(cond if cond is not None else NO_CONDITIONS, drop_a, drop_t)
        z = corrupt(x, tau, noise)
        x_hat = denoise(self._forced(model, x), z, tau, step, cond)

        target = x
        teacher = at.teacher or model
        if at.collective_safe and self.active(at.global_step):
            full = bootstrap_target(self._forced(teacher, x), z, tau, step, cond)
            target = torch.where(boot[:, None, None, None], full, x)
        elif any(boot_host):  # a host list: no device sync
            idx = torch.tensor([i for i, b in enumerate(boot_host) if b], dtype=torch.long, device=device)
            sub = lambda t: None if t is None else t[idx]  # noqa: E731
            rows = Conditions(sub(cond.actions), sub(cond.action_mask), sub(cond.text), sub(cond.text_mask))
            target = x.clone()
            target[idx] = bootstrap_target(self._forced(teacher, x[idx]), z[idx], tau[idx], step[idx], rows)
        per_frame, keep = self._per_frame(x_hat, target, tau, valid)  # (B, T) each
        valid_f = torch.ones(B, T, device=device) if valid is None else valid.float()
        keep_f = valid_f if keep is None else keep.float()
        w = (ramp_weight(tau) if self.cfg.ramp_weight else torch.ones_like(tau)) * keep_f
        denom = valid_f.sum().clamp_min(1.0) if at.normalizer is None else at.normalizer
        loss = (w * per_frame).sum() / denom

        metrics = self._metrics(per_frame.detach(), w, keep_f, boot, tau)
        if keep is not None:
            metrics["clean_context_frac"] = (valid_f - keep_f).sum() / valid_f.sum().clamp_min(1)
        metrics.update(action_dropped_frac=drop_a.float().mean(), text_dropped_frac=drop_t.float().mean())
        return loss, metrics

    def _forced(self, model: Denoiser, x: torch.Tensor) -> Denoiser:
        """The model as the loss calls it: every pass (student and bootstrap teacher) gets the clean clip x
        (B, T, N, D) as its `History` when the model reads it — model.previous_frame (x_{t−1} beside each frame)
        or objective.teacher_forcing (a clean stream); otherwise the model itself."""
        if not (self.cfg.teacher_forcing or self.previous_frame):
            return model
        return functools.partial(model, history=History(x, stream=self.cfg.teacher_forcing))

    def _per_frame(self, x_hat, target, tau, valid):
        """Squared error per frame (B, T) of x̂ (B, T, N, D) against the x-space target — in v-space, divided by
        (1 − τ)² — zero where not trained; and the trained frames keep (B, T) bool (valid and not clean context),
        None when every valid frame trains (no clean context: the arithmetic of the x path as before)."""
        err = x_hat.float() - target.float()
        keep = valid
        if self.cfg.clean_context > 0:
            clean = tau >= 1.0  # only clean-context frames sit at τ = 1
            keep = ~clean if valid is None else valid & ~clean
        if self.v_space:  # ‖v̂ − v_target‖ = ‖x̂ − x_target‖/(1 − τ); 1 at clean frames (out of the loss anyway)
            inv = 1.0 / torch.where(tau < 1.0, 1.0 - tau, torch.ones((), device=tau.device))
            err = err * inv[..., None, None]
        per_frame = err.pow(2).mean(dim=(-2, -1))
        if keep is not None:
            per_frame = torch.where(keep, per_frame, torch.zeros((), device=per_frame.device))
        return per_frame, (None if self.cfg.clean_context == 0 else keep)

    @torch.no_grad()
    def _metrics(self, pf, w, valid_f, boot, tau) -> dict[str, torch.Tensor]:
        """Detached per-frame losses pf, weights w, valid_f (B, T), boot (B,), tau (B, T) -> logged means."""
        B, T = pf.shape
        is_boot = boot[:, None].expand(B, T).float() * valid_f
        is_flow = valid_f - is_boot
        metrics = {
            "loss": (w * pf).sum() / valid_f.sum().clamp_min(1),
            "loss_flow": (pf * is_flow).sum() / is_flow.sum().clamp_min(1),
            "loss_bootstrap": (pf * is_boot).sum() / is_boot.sum().clamp_min(1),
            "bootstrap_frac": is_boot.sum() / valid_f.sum().clamp_min(1),
        }
        nb = self.cfg.tau_buckets
        bucket = torch.clamp((tau * nb).long(), max=nb - 1)
        for b in range(nb):
            m = (bucket == b).float() * valid_f
            metrics[f"loss_tau/{b / nb:.2f}-{(b + 1) / nb:.2f}"] = (pf * m).sum() / m.sum().clamp_min(1)
        return metrics
