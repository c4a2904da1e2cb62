import pytest
import torch

from latentwm.conditions import Conditions
from latentwm.config import ObjectiveConfig, get_preset
from latentwm.model.dynamics import DynamicsModel
from latentwm.objectives.shortcut_forcing import ShortcutForcing, TrainStep
from latentwm.rollout import Sampling, observe, rollout

CFG = get_preset("tiny").model


def _model(seed=0):
    torch.manual_seed(seed)
    m = DynamicsModel(CFG).eval()
    with torch.no_grad():  # non-zero output weights so the outputs depend on everything
        for p in m.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return m


def test_shapes_and_seed_determinism():
    m = _model()
    ctx = torch.randn(3, 2, CFG.num_latent_tokens, CFG.latent_dim)
    acts = torch.randn(3, 5, 4)
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    a = rollout(m, ctx, 4, Conditions(acts), Sampling(2), generator=g1)
    b = rollout(m, ctx, 4, Conditions(acts), Sampling(2), generator=g2)
    assert a.shape == (3, 4, CFG.num_latent_tokens, CFG.latent_dim)
    assert torch.equal(a, b)
    c = rollout(m, ctx, 4, Conditions(acts), Sampling(2), generator=torch.Generator().manual_seed(8))
    assert not torch.allclose(a, c)
    # re-noised context (τ_ctx < 1) draws its noise from the same generator: still deterministic
    r1 = rollout(m, ctx, 3, Conditions(acts), Sampling(2, tau_ctx=0.9), generator=torch.Generator().manual_seed(3))
    torch.manual_seed(1234)  # the global RNG plays no part
    r2 = rollout(m, ctx, 3, Conditions(acts), Sampling(2, tau_ctx=0.9), generator=torch.Generator().manual_seed(3))
    assert torch.equal(r1, r2) and not torch.allclose(r1, a[:, :3])


def test_rollout_matches_full_forward_recomputation(device):
    # one denoising step from z = ε at τ = 0 is one forward pass; the cached rollout must equal the full
    # forward over [context, generated frames] where generated frames enter clean
    m = _model().to(device)
    C, H = 2, 3
    ctx = torch.randn(2, C, CFG.num_latent_tokens, CFG.latent_dim, device=device)
    acts = torch.randn(2, C + H - 1, 10, device=device)
    noise = torch.randn(2, H, CFG.num_latent_tokens, CFG.latent_dim, device=device)
    out = rollout(m, ctx, H, Conditions(acts), Sampling(1), noise=noise)
    frames = torch.cat([ctx, out], 1)
    acts = torch.cat([acts, acts.new_zeros(2, 1, 10)], 1)  # forward takes one action per frame; the last is unused
    for h in range(H):
        z = frames[:, : C + h + 1].clone()
        z[:, C + h] = noise[:, h]
        tau = torch.ones(2, C + h + 1, device=device)
        tau[:, C + h] = 0.0
        step = torch.full((2, C + h + 1), 1 / CFG.k_max, device=device)
        step[:, C + h] = 1.0
        mask = torch.ones(2, C + h + 1, dtype=torch.bool, device=device)
        x = m(z, tau, step, acts[:, : C + h + 1], mask)
        torch.testing.assert_close(x[:, -1], out[:, h], atol=1e-4, rtol=1e-4)


def test_shared_history_candidates_equal_separate_rollouts(device):
    m = _model().to(device)
    ctx = torch.randn(1, 3, CFG.num_latent_tokens, CFG.latent_dim, device=device)
    n, H = 4, 3
    acts = torch.randn(n, 3 + H - 1, 10, device=device)
    acts[:, :2] = acts[:1, :2]  # the observed history's actions are shared
    noise = torch.randn(1, H, CFG.num_latent_tokens, CFG.latent_dim, device=device)  # common random numbers
    cache = observe(m, ctx, Conditions(acts[:1], torch.ones(1, 4, dtype=torch.bool, device=device))).expand(n)
    batched = rollout(m, ctx, H, Conditions(acts), Sampling(2), noise=noise, cache=cache)
    for i in range(n):
        one = rollout(m, ctx, H, Conditions(acts[i : i + 1]), Sampling(2), noise=noise)
        torch.testing.assert_close(batched[i : i + 1], one, atol=1e-4, rtol=1e-4)


def test_action_free_rollout_and_bad_actions():
    m = _model()
    ctx = torch.randn(2, 2, CFG.num_latent_tokens, CFG.latent_dim)
    assert rollout(m, ctx, 2, sampling=Sampling(1)).shape[1] == 2
    try:
        rollout(m, ctx, 3, Conditions(torch.randn(2, 2, 10)))
    except ValueError as e:
        assert "C + H − 1 = 4" in str(e)
    else:
        raise AssertionError("short action sequence accepted")


def _train_toy(bootstrap_fraction: float, steps: int = 300):
    """Tiny model on a bimodal toy: every token is ±u (independent fair coins). Flow-only training learns the
    denoiser, whose one-step sample from pure noise is the mean 0; shortcut training makes one step land on a mode."""
    g = torch.Generator().manual_seed(123)
    u = torch.randn(CFG.latent_dim, generator=g)
    u = u / u.norm() * CFG.latent_dim**0.5
    torch.manual_seed(0)
    m = DynamicsModel(CFG)
    obj = ShortcutForcing(ObjectiveConfig(bootstrap_fraction=bootstrap_fraction, bootstrap_start=100), CFG.k_max)
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    for it in range(steps):
        x = (torch.randint(0, 2, (32, 1, CFG.num_latent_tokens, 1)).float() * 2 - 1) * u
        loss, _ = obj(m, x, at=TrainStep(it))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return m.eval(), u


def _samples(m, k, noise):
    empty = torch.zeros(noise.shape[0], 0, CFG.num_latent_tokens, CFG.latent_dim)  # no context: first frame
    return rollout(m, empty, 1, sampling=Sampling(k), noise=noise)[:, 0]


@pytest.mark.slow
def test_few_step_samples_approach_the_many_step_sample():
    noise = torch.randn(64, 1, CFG.num_latent_tokens, CFG.latent_dim, generator=torch.Generator().manual_seed(5))
    errors = {}
    for frac in (0.0, 0.5):
        m, u = _train_toy(frac)
        ref = _samples(m, CFG.k_max, noise)  # the many-step sample from the same noise
        coef = ref @ u / u.pow(2).sum()
        assert (coef.abs() - 1).abs().mean() < 0.1  # many-step samples sit on the modes ±u
        spread = (ref - ref.mean(0)).pow(2).mean()
        errors[frac] = {k: ((_samples(m, k, noise) - ref).pow(2).mean() / spread).item() for k in (1, 4)}
    # with shortcut forcing, 1 and 4 steps reproduce the many-step sample ...
    assert errors[0.5][1] < 0.3 and errors[0.5][4] < 0.1, errors
    # ... which flow-only training cannot do in one step (its one-step sample is the blurry mean)
    assert errors[0.0][1] > 0.8 and errors[0.5][1] < 0.5 * errors[0.0][1], errors
