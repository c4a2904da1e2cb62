"""Fault injection on batches of a single sample: one held-out clip must evaluate, not crash."""

import torch

from latentwm.config import get_preset
from latentwm.data.batch import ClipSample, WorldBatchMetadata, collate
from latentwm.eval.metrics import EvalOptions, rollout_errors
from latentwm.model.dynamics import DynamicsModel

CFG = get_preset("tiny").model


def _clip(i, T):
    return ClipSample(
        latents=torch.randn(T, CFG.num_latent_tokens, CFG.latent_dim),
        actions=torch.randn(T, 2),
        meta=WorldBatchMetadata("toy", f"ep{i}", start_frame=i),
    )


def test_selecting_one_sample_keeps_the_batch_dimension_and_its_metadata():
    """Before: `batch[index]` with a one-element index tensor indexed the metadata with a 0-d array and raised
    TypeError ('WorldBatchMetadata' object is not iterable)."""
    one = collate([_clip(0, 4)], action_dim=CFG.action_dim)
    for idx in (torch.tensor([0]), torch.tensor([True]), torch.tensor(0), 0, slice(0, 1), [0]):
        b = one[idx]
        assert b.batch_size == 1 and b.latents.shape[0] == 1 and [m.episode_id for m in b.meta] == ["ep0"]
    two = collate([_clip(0, 4), _clip(1, 3)], action_dim=CFG.action_dim)
    assert [m.episode_id for m in two[torch.tensor([False, True])].meta] == ["ep1"]
    assert [m.episode_id for m in two[torch.tensor(1)].meta] == ["ep1"]


def test_eval_with_exactly_one_held_out_clip():
    model = DynamicsModel(CFG).eval()
    for clips in ([_clip(0, 4)], [_clip(0, 4), _clip(1, 2)]):  # one clip; one usable clip beside a short one
        out = rollout_errors(
            model,
            [collate(clips, action_dim=CFG.action_dim)],
            context=2,
            horizon=2,
            options=EvalOptions(sample_steps=1),
        )
        assert out["num_clips"] == 1 and out["skipped_clips"] == len(clips) - 1
        assert list(out["by_group"]) == ["toy/main"]
