import dataclasses

import pytest
import torch

from latentwm.config import ObjectiveConfig, get_preset
from latentwm.config.base import ConfigError
from latentwm.model.dynamics import DynamicsModel
from latentwm.objectives.shortcut_forcing import (
    ShortcutForcing,
    TrainStep,
    bootstrap_target,
    corrupt,
    levels_from_draws,
    ramp_weight,
    sample_levels,
    shift_levels,
    velocity,
)


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
    target = bootstrap_target(oracle(x), z, tau, step)
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
    torch.testing.assert_close(bootstrap_target(model, z, tau, d), expected)


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
    assert set(torch.unique(step[boot]).tolist()) == {2**-i for i in range(0, 6)}
    t, s = levels_from_draws(torch.tensor([True]), torch.tensor([[5]]), torch.tensor([[0.999]]), 64)
    assert s.item() == 1.0 and t.item() == 0.0  # d = 1: only τ = 0


def test_noise_shift_moves_levels_toward_noise_on_the_grid():
    """s = 1 is the uniform grid exactly; s > 1 keeps every level on its step's grid and trains the pure-noise
    level with probability s·c / (1 + (s − 1)·c) for a grid cell c = 1/k_max (the config's documented share)."""
    torch.manual_seed(0)
    boot = torch.zeros(4000, dtype=torch.bool)
    exp, u = torch.zeros(4000, 8, dtype=torch.long), torch.rand(4000, 8)
    plain = levels_from_draws(boot, exp, u, 32)
    same = levels_from_draws(boot, exp, u, 32, 1.0)
    assert torch.equal(plain[0], same[0]) and torch.equal(plain[1], same[1]) and shift_levels(u, 1.0) is u
    tau, step = levels_from_draws(boot, exp, u, 32, 8.0)
    assert torch.equal(step, plain[1]) and torch.allclose(tau / step, torch.round(tau / step))
    assert (tau <= 1 - step + 1e-7).all() and (tau >= 0).all() and (tau <= plain[0]).all()  # monotone: never cleaner
    c = 1 / 32
    expected = 8 * c / (1 + 7 * c)  # 0.205 vs 1/32 uniform
    assert abs((tau == 0).float().mean().item() - expected) < 0.01
    assert abs((plain[0] == 0).float().mean().item() - c) < 0.005
    assert shift_levels(torch.tensor([0.0, 1.0]), 3.0).tolist() == [0.0, 1.0]
    for bad in (0.5, float("nan"), float("inf")):
        with pytest.raises(ConfigError, match="objective.noise_shift"):
            ObjectiveConfig(noise_shift=bad)
    # the loss reads the field: the same draws at noisier levels weigh less under w(τ) (a zero prediction's error
    # is the same at every level)
    x, seeds = torch.randn(4, 3, 2, 2), TrainStep(seeds=[1, 2, 3, 4])
    a, _ = ShortcutForcing(ObjectiveConfig(bootstrap_fraction=0.0), 32)(oracle(x * 0), x, at=seeds)
    b, _ = ShortcutForcing(ObjectiveConfig(bootstrap_fraction=0.0, noise_shift=8.0), 32)(oracle(x * 0), x, at=seeds)
    assert torch.isfinite(b) and b.item() < a.item()


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
        torch.arange(4)[None, :, None, None] >= 2, torch.full_like(z, 1e3), x
    )
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


# ------------------------------------------------------------------------------------------------ clean context


def _tiny_model(**kw):
    """A perturbed tiny dynamics model (frames interact through time attention)."""
    torch.manual_seed(0)
    m = DynamicsModel(dataclasses.replace(get_preset("tiny").model, attention="eager", text_dim=0, **kw))
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return m


def test_clean_context_prefix_is_clean_and_out_of_the_loss():
    cfg = ObjectiveConfig(bootstrap_fraction=0.0, clean_context=1.0, action_dropout=0.0, text_dropout=0.0)
    obj = ShortcutForcing(cfg, 8)
    x, seeds = torch.randn(5, 6, 16, 64), [21, 22, 23, 24, 25]
    _, tau, step, _, _, _ = obj.draw(x, 0, seeds)
    clean = tau == 1.0
    lengths = clean.sum(1)
    assert ((lengths >= 1) & (lengths <= 5)).all()
    assert torch.equal(clean, torch.arange(6)[None] < lengths[:, None])  # a prefix
    assert (step[clean] == 1 / 8).all() and (tau[~clean] < 1).all()
    x2 = torch.where(clean[..., None, None], x + 3.0, x)  # other clean prefix frames
    local = lambda z, tau, step, a=None, m=None: 0.7 * z  # noqa: E731  (frames do not interact)
    assert obj(local, x, at=TrainStep(seeds=seeds))[0].item() == obj(local, x2, at=TrainStep(seeds=seeds))[0].item()
    real = _tiny_model()
    l1, m1 = obj(real, x, at=TrainStep(seeds=seeds))
    l2, _ = obj(real, x2, at=TrainStep(seeds=seeds))
    assert abs(l1.item() - l2.item()) > 1e-6  # they do reach the loss, as context through attention
    torch.testing.assert_close(m1["clean_context_frac"], clean.float().mean())
    # v-space: τ = 1 must not divide by zero, in the loss or its gradient
    lv, _ = ShortcutForcing(cfg, 8, prediction="v")(_tiny_model(prediction="v"), x, at=TrainStep(seeds=seeds))
    lv.backward()
    assert torch.isfinite(lv)


def test_clean_context_draws_come_after_every_other_draw():
    x = torch.randn(6, 5, 2, 3)
    base = ShortcutForcing(ObjectiveConfig(bootstrap_fraction=0.5, bootstrap_start=0, action_dropout=0.5), 8)
    more = ShortcutForcing(
        ObjectiveConfig(bootstrap_fraction=0.5, bootstrap_start=0, action_dropout=0.5, clean_context=0.7), 8
    )
    for seeds in ([1, 2, 3, 4, 5, 6], None):  # per-sample generators, and the global RNG
        torch.manual_seed(3)
        a = base.draw(x, 0, seeds)
        torch.manual_seed(3)
        b = more.draw(x, 0, seeds)
        for i in (0, 3, 4, 5):  # bootstrap choice, noise, condition dropout: the same
            assert torch.equal(a[i], b[i])
        prefix = b[1] == 1.0
        assert prefix.any() and not (a[1] == 1.0).any()
        assert torch.equal(a[1][~prefix], b[1][~prefix]) and torch.equal(a[2][~prefix], b[2][~prefix])


def test_clean_context_fraction_and_lengths():
    obj = ShortcutForcing(ObjectiveConfig(clean_context=0.3), 8)
    x = torch.zeros(3000, 5, 1, 1)
    tau = obj.draw(x, 0, seeds=list(range(3000)))[1]
    lengths = (tau == 1.0).sum(1)
    assert abs((lengths > 0).float().mean().item() - 0.3) < 0.03
    counts = torch.bincount(lengths[lengths > 0], minlength=5)[1:]  # 1..T−1 = 4 lengths, about equally often
    assert counts.min() > 0.7 * counts.float().mean()


def test_bootstrap_teacher_sees_the_clean_prefix():
    calls = []

    def model(z, tau, step, a=None, m=None):
        calls.append((z.clone(), tau.clone(), step.clone()))
        return 0.5 * z

    obj = ShortcutForcing(ObjectiveConfig(bootstrap_fraction=1.0, bootstrap_start=0, clean_context=1.0), 8)
    x = torch.randn(3, 4, 2, 2)
    loss, _ = obj(model, x, at=TrainStep(seeds=[7, 8, 9]))
    assert torch.isfinite(loss) and len(calls) == 3  # the student, then the teacher's two half steps
    clean = calls[0][1] == 1.0
    assert clean.any()
    for z, tau, step in calls:
        assert torch.equal(tau == 1.0, clean) and (step[clean] == 1 / 8).all()
        torch.testing.assert_close(z[clean], x[clean])  # z = x on the prefix, in every pass
