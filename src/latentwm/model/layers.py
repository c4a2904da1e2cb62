"""Building blocks of the dynamics transformer (DESIGN section 5): RMSNorm, SwiGLU, RoPE (1D time, 2D space) and
grouped-query, QK-normed, soft-capped attention with three implementations.

Shapes: B' is whatever batch the caller folded in (B·T frames for space attention, B·S token slots for time
attention), H query heads, Hkv key/value heads (H = Hkv·g), L / Tq / Tk sequence lengths, E head dim.
GQA convention: query head h uses key/value head h // g (the `repeat_interleave` convention of SDPA's enable_gqa).

Backends
- eager: explicit logits → soft cap → mask → softmax. The reference the others are tested against; masks are
  either none (space) or a (Tq, Tk) causal band (time), never a big block mask.
- fused: softcap None → `F.scaled_dot_product_attention` (flash / memory-efficient kernels on GPU, grads on CPU).
  softcap set → `flex_attention` with the cap (and the causal window) as a score_mod, compiled on GPU.
  On CPU in torch 2.13 flex_attention (a) has no backward ("FlexAttention does not support backward on CPU"),
  (b) without torch.compile runs an unfused path that materializes the scores and is ~10x slower than eager
  math, (c) with torch.compile works but costs ~15 s of compile per shape. So on CPU "fused" + softcap falls back to
  the eager math with a one-time warning; `FLEX_ON_CPU = True` (used by the tests) routes no-grad CPU calls through
  the real flex_attention so its score_mods stay tested.
"""

from __future__ import annotations

import functools
import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F

FLEX_ON_CPU = False
"""Run flex_attention (eager, unfused, forward only) on CPU instead of falling back; for tests."""

_warned: set[str] = set()
_flex_broken: set[str] = set()  # device types where flex_attention raised once; use eager from then on


def _warn_once(key: str, msg: str) -> None:
    if key not in _warned:
        _warned.add(key)
        warnings.warn(msg, stacklevel=3)


# ------------------------------------------------------------------------------------------------ norms and MLP


class RMSNorm(nn.Module):
    """x / rms(x) · g over the last dim. Computed in float32 (bf16 mean-of-squares loses precision), returned in the
    input dtype so autocast regions stay bf16."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., dim) -> (..., dim)
        if x.dtype == torch.float32 and self.weight.dtype == torch.float32:  # skip no-op casts (per-frame overhead)
            return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)
        return F.rms_norm(x.float(), (x.shape[-1],), self.weight.float(), self.eps).to(x.dtype)


class SwiGLU(nn.Module):
    """down(silu(gate(x)) · up(x)); gate and up share one matmul. `down` is zero-initialized by the model."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.up = nn.Linear(dim, 2 * hidden, bias=False)
        self.down = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., dim) -> (..., dim)
        gate, up = self.up(x).chunk(2, dim=-1)
        return self.down(F.silu(gate) * up)


# ------------------------------------------------------------------------------------------------ rotary embeddings


def _angle_dtype(device: torch.device) -> torch.dtype:
    # float64 angles keep absolute time positions exact for very long rollouts (float32 t·freq drifts at t ~ 1e5);
    # MPS has no float64.
    return torch.float32 if device.type == "mps" else torch.float64


def rope_1d(positions: torch.Tensor, head_dim: int, base: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin (L, E/2) for integer positions (L,): pair (i, i + E/2) rotates by positions · base^(-2i/E)."""
    dt = _angle_dtype(positions.device)
    inv = base ** (-torch.arange(0, head_dim // 2, device=positions.device, dtype=dt) * 2 / head_dim)
    ang = positions.to(dt)[:, None] * inv[None]
    return ang.cos().float(), ang.sin().float()


def rope_2d(rows: torch.Tensor, cols: torch.Tensor, head_dim: int, base: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin (L, E/2) for grid positions rows, cols (L,): the first E/4 rotation pairs follow the row, the other
    E/4 the column, each with its own 1D frequency ladder over E/2 dims. Rows with angle 0 are left unrotated."""
    c_r, s_r = rope_1d(rows, head_dim // 2, base)
    c_c, s_c = rope_1d(cols, head_dim // 2, base)
    return torch.cat([c_r, c_c], -1), torch.cat([s_r, s_c], -1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate (..., L, E) by cos, sin (L, E/2) (rotate-half pairing); float32 math, input dtype out."""
    x1, x2 = x.float().chunk(2, dim=-1)
    out = torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)
    return out if out.dtype == x.dtype else out.to(x.dtype)


# ------------------------------------------------------------------------------------------------ attention math


def soft_cap(s: torch.Tensor, cap: float | None) -> torch.Tensor:
    """c·tanh(s/c): bounds logits to (-c, c) smoothly, so no head can saturate its softmax (Gemma 2 / Dreamer 4)."""
    return s if cap is None else capped(s / cap, cap)


def logit_scale(head_dim: int, cap: float | None) -> float:
    """1/√E, and 1/c under a soft cap, in one factor: `eager_attention` applies it to q, the smaller operand,
    rather than to the (.., Tq, Tk) logits (the CEM profile: elementwise passes over the logits were a large share
    of a planning call on the CPU; space attention 1.27× faster for it)."""
    return head_dim**-0.5 / (cap if cap is not None else 1.0)


def capped(s: torch.Tensor, cap: float | None) -> torch.Tensor:
    """c·tanh(s) of logits already divided by c (`logit_scale`) — `soft_cap` without its division."""
    return s if cap is None else torch.tanh(s) * cap


def window_mask(length: int, window: int | None, device=None) -> torch.Tensor:
    """(L, L) bool, True = attend: key j ≤ query i and i − j < window (window None: plain causal)."""
    i = torch.arange(length, device=device)
    keep = i[None, :] <= i[:, None]
    if window is not None:
        keep = keep & (i[:, None] - i[None, :] < window)
    return keep


def attention_logits(q: torch.Tensor, k: torch.Tensor, softcap: float | None = None) -> torch.Tensor:
    """Scaled, soft-capped logits in float32.

    q (B', H, Tq, E), k (B', Hkv, Tk, E) -> (B', Hkv, g, Tq, Tk). The g query heads sharing a kv head are folded
    into the query rows of one matmul instead of copying k g times.
    """
    b, h, tq, e = q.shape
    hkv, tk = k.shape[1], k.shape[2]
    g = h // hkv
    q = q * logit_scale(e, softcap)
    s = torch.matmul(q.reshape(b, hkv, g * tq, e), k.transpose(-1, -2)).float()
    return capped(s.view(b, hkv, g, tq, tk), softcap)


def eager_attention(
    q,
    k,
    v,
    *,
    softcap: float | None = None,
    window: int | None = None,
    causal: bool = False,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Reference attention. q (B', H, Tq, E); k, v (B', Hkv, Tk, E) -> (B', H, Tq, E).

    causal=False: bidirectional (space). causal=True: query i sees keys max(0, i − window + 1)..i (time; Tq == Tk).
    mask (Tq, Tk) bool, True = attend: any other pattern (every query row must keep a key); window and causal are
    then not used.
    """
    b, h, tq, e = q.shape
    hkv, tk = k.shape[1], k.shape[2]
    s = attention_logits(q, k, softcap)  # (B', Hkv, g, Tq, Tk)
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf"))
    elif causal:
        s = s.masked_fill(~window_mask(tq, window, q.device), float("-inf"))
    p = s.softmax(dim=-1).to(v.dtype)
    return torch.matmul(p.view(b, hkv, (h // hkv) * tq, tk), v).view(b, h, tq, e)


@functools.cache
def _score_mod(cap: float, window: int | None, causal: bool):
    # Cached so the same (cap, window) always yields the same function object: torch.compile guards on it.
    if not causal:

        def mod(score, b, h, q_idx, kv_idx):
            return cap * torch.tanh(score / cap)
    else:
        lim = window if window is not None else 1 << 30

        def mod(score, b, h, q_idx, kv_idx):
            keep = (kv_idx <= q_idx) & (q_idx - kv_idx < lim)
            return torch.where(keep, cap * torch.tanh(score / cap), float("-inf"))

    return mod


@functools.cache
def _compiled_flex():
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention)  # the documented way to get the fused kernel outside a compiled model


def flex_attention_capped(q, k, v, *, softcap: float, window: int | None = None, causal: bool = False):
    """flex_attention with the cap (+ causal window) as score_mod. Shapes as `eager_attention`."""
    from torch.nn.attention.flex_attention import flex_attention

    mod = _score_mod(float(softcap), window, causal)
    gqa = q.shape[1] != k.shape[1]
    if torch.compiler.is_compiling():  # inside a compiled model: dynamo fuses it
        return flex_attention(q, k, v, score_mod=mod, enable_gqa=gqa)
    if q.device.type == "cpu":
        with warnings.catch_warnings():  # the "without torch.compile ... unfused" notice: known, documented above
            warnings.simplefilter("ignore")
            return flex_attention(q, k, v, score_mod=mod, enable_gqa=gqa)
    return _compiled_flex()(q, k, v, score_mod=mod, enable_gqa=gqa)


def fused_attention(
    q, k, v, *, softcap: float | None = None, window: int | None = None, causal: bool = False
) -> torch.Tensor:
    """SDPA (no cap) or flex_attention (cap); falls back to `eager_attention` where flex cannot run (see top)."""
    if softcap is None:
        gqa = q.shape[1] != k.shape[1]
        if not causal:
            return F.scaled_dot_product_attention(q, k, v, enable_gqa=gqa)
        if window is None or q.shape[2] <= window:  # the band is the whole causal triangle
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)
        mask = window_mask(q.shape[2], window, q.device)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa)
    dev = q.device.type
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))
    if dev == "cpu" and not (FLEX_ON_CPU and not needs_grad):
        if not torch.compiler.is_compiling():  # a warning inside a traced region is a graph break per layer
            _warn_once(
                "flex-cpu",
                "attention='fused' with a soft cap: flex_attention has no CPU backward and is unfused "
                "without torch.compile in this torch; using the eager attention math on CPU.",
            )
        return eager_attention(q, k, v, softcap=softcap, window=window, causal=causal)
    if dev in _flex_broken:
        return eager_attention(q, k, v, softcap=softcap, window=window, causal=causal)
    if torch.compiler.is_compiling():
        return flex_attention_capped(q, k, v, softcap=softcap, window=window, causal=causal)
    try:
        return flex_attention_capped(q, k, v, softcap=softcap, window=window, causal=causal)
    except Exception as err:  # e.g. a head dim the kernel does not support; stay correct, say so once
        _flex_broken.add(dev)
        _warn_once(
            f"flex-{dev}",
            f"flex_attention failed on {dev} ({type(err).__name__}: {err}); "
            "using the eager attention math from now on.",
        )
        return eager_attention(q, k, v, softcap=softcap, window=window, causal=causal)


def cached_attention(
    q, segments, k_prefix=None, v_prefix=None, *, tokens: int, factor: int = 1, softcap: float | None = None
) -> torch.Tensor:
    """One new frame's time attention over a KV cache whose oldest part may be shared by `factor` candidates.

    q: (B·S, H, 1, E) queries of the new frame, sample i = b·factor + j (history b, candidate j), S = `tokens`.
    segments: [(k, v), ...] per-sample keys/values, each (B·S, Hkv, Ti, E) (the cached suffix, then the new frame
        itself); attended without concatenating them, so denoising steps never copy the cache.
    k_prefix, v_prefix: (Bp·S, Hkv, Tp, E) with B = Bp·factor, shared by the factor candidates of each history;
        None or Tp = 0 for none. The candidates' queries are folded into the query rows of one matmul against the
        prefix, so the shared history is read once and never copied per candidate.
    All keys are attended (the cache is already window-bounded); all logits share one softmax.
    -> (B·S, H, 1, E)
    This is a matrix-vector product per slot (memory-bound); fused kernels buy nothing here, so both backends use it.
    """
    bs, h, tq, e = q.shape
    assert tq == 1, "cached_attention takes one query frame"
    hkv = segments[0][0].shape[1]
    g = h // hkv
    ql = q.reshape(bs, hkv, g, e)
    segments = [(k, v) for k, v in segments if k.shape[2] > 0]
    logits = [torch.matmul(ql, k.transpose(-1, -2).to(ql.dtype)).float() for k, _ in segments]
    has_prefix = k_prefix is not None and k_prefix.shape[2] > 0
    if has_prefix:
        S, m = tokens, factor
        bp, tp = bs // (S * m), k_prefix.shape[2]
        # (Bp, m, S, Hkv, g, E) -> (Bp·S, Hkv, m·g, E): all candidates of history b as extra query rows
        qp = q.reshape(bp, m, S, hkv, g, e).permute(0, 2, 3, 1, 4, 5).reshape(bp * S, hkv, m * g, e)
        s_pre = torch.matmul(qp, k_prefix.transpose(-1, -2).to(qp.dtype)).float()  # (Bp·S, Hkv, m·g, Tp)
        logits.insert(0, s_pre.view(bp, S, hkv, m, g, tp).permute(0, 3, 1, 2, 4, 5).reshape(bs, hkv, g, tp))
    # one query per row and T_all ≤ window keys: the logits are smaller than q here, so they take the scale
    p = capped(torch.cat(logits, dim=-1) * logit_scale(e, softcap), softcap).softmax(-1)  # (B·S, Hkv, g, T_all)
    parts = p.split([s.shape[-1] for s in logits], dim=-1)
    out: torch.Tensor | int = 0
    for pi, (_, v) in zip(parts[1:] if has_prefix else parts, segments):
        out = out + torch.matmul(pi.to(v.dtype), v)  # (B·S, Hkv, g, E)
    if has_prefix:
        p_pre = parts[0].reshape(bp, m, S, hkv, g, tp).permute(0, 2, 3, 1, 4, 5).reshape(bp * S, hkv, m * g, tp)
        o_pre = torch.matmul(p_pre.to(v_prefix.dtype), v_prefix)  # (Bp·S, Hkv, m·g, E)
        out = out + o_pre.view(bp, S, hkv, m, g, e).permute(0, 3, 1, 2, 4, 5).reshape(bs, hkv, g, e)
    assert isinstance(out, torch.Tensor)  # segments always hold the new frame's own keys/values
    return out.reshape(bs, h, 1, e).to(q.dtype)


# ------------------------------------------------------------------------------------------------ attention module


class Attention(nn.Module):
    """Projections + QK RMSNorm + RoPE around one of the attention functions above.

    QKNorm (per head dim, separate gains for q and k) keeps logits O(sqrt(E)) whatever the residual stream's
    scale does, which together with the soft cap keeps large-model training stable. `o` is zero-initialized by the
    model so the residual branch starts at zero.
    """

    def __init__(self, width: int, heads: int, kv_heads: int, softcap: float | None, backend: str):
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads, width // heads
        self.softcap, self.backend = softcap, backend
        self.q = nn.Linear(width, heads * self.head_dim, bias=False)
        self.kv = nn.Linear(width, 2 * kv_heads * self.head_dim, bias=False)
        self.o = nn.Linear(heads * self.head_dim, width, bias=False)
        self.q_norm = RMSNorm(self.head_dim)
        self.k_norm = RMSNorm(self.head_dim)

    def project(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
        """x (B', L, W), cos/sin (L, E/2) -> q (B', H, L, E), k, v (B', Hkv, L, E); q, k normed then rotated."""
        b, n, _ = x.shape
        q = self.q(x).view(b, n, self.heads, self.head_dim).transpose(1, 2)
        k, v = self.kv(x).view(b, n, 2, self.kv_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        q = apply_rope(self.q_norm(q), cos, sin)
        k = apply_rope(self.k_norm(k), cos, sin)
        return q, k, v

    def attend(self, q, k, v, *, window: int | None = None, causal: bool = False, mask=None) -> torch.Tensor:
        """(B', H, L, E) x2 (B', Hkv, L, E) -> (B', L, H·E) before the output projection. mask (L, L) bool: an
        explicit pattern (teacher-forced training's two streams) — SDPA without a cap, the eager math with one."""
        if mask is not None:
            if self.softcap is None and self.backend != "eager":
                o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=q.shape[1] != k.shape[1])
            else:
                o = eager_attention(q, k, v, softcap=self.softcap, mask=mask)
        else:
            fn = eager_attention if self.backend == "eager" else fused_attention
            o = fn(q, k, v, softcap=self.softcap, window=window, causal=causal)
        return o.transpose(1, 2).reshape(q.shape[0], q.shape[2], -1)

    def forward(self, x, cos, sin, *, window: int | None = None, causal: bool = False, mask=None) -> torch.Tensor:
        """x (B', L, W) -> (B', L, W); mask (L, L) bool or None (see `attend`)."""
        q, k, v = self.project(x, cos, sin)
        return self.o(self.attend(q, k, v, window=window, causal=causal, mask=mask))


def linear_flops(tokens: int, fan_in: int, fan_out: int) -> int:
    """Multiply-add FLOPs (2 per MAC) of a dense layer over `tokens` rows."""
    return 2 * tokens * fan_in * fan_out


def mlp(inp: int, hidden: int, out: int, layers: int = 2) -> nn.Sequential:
    """`layers` × (Linear → LayerNorm → SiLU), then a Linear to `out`: the small heads and probes on model features."""
    mods: list[nn.Module] = []
    d = inp
    for _ in range(layers):
        mods += [nn.Linear(d, hidden), nn.LayerNorm(hidden), nn.SiLU()]
        d = hidden
    mods.append(nn.Linear(d, out))
    return nn.Sequential(*mods)


def decay_groups(module: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW parameter groups: decay on matrices (ndim ≥ 2), none on norms, biases and learned 1-D tokens."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for p in module.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


__all__ = [
    "RMSNorm",
    "SwiGLU",
    "Attention",
    "rope_1d",
    "rope_2d",
    "apply_rope",
    "soft_cap",
    "window_mask",
    "attention_logits",
    "eager_attention",
    "fused_attention",
    "flex_attention_capped",
    "cached_attention",
    "linear_flops",
    "mlp",
    "decay_groups",
    "FLEX_ON_CPU",
]
