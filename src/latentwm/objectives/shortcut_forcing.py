"""Shortcut forcing (Dreamer 4): the training loss of the dynamics model, exactly as DESIGN.md section 5 writes it.

Convention: τ ∈ [0, 1] is the signal level (0 pure noise, 1 clean), z_τ = (1 − τ)·ε + τ·x. The network predicts the
clean latent x̂ = f(z_τ, τ, d, context) (x-prediction); its implied velocity is v̂ = (x̂ − z_τ)/(1 − τ).

- Diffusion forcing: every frame of every sequence has its own step size d_t and signal level τ_t on d_t's grid.
- Flow term (d = 1/K_max): ‖x̂ − x‖².
- Bootstrap term (d > 1/K_max): two no-grad half steps of the model give v* = (b₁ + b₂)/2; the loss is
  (1 − τ)²‖v̂ − v*‖² = ‖x̂ − (z_τ + (1 − τ)·v*)‖², so both terms are squared errors on x̂ with different targets.
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
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from fractions import Fraction

import torch

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


def levels_from_draws(bootstrap: torch.Tensor, exp: torch.Tensor, u: torch.Tensor,
                      k_max: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-frame step sizes and signal levels (diffusion forcing) from uniform draws.

    bootstrap (B,) bool: sequences trained with d > 1/k_max — d = 2^(exp+1)/k_max, uniform over {2/k_max, …, 1};
    the others use d = 1/k_max. exp (B, T) ints in [0, log2 k_max); u (B, T) uniform in [0, 1).
    τ is uniform on d's grid {0, d, …, 1 − d}. Returns (tau (B, T), step (B, T)) float32.
    """
    coarse = torch.pow(2.0, exp.float() + 1.0) / k_max
    step = torch.where(bootstrap[:, None], coarse, torch.full_like(coarse, 1.0 / k_max))
    n_grid = torch.round(1.0 / step)
    tau = torch.floor(u * n_grid).clamp(max=n_grid - 1) * step
    return tau, step


def sample_levels(batch: int, frames: int, k_max: int, bootstrap: torch.Tensor,
                  device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(tau, step) (B, T) for `bootstrap` (B,) bool sequences, drawn from the global RNG."""
    levels = max(1, int(math.log2(k_max)))
    exp = torch.randint(0, levels, (batch, frames), device=device)
    return levels_from_draws(bootstrap.to(device), exp, torch.rand(batch, frames, device=device), k_max)


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


def drop_conditions(actions: torch.Tensor | None, action_mask: torch.Tensor | None, text: torch.Tensor | None,
                    text_mask: torch.Tensor | None, drop_action: torch.Tensor, drop_text: torch.Tensor):
    """The masks with the dropped sequences' conditions removed: actions (B, T, A) / text (B, T, E) or None, their
    masks (B, T) bool or None (None with the tensor given: all present), drop_action / drop_text (B,) bool.
    Returns (action_mask, text_mask), None where the condition itself is absent."""
    def drop(x, mask, gone):
        if x is None:
            return mask
        if mask is None:
            mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
        return mask & ~gone[:, None]

    return drop(actions, action_mask, drop_action), drop(text, text_mask, drop_text)


def _text_kw(text, text_mask) -> dict:
    return {} if text is None else {"text": text, "text_mask": text_mask}


@torch.no_grad()
def bootstrap_target(model: Denoiser, z: torch.Tensor, tau: torch.Tensor, step: torch.Tensor,
                     actions: torch.Tensor | None, action_mask: torch.Tensor | None, text: torch.Tensor | None = None,
                     text_mask: torch.Tensor | None = None) -> torch.Tensor:
    """x-space target z + (1 − τ)·v* from two half steps of size d/2 (every frame advances its own half step).

    z (B, T, N, D); tau, step (B, T); text (B, T, E), text_mask (B, T). Returns (B, T, N, D).
    """
    half = step / 2
    kw = _text_kw(text, text_mask)
    b1 = velocity(model(z, tau, half, actions, action_mask, **kw), z, tau)
    z_mid = z + b1 * half[..., None, None]
    tau_mid = tau + half
    b2 = velocity(model(z_mid, tau_mid, half, actions, action_mask, **kw), z_mid, tau_mid)
    v_star = (b1 + b2) / 2
    return z + (1.0 - tau)[..., None, None] * v_star


class ShortcutForcing:
    """The loss: `loss, metrics = objective(model, x, actions, action_mask, valid, step=global_step)`.

    Metrics are detached tensors (no host sync): total, flow and bootstrap losses (unweighted means over their
    frames) and the loss per τ bucket, plus the fraction of bootstrap frames.
    """

    def __init__(self, cfg: ObjectiveConfig, k_max: int):
        self.cfg, self.k_max = cfg, k_max

    def active(self, global_step: int) -> bool:
        """Bootstrap targets are used only after the flow-only warm-up (they are meaningless for a random model)."""
        return global_step >= self.cfg.bootstrap_start and self.cfg.bootstrap_fraction > 0 and self.k_max > 1

    def draw(self, x: torch.Tensor, global_step: int, seeds: list[int] | None = None):
        """Random inputs of one step: bootstrap (B,) bool, tau (B, T), step (B, T), noise like x (B, T, N, D),
        and the condition dropout drop_action, drop_text (B,) bool.

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
            chosen = torch.tensor(stratified_choice(range(phase, phase + B), f), dtype=torch.bool)
            chosen = chosen[torch.randperm(B)].to(dev)
            exp = torch.randint(0, levels, (B, T), device=dev)
            u = torch.rand(B, T, device=dev)
            noise = torch.randn_like(x)
            cond_u = torch.rand(B, 2, device=dev)
        else:
            if len(seeds) != B:
                raise ValueError(f"draw: {len(seeds)} seeds for a batch of {B}")
            exps, us, noises, conds = [], [], [], []
            for s in seeds:
                g = torch.Generator(device=dev).manual_seed(int(s))
                torch.rand((1,), generator=g, device=dev)  # was the coin flip; kept so the draws after it stay
                exps.append(torch.randint(0, levels, (T,), generator=g, device=dev))
                us.append(torch.rand((T,), generator=g, device=dev))
                noises.append(torch.randn(x.shape[1:], generator=g, device=dev, dtype=x.dtype))
                conds.append(torch.rand((2,), generator=g, device=dev))  # last: the draws above stay as they were
            exp, u, noise, cond_u = torch.stack(exps), torch.stack(us), torch.stack(noises), torch.stack(conds)
            chosen = torch.tensor(stratified_choice([stream_position(s) for s in seeds], f), dtype=torch.bool,
                                  device=dev)
        boot = chosen & self.active(global_step)
        tau, step = levels_from_draws(boot, exp, u, self.k_max)
        drop_action = cond_u[:, 0] < self.cfg.action_dropout
        drop_text = cond_u[:, 1] < self.cfg.text_dropout
        return boot, tau, step, noise, drop_action, drop_text

    def __call__(self, model: Denoiser, x: torch.Tensor, actions: torch.Tensor | None = None,
                 action_mask: torch.Tensor | None = None, valid: torch.Tensor | None = None,
                 global_step: int = 0, bootstrap_model: Denoiser | None = None, seeds: list[int] | None = None,
                 normalizer: float | torch.Tensor | None = None, collective_safe: bool = False,
                 text: torch.Tensor | None = None, text_mask: torch.Tensor | None = None,
                 ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """x (B, T, N, D) clean latents; actions (B, T, A); action_mask, valid (B, T) bool; text (B, T, E) sentence
        embeddings per frame and text_mask (B, T) bool (None: no text in this batch).

        bootstrap_model computes the no-grad half steps (defaults to `model`; pass the unwrapped module under
        DDP/FSDP). seeds: per-sample seeds for the random draws (see `draw`). The loss is Σ w·ℓ over valid frames
        divided by `normalizer` (default: this batch's valid-frame count); a trainer passes the global count of
        the whole optimizer step (all micro-batches, all ranks) so that accumulation and DDP give exactly the
        single-process gradient. collective_safe (FSDP): the teacher passes run on the whole batch whenever the
        bootstrap is active, so every rank runs the same number of forwards (their all-gathers must match).
        """
        B, T = x.shape[:2]
        device = x.device
        if valid is not None:  # padding may hold anything (NaN): the model and the loss see zeros there
            x = torch.where(valid[..., None, None], x, torch.zeros((), dtype=x.dtype, device=device))
        boot, tau, step, noise, drop_a, drop_t = self.draw(x, global_step, seeds)
        action_mask, text_mask = drop_conditions(actions, action_mask, text, text_mask, drop_a, drop_t)
        z = corrupt(x, tau, noise)
        kw = _text_kw(text, text_mask)
        x_hat = model(z, tau, step, actions, action_mask, **kw)

        target = x
        teacher = bootstrap_model or model
        if collective_safe and self.active(global_step):
            full = bootstrap_target(teacher, z, tau, step, actions, action_mask, text, text_mask)
            target = torch.where(boot[:, None, None, None], full, x)
        elif boot.any():
            idx = boot.nonzero().squeeze(1)
            sub = lambda t: None if t is None else t[idx]  # noqa: E731
            target = x.clone()
            target[idx] = bootstrap_target(teacher, z[idx], tau[idx], step[idx], sub(actions), sub(action_mask),
                                           sub(text), sub(text_mask))
        per_frame = (x_hat.float() - target.float()).pow(2).mean(dim=(-2, -1))  # (B, T)
        if valid is not None:
            per_frame = torch.where(valid, per_frame, torch.zeros((), device=device))

        valid_f = torch.ones(B, T, device=device) if valid is None else valid.float()
        w = (ramp_weight(tau) if self.cfg.ramp_weight else torch.ones_like(tau)) * valid_f
        denom = valid_f.sum().clamp_min(1.0) if normalizer is None else normalizer
        loss = (w * per_frame).sum() / denom

        metrics = self._metrics(per_frame.detach(), w, valid_f, boot, tau)
        metrics.update(action_dropped_frac=drop_a.float().mean(), text_dropped_frac=drop_t.float().mean())
        return loss, metrics

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
