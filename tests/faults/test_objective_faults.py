"""Fault injection on the shortcut-forcing objective: how many sequences bootstrap, NaN in padded frames."""

import pytest
import torch

from latentwm.conditions import Conditions
from latentwm.config import ObjectiveConfig, get_preset
from latentwm.engine.loop import sample_seed
from latentwm.model.dynamics import DynamicsModel
from latentwm.objectives.shortcut_forcing import ShortcutForcing, TrainStep


def _micro_seeds(run_seed, micro, G, rank=0, world=1):
    """The seeds the Trainer gives one rank's share of global micro-batch `micro` (Trainer._micro_seeds)."""
    m = G // world
    base = micro * G + rank * m
    return [sample_seed(run_seed, k) for k in range(base, base + m)]


@pytest.mark.parametrize("fraction,G", [(0.25, 4), (0.25, 8), (0.5, 4), (0.125, 16), (0.75, 4)])
def test_every_global_batch_has_exactly_round_f_times_b_bootstrap_sequences(fraction, G):
    """Before: a coin flip per sequence, so with batch 4 about 30% of the batches had no bootstrap sequence."""
    obj = ShortcutForcing(ObjectiveConfig(bootstrap_fraction=fraction, bootstrap_start=0), 64)
    x = torch.zeros(G, 2, 1, 1)
    want = round(fraction * G)
    for run_seed in (0, 1, 12345):
        for micro in range(200):
            boot, *_ = obj.draw(x, 10, seeds=_micro_seeds(run_seed, micro, G))
            assert int(boot.sum()) == want, (run_seed, micro)
            # the same global micro-batch split over 2 ranks decides every sample the same way (DDP == 1 process)
            halves = [obj.draw(x[: G // 2], 10, seeds=_micro_seeds(run_seed, micro, G, r, 2))[0] for r in (0, 1)]
            assert torch.equal(torch.cat(halves), boot)
    for _ in range(200):  # without seeds (the global RNG) every batch is exact too
        boot, *_ = obj.draw(x, 10)
        assert int(boot.sum()) == want


def test_bootstrap_count_never_rounds_a_fraction_away():
    """When f·B is not whole the count is ⌊f·B⌋ or ⌈f·B⌉ and the long-run fraction is f (B = 2, f = 0.25 must still
    bootstrap a quarter of the sequences, not round(0.5) = 0)."""
    obj = ShortcutForcing(ObjectiveConfig(bootstrap_fraction=0.25, bootstrap_start=0), 64)
    for G in (2, 6):
        x = torch.zeros(G, 2, 1, 1)
        counts = [int(obj.draw(x, 10, seeds=_micro_seeds(3, micro, G))[0].sum()) for micro in range(400)]
        assert set(counts) == {int(0.25 * G), int(0.25 * G) + 1}
        assert sum(counts) / (400 * G) == pytest.approx(0.25, abs=0.01)
        counts = [int(obj.draw(x, 10)[0].sum()) for _ in range(400)]
        assert set(counts) == {int(0.25 * G), int(0.25 * G) + 1}
        assert sum(counts) / (400 * G) == pytest.approx(0.25, abs=0.04)


def test_nan_in_padded_frames_does_not_poison_the_loss_or_the_gradients():
    """Before: the loss was Σ w·ℓ with w = 0 on padding, but 0·NaN = NaN: one NaN in a padded frame made the loss
    and every gradient NaN."""
    cfg = get_preset("tiny").model
    torch.manual_seed(0)
    model = DynamicsModel(cfg)
    obj = ShortcutForcing(ObjectiveConfig(bootstrap_fraction=0.5, bootstrap_start=0), cfg.k_max)
    B, T = 4, 4
    x = torch.randn(B, T, cfg.num_latent_tokens, cfg.latent_dim)
    valid = torch.ones(B, T, dtype=torch.bool)
    valid[1, 2:] = valid[3, 3:] = False
    zeros = torch.where(valid[..., None, None], x, 0.0)
    nans = torch.where(valid[..., None, None], x, float("nan"))
    actions = torch.randn(B, T, cfg.action_dim)
    mask = valid.clone()
    seeds = [sample_seed(0, k) for k in range(B)]

    def run(latents):
        model.zero_grad(set_to_none=True)
        loss, metrics = obj(model, latents, Conditions(actions, mask), valid, TrainStep(1, seeds=seeds))
        loss.backward()
        return loss.detach(), metrics, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    loss0, m0, g0 = run(zeros)
    loss1, m1, g1 = run(nans)
    assert torch.isfinite(loss1) and torch.equal(loss1, loss0)
    assert all(torch.isfinite(v).all() for v in m1.values())
    assert g1.keys() == g0.keys() and all(torch.equal(g1[n], g0[n]) for n in g0)


def test_stream_position_inverts_the_trainers_sample_seed():
    """The objective recovers a sample's stream position from its seed; this holds it in step with the trainer."""
    from latentwm.objectives.shortcut_forcing import SEED_MODULUS, stream_position

    for run_seed in (0, 7, 2**40 + 3):
        j0 = stream_position(sample_seed(run_seed, 0))
        assert [(stream_position(sample_seed(run_seed, k)) - j0) % SEED_MODULUS for k in (1, 2, 1000, 10**9)] == [
            1,
            2,
            1000,
            10**9,
        ]
