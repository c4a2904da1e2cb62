"""Compiled sampling (`DynamicsModel.compile_sampling`, `--rollout.compile`, `eval --compile`, `plan --compile`):
the compiled cached denoising pass equals eager, a rollout longer than the attention window compiles a bounded
number of graphs (the cache's growth is one dynamic-shape recompile, not one per frame), and expanded caches
(planning) and gradients (the gradient planner) go through it too."""

from dataclasses import replace

import pytest
import torch

from latentwm.conditions import Conditions
from latentwm.config import get_preset
from latentwm.model.dynamics import DynamicsModel
from latentwm.rollout import Sampling, observe, rollout


class CountingBackend:
    """A torch.compile backend that runs the traced graph as it is (eager) and counts the graphs compiled."""

    def __init__(self):
        self.graphs = 0

    def __call__(self, gm, example_inputs):
        self.graphs += 1
        return gm.forward


def _model(seed=0, **kw):
    torch.manual_seed(seed)
    cfg = replace(get_preset("tiny").model, **kw)
    return DynamicsModel(cfg).eval(), cfg


def _inputs(cfg, B=2, C=3, H=10):
    g = torch.Generator().manual_seed(1)
    ctx = torch.randn(B, C, cfg.num_latent_tokens, cfg.latent_dim, generator=g)
    acts = torch.randn(B, C + H - 1, cfg.action_dim, generator=g)
    noise = torch.randn(B, H, cfg.num_latent_tokens, cfg.latent_dim, generator=g)
    return ctx, acts, noise


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.mark.parametrize("kw", [{}, {"dh_blocks": 1}], ids=["plain", "dh_head"])
def test_compiled_rollout_equals_eager_and_compiles_a_bounded_number_of_graphs(kw):
    model, cfg = _model(**kw)
    H = cfg.context_frames + 4  # past the window: the cache stops growing, then slides
    ctx, acts, noise = _inputs(cfg, H=H)
    with torch.no_grad():
        ref = rollout(model, ctx, H, Conditions(acts), Sampling(4), noise=noise)
        backend = CountingBackend()
        model.compile_sampling(backend)
        assert model.compile_sampling(backend) is model  # idempotent
        out = rollout(model, ctx, H, Conditions(acts), Sampling(4), noise=noise)
        graphs = backend.graphs
        again = rollout(model, ctx, H, Conditions(acts), Sampling(4), noise=noise)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(again, ref, rtol=1e-5, atol=1e-5)
    # space blocks: 1 graph; time core: empty cache, one frame, then dynamic length (+ the DH head's blocks)
    # a graph per cache length would be ≥ H (one per frame); here 5 (plain) / 6 (DH head) in torch 2.13
    assert graphs <= 8 < H, graphs
    assert backend.graphs == graphs, "a second rollout of the same shapes recompiled"


def test_expanded_cache_and_gradients_go_through_the_compiled_pass():
    model, cfg = _model()
    ctx, acts, noise = _inputs(cfg, B=1, H=3)
    n = 5
    cand = torch.randn(
        n, ctx.shape[1] + 2, cfg.action_dim, generator=torch.Generator().manual_seed(2), requires_grad=True
    )

    def plan_like(m):
        with torch.no_grad():
            cache = observe(m, ctx, Conditions(acts[:, : ctx.shape[1] - 1])).expand(n)
        out = rollout(
            m, ctx.expand(n, -1, -1, -1), 3, Conditions(cand), Sampling(1, grad=True), noise=noise[:, :3], cache=cache
        )
        loss = out.pow(2).mean()
        (g,) = torch.autograd.grad(loss, cand)
        return out.detach(), g

    ref_out, ref_g = plan_like(model)
    model.compile_sampling(CountingBackend())
    out, g = plan_like(model)
    torch.testing.assert_close(out, ref_out, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(g, ref_g, rtol=1e-4, atol=1e-6)


def test_inductor_compiled_rollout_matches_eager(device):
    """The real backend (C++ kernels on the CPU, Triton on a GPU): equal to float tolerance."""
    model, cfg = _model()
    model = model.to(device)
    ctx, acts, noise = (t.to(device) for t in _inputs(cfg, H=4))
    with torch.no_grad():
        ref = rollout(model, ctx, 4, Conditions(acts), Sampling(2), noise=noise)
        out = rollout(model.compile_sampling(), ctx, 4, Conditions(acts), Sampling(2), noise=noise)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
