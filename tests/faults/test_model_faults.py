"""Fault injection on the model's sampling API: step counts it cannot honour, actions given without a mask."""

import warnings

import pytest
import torch

from latentwm.conditions import Conditions, FrameConditions
from latentwm.config import get_preset
from latentwm.model.dynamics import DynamicsModel
from latentwm.rollout import Sampling, rollout

CFG = get_preset("tiny").model
N, D = CFG.num_latent_tokens, CFG.latent_dim


def _model():
    torch.manual_seed(0)
    m = DynamicsModel(CFG).eval()
    with torch.no_grad():  # non-zero output weights so the outputs depend on everything, actions included
        for p in m.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return m


@pytest.mark.parametrize("steps", [3, 6, 0, -4, 2 * CFG.k_max, 2.0])
def test_rollout_refuses_sample_steps_it_cannot_honour(steps):
    """Before: 3 became d = 1/3 (a step size off the model's grid, rounded to 1/4 by the embedding) and 2·k_max
    a step size the model never trained on — both ran silently."""
    ctx = torch.randn(1, 2, N, D)
    with pytest.raises(ValueError, match=rf"sample_steps.*power of two.*k_max = {CFG.k_max}"):
        rollout(_model(), ctx, 2, sampling=Sampling(steps))


def test_rollout_accepts_every_power_of_two_up_to_k_max():
    ctx = torch.randn(1, 2, N, D)
    m = _model()
    for steps in (1, 2, CFG.k_max):
        assert rollout(m, ctx, 1, sampling=Sampling(steps)).shape == (1, 1, N, D)


@torch.no_grad()
def test_actions_without_a_mask_are_known_actions_everywhere():
    """Before: forward(z, τ, d, actions, None) ignored the actions (with a warning) while rollout(actions, None)
    conditioned on them. None now means "no mask given": every action is known, in forward, step and rollout."""
    m = _model()
    B, T = 2, 4
    z = torch.randn(B, T, N, D)
    tau, step = torch.rand(B, T), torch.full((B, T), 1 / CFG.k_max)
    a = torch.randn(B, T, CFG.action_dim)
    known = torch.ones(B, T, dtype=torch.bool)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "treated as unknown" warning any more
        none = m(z, tau, step, a, None)
        assert torch.equal(none, m(z, tau, step, a, known))
        assert not torch.equal(none, m(z, tau, step))  # the actions are used
        cache = m.init_cache(B)
        m.step(z[:, 0], tau[:, 0], step[:, 0], cache=cache, commit=True)
        s_none = m.step(z[:, 1], tau[:, 1], step[:, 1], FrameConditions(a[:, 0]), cache=cache)
        assert torch.equal(
            s_none, m.step(z[:, 1], tau[:, 1], step[:, 1], FrameConditions(a[:, 0], known[:, 0]), cache=cache)
        )
        torch.testing.assert_close(s_none, none[:, 1], atol=1e-4, rtol=1e-4)  # the cached step agrees with forward
        noise = torch.randn(B, 2, N, D)
        r_none = rollout(m, z[:, :2], 2, Conditions(a[:, :3]), Sampling(1), noise=noise)
        assert torch.equal(
            r_none, rollout(m, z[:, :2], 2, Conditions(a[:, :3], known[:, :3]), Sampling(1), noise=noise)
        )
    # a one-step rollout is one forward pass over [context, noise] at τ = 0 for the new frame: same actions used
    zf = torch.cat([z[:, :2], noise[:, :1]], 1)
    tf = torch.tensor([1.0, 1.0, 0.0]).expand(B, 3)
    df = torch.tensor([1 / CFG.k_max, 1 / CFG.k_max, 1.0]).expand(B, 3)
    torch.testing.assert_close(m(zf, tf, df, a[:, :3], None)[:, -1], r_none[:, 0], atol=1e-4, rtol=1e-4)
