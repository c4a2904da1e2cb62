"""DynamicsModel: causality, cached generation == full recomputation, backends, action masking, contracts,
a tiny overfit, and the presets' parameter counts."""

import dataclasses
import math
import re
import warnings

import pytest
import torch
from tiny_models import bf16_autocast, perturbed_model, random_inputs, run_cached

from latentwm.conditions import Conditions, FrameConditions
from latentwm.config import PRESETS, ObjectiveConfig, get_preset, preset
from latentwm.model import DynamicsModel, layers
from latentwm.model.dynamics import approx_param_count
from latentwm.objectives import TrainStep, make_objective
from latentwm.planning.proprio import probe_features
from latentwm.rollout import Sampling, rollout

TINY = get_preset("tiny").model  # D 64, grid 4 (N 16), width 32, depth 4, time_every 2, window 8, k_max 8
# (attention, softcap): eager reference; fused = SDPA without a cap; fused = flex_attention with a cap (forced on
# CPU through layers.FLEX_ON_CPU, forward only, so those tests run under no_grad)
BACKENDS = [("eager", 50.0), ("fused", None), ("fused", 2.0)]


@pytest.fixture(autouse=True)
def _flex_on_cpu(monkeypatch):
    monkeypatch.setattr(layers, "FLEX_ON_CPU", True)


pytestmark = pytest.mark.usefixtures("one_thread")


def _cfg(**kw):
    kw.setdefault("attention", "eager")
    return dataclasses.replace(TINY, **kw)


def _dev(cfg, device):
    """On an accelerator flex_attention's kernel needs a head dim >= 16 (tiny's is 8): widen the model there."""
    return cfg if device.type == "cpu" or cfg.head_dim >= 16 else dataclasses.replace(cfg, width=16 * cfg.heads)


# ------------------------------------------------------------------------------------------------ causality


@pytest.mark.parametrize("dh_blocks", [0, 2])  # 2: with the DH head (per-frame, so causality is unchanged)
@pytest.mark.parametrize("bf16", [False, True])
@pytest.mark.parametrize("attention,softcap", BACKENDS)
@pytest.mark.parametrize("group", [1, 2])
@torch.no_grad()
def test_causality(attention, softcap, group, bf16, dh_blocks, device):
    cfg = _dev(_cfg(attention=attention, softcap=softcap, patch_group=group, dh_blocks=dh_blocks), device)
    m = perturbed_model(cfg).to(device)
    z, tau, step, a, mask = (t.to(device) for t in random_inputs(cfg, 2, 5))
    mask[:] = True
    with bf16_autocast(device, bf16):
        base = m(z, tau, step, a, mask)
    for t in (1, 3):
        for what in ("z", "tau", "step", "action"):
            z2, tau2, step2, a2 = z.clone(), tau.clone(), step.clone(), a.clone()
            if what == "z":
                z2[:, t] += 1.0
            elif what == "tau":
                tau2[:, t] = 1.0 - tau2[:, t]
            elif what == "step":
                step2[:, t] = torch.where(step[:, t] == 1.0, 0.5, 1.0)
            else:
                a2[:, t - 1] += 1.0  # the action that led into frame t
            with bf16_autocast(device, bf16):
                out = m(z2, tau2, step2, a2, mask)
            torch.testing.assert_close(out[:, :t], base[:, :t], atol=1e-6, rtol=0, msg=f"{what} at {t} leaked back")
            assert (out[:, t] - base[:, t]).abs().max() > 1e-4, f"changing {what} at {t} did not change frame {t}"
    assert device.type not in layers._flex_broken  # the fused backend really ran flex_attention


@torch.no_grad()
def test_time_window_bounds_the_receptive_field():
    # one time layer with window 3: frame t sees frames t−2..t only
    cfg = _cfg(depth=2, time_every=2, context_frames=3)
    m = perturbed_model(cfg)
    z, tau, step, _, _ = random_inputs(cfg, 1, 6)
    base = m(z, tau, step)
    z[:, 0] += 5.0
    out = m(z, tau, step)
    assert (out[:, 2] - base[:, 2]).abs().max() > 1e-4
    torch.testing.assert_close(out[:, 3:], base[:, 3:], atol=1e-6, rtol=0)


# ------------------------------------------------------------------------------------------------ KV cache


@pytest.mark.parametrize("T", [3, 8, 13])
@pytest.mark.parametrize("attention,softcap", BACKENDS)
@torch.no_grad()
def test_cached_generation_equals_full_recompute(T, attention, softcap, device):
    cfg = _dev(_cfg(attention=attention, softcap=softcap), device)  # window 8: T = 13 slides it
    assert run_cached(perturbed_model(cfg).to(device), cfg, 2, T) < 1e-4
    assert device.type not in layers._flex_broken


@pytest.mark.parametrize("attention,softcap", BACKENDS)
@torch.no_grad()
def test_cached_generation_equals_full_recompute_bf16(attention, softcap, device):
    # under bf16 autocast the cached path (matrix-vector attention over bf16 keys) and the full forward round
    # differently; they must still agree to bf16 precision, window slide included (T 11 > window 8)
    cfg = _dev(_cfg(attention=attention, softcap=softcap), device)
    assert run_cached(perturbed_model(cfg).to(device), cfg, 2, 11, bf16=True) < 0.03
    assert device.type not in layers._flex_broken


@torch.no_grad()
def test_cached_generation_patch_group_2_small_window():
    cfg = _cfg(patch_group=2, context_frames=3)
    assert run_cached(perturbed_model(cfg), cfg, 2, 7) < 1e-4


@pytest.mark.parametrize("bf16", [False, True])
@pytest.mark.parametrize("attention,softcap", [("eager", 50.0), ("fused", None)])
@pytest.mark.parametrize("group", [1, 2])
@torch.no_grad()
def test_cached_generation_with_dh_head(group, attention, softcap, bf16, device):
    # the DH head attends within its frame only: cached generation still equals the full recompute (window slide)
    cfg = _dev(_cfg(attention=attention, softcap=softcap, patch_group=group, context_frames=4, dh_blocks=2), device)
    assert run_cached(perturbed_model(cfg).to(device), cfg, 2, 7, bf16=bf16) < (0.03 if bf16 else 1e-4)


@pytest.mark.parametrize("hist", [3, 10])
@pytest.mark.parametrize("attention,softcap", [("eager", 50.0), ("fused", None)])
@torch.no_grad()
def test_expanded_cache_equals_separate_recomputations(hist, attention, softcap, device):
    cfg = _cfg(attention=attention, softcap=softcap)
    m = perturbed_model(cfg).to(device)
    B, n, F = 2, 3, 4
    zh, tauh, dh, ah, mh = (t.to(device) for t in random_inputs(cfg, B, hist, seed=1))
    mh[:] = True
    cache = m.init_cache(B)
    for t in range(hist):
        prev, pm = (ah[:, t - 1], mh[:, t - 1]) if t else (None, None)
        m.step(zh[:, t], tauh[:, t], dh[:, t], FrameConditions(prev, pm), cache=cache, commit=True)
    cache = cache.expand(n)  # history b -> candidates b·n .. b·n + n − 1
    zf, tauf, df, af, mf = (t.to(device) for t in random_inputs(cfg, B * n, F, seed=2))
    mf[:] = True
    rep = lambda x: x.repeat_interleave(n, 0)  # noqa: E731
    z_all = torch.cat([rep(zh), zf], 1)
    tau_all, d_all = torch.cat([rep(tauh), tauf], 1), torch.cat([rep(dh), df], 1)
    # the action leading into future frame f is af[:, f − 1]; into the first future frame it is the history's last
    a_all = torch.cat([rep(ah)[:, : hist - 1], af], 1)[:, : hist + F]
    a_all = torch.cat([a_all, torch.zeros_like(a_all[:, :1])], 1)[:, : hist + F]
    m_all = torch.ones(B * n, hist + F, dtype=torch.bool, device=device)
    for f in range(F):
        if f == 2:
            cache = cache.expand(1)  # expanding an expanded cache with a suffix merges once; same results
        t = hist + f
        x = m.step(
            zf[:, f], tauf[:, f], df[:, f], FrameConditions(a_all[:, t - 1], m_all[:, t - 1]), cache=cache, commit=True
        )
        ref = m(z_all[:, : t + 1], tau_all[:, : t + 1], d_all[:, : t + 1], a_all[:, : t + 1], m_all[:, : t + 1])
        assert (x - ref[:, t]).abs().max() < 1e-4
        per_candidate = ref[:, t].view(B, n, *ref.shape[2:])
        assert (per_candidate[:, 0] - per_candidate[:, 1]).abs().max() > 1e-4  # candidates really differ


@torch.no_grad()
def test_step_without_cache_is_frame_zero():
    cfg = _cfg()
    m = perturbed_model(cfg)
    z, tau, step, a, mask = random_inputs(cfg, 3, 1)
    mask[:] = True
    x, h = m.step(
        z[:, 0], tau[:, 0], step[:, 0], FrameConditions(a[:, 0], mask[:, 0]), return_hidden=True
    )  # action ignored at t=0
    ref, href = m.hidden(z, tau, step)
    torch.testing.assert_close(x, ref[:, 0], atol=1e-5, rtol=0)
    assert h.shape == (3, m.tokens_per_frame, cfg.width) and href.shape == (3, 1, m.tokens_per_frame, cfg.width)


# ------------------------------------------------------------------------------------------------ backends


@pytest.mark.parametrize("group", [1, 2])
@pytest.mark.parametrize("softcap", [None, 2.0])
@torch.no_grad()
def test_backends_agree(group, softcap, device):
    cfg_e = _dev(_cfg(attention="eager", softcap=softcap, patch_group=group, context_frames=4), device)
    m = perturbed_model(cfg_e).to(device)
    m_f = DynamicsModel(dataclasses.replace(cfg_e, attention="fused")).to(device)
    m_f.load_state_dict(m.state_dict())
    z, tau, step, a, mask = (t.to(device) for t in random_inputs(cfg_e, 2, 7))  # T 7 > window 4: the band mask path
    torch.testing.assert_close(m_f(z, tau, step, a, mask), m(z, tau, step, a, mask), atol=1e-5, rtol=1e-5)
    assert device.type not in layers._flex_broken


@pytest.mark.cpu_only
def test_fused_trains_on_cpu_with_softcap():
    # flex has no CPU backward: the fused backend must still train (eager math fallback)
    m = perturbed_model(_cfg(attention="fused", softcap=50.0))
    z, tau, step, a, mask = random_inputs(m.cfg, 2, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        text = torch.randn(2, 3, m.cfg.text_dim)  # with text, so the text projection gets a gradient too
        m(z, tau, step, a, mask, text=text, text_mask=torch.rand(2, 3) < 0.5).square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters())


# ------------------------------------------------------------------------------------------------ actions


def test_masked_actions_have_no_influence():
    cfg = _cfg()
    m = perturbed_model(cfg)
    z, tau, step, a, mask = random_inputs(cfg, 3, 5)
    mask[:, ::2] = False
    base = m(z, tau, step, a, mask)
    for bad in (float("nan"), 1e30, -float("inf")):
        a2 = a.clone()
        a2[~mask] = bad
        a2[:, -1] = bad  # the last action leads out of the clip: never used
        out = m(z, tau, step, a2, mask)
        assert torch.equal(out, base)
        out.square().mean().backward()
        assert all(torch.isfinite(p.grad).all() for p in m.parameters() if p.grad is not None)
        m.zero_grad()
    none = torch.zeros_like(mask)
    torch.testing.assert_close(m(z, tau, step, a, none), m(z, tau, step), atol=0, rtol=0)
    known = m(z, tau, step, a, torch.ones_like(mask))
    assert not torch.equal(known, m(z, tau, step))  # known actions do matter
    assert torch.equal(m(z, tau, step, a, None), known)  # no mask given: every action is known (as in rollout)


@torch.no_grad()
def test_step_masked_prev_action_has_no_influence():
    cfg = _cfg()
    m = perturbed_model(cfg)
    z = torch.randn(2, 2, 16, 64)
    cache = m.init_cache(2)
    m.step(z[:, 0], 1.0, 0.125, cache=cache, commit=True)
    ref = m.step(z[:, 1], 0.3, 0.5, cache=cache)
    bad = torch.tensor([[float("nan")] * 10, [1e30] * 10])
    out = m.step(z[:, 1], 0.3, 0.5, FrameConditions(bad, torch.tensor([False, False])), cache=cache)
    assert torch.equal(out, ref)
    out = m.step(z[:, 1], 0.3, 0.5, FrameConditions(torch.randn(2, 10), torch.tensor([True, False])), cache=cache)
    assert (out[0] - ref[0]).abs().max() > 1e-4 and torch.equal(out[1], ref[1])


# ------------------------------------------------------------------------------------------------ reach


@pytest.mark.parametrize("group", [1, 2])
def test_registers_and_shortcut_reach_every_latent_token(group):
    cfg = _cfg(patch_group=group)
    m = perturbed_model(cfg)
    z, tau, step, a, mask = random_inputs(cfg, 1, 3)
    mask[:] = True
    x = m(z, tau, step, a, mask)  # (1, 3, N, D)
    params = {
        "registers": m.registers,
        "tau_mlp": m.tau_mlp[0].weight,
        "step_embed": m.step_embed.weight,
        "action_in": m.action_in.weight,
    }
    for n in range(cfg.num_latent_tokens):
        grads = torch.autograd.grad(x[0, -1, n].sum(), list(params.values()), retain_graph=True)
        for name, g in zip(params, grads):
            assert g.abs().sum() > 0, f"latent token {n} does not depend on {name}"
    tau_in = tau.clone().requires_grad_()
    g = torch.autograd.grad(m(z, tau_in, step)[0, -1].sum(-1).sum(), tau_in)[0]
    assert g[0, -1] != 0


# ------------------------------------------------------------------------------------------------ contracts


def test_shapes_and_errors():
    cfg = _cfg()
    m = perturbed_model(cfg)
    z, tau, step, a, mask = random_inputs(cfg, 2, 3)
    x, h = m.hidden(z, tau, step, Conditions(a, mask))
    assert x.shape == z.shape and x.dtype == torch.float32
    assert h.shape == (2, 3, cfg.registers + 3 + 16, cfg.width) and m.tokens_per_frame == cfg.registers + 19
    assert m(z, 1.0, 0.125).shape == z.shape  # scalar τ / d broadcast
    with pytest.raises(ValueError, match=r"z: expected shape \(B, T, N=16, D=64\)"):
        m(torch.randn(2, 3, 16, 65), tau, step)
    with pytest.raises(ValueError, match=r"z: expected shape \(B, T, N=16, D=64\), got \(2, 3, 15, 64\)"):
        m(torch.randn(2, 3, 15, 64), tau, step)
    with pytest.raises(ValueError, match=r"actions: expected shape .*A <= model.action_dim = 10"):
        m(z, tau, step, torch.randn(2, 3, 11), mask)
    with pytest.raises(ValueError, match=r"tau: expected shape \(B, T\) = \(2, 3\)"):
        m(z, tau[:, 0], step)
    with pytest.raises(ValueError, match=r"step: expected shape"):
        m(z, tau, step[:, :2])
    with pytest.raises(ValueError, match=r"action_mask: expected shape"):
        m(z, tau, step, a, mask[:, :2])
    with pytest.raises(ValueError, match=r"z: expected shape \(B, N=16, D=64\)"):
        m.step(z, tau[:, 0], step[:, 0])
    with pytest.raises(ValueError, match=r"cond.action: expected shape"):
        m.step(z[:, 0], tau[:, 0], step[:, 0], FrameConditions(torch.randn(2, 11), mask[:, 0]))
    g = _cfg(patch_group=2)
    assert DynamicsModel(g)(z, tau, step).shape == z.shape


def test_bf16_autocast_forward_and_cache(device):
    # the CUDA bf16 path's dtype plumbing (exercised with CPU autocast on the CPU)
    cfg = _cfg(attention="fused", softcap=None)
    m = perturbed_model(cfg).to(device)
    z, tau, step, a, mask = (t.to(device) for t in random_inputs(cfg, 2, 3))
    with torch.no_grad(), bf16_autocast(device):
        full = m(z, tau, step, a, mask)
        cache = m.init_cache(2)
        assert cache.dtype == torch.bfloat16  # follows autocast
        outs = [
            m.step(
                z[:, t],
                tau[:, t],
                step[:, t],
                FrameConditions(a[:, t - 1] if t else None, mask[:, t - 1] if t else None),
                cache=cache,
                commit=True,
            )
            for t in range(3)
        ]
    ref = m(z, tau, step, a, mask).detach()
    assert full.dtype == torch.float32 and torch.isfinite(full).all()
    scale = ref.abs().max()
    assert (full - ref).abs().max() < 0.05 * scale
    assert (torch.stack(outs, 1) - full).abs().max() < 0.05 * scale


def test_flops_per_frame():
    m = DynamicsModel(_cfg())
    f = [m.flops_per_frame(c) for c in (0, 3, 7, 20)]
    assert 0 < f[0] < f[1] < f[2] == f[3]  # grows with context until the window (8 incl. the new frame)


# ------------------------------------------------------------------------------------------------ learning


@pytest.mark.slow
def test_tiny_model_learns_a_moving_pattern():
    """A grating moving one cell per frame across the 4×4 latent grid (random phase per clip), trained with
    diffusion forcing (every frame its own random τ), x-prediction. The loss must fall ≥ 10×, and with a clean
    history the model must predict the next frame from pure noise (τ = 0), i.e. it learned the motion."""
    torch.manual_seed(0)
    cfg = _cfg()
    m = DynamicsModel(cfg)
    G, N, D, T = cfg.latent_grid, cfg.num_latent_tokens, cfg.latent_dim, 4
    g = torch.Generator().manual_seed(0)
    basis = torch.linalg.qr(torch.randn(D, D, generator=g))[0][:, :2].T * math.sqrt(D / 2)  # (2, D)
    col, row = torch.arange(N) % G, torch.arange(N) // G

    def clips(B):  # (B, T, N, D): phase k·(col − t) + 0.5·row + φ: shifts one column per frame
        phase = (
            torch.rand(B, generator=g)[:, None, None] * 2 * math.pi
            + 2 * math.pi / G * (col - torch.arange(T)[:, None])
            + 0.5 * row
        )
        return torch.stack([phase.cos(), phase.sin()], -1) @ basis

    def noisy(x):
        tau = torch.rand(x.shape[:2], generator=g)
        z = (1 - tau[..., None, None]) * torch.randn(x.shape, generator=g) + tau[..., None, None] * x
        return z, tau

    x_eval = clips(64)
    z_eval, tau_eval = noisy(x_eval)

    def eval_loss():
        with torch.no_grad():
            return (m(z_eval, tau_eval, 1 / cfg.k_max) - x_eval).square().mean().item()

    before = eval_loss()
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    for _ in range(400):
        x = clips(16)
        z, tau = noisy(x)
        loss = (m(z, tau, 1 / cfg.k_max) - x).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = eval_loss()
    assert before / after >= 10, (before, after)
    with torch.no_grad():
        z = x_eval.clone()
        z[:, -1] = torch.randn(z[:, -1].shape, generator=g)
        tau = torch.ones(64, T)
        tau[:, -1] = 0.0
        pred = m(z, tau, 1 / cfg.k_max)[:, -1]
    err, base = (pred - x_eval[:, -1]).square().mean(), x_eval[:, -1].square().mean()
    assert err < 0.2 * base, (err, base)


# ------------------------------------------------------------------------------------------------ sizes


def test_preset_parameter_counts_on_meta(capsys):
    rows = []
    for name in PRESETS:
        cfg = get_preset(name).model
        with torch.device("meta"):
            m = DynamicsModel(cfg)
        assert all(p.is_meta for p in m.parameters())
        n = m.num_parameters()
        rows.append(f"{name}: {n:,} parameters, {m.flops_per_frame(cfg.context_frames) / 1e9:.3f} GFLOP/frame")
        assert abs(n - approx_param_count(cfg)) <= 0.03 * n, (name, n, approx_param_count(cfg))
        # the count quoted in the preset's docstring ("67k parameters", "1.13M", "46M", "1.08B") stays true
        doc = re.search(r"([\d.]+)([kMB]) parameters", preset(name).summary)
        quoted = float(doc.group(1)) * {"k": 1e3, "M": 1e6, "B": 1e9}[doc.group(2)]
        assert abs(quoted - n) <= 0.05 * n, (name, quoted, n)
    with capsys.disabled():
        print("\n" + "\n".join(rows))


# ------------------------------------------------------------------------------------------------ no registers


def test_a_model_without_registers_works_end_to_end():
    cfg = _cfg(registers=0)
    m = perturbed_model(cfg)
    assert m.layout.special == len(m.layout.conditions) and m.layout.register_slice == slice(0, 0)
    with torch.no_grad():
        assert run_cached(m, cfg, 2, 5) < 1e-4  # step + cache == forward
        z, _, _, a, mask = random_inputs(cfg, 2, 4)
        x, h = m.hidden(z, 1.0, 1 / cfg.k_max, Conditions(a, mask))
        assert h.shape[2] == m.tokens_per_frame == len(m.layout.conditions) + cfg.num_latent_tokens
        feats = probe_features(m, h)  # the probes read the condition tokens (special_slice)
        assert feats.shape == (2, 4, len(m.layout.conditions) * cfg.width) and torch.isfinite(feats).all()
        assert rollout(m.eval(), z[:, :2], 2, Conditions(a), Sampling(2)).shape == (2, 2, *z.shape[2:])
    obj = make_objective(ObjectiveConfig(bootstrap_fraction=0.5, bootstrap_start=0), cfg)
    loss, _ = obj(m.train(), z, Conditions(a, mask), at=TrainStep(seeds=[1, 2]))
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(p.grad).all() for p in m.parameters() if p.grad is not None)
    assert m.registers.numel() == 0
