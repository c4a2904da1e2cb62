"""Tiny dynamics models for the model tests (test_dynamics, test_dropout, test_text_model, test_condition_gain):
models perturbed away from their zero init, so every output depends on every input; random inputs for them; and the
KV-cache check that cached generation equals the full recomputation.

Not a test module (no test_ prefix, no test functions): pytest does not collect it.
"""

import dataclasses
import math

import torch

from latentwm.conditions import FrameConditions
from latentwm.config import get_preset
from latentwm.model import DynamicsModel

# ---- perturbed models, random inputs, the KV-cache check -------------------------------------------------------------


def perturbed_model(cfg, seed=0):
    """Perturbed away from the zero init (blocks identity, head 0) so every output depends on every input."""
    torch.manual_seed(seed)
    m = DynamicsModel(cfg)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return m


def bf16_autocast(device, on=True):
    """bf16 autocast on the test device (CPU autocast exercises the same dtype plumbing)."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=on)


def random_inputs(cfg, B, T, seed=0, A=4):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(B, T, cfg.num_latent_tokens, cfg.latent_dim, generator=g)
    tau = torch.rand(B, T, generator=g)
    step = 2.0 ** -torch.randint(0, int(math.log2(cfg.k_max)) + 1, (B, T), generator=g).float()
    actions = torch.randn(B, T, A, generator=g)
    mask = torch.rand(B, T, generator=g) > 0.3
    return z, tau, step, actions, mask


def run_cached(m, cfg, B, T, seed=0, group_check=True, bf16=False):
    """Generate T frames with the cache: per frame two commit=False denoising steps (their own z, τ, d), then a
    commit pass with the 'finished' frame at its own τ/d; each output must equal the full recomputation.
    Runs on the model's device; returns the worst absolute difference (bf16: relative to the largest |output|,
    both paths under bf16 autocast)."""
    dev = next(m.parameters()).device
    z_den, tau_den, d_den, a, mask = (t.to(dev) for t in random_inputs(cfg, B, T, seed))
    z_c, tau_c, d_c, _, _ = (t.to(dev) for t in random_inputs(cfg, B, T, seed + 1))
    tau_c = torch.where(tau_c > 0.5, 1.0, 0.9)  # committed context at τ_ctx 1.0 or 0.9 (per sample and frame)
    with bf16_autocast(dev, bf16):
        worst, scale = _run_cached_loop(m, cfg, B, T, z_den, tau_den, d_den, a, mask, z_c, tau_c, d_c)
    return worst / scale if bf16 else worst


def _run_cached_loop(m, cfg, B, T, z_den, tau_den, d_den, a, mask, z_c, tau_c, d_c):
    cache = m.init_cache(B)
    worst, scale = 0.0, 0.0
    for t in range(T):
        prev, pm = (a[:, t - 1], mask[:, t - 1]) if t else (None, None)
        for k in range(2):
            zt = z_den[:, t] + k
            x_step = m.step(zt, tau_den[:, t], d_den[:, t], FrameConditions(prev, pm), cache=cache)
            z_full = torch.cat([z_c[:, :t], zt[:, None]], 1)
            tau_full = torch.cat([tau_c[:, :t], tau_den[:, t : t + 1]], 1)
            d_full = torch.cat([d_c[:, :t], d_den[:, t : t + 1]], 1)
            ref = m(z_full, tau_full, d_full, a[:, : t + 1], mask[:, : t + 1])[:, t]
            worst, scale = max(worst, (x_step - ref).abs().max().item()), max(scale, ref.abs().max().item())
        assert cache.time_index == t and cache.length == min(t, cfg.context_frames - 1)
        x_c = m.step(z_c[:, t], tau_c[:, t], d_c[:, t], FrameConditions(prev, pm), cache=cache, commit=True)
        ref = m(z_c[:, : t + 1], tau_c[:, : t + 1], d_c[:, : t + 1], a[:, : t + 1], mask[:, : t + 1])[:, t]
        worst, scale = max(worst, (x_c - ref).abs().max().item()), max(scale, ref.abs().max().item())
    return worst, scale


def history_spy(model):
    """(spy, seen): spy calls model and appends the `history` keyword of every call (None when absent) to seen —
    what an objective hands each of its passes."""
    seen = []

    def spy(*args, **kw):
        seen.append(kw.get("history"))
        return model(*args, **kw)

    return spy, seen


# ---- a model with a text slot, in eval mode --------------------------------------------------------------------------

TINY_TEXT = dataclasses.replace(get_preset("tiny").model, attention="eager", text_dim=12)


def perturbed_text_model(cfg=TINY_TEXT, seed=0):
    """Perturbed away from the zero init so every output depends on every input."""
    torch.manual_seed(seed)
    m = DynamicsModel(cfg).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return m


# ---- the meaning check: a text model, a pose probe, stand-in futures ---------------------------------------------


def meaning_model_and_probe(exp, data):
    """(model, probe) for the meaning check on clips `data`: the experiment's text-conditioned DynamicsModel in eval
    mode and a StateProbe of the clips' token shape, both perturbed off their init (seed 0) so predictions and pose
    readings depend on their inputs."""
    from latentwm.planning.state_probe import StateProbe

    torch.manual_seed(0)
    model = DynamicsModel(exp.model).eval().requires_grad_(False)
    with torch.no_grad():  # off the zero-initialized head: predictions that depend on their inputs
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    N, D = data[0].latents.shape[1:]
    probe = StateProbe(N, D, 4, 32, torch.full((4,), 256.0), torch.full((4,), 100.0))
    with torch.no_grad():
        for p in probe.parameters():
            p.add_(0.5 * torch.randn_like(p))  # a probe that reads different frames differently
    return model, probe


def oracle_futures(monkeypatch, context: int, horizon: int) -> None:
    """Make planning/text_meaning's rollouts return the true future of the batch it just collated (frames context
    .. context + horizon − 1): a model that predicts perfectly, whatever its conditions."""
    from latentwm.planning import text_meaning

    real_collate, seen = text_meaning.collate, {}

    def remember(samples, action_dim):
        b = real_collate(samples, action_dim)
        seen["future"] = b.latents[:, context : context + horizon]
        return b

    def oracle(model, ctx, h, cond=None, sampling=None, *, noise=None, generator=None, cache=None):
        return seen["future"]

    monkeypatch.setattr(text_meaning, "collate", remember)
    monkeypatch.setattr(text_meaning, "rollout", oracle)


def frozen_futures(monkeypatch) -> None:
    """Make planning/text_meaning's rollouts repeat the last context frame: a model that predicts no motion."""
    from latentwm.planning import text_meaning

    def frozen(model, ctx, horizon, cond=None, sampling=None, *, noise=None, generator=None, cache=None):
        return ctx[:, -1:].expand(-1, horizon, -1, -1)

    monkeypatch.setattr(text_meaning, "rollout", frozen)
