"""Rollout metrics: latent error per horizon step against ground truth and baselines that cannot be beaten by
blurring (copy-last-frame, context average), mean-of-N samples, sensitivity to swapped actions, and the condition
gain of actions and text (how much the model listens: error with another clip's condition or none, minus error with
the true one, noise-matched)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

import torch

from latentwm.conditions import Conditions
from latentwm.data.batch import WorldBatch
from latentwm.rollout import Sampling, rollout

# Keys averaged over clips and reported per horizon; "_model_on_swapped" (the model's error on the clips the
# swapped-action run covers) only feeds action_sensitivity.
_SAMPLE_KEYS = ("sample_error", "mean_of_samples_error", "sample_spread")


def latent_mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error per sample and frame over tokens and channels: (B, H, N, D) x2 -> (B, H)."""
    return (pred.float() - target.float()).pow(2).mean(dim=(-2, -1))


def sample_stats(preds: torch.Tensor, truth: torch.Tensor) -> dict[str, torch.Tensor]:
    """S rollouts of the same clips, preds (S, B, H, N, D), against truth (B, H, N, D) -> per clip (B, H) each:
    sample_error (mean single-sample MSE), mean_of_samples_error (MSE of the average prediction) and sample_spread
    (per-element variance across samples, averaged). sample = mean-of-samples + spread (bias-variance, up to
    rounding): a model that predicts a blur has spread ≈ 0, a sharp stochastic one a mean clearly better than a
    single sample."""
    p = preds.float()
    return {
        "sample_error": latent_mse(p, truth).mean(0),
        "mean_of_samples_error": latent_mse(p.mean(0), truth),
        "sample_spread": p.var(0, unbiased=False).mean(dim=(-2, -1)),
    }


def swap_future_actions(actions: torch.Tensor, action_mask: torch.Tensor, context: int):
    """Clip i gets clip i+1's future actions (steps context−1 onward: those leading into predicted frames), masks
    moving with them; the observed history's actions stay. actions (B, T, A), action_mask (B, T)."""
    a, m = actions.clone(), action_mask.clone()
    a[:, context - 1 :] = actions[:, context - 1 :].roll(-1, dims=0)
    m[:, context - 1 :] = action_mask[:, context - 1 :].roll(-1, dims=0)
    return a, m


CONDITIONS = ("action", "text")


def _condition_variants(b: WorldBatch, cond: str, context: int, need: int):
    """The future part of `cond` replaced: (rows (B,) bool — clips whose future has that condition —, {variant:
    rollout keywords}). shuffled: clip i gets clip i+1's (only with ≥ 2 such clips); null: none at all. Only the
    future changes (actions leading into predicted frames, text of predicted frames); the observed history keeps its
    own. None when no clip of the batch has the condition in its future."""
    if cond == "action":
        acts, mask = b.actions[:, : need - 1], b.action_mask[:, : need - 1]
        rows = mask[:, context - 1 :].any(1)
        null = mask.clone()
        null[:, context - 1 :] = False
        out = {"null": dict(actions=acts, action_mask=null)}
        if int(rows.sum()) > 1:
            a, m = swap_future_actions(acts, mask, context)
            out["shuffled"] = dict(actions=a, action_mask=m)
        return (rows, out) if rows.any() else None
    if b.text is None:
        return None
    text, mask = b.text[:, :need], b.text_mask[:, :need]
    rows = mask[:, context:].any(1)
    null = mask.clone()
    null[:, context:] = False
    out = {"null": dict(text=text, text_mask=null)}
    if int(rows.sum()) > 1:
        t, m = text.clone(), mask.clone()
        t[:, context:], m[:, context:] = text[:, context:].roll(-1, dims=0), mask[:, context:].roll(-1, dims=0)
        out["shuffled"] = dict(text=t, text_mask=m)
    return (rows, out) if rows.any() else None


def _without_the_other(b: WorldBatch, cond: str, need: int) -> dict | None:
    """Rollout keywords that remove the condition other than `cond` from every frame of the clip (the measurement
    of `cond` alone: text-only rollouts have no actions, action-only ones no text); None when the batch has none of
    it anyway (then `cond` alone is `cond` with the other present, already measured)."""
    if cond == "text":
        mask = b.action_mask[:, : need - 1]
        return dict(action_mask=torch.zeros_like(mask)) if mask.any() else None
    if b.text is None or not b.text_mask[:, :need].any():
        return None
    return dict(text=b.text[:, :need], text_mask=torch.zeros_like(b.text_mask[:, :need]))


class _Sums:
    """Per-horizon sums of per-clip errors (B, H) by key, overall and per dataset/camera group, with clip counts
    per key (keys may cover different clips: the swapped-action run skips batches of one clip)."""

    def __init__(self, horizon: int):
        self.zeros = lambda: torch.zeros(horizon, dtype=torch.float64)
        self.total: dict[str, torch.Tensor] = defaultdict(self.zeros)
        self.n: dict[str, int] = defaultdict(int)
        self.groups: dict[str, dict[str, torch.Tensor]] = defaultdict(lambda: defaultdict(self.zeros))
        self.group_n: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self.sq: dict[str, float] = defaultdict(float)  # Σ over clips of (mean over horizons)², for stderr
        self.sq_h: dict[str, torch.Tensor] = defaultdict(self.zeros)  # Σ over clips of error², per horizon

    def add(self, errs: dict[str, torch.Tensor], meta, rows: torch.Tensor | None = None) -> None:
        """errs: key -> (B, H) per-clip errors; rows (B,) bool: add only those clips."""
        if rows is not None:
            keep = rows.nonzero().flatten().tolist()
            errs, meta = {k: v[rows] for k, v in errs.items()}, [meta[i] for i in keep]
        for key, err in errs.items():
            err = err.double().cpu()  # (B, H)
            self.total[key] += err.sum(0)
            self.n[key] += err.shape[0]
            self.sq[key] += float(err.mean(1).pow(2).sum())
            self.sq_h[key] += err.pow(2).sum(0)
            for i, mt in enumerate(meta):
                g = f"{mt.dataset}/{mt.camera}"
                self.groups[g][key] += err[i]
                self.group_n[g][key] += 1

    def mean(self, key: str, group: str | None = None) -> list | None:
        total, n = (self.total, self.n) if group is None else (self.groups[group], self.group_n[group])
        return (total[key] / n[key]).tolist() if n[key] else None

    def stderr(self, key: str) -> float | None:
        """Standard error over clips of the per-clip mean over horizons (None with fewer than 2 clips)."""
        n = self.n[key]
        if n < 2:
            return None
        m = float(self.total[key].sum()) / len(self.total[key]) / n
        return max(self.sq[key] / n - m * m, 0.0) ** 0.5 * (n / (n - 1)) ** 0.5 / n**0.5

    def stderr_by_horizon(self, key: str) -> list[float] | None:
        """Standard error over clips at each horizon (None with fewer than 2 clips)."""
        n = self.n[key]
        if n < 2:
            return None
        m = self.total[key] / n
        var = (self.sq_h[key] / n - m * m).clamp_min(0.0) * (n / (n - 1))
        return (var / n).sqrt().tolist()

    def keys(self, group: str | None = None) -> list[str]:
        return [k for k in (self.n if group is None else self.group_n[group]) if not k.startswith("_")]


def _batch_errors(
    model,
    b: WorldBatch,
    context: int,
    horizon: int,
    gens: dict,
    o: EvalOptions,
) -> tuple[torch.Tensor, dict[str, torch.Tensor], list]:
    """One batch of full clips: the first sample's prediction (B, H, N, D), per-clip errors (B, H) by key, and the
    condition-gain errors as [(rows (B,) bool, {key: (B, H)})]."""
    need = context + horizon
    x = b.latents[:, :need]
    ctx, truth = x[:, :context], x[:, context:]
    acts, mask = b.actions[:, : need - 1], b.action_mask[:, : need - 1]
    cond = Conditions(acts, mask, text_guidance=o.text_guidance, action_guidance=o.action_guidance)
    if b.text is not None:  # the text of every frame, observed and predicted
        cond = cond.replace(text=b.text[:, :need], text_mask=b.text_mask[:, :need])
    sampling = Sampling(o.sample_steps, o.tau_ctx)
    state = gens["model"].get_state()  # the swapped / conditioned runs replay this noise
    pred = rollout(model, ctx, horizon, cond, sampling, generator=gens["model"])
    ctx_mean = ctx.float().mean(1, keepdim=True)  # (B, 1, N, D)
    errs = {
        "model_error": latent_mse(pred, truth),
        "copy_last_error": latent_mse(x[:, context - 1 : context].expand_as(truth), truth),
        "context_average_error": latent_mse(ctx_mean.expand_as(truth), truth),
    }
    if o.num_samples > 1:  # extra samples from their own stream: model_error does not depend on num_samples
        more = [rollout(model, ctx, horizon, cond, sampling, generator=gens["extra"]) for _ in range(o.num_samples - 1)]
        errs.update(sample_stats(torch.stack([pred, *more]), truth))
    if o.action_swap and x.shape[0] > 1:
        gens["swap"].set_state(state)
        a, m = swap_future_actions(acts, mask, context)
        swapped = rollout(model, ctx, horizon, cond.replace(actions=a, action_mask=m), sampling, generator=gens["swap"])
        errs["swapped_actions_error"] = latent_mse(swapped, truth)
        errs["_model_on_swapped"] = errs["model_error"]
        errs["_swap_diff_per_clip"] = errs["swapped_actions_error"] - errs["model_error"]
    gains = []
    for name in _conditions(o.condition_gain):
        for alone in (False, True):
            found = _condition_variants(b, name, context, need)
            other = _without_the_other(b, name, need) if alone else {}
            if found is None or other is None:
                continue
            rows, variants = found
            label = f"{name}_alone" if alone else name
            base = cond.replace(**other)

            def run(change: dict, base: Conditions = base) -> torch.Tensor:
                gens["swap"].set_state(state)
                return latent_mse(
                    rollout(model, ctx, horizon, base.replace(**change), sampling, generator=gens["swap"]), truth
                )

            true = run({}) if alone else errs["model_error"]
            ce = {f"{label}_true_error": true}
            for variant, change in variants.items():
                ce[f"{label}_{variant}_error"] = run(change)
            if "shuffled" in variants:  # the clips the shuffled run covers, for its gain (and its per-clip spread)
                ce[f"_{label}_true_on_shuffled"] = true
                ce[f"_{label}_gain_per_clip"] = ce[f"{label}_shuffled_error"] - true
            gains.append((rows, ce))
    return pred, errs, gains


def _generators(seed: int, device) -> dict[str, torch.Generator]:
    """model: today's stream (seed); swap: reset to the model's state per batch (noise-matched); extra: the
    samples after the first, from a seed derived from `seed` (deterministic, not the model's stream)."""
    mk = lambda s: torch.Generator(device=device).manual_seed(s)  # noqa: E731
    return {"model": mk(seed), "swap": mk(seed), "extra": mk((seed * 0x9E3779B1 + 0x7F4A7C15) % 2**63)}


@dataclass(frozen=True)
class EvalOptions:
    """How `rollout_errors` samples (K = sample_steps, tau_ctx, the noise seed, classifier-free guidance scales) and
    what it measures beside the model's error (see rollout_errors)."""

    sample_steps: int = 4
    tau_ctx: float = 1.0
    seed: int = 0
    num_samples: int = 1
    action_swap: bool = False
    condition_gain: bool | tuple[str, ...] = False
    text_guidance: float = 1.0
    action_guidance: float = 1.0
    keep_predictions: int = 0


@torch.no_grad()
def rollout_errors(
    model,
    batches: Iterable[WorldBatch],
    context: int,
    horizon: int,
    options: EvalOptions = EvalOptions(),
    device: torch.device | str = "cpu",
) -> dict:
    """Roll out `horizon` frames after `context` observed ones on every clip; compare with the truth.

    Clips must hold at least context + horizon valid frames (shorter ones are skipped and counted). Errors are
    latent MSE in the model's (normalized) latent space, per horizon step, averaged over clips, overall and per
    dataset/camera group. Baselines: copy-last repeats the last observed frame, context-average predicts the mean
    of the observed frames for every future frame (what a model that only blurs could reach). Fixed noise seed:
    evaluations of two checkpoints see the same noise, and model_error does not depend on the options below.
    options (EvalOptions):

    num_samples > 1: N rollouts per clip → sample_error, mean_of_samples_error, sample_spread (see sample_stats).
    action_swap: a second rollout with the batch's future actions rolled by one clip, same noise →
    swapped_actions_error and action_sensitivity (mean over horizons of swapped − model error on those clips; with
    action_sensitivity_stderr, its standard error over clips);
    batches of one clip cannot swap (swap_skipped_clips).
    condition_gain: for actions and for text, noise-matched rollouts with another clip's future condition
    (shuffled) and none (null) on the clips whose future has it → `condition_gain[cond]` = {true, shuffled, null:
    errors per horizon, gain: shuffled − true, null_gain: null − true, gain_stderr (over clips, of the mean over
    horizons), gain_stderr_by_horizon, num_clips}; 0 gain: the condition is ignored (its growth in training: how
    fast the model learns to listen); ("text",): text only.
    Each is measured twice: with the other condition present (`text`, `action`: what a joint model gets) and
    removed from the whole clip (`text_alone`: text-only rollouts, no actions; `action_alone`: no text) — the
    second is what the condition carries by itself (with true actions present a sentence can add almost nothing).
    A batch's `text` (B, T, E) conditions every frame it covers; text/action_guidance: CFG scales (1: none).
    """
    o = options
    num_samples, action_swap, condition_gain, keep_predictions = (
        o.num_samples,
        o.action_swap,
        o.condition_gain,
        o.keep_predictions,
    )
    if num_samples < 1:
        raise ValueError(f"rollout_errors: num_samples must be >= 1, got {num_samples}")
    sums, gain_sums, kept, skipped, swap_skipped = _Sums(horizon), _Sums(horizon), [], 0, 0
    gens = _generators(o.seed, device)
    need = context + horizon
    for batch in batches:
        ok = batch.valid[:, :need].all(dim=1) if batch.seq_len >= need else torch.zeros(batch.batch_size, dtype=bool)
        skipped += int((~ok).sum())
        if not ok.any():
            continue
        b = batch[ok.nonzero().squeeze(1)].to(device)
        pred, errs, gains = _batch_errors(model, b, context, horizon, gens, o)
        sums.add(errs, b.meta)
        for rows, ce in gains:  # the shuffled run needs 2 clips: each key counts its own clips
            gain_sums.add(ce, b.meta, rows)
        swap_skipped += int(action_swap and b.batch_size == 1)
        if len(kept) < keep_predictions:
            x, k = b.latents[:, :need], keep_predictions - len(kept)
            kept.append((x[:k, context:].cpu(), pred[:k].cpu(), x[:k, :context].cpu()))
    if sums.n["model_error"] == 0:
        raise ValueError(
            f"rollout_errors: no clip has {need} valid frames (context {context} + horizon {horizon}); "
            f"{skipped} clips skipped"
        )
    out = _summary(sums, horizon, skipped, num_samples)
    if action_swap:
        out["swapped_actions_error"] = sums.mean("swapped_actions_error")  # None when no batch could swap
        diff = (
            None
            if out["swapped_actions_error"] is None
            else [s - m for s, m in zip(out["swapped_actions_error"], sums.mean("_model_on_swapped"))]
        )
        out.update(
            action_sensitivity=None if diff is None else sum(diff) / len(diff),
            action_sensitivity_stderr=sums.stderr("_swap_diff_per_clip"),
            swap_skipped_clips=swap_skipped,
        )
    if condition_gain:
        labels = [*CONDITIONS, *(f"{c}_alone" for c in CONDITIONS)]
        out["condition_gain"] = {c: _gain(gain_sums, c) for c in labels if gain_sums.n[f"{c}_true_error"]}
    if keep_predictions:
        out["examples"] = kept
    return out


def _conditions(condition_gain: bool | tuple[str, ...]) -> tuple[str, ...]:
    if isinstance(condition_gain, bool):
        return CONDITIONS if condition_gain else ()
    if unknown := set(condition_gain) - set(CONDITIONS):
        raise ValueError(f"rollout_errors: condition_gain {sorted(unknown)} unknown; choose from {CONDITIONS}")
    return tuple(condition_gain)


def _summary(sums: _Sums, horizon: int, skipped: int, num_samples: int) -> dict:
    return {
        "horizons": list(range(1, horizon + 1)),
        **{k: sums.mean(k) for k in sums.keys()},
        "num_clips": sums.n["model_error"],
        "skipped_clips": skipped,
        "num_samples": num_samples,
        "by_group": {
            g: {**{k: sums.mean(k, g) for k in sums.keys(g)}, "num_clips": sums.group_n[g]["model_error"]}
            for g in sums.groups
        },
    }


def gain_scalars(condition_gain: dict) -> dict[str, float]:
    """rollout_errors' `condition_gain` -> flat scalars for the run log: {cond}_gain_h<h>, {cond}_gain_mean,
    {cond}_null_gain_mean (conditions and horizons that were measured)."""
    out = {}
    for cond, g in condition_gain.items():
        if g.get("gain"):
            out.update({f"{cond}_gain_h{h}": v for h, v in enumerate(g["gain"], start=1)})
            out[f"{cond}_gain_mean"] = sum(g["gain"]) / len(g["gain"])
            if g.get("gain_stderr") is not None:
                out[f"{cond}_gain_stderr"] = g["gain_stderr"]
        if g.get("null_gain"):
            out[f"{cond}_null_gain_mean"] = sum(g["null_gain"]) / len(g["null_gain"])
    return out


def _gain(sums: _Sums, cond: str) -> dict:
    true, shuffled, null = (sums.mean(f"{cond}_{k}_error") for k in ("true", "shuffled", "null"))
    diff = lambda other, base: None if other is None else [o - t for o, t in zip(other, base)]  # noqa: E731
    return {
        "true": true,
        "shuffled": shuffled,
        "null": null,
        "gain": diff(shuffled, sums.mean(f"_{cond}_true_on_shuffled")),
        "null_gain": diff(null, true),
        "gain_stderr": sums.stderr(f"_{cond}_gain_per_clip"),
        "gain_stderr_by_horizon": sums.stderr_by_horizon(f"_{cond}_gain_per_clip"),
        "num_clips": sums.n[f"{cond}_true_error"],
    }
