"""Layers: norms, RoPE, the attention implementations and their agreement."""

import warnings

import pytest
import torch

from latentwm.model import layers
from latentwm.model.layers import (
    RMSNorm,
    SwiGLU,
    apply_rope,
    attention_logits,
    cached_attention,
    eager_attention,
    fused_attention,
    rope_1d,
    rope_2d,
    soft_cap,
    window_mask,
)


def _naive(q, k, v, softcap=None, mask=None):
    """Textbook GQA attention: repeat kv heads, explicit softmax."""
    g = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(g, 1), v.repeat_interleave(g, 1)
    s = (q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5
    if softcap is not None:
        s = softcap * torch.tanh(s / softcap)
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf"))
    return s.softmax(-1) @ v


def _qkv(b=3, h=4, hkv=2, t=7, e=8, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(b, h, t, e, generator=g) * scale,
        torch.randn(b, hkv, t, e, generator=g) * scale,
        torch.randn(b, hkv, t, e, generator=g),
    )


def test_rmsnorm_unit_rms_and_dtype():
    n = RMSNorm(16)
    x = torch.randn(4, 16) * 7
    y = n(x)
    assert torch.allclose(y.pow(2).mean(-1), torch.ones(4), atol=1e-4)
    assert n(x.bfloat16()).dtype == torch.bfloat16


def test_swiglu_shape():
    assert SwiGLU(8, 24)(torch.randn(2, 5, 8)).shape == (2, 5, 8)


def test_rope_1d_is_relative():
    e = 16
    q, k = torch.randn(e), torch.randn(e)

    def dot(i, j):
        c, s = rope_1d(torch.tensor([i, j]), e, 10000.0)
        qq = apply_rope(q[None], c[:1], s[:1])
        kk = apply_rope(k[None], c[1:], s[1:])
        return (qq * kk).sum()

    assert torch.allclose(dot(3, 1), dot(103, 101), atol=1e-4)
    assert not torch.allclose(dot(3, 1), dot(3, 2), atol=1e-3)


def test_rope_2d_relative_and_zero_is_identity():
    e = 16
    q, k = torch.randn(e), torch.randn(e)

    def dot(a, b):
        c, s = rope_2d(torch.tensor([a[0], b[0]]), torch.tensor([a[1], b[1]]), e, 10000.0)
        return (apply_rope(q[None], c[:1], s[:1]) * apply_rope(k[None], c[1:], s[1:])).sum()

    assert torch.allclose(dot((2, 5), (1, 1)), dot((4, 7), (3, 3)), atol=1e-4)  # translation in both axes
    assert not torch.allclose(dot((2, 5), (1, 1)), dot((5, 2), (1, 1)), atol=1e-3)  # rows and cols differ
    c, s = rope_2d(torch.zeros(1, dtype=torch.long), torch.zeros(1, dtype=torch.long), e, 10000.0)
    assert torch.equal(apply_rope(q[None], c, s), q[None])


def test_soft_cap_bounds_logits():
    q, k, _ = _qkv(scale=100.0)
    cap = 5.0
    s = attention_logits(q, k, softcap=cap)
    assert s.abs().max() <= cap
    assert s.abs().max() > cap * 0.99  # it really was saturating
    raw = attention_logits(q, k, softcap=None)
    assert raw.abs().max() > 100 * cap
    small = torch.tensor([0.01, -0.02])
    assert torch.allclose(soft_cap(small, 50.0), small, atol=1e-6)


@pytest.mark.parametrize("softcap", [None, 5.0])
@pytest.mark.parametrize("causal,window", [(False, None), (True, None), (True, 3)])
def test_eager_matches_naive(softcap, causal, window):
    q, k, v = _qkv(scale=3.0)
    mask = window_mask(q.shape[2], window) if causal else None
    ref = _naive(q, k, v, softcap, mask)
    out = eager_attention(q, k, v, softcap=softcap, window=window, causal=causal)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("causal,window", [(False, None), (True, None), (True, 3), (True, 20)])
def test_sdpa_matches_eager_with_grad(causal, window, device):
    q, k, v = (t.to(device).requires_grad_() for t in _qkv())
    a = fused_attention(q, k, v, softcap=None, window=window, causal=causal)
    ga = torch.autograd.grad(a.square().sum(), (q, k, v))
    b = eager_attention(q, k, v, softcap=None, window=window, causal=causal)
    gb = torch.autograd.grad(b.square().sum(), (q, k, v))
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    for x, y in zip(ga, gb):
        torch.testing.assert_close(x, y, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("causal,window", [(False, None), (True, None), (True, 3)])
def test_flex_matches_eager(monkeypatch, causal, window, device):
    monkeypatch.setattr(layers, "FLEX_ON_CPU", True)
    # head dim 16: the least flex_attention's GPU kernel takes (the CPU path takes 8 too)
    q, k, v = (t.to(device) for t in _qkv(scale=3.0, e=8 if device.type == "cpu" else 16))
    with torch.no_grad():
        a = fused_attention(q, k, v, softcap=4.0, window=window, causal=causal)
        a2 = layers.flex_attention_capped(q, k, v, softcap=4.0, window=window, causal=causal)
    b = eager_attention(q, k, v, softcap=4.0, window=window, causal=causal)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(a2, b, atol=1e-5, rtol=1e-5)
    assert device.type not in layers._flex_broken
    if device.type != "cpu":  # flex has a backward off the CPU: gradients must match too
        qkv = [t.clone().requires_grad_() for t in (q, k, v)]
        ga = torch.autograd.grad(fused_attention(*qkv, softcap=4.0, window=window, causal=causal).square().sum(), qkv)
        gb = torch.autograd.grad(eager_attention(*qkv, softcap=4.0, window=window, causal=causal).square().sum(), qkv)
        for x, y in zip(ga, gb):
            torch.testing.assert_close(x, y, atol=1e-4, rtol=1e-4)


@pytest.mark.cpu_only
def test_fused_softcap_on_cpu_with_grad_falls_back(monkeypatch):
    monkeypatch.setattr(layers, "_warned", set())
    q, k, v = (t.requires_grad_() for t in _qkv())
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        a = fused_attention(q, k, v, softcap=4.0, causal=True)
        fused_attention(q, k, v, softcap=4.0, causal=True)
    assert sum("eager attention math" in str(w.message) for w in rec) == 1  # warned once
    a.sum().backward()
    torch.testing.assert_close(a, eager_attention(q, k, v, softcap=4.0, causal=True))


@pytest.mark.parametrize("softcap", [None, 3.0])
@pytest.mark.parametrize("tp", [0, 4])
def test_cached_attention_prefix_broadcast(softcap, tp, device):
    torch.manual_seed(0)
    bp, m, S, H, Hkv, E, tl = 2, 3, 5, 4, 2, 8, 3
    q = torch.randn(bp * m * S, H, 1, E, device=device) * 2
    k, v = torch.randn(bp * m * S, Hkv, tl, E, device=device), torch.randn(bp * m * S, Hkv, tl, E, device=device)
    kp, vp = torch.randn(bp * S, Hkv, tp, E, device=device), torch.randn(bp * S, Hkv, tp, E, device=device)
    out = cached_attention(
        q, [(k[:, :, :2], v[:, :, :2]), (k[:, :, 2:], v[:, :, 2:])], kp, vp, tokens=S, factor=m, softcap=softcap
    )

    def bcast(p):  # (Bp·S, ...) -> (Bp·m·S, ...), candidate-major within history
        return p.view(bp, 1, S, Hkv, tp, E).expand(bp, m, S, Hkv, tp, E).reshape(bp * m * S, Hkv, tp, E)

    ref = _naive(q, torch.cat([bcast(kp), k], 2), torch.cat([bcast(vp), v], 2), softcap)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
