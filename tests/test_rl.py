"""Offline RL pieces: two-hot / symlog, λ-returns, the tanh-Gaussian policy, PMPO's update direction, heads."""

import math

import pytest
import torch

from latentwm.config import RLConfig
from latentwm.rl.heads import AgentHeads, TanhGaussian
from latentwm.rl.pmpo import gaussian_kl, pmpo_loss
from latentwm.rl.returns import TwoHot, lambda_returns, symexp, symlog


def test_symlog_and_two_hot_round_trip():
    x = torch.tensor([-1000.0, -3.5, -0.2, 0.0, 0.7, 12.0, 5e4])
    torch.testing.assert_close(symexp(symlog(x)), x, rtol=1e-5, atol=1e-5)
    th = TwoHot(255)
    t = th.encode(x)
    assert t.shape == (7, 255)
    torch.testing.assert_close(t.sum(-1), torch.ones(7))
    assert int((t > 0).sum(-1).max()) <= 2  # at most two neighbouring bins
    # logits = log(two-hot) decode back to the value (the mean of the two-hot in symlog space is exact)
    torch.testing.assert_close(th.decode(torch.log(t + 1e-30)), x, rtol=1e-4, atol=1e-4)
    assert th.loss(torch.log(t + 1e-30), x).shape == (7,)


def test_lambda_returns_match_a_hand_computed_example():
    r = torch.tensor([[1.0, 0.0, 2.0]])
    v = torch.tensor([[0.5, 1.0, 2.0, 4.0]])
    c = torch.tensor([[1.0, 1.0, 1.0]])
    g, lam = 0.9, 0.5
    R2 = 2.0 + g * 4.0  # bootstraps from V(s3)
    R1 = 0.0 + g * ((1 - lam) * 2.0 + lam * R2)
    R0 = 1.0 + g * ((1 - lam) * 1.0 + lam * R1)
    torch.testing.assert_close(lambda_returns(r, v, c, g, lam), torch.tensor([[R0, R1, R2]]))
    # an ended episode stops bootstrapping: continues 0 at step 2 -> R1 = r_2 only
    c2 = torch.tensor([[1.0, 0.0, 1.0]])
    out = lambda_returns(r, v, c2, g, lam)
    assert out[0, 1] == pytest.approx(0.0) and out[0, 0] == pytest.approx(1.0 + g * (1 - lam) * 1.0)
    # λ = 1, γ = 1: plain sum of rewards + the final value
    torch.testing.assert_close(lambda_returns(r, v, torch.ones(1, 3), 1.0, 1.0), torch.tensor([[7.0, 6.0, 6.0]]))
    with pytest.raises(ValueError, match="values"):
        lambda_returns(r, v[:, :3], c)


def test_tanh_gaussian_density_and_bounds():
    low, high = torch.tensor([-2.0, 0.0, 1.0]), torch.tensor([2.0, 0.0, 3.0])  # middle dim pinned
    d = TanhGaussian(torch.tensor([0.3, 5.0, -0.2]), torch.log(torch.tensor([0.5, 1.0, 0.8])), low, high)
    a = torch.stack([d.sample(torch.Generator().manual_seed(i)) for i in range(2000)])
    assert bool(((a >= low) & (a <= high)).all()) and bool((a[:, 1] == 0).all())
    # the density integrates to 1 over the free 2-D box (grid quadrature)
    xs = torch.linspace(-2 + 1e-3, 2 - 1e-3, 400)
    ys = torch.linspace(1 + 1e-3, 3 - 1e-3, 400)
    X, Y = torch.meshgrid(xs, ys, indexing="ij")
    pts = torch.stack([X.flatten(), torch.zeros(X.numel()), Y.flatten()], -1)
    mass = d.log_prob(pts).exp().sum() * (xs[1] - xs[0]) * (ys[1] - ys[0])
    assert float(mass) == pytest.approx(1.0, abs=0.03)


def test_pmpo_moves_toward_positive_and_away_from_negative_actions():
    """A one-state bandit: actions near +0.8 have positive advantage, near −0.8 negative."""
    torch.manual_seed(0)
    heads = AgentHeads(4, 1, torch.tensor([-1.0]), torch.tensor([1.0]), hidden=32)
    prior = AgentHeads(4, 1, torch.tensor([-1.0]), torch.tensor([1.0]), hidden=32)
    prior.load_state_dict(heads.state_dict())
    opt = torch.optim.Adam(heads.policy.parameters(), lr=3e-3)
    s = torch.ones(256, 4)
    gen = torch.Generator().manual_seed(1)
    start = float(heads.dist(s[:1]).mode().detach())
    for _ in range(150):
        with torch.no_grad():
            a = heads.dist(s).sample(gen)
        adv = torch.where(a[:, 0] > 0, 1.0, -1.0) * (a[:, 0].abs() > 0.2)
        d = heads.dist(s)
        with torch.no_grad():
            pd = prior.dist(s)
        loss, stats = pmpo_loss(d.log_prob(a), adv, gaussian_kl(d, pd), beta=0.01)
        opt.zero_grad()
        loss.backward()
        opt.step()
    end = heads.dist(s[:1])
    assert float(end.mode().detach()) > start + 0.5  # toward the positive-advantage actions
    with torch.no_grad():
        assert float(end.log_prob(torch.tensor([[0.8]]))) > float(end.log_prob(torch.tensor([[-0.8]]))) + 2.0
    # the negative set alone pushes likelihood down, the positive set alone up
    d = heads.dist(s[:2])
    a = torch.tensor([[0.5], [0.5]])
    lp = d.log_prob(a)
    g_pos = torch.autograd.grad(pmpo_loss(lp, torch.tensor([1.0, 1.0]))[0], lp, retain_graph=True)[0]
    g_neg = torch.autograd.grad(pmpo_loss(lp, torch.tensor([-1.0, -1.0]))[0], lp)[0]
    assert bool((g_pos < 0).all()) and bool((g_neg > 0).all())


def test_reward_and_value_heads_fit_a_known_reward():
    torch.manual_seed(0)
    heads = AgentHeads(8, 2, -torch.ones(2), torch.ones(2), hidden=64, reward_steps=3)
    x = torch.randn(512, 8)
    target = 3.0 * torch.tanh(x[:, 0]) + x[:, 1] ** 2  # rewards of the next 3 steps: r, r/2, 0
    rt = torch.stack([target, target / 2, torch.zeros_like(target)], -1)
    opt = torch.optim.Adam(heads.parameters(), lr=3e-3)
    for _ in range(400):
        loss = (
            heads.twohot.loss(heads.reward_logits(x), rt).mean()
            + heads.twohot.loss(heads.value_logits(x), target).mean()
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
    xt = torch.randn(256, 8)
    tt = 3.0 * torch.tanh(xt[:, 0]) + xt[:, 1] ** 2
    err = (heads.predict_reward(xt) - tt).abs().mean()
    assert float(err) < 0.25 * float(tt.std())
    assert float((heads.predict_value(xt) - tt).abs().mean()) < 0.25 * float(tt.std())
    second = heads.twohot.decode(heads.reward_logits(xt)[..., 1, :])
    assert float((second - tt / 2).abs().mean()) < 0.25 * float(tt.std())


def test_heads_check_their_inputs():
    with pytest.raises(ValueError, match="low/high"):
        AgentHeads(4, 2, torch.zeros(3), torch.ones(3))
    h = AgentHeads(4, 2, -torch.ones(2), torch.ones(2), goal_dim=3)
    with pytest.raises(ValueError, match="goal_dim"):
        h.dist(torch.zeros(5, 4))
    assert h.dist(torch.zeros(5, 4), torch.zeros(3)).sample().shape == (5, 2)
    assert math.isfinite(float(h.dist(torch.zeros(1, 4), torch.zeros(3)).entropy()))


def _tiny_model():
    from latentwm.config import get_preset
    from latentwm.model.dynamics import DynamicsModel

    torch.manual_seed(0)
    return DynamicsModel(get_preset("tiny").model).eval().requires_grad_(False)


def _batch(model, B=3, T=5):
    from latentwm.data.batch import WorldBatch

    c = model.cfg
    g = torch.Generator().manual_seed(0)
    return WorldBatch(
        latents=torch.randn(B, T, c.num_latent_tokens, c.latent_dim, generator=g),
        actions=torch.rand(B, T, c.action_dim, generator=g) * 2 - 1,
        action_mask=torch.ones(B, T, dtype=torch.bool),
        valid=torch.ones(B, T, dtype=torch.bool),
        rewards=torch.rand(B, T, generator=g),
    )


def test_phase_one_heads_learn_bc_and_rewards_on_frozen_features():
    from latentwm.rl.bc import dataset_features, heads_loss

    m = _tiny_model()
    b = _batch(m)
    feats = dataset_features(m, b)
    F = m.cfg.registers * m.cfg.width
    assert feats.shape == (3, 5, F) and not feats.requires_grad
    A = m.cfg.action_dim
    heads = AgentHeads(F, A, -torch.ones(A), torch.ones(A), hidden=64, reward_steps=2)
    opt = torch.optim.Adam(heads.parameters(), lr=3e-3)
    first = None
    for _ in range(60):
        loss, stats = heads_loss(heads, feats, b)
        first = first if first is not None else (stats["bc/nll"], stats["reward/ce"])
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert stats["bc/nll"] < first[0] - 1.0 and stats["reward/ce"] < first[1]
    # the future never leaks into a frame's features: changing the last frame leaves earlier features as they were
    b2 = _batch(m)
    b2.latents[:, -1] += 3.0
    torch.testing.assert_close(dataset_features(m, b2)[:, :-1], feats[:, :-1])


def test_imagination_shapes_and_the_world_model_never_changes():
    from latentwm.rl.imagination import imagination_loss, imagine, trainable_parameters

    m = _tiny_model()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    b = _batch(m, B=4, T=3)
    F, A = m.cfg.registers * m.cfg.width, m.cfg.action_dim
    heads = AgentHeads(F, A, -torch.ones(A), torch.ones(A), hidden=32, reward_steps=2)
    prior = AgentHeads(F, A, -torch.ones(A), torch.ones(A), hidden=32, reward_steps=2)
    prior.load_state_dict(heads.state_dict())
    reward_before = {k: v.clone() for k, v in heads.reward.state_dict().items()}
    opt = torch.optim.Adam(trainable_parameters(heads), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    cfg = RLConfig(horizon=4, sample_steps=2, gamma=0.997)
    for _ in range(3):
        traj = imagine(m, heads, b.latents, b.actions[:, :2], b.action_mask[:, :2], cfg, generator=gen)
        loss, stats = imagination_loss(heads, prior, traj, cfg)
        opt.zero_grad()
        loss.backward()
        opt.step()
    N, D = m.cfg.num_latent_tokens, m.cfg.latent_dim
    assert traj["feats"].shape == (4, 5, F) and traj["actions"].shape == (4, 4, A)
    assert traj["rewards"].shape == (4, 4) and traj["latents"].shape == (4, 4, N, D)
    assert bool((traj["actions"].abs() <= 1).all())
    assert {"imagine/return", "imagine/entropy", "pmpo/positive_fraction"} <= set(stats)
    for k, v in m.state_dict().items():
        assert torch.equal(v, before[k]), k
    for k, v in heads.reward.state_dict().items():
        assert torch.equal(v, reward_before[k]), k


def test_value_warmup_leaves_the_policy_alone():
    from latentwm.rl.imagination import imagination_loss, imagine

    m = _tiny_model()
    b = _batch(m, B=2, T=2)
    F, A = m.cfg.registers * m.cfg.width, m.cfg.action_dim
    heads = AgentHeads(F, A, -torch.ones(A), torch.ones(A), hidden=16, reward_steps=1)
    traj = imagine(
        m,
        heads,
        b.latents,
        b.actions[:, :1],
        b.action_mask[:, :1],
        RLConfig(horizon=2, sample_steps=1),
        generator=torch.Generator().manual_seed(0),
    )
    loss, _ = imagination_loss(heads, heads, traj, RLConfig(gamma=0.997), policy_weight=0.0)
    loss.backward()
    assert all(p.grad is None or not p.grad.any() for p in heads.policy.parameters())
    assert any(p.grad is not None and p.grad.any() for p in heads.value.parameters())


def test_feature_standardization_is_saved_with_the_heads():
    h = AgentHeads(3, 1, -torch.ones(1), torch.ones(1), hidden=8)
    f = torch.tensor([[1.0, 100.0, -5.0], [3.0, 300.0, -5.0]])
    h.set_feature_stats(f)
    torch.testing.assert_close(h.feat_mean, torch.tensor([2.0, 200.0, -5.0]))
    h2 = AgentHeads(3, 1, -torch.ones(1), torch.ones(1), hidden=8)
    h2.load_state_dict(h.state_dict())
    torch.testing.assert_close(h2.dist(f).mean, h.dist(f).mean)
    assert bool((h2.feat_std > 0).all())
