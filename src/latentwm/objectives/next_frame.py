"""Next-frame regression: the deterministic baseline (DINO-WM's teacher-forced MSE objective) on the
same backbone and data as shortcut forcing (model.prediction = "next").

Every input frame is clean (τ = 1, d = 1/k_max, z = x). The action token of frame t embeds actions[:, t], the
action taken AFTER frame t (DynamicsModel does not shift it in this mode, and it is used at t = 0 too); the text
token embeds frame t's own text. The output at frame t is the prediction x̂_{t+1}, so the loss is the MSE between
output t and x_{t+1} over the frames t = 0..T−2 whose frames t and t+1 are both valid — no noise, no bootstrap, no
w(τ). Condition dropout applies as in shortcut forcing (each sequence's actions / text replaced by the learned null
vectors with probability objective.action_dropout / text_dropout), so action sensitivity and classifier-free
guidance stay measurable.

The metric keys match shortcut forcing's where they mean something (`loss`, `loss_flow` = the regression MSE,
`loss_bootstrap` = 0, `bootstrap_frac` = 0, the dropped fractions), so training curves compare; τ buckets are left
out (every input is at τ = 1).
"""

from __future__ import annotations

import torch

from latentwm.conditions import NO_CONDITIONS, Conditions
from latentwm.config import ObjectiveConfig
from latentwm.objectives.shortcut_forcing import STANDALONE, Denoiser, TrainStep, denoise, drop_conditions


class NextFrameRegression:
    """The loss: `loss, metrics = objective(model, x, cond, valid, at)`, with ShortcutForcing's call signature (the
    trainer calls either one the same way; the TrainStep's global step, teacher and collective_safe have nothing to
    do here)."""

    def __init__(self, cfg: ObjectiveConfig, k_max: int):
        self.cfg, self.k_max = cfg, k_max

    def draw(self, x: torch.Tensor, seeds: list[int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Condition dropout of one step: drop_action, drop_text (B,) bool for clean latents x (B, T, N, D). With
        `seeds` (one per sample) each sample draws from its own generator (DDP equals one process, a resumed run
        repeats them); without, from the global RNG."""
        B, dev = x.shape[0], x.device
        if seeds is None:
            u = torch.rand(B, 2, device=dev)
        else:
            if len(seeds) != B:
                raise ValueError(f"draw: {len(seeds)} seeds for a batch of {B}")
            u = torch.stack(
                [torch.rand((2,), generator=torch.Generator(device=dev).manual_seed(int(s)), device=dev) for s in seeds]
            )
        return u[:, 0] < self.cfg.action_dropout, u[:, 1] < self.cfg.text_dropout

    def __call__(
        self,
        model: Denoiser,
        x: torch.Tensor,
        cond: Conditions | None = None,
        valid: torch.Tensor | None = None,
        at: TrainStep = STANDALONE,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """x (B, T, N, D) clean latents, T >= 2; cond: actions (B, T, A) (actions[:, t] taken after frame t), text
        (B, T, E), their masks (B, T) (None: none); valid (B, T) bool. at: as for ShortcutForcing (its global step
        and teacher are not used: there is no bootstrap).

        The loss is Σ over pairs (t, t+1) of ‖x̂_{t+1} − x_{t+1}‖² (mean over tokens and channels) divided by
        at.normalizer (default: this batch's pair count). A trainer passes its global valid-frame count, the same
        for every micro-batch and rank, so accumulation and DDP give exactly the single-process gradient (the loss
        is then (T − 1)/T of the pair mean; the logged `loss` is the pair mean itself).
        """
        B, T = x.shape[:2]
        if T < 2:
            raise ValueError(f"next-frame regression needs clips of at least 2 frames (data.clip_len), got T = {T}")
        device = x.device
        if valid is not None:  # padding may hold anything (NaN): the model and the loss see zeros there
            x = torch.where(valid[..., None, None], x, torch.zeros((), dtype=x.dtype, device=device))
        drop_a, drop_t = self.draw(x, at.seeds)
        cond = drop_conditions(cond if cond is not None else NO_CONDITIONS, drop_a, drop_t)
        out = denoise(model, x, 1.0, 1.0 / self.k_max, cond)  # (B, T, N, D): output t is x̂_{t+1}
        per_pair = (out[:, :-1].float() - x[:, 1:].float()).pow(2).mean(dim=(-2, -1))  # (B, T − 1)
        pair = torch.ones(B, T - 1, dtype=torch.bool, device=device) if valid is None else valid[:, :-1] & valid[:, 1:]
        per_pair = torch.where(pair, per_pair, torch.zeros((), device=device))
        n_pairs = pair.float().sum()
        denom = n_pairs.clamp_min(1.0) if at.normalizer is None else at.normalizer
        loss = per_pair.sum() / denom
        with torch.no_grad():
            mse = per_pair.detach().sum() / n_pairs.clamp_min(1.0)
            zero = torch.zeros((), device=device)
            metrics = {
                "loss": mse,
                "loss_flow": mse,
                "loss_bootstrap": zero,
                "bootstrap_frac": zero,
                "action_dropped_frac": drop_a.float().mean(),
                "text_dropped_frac": drop_t.float().mean(),
            }
        return loss, metrics


__all__ = ["NextFrameRegression"]
