import numpy as np
import pytest
import torch

from latentwm.data.batch import ClipSample, WorldBatch, WorldBatchMetadata, collate


def _sample(T, A=2, N=4, D=3, mask=None, ep="e0", with_actions=True):
    return ClipSample(
        latents=torch.randn(T, N, D),
        actions=torch.randn(T, A) if with_actions else None,
        action_mask=None if mask is None else torch.tensor(mask),
        rewards=torch.arange(T, dtype=torch.float32),
        meta=WorldBatchMetadata(
            "pusht", ep, camera="main", start_frame=3, frame_stride=5, fps=2.0, text=("push",), success=True
        ),
    )


def test_collate_pads_and_masks():
    s0, s1 = _sample(5), _sample(3, mask=[True, False, True], ep="e1")
    s2 = _sample(4, with_actions=False, ep="video")
    b = collate([s0, s1, s2], action_dim=10)
    assert b.latents.shape == (3, 5, 4, 3)
    assert b.actions.shape == (3, 5, 10)
    assert b.valid.tolist() == [[True] * 5, [True] * 3 + [False] * 2, [True] * 4 + [False]]
    assert b.action_mask.tolist() == [[True] * 5, [True, False, True, False, False], [False] * 5]
    # actions zero-padded to the model's width, unknown actions zeroed, padding zeroed
    assert torch.equal(b.actions[0, :, :2], s0.actions) and (b.actions[:, :, 2:] == 0).all()
    assert (b.actions[1, 1] == 0).all() and (b.actions[2] == 0).all()
    assert torch.equal(b.latents[1, :3], s1.latents) and (b.latents[1, 3:] == 0).all()
    assert b.rewards[1].tolist() == [0, 1, 2, 0, 0]
    # metadata round trip, in order
    assert [m.episode_id for m in b.meta] == ["e0", "e1", "video"]
    assert b.meta[1] == s1.meta


def test_collate_rejects_bad_samples():
    with pytest.raises(ValueError, match="action dim 12.*action_dim 10"):
        collate([_sample(3, A=12)], action_dim=10)
    bad = _sample(3)
    bad.latents = torch.randn(3, 5, 3)
    with pytest.raises(ValueError, match="latents"):
        collate([_sample(3), bad], action_dim=4)
    with pytest.raises(ValueError, match="empty"):
        collate([], action_dim=4)


def test_to_pin_and_select():
    b = collate([_sample(4), _sample(2, ep="e1")], action_dim=4)
    moved = b.to("cpu")
    assert isinstance(moved, WorldBatch) and moved.meta == b.meta
    if torch.cuda.is_available():  # pinning needs an accelerator runtime
        assert b.pin_memory().latents.is_pinned()
    one = b[1]
    assert one.batch_size == 1 and one.meta[0].episode_id == "e1"
    assert torch.equal(one.latents, b.latents[1:2])


def test_worldbatch_shape_contract():
    with pytest.raises(ValueError, match="actions.*leading shape"):
        WorldBatch(
            actions=torch.zeros(2, 4, 3),
            action_mask=torch.zeros(2, 5, dtype=torch.bool),
            valid=torch.ones(2, 5, dtype=torch.bool),
            latents=torch.zeros(2, 5, 4, 3),
        )
    with pytest.raises(ValueError, match="latents.*frames"):
        WorldBatch(
            actions=torch.zeros(2, 5, 3),
            action_mask=torch.zeros(2, 5, dtype=torch.bool),
            valid=torch.ones(2, 5, dtype=torch.bool),
        )


def test_dataloader_pin_memory_protocol():
    # DataLoader calls .pin_memory() on custom batch types; make sure the hook exists and keeps metadata
    b = collate([_sample(2)], action_dim=2)
    assert hasattr(b, "pin_memory") and np.asarray(b.valid).all()
