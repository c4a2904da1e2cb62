import pytest
import torch

from latentwm.config import ObjectiveConfig
from latentwm.objectives.shortcut_forcing import (ShortcutForcing, bootstrap_target, corrupt, levels_from_draws,
                                                  ramp_weight, sample_levels, velocity)


def oracle(x_true):
    """The exact denoiser of a point mass: whatever z, τ, d, it returns the clean latent."""
    return lambda z, tau, step, actions=None, mask=None: x_true.clone()


def test_corrupt_endpoints_and_velocity():
    x, eps = torch.randn(2, 3, 4, 5), torch.randn(2, 3, 4, 5)
    assert torch.allclose(corrupt(x, torch.ones(2, 3), eps), x)
    assert torch.allclose(corrupt(x, torch.zeros(2, 3), eps), eps)
    tau = torch.full((2, 3), 0.25)
    z = corrupt(x, tau, eps)
    assert torch.allclose(velocity(x, z, tau), x - eps, atol=1e-6)  # straight path: v = x − ε


def test_flow_target_near_clean_is_x():
    # at τ = 1 − 1/K_max the input is almost clean; the flow target is x and an exact model has zero loss
    k = 64
    x = torch.randn(2, 4, 8, 6)
    obj = ShortcutForcing(ObjectiveConfig(bootstrap_fraction=0.0), k)
    loss, m = obj(oracle(x), x)
    assert loss.item() == 0 and m["loss_flow"].item() == 0
    z = corrupt(x, torch.full((2, 4), 1 - 1 / k), torch.randn_like(x))
    assert (z - x).abs().max() < 0.1


def test_bootstrap_target_equals_flow_target_for_exact_model(device):
    x = torch.randn(3, 5, 8, 6, device=device)
    tau, step = sample_levels(3, 5, 64, torch.ones(3, dtype=torch.bool), device=device)
    z = corrupt(x, tau, torch.randn_like(x))
    target = bootstrap_target(oracle(x), z, tau, step, None, None)
    torch.testing.assert_close(target, x, atol=1e-5, rtol=1e-5)
    obj = ShortcutForcing(ObjectiveConfig(bootstrap_fraction=1.0, bootstrap_start=0), 64)
    loss, m = obj(oracle(x), x)
    assert m["bootstrap_frac"].item() == 1.0 and loss.item() < 1e-9


def test_bootstrap_target_is_two_half_steps_of_a_linear_model():
    # a non-exact model: x̂ = a·z. Check the target against the half-step formula written out by hand.
    a = 0.7
    model = lambda z, tau, step, actions=None, mask=None: a * z  # noqa: E731
    z = torch.randn(1, 1, 2, 3)
    tau, d = torch.tensor([[0.25]]), torch.tensor([[0.5]])
    b1 = (a * z - z) / 0.75
    z1 = z + b1 * 0.25
    b2 = (a * z1 - z1) / 0.5
    expected = z + 0.75 * (b1 + b2) / 2
    torch.testing.assert_close(bootstrap_target(model, z, tau, d, None, None), expected)


def test_levels_lie_on_the_grid():
    torch.manual_seed(1)
    boot = torch.tensor([True, False] * 50)
    tau, step = sample_levels(100, 16, 64, boot)
    assert (step[~boot] == 1 / 64).all()
    assert (step[boot] > 1 / 64).all() and (step[boot] <= 1).all()
    assert torch.allclose(torch.log2(step), torch.round(torch.log2(step)))
    k = tau / step
    assert torch.allclose(k, torch.round(k)) and (tau <= 1 - step + 1e-7).all() and (tau >= 0).all()
    # every coarse step size occurs
    assert set(torch.unique(step[boot]).tolist()) == {2 ** -i for i in range(0, 6)}
    t, s = levels_from_draws(torch.tensor([True]), torch.tensor([[5]]), torch.tensor([[0.999]]), 64)
    assert s.item() == 1.0 and t.item() == 0.0  # d = 1: only τ = 0


def test_bootstrap_fraction_and_warmup():
    x = torch.randn(400, 2, 1, 1)
    obj = ShortcutForcing(ObjectiveConfig(bootstrap_fraction=0.25, bootstrap_start=100), 64)
    boot, *_ = obj.draw(x, global_step=99)
    assert not boot.any()
    boot, *_ = obj.draw(x, global_step=100)
    assert 0.18 < boot.float().mean() < 0.32


def test_valid_mask_and_weights():
    x = torch.randn(2, 4, 3, 2)
    bad = lambda z, tau, step, a=None, m=None: torch.where(  # noqa: E731
        torch.arange(4)[None, :, None, None] >= 2, torch.full_like(z, 1e3), x)
    valid = torch.tensor([[True, True, False, False]] * 2)
    obj = ShortcutForcing(ObjectiveConfig(bootstrap_fraction=0.0), 8)
    loss, _ = obj(bad, x, valid=valid)
    assert loss.item() == 0  # huge errors on padded frames count for nothing
    assert ramp_weight(torch.tensor(1.0)) == 1.0 and abs(ramp_weight(torch.tensor(0.0)) - 0.1) < 1e-7


def test_seeded_draws_do_not_depend_on_batch_split(device):
    obj = ShortcutForcing(ObjectiveConfig(bootstrap_fraction=0.5, bootstrap_start=0), 16)
    x = torch.zeros(4, 3, 2, 2, device=device)
    full = obj.draw(x, 10, seeds=[11, 12, 13, 14])
    a = obj.draw(x[:2], 10, seeds=[11, 12])
    b = obj.draw(x[2:], 10, seeds=[13, 14])
    for f, p, q in zip(full, a, b):
        assert torch.equal(f, torch.cat([p, q]))
    again = obj.draw(x, 10, seeds=[11, 12, 13, 14])
    assert all(torch.equal(u, v) for u, v in zip(full, again))
    with pytest.raises(ValueError, match="seeds"):
        obj.draw(x, 10, seeds=[1])


def test_metrics_split_by_term_and_tau_bucket():
    x = torch.randn(8, 4, 2, 2)
    obj = ShortcutForcing(ObjectiveConfig(bootstrap_fraction=0.5, bootstrap_start=0, tau_buckets=4), 16)
    model = lambda z, tau, step, a=None, m=None: 0.5 * z  # noqa: E731
    loss, m = obj(model, x)
    assert {"loss", "loss_flow", "loss_bootstrap", "bootstrap_frac"} <= set(m)
    assert len([k for k in m if k.startswith("loss_tau/")]) == 4
    assert torch.isfinite(loss)
