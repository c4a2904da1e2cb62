"""Rollout metrics: latent error per horizon step against ground truth and the copy-last-frame baseline."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

import torch

from latentwm.data.batch import WorldBatch
from latentwm.rollout import rollout


def latent_mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error per sample and frame over tokens and channels: (B, H, N, D) x2 -> (B, H)."""
    return (pred.float() - target.float()).pow(2).mean(dim=(-2, -1))


@torch.no_grad()
def rollout_errors(model, batches: Iterable[WorldBatch], context: int, horizon: int, sample_steps: int = 4,
                   tau_ctx: float = 1.0, seed: int = 0, device: torch.device | str = "cpu",
                   keep_predictions: int = 0) -> dict:
    """Roll out `horizon` frames after `context` observed ones on every clip; compare with the truth.

    Clips must hold at least context + horizon valid frames (shorter ones are skipped and counted). Errors are
    latent MSE in the model's (normalized) latent space, per horizon step, averaged over clips, overall and per
    dataset/camera group. The copy-last baseline repeats the last observed frame. Fixed noise seed: evaluations
    of two checkpoints see the same noise.
    """
    total_m = torch.zeros(horizon, dtype=torch.float64)
    total_c = torch.zeros(horizon, dtype=torch.float64)
    groups: dict[str, list] = defaultdict(lambda: [torch.zeros(horizon, dtype=torch.float64),
                                                   torch.zeros(horizon, dtype=torch.float64), 0])
    n = skipped = 0
    kept = []
    gen = torch.Generator(device=device).manual_seed(seed)
    need = context + horizon
    for batch in batches:
        ok = batch.valid[:, :need].all(dim=1) if batch.seq_len >= need else torch.zeros(batch.batch_size,
                                                                                          dtype=torch.bool)
        skipped += int((~ok).sum())
        if not ok.any():
            continue
        b = batch[ok.nonzero().squeeze(1)].to(device)
        x = b.latents[:, :need]
        pred = rollout(model, x[:, :context], horizon, actions=b.actions[:, : need - 1],
                       action_mask=b.action_mask[:, : need - 1], sample_steps=sample_steps, tau_ctx=tau_ctx,
                       generator=gen)
        truth = x[:, context:]
        err_m = latent_mse(pred, truth).double().cpu()  # (B, H)
        err_c = latent_mse(x[:, context - 1 : context].expand_as(truth), truth).double().cpu()
        total_m += err_m.sum(0)
        total_c += err_c.sum(0)
        for i, meta in enumerate(b.meta):
            g = groups[f"{meta.dataset}/{meta.camera}"]
            g[0] += err_m[i]
            g[1] += err_c[i]
            g[2] += 1
        n += x.shape[0]
        if len(kept) < keep_predictions:
            kept.append((truth[: keep_predictions - len(kept)].cpu(), pred[: keep_predictions - len(kept)].cpu(),
                         x[: keep_predictions - len(kept), :context].cpu()))
    if n == 0:
        raise ValueError(f"rollout_errors: no clip has {need} valid frames (context {context} + horizon {horizon}); "
                         f"{skipped} clips skipped")
    out = {
        "horizons": list(range(1, horizon + 1)),
        "model_error": (total_m / n).tolist(),
        "copy_last_error": (total_c / n).tolist(),
        "num_clips": n,
        "skipped_clips": skipped,
        "by_group": {k: {"model_error": (v[0] / v[2]).tolist(), "copy_last_error": (v[1] / v[2]).tolist(),
                         "num_clips": v[2]} for k, v in groups.items()},
    }
    if keep_predictions:
        out["examples"] = kept
    return out
