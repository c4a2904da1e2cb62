"""The block-causal space/time transformer stack and its KV cache (DESIGN section 5).

Activations are (B, T, S, W): batch, frames, tokens per frame, width. Space blocks fold time into the batch
((B·T, S, W): every token of a frame sees every other, bidirectional); time blocks fold the token slots into the
batch ((B·S, T, W): slot s of frame t sees slot s of frames t − context_frames + 1 .. t). Because attention is
factorized, masks are "none" or a (T, T) causal band — reshapes, not a (T·S)² block mask.

Layer i is a time block when (i + 1) % time_every == 0, i.e. the last layer of every group of `time_every`
(depth 4, time_every 2: space, time, space, time). Only time blocks carry state across frames: the KV cache.

The window is per time layer: each sees the last `context_frames` frames (current included) of the layer below.
Stacked, the output of frame t can depend on frames back to t − n_time·(context_frames − 1) through the older
frames' deeper keys — and the cache reproduces exactly that, because it keeps each frame's keys as computed when
that frame was generated, which is what the full forward computes too. So the cache holds only window − 1 frames
per layer, yet cached generation equals the full forward over a sequence of any length.

RoPE: time blocks rotate every slot by its absolute frame index (1D); space blocks rotate latent token (r, c) of the
(grouped) grid by 2D position (r + 1, c + 1), while the register / shortcut / action tokens sit at position (0, 0)
(angle 0 = unrotated): one fixed spot just outside the grid, shared by all of them (they are told apart by their
learned content).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import cast

import torch
import torch.nn as nn
import torch.nn.functional as F

from latentwm.conditions import FrameConditions
from latentwm.config import ModelConfig
from latentwm.model.layers import Attention, RMSNorm, SwiGLU, cached_attention, rope_1d, rope_2d, window_mask
from latentwm.model.layout import TokenLayout

_ROPE_MEMO = 4096
"""Frame positions whose time-RoPE table is memoized (16 KB per device at head dim 64); later ones are computed."""


class KVCache:
    """Keys/values of the time blocks for the frames generated so far, bounded to the attention window.

    Layout per time layer i (keys already RoPE-rotated at their absolute frame index, so rollouts of any length
    reuse them as they are; attention is order-free over keys, so only the window bound matters):
      prefix_k[i], prefix_v[i]: (Bp·S, Hkv, Tp, E) — history shared by `factor` consecutive batch entries
      k[i], v[i]:               (B·S,  Hkv, Ts, E) — per-sample frames, B = Bp·factor, sample = b·factor + j
    Row index of a token is sample·S + slot. The frames held are prefix then suffix, oldest first.

    Semantics
      length:      Tp + Ts, frames held; never more than window − 1 (the new frame itself is the window's last).
      time_index:  absolute index of the next frame (= frames committed since init_cache; keeps growing past the
                   window so RoPE positions match the full forward's).
      window:      context_frames.
      commit (via DynamicsModel.step(commit=True)): appends the frame to the suffix, drops the oldest frames beyond
                   window − 1 (prefix first: a slice, no copy), time_index += 1. Steps with commit=False never touch
                   the cache.
      expand(n):   new cache for n candidates per sample (batch B·n, sample b's candidates are b·n .. b·n + n − 1,
                   like `repeat_interleave(n, 0)`). The history becomes the shared prefix with no copy when it lives
                   entirely in the prefix or entirely in the suffix; if it has both (expanding an expanded cache
                   after commits) the two are merged once (one copy of B × history). Attention reads the prefix
                   once per history for all n candidates (`layers.cached_attention`), in every backend.
      clone():     an independent cache. Tensors are shared because the cache never writes into a tensor in place
                   (commit builds new ones), so clone is O(1) memory and later commits on either copy do not leak.
      pending:     (B, N, D) or None, with pending_text (its FrameConditions, text only, or None): a next-frame
                   model's (model.prediction "next") newest frame, not in the cache yet — its pass conditions on the
                   action taken after it, so it is committed once that action is known (rollout.py owns this).
                   expand(n) repeats it like the history (row b·n + j); other models leave it None.
      previous:    (B, N, D) or None: the last committed frame's input z (model.previous_frame: the next frame's
                   previous-frame input; set by DynamicsModel.step on commit, None for other models). expand(n)
                   repeats it like `pending`.
    """

    def __init__(
        self,
        *,
        num_layers: int,
        batch_size: int,
        tokens: int,
        kv_heads: int,
        head_dim: int,
        window: int,
        device=None,
        dtype=None,
    ):
        empty = torch.empty(batch_size * tokens, kv_heads, 0, head_dim, device=device, dtype=dtype)
        self.prefix_k = [empty] * num_layers
        self.prefix_v = [empty] * num_layers
        self.k = [empty] * num_layers
        self.v = [empty] * num_layers
        self.batch_size, self.tokens, self.window = batch_size, tokens, window
        self.factor = 1
        self.time_index = 0
        self.dtype = empty.dtype
        self.pending: torch.Tensor | None = None
        self.pending_text: FrameConditions | None = None
        self.previous: torch.Tensor | None = None

    @property
    def prefix_length(self) -> int:
        return self.prefix_k[0].shape[2] if self.prefix_k else 0

    @property
    def suffix_length(self) -> int:
        return self.k[0].shape[2] if self.k else 0

    @property
    def length(self) -> int:
        return self.prefix_length + self.suffix_length

    def _copy(self) -> KVCache:
        out = KVCache.__new__(KVCache)
        out.__dict__.update(self.__dict__)
        for name in ("prefix_k", "prefix_v", "k", "v"):
            setattr(out, name, list(getattr(self, name)))
        return out

    def clone(self) -> KVCache:
        return self._copy()

    def expand(self, n: int) -> KVCache:
        if n < 1:
            raise ValueError(f"KVCache.expand: n must be >= 1, got {n}")
        out = self._copy()
        S, B = self.tokens, self.batch_size
        for i in range(len(self.k)):
            if self.suffix_length == 0:  # history all in the prefix: share it further
                pass
            elif self.prefix_length == 0:  # history all per-sample: it becomes the prefix as is
                out.prefix_k[i], out.prefix_v[i] = self.k[i], self.v[i]
            else:  # both: merge once
                out.prefix_k[i] = torch.cat([self._broadcast(self.prefix_k[i]), self.k[i]], 2)
                out.prefix_v[i] = torch.cat([self._broadcast(self.prefix_v[i]), self.v[i]], 2)
            out.k[i] = self.k[i].new_empty(B * n * S, *self.k[i].shape[1:2], 0, self.k[i].shape[3])
            out.v[i] = out.k[i]
        out.factor = self.factor * n if self.suffix_length == 0 else n
        out.batch_size = B * n
        rep = lambda t: t.repeat_interleave(n, 0) if torch.is_tensor(t) else t  # noqa: E731
        out.pending = rep(self.pending)
        out.previous = rep(self.previous)
        out.pending_text = None if self.pending_text is None else self.pending_text.map(rep)
        return out

    def _broadcast(self, p: torch.Tensor) -> torch.Tensor:
        """(Bp·S, Hkv, T, E) -> (Bp·factor·S, Hkv, T, E), candidate-major within each history (a copy)."""
        S, m = self.tokens, self.factor
        bp = p.shape[0] // S
        return p.view(bp, 1, S, *p.shape[1:]).expand(bp, m, S, *p.shape[1:]).reshape(bp * m * S, *p.shape[1:])

    def materialize(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Full (B·S, Hkv, length, E) keys and values of one time layer (copies; for inspection and tests)."""
        k = torch.cat([self._broadcast(self.prefix_k[layer]), self.k[layer]], 2)
        v = torch.cat([self._broadcast(self.prefix_v[layer]), self.v[layer]], 2)
        return k, v

    def _commit(self, new: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """new[i]: (B·S, Hkv, 1, E) the frame's keys/values at time layer i; append, trim to window − 1, advance.
        The only copy a commit makes is the suffix concatenation (O(window) per layer)."""
        keep = max(self.window - 1, 0)
        excess = max(self.length + 1 - keep, 0)
        drop_p = min(excess, self.prefix_length)
        drop_s = excess - drop_p
        for i, (k, v) in enumerate(new):
            self.prefix_k[i] = self.prefix_k[i][:, :, drop_p:]
            self.prefix_v[i] = self.prefix_v[i][:, :, drop_p:]
            self.k[i] = torch.cat([self.k[i], k.to(self.dtype)], 2)[:, :, drop_s:]
            self.v[i] = torch.cat([self.v[i], v.to(self.dtype)], 2)[:, :, drop_s:]
        self.time_index += 1

    def __repr__(self) -> str:
        return (
            f"KVCache(batch={self.batch_size}, layers={len(self.k)}, length={self.length} "
            f"(prefix {self.prefix_length} x{self.factor}, suffix {self.suffix_length}), "
            f"time_index={self.time_index}, window={self.window})"
        )


def teacher_forcing_mask(frames: int, window: int, device=None) -> torch.Tensor:
    """(2T, 2T) bool time pattern of a teacher-forced pass (True = attend), T = frames: queries and keys 0..T−1 are
    the clean stream, T..2T−1 the noisy frames. Clean frame i sees clean frames i − window + 1..i (the causal
    window); noisy frame i sees clean frames i − window + 1..i − 1 and itself — the window − 1 committed frames of
    the KV cache plus the frame being denoised. Noisy frames never see each other; clean frames never see noise."""
    band = window_mask(frames, window, device)  # (T, T): j ≤ i, i − j < window
    eye = torch.eye(frames, dtype=torch.bool, device=device)
    top = torch.cat([band, torch.zeros_like(band)], 1)
    bottom = torch.cat([band & ~eye, eye], 1)
    return torch.cat([top, bottom], 0)


class Block(nn.Module):
    """Pre-RMSNorm residual block: x + attn(norm(x)), then x + swiglu(norm(x)); kind 'space' or 'time'.

    model.dropout > 0 drops elements of each branch's output (scaled by 1/(1 − p)) in training mode only; at 0 no
    dropout op runs at all (no RNG draw), so runs without it are unchanged."""

    def __init__(self, cfg: ModelConfig, kind: str):
        super().__init__()
        self.kind = kind
        self.window = cfg.context_frames
        self.dropout = cfg.dropout
        self.norm1 = RMSNorm(cfg.width)
        self.attn = Attention(cfg.width, cfg.heads, cfg.kv_heads, cfg.softcap, cfg.attention)
        self.norm2 = RMSNorm(cfg.width)
        self.mlp = SwiGLU(cfg.width, cfg.mlp_hidden)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask=None) -> torch.Tensor:
        """x (B, T, S, W); cos/sin (S, E/2) for space, (T, E/2) for time -> (B, T, S, W). mask (T, T) bool: the
        time blocks' pattern instead of the causal window (`teacher_forcing_mask`); space blocks ignore it."""
        B, T, S, W = x.shape
        h = self.norm1(x)
        if self.kind == "space":
            a = self.attn(h.reshape(B * T, S, W), cos, sin).view(B, T, S, W)
        else:
            h = h.transpose(1, 2).reshape(B * S, T, W)
            kw = {"window": self.window, "causal": True} if mask is None else {"mask": mask}
            a = self.attn(h, cos, sin, **kw).view(B, S, T, W).transpose(1, 2)
        x = x + self._drop(a)
        return x + self._drop(self.mlp(self.norm2(x)))

    def _drop(self, branch: torch.Tensor) -> torch.Tensor:
        if self.dropout == 0.0 or not self.training:
            return branch
        return F.dropout(branch, self.dropout, training=True)

    def step_time(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache: KVCache | None, layer: int):
        """One new frame through a time block. x (B, S, W); cos/sin (1, E/2) at the frame's absolute index.
        -> x (B, S, W), (k, v) (B·S, Hkv, 1, E): this frame's keys/values (for commit)."""
        if cache is None:
            return self.time_core(x, cos, sin, None, None, None, None, 1)
        return self.time_core(
            x, cos, sin, cache.k[layer], cache.v[layer], cache.prefix_k[layer], cache.prefix_v[layer], cache.factor
        )

    def time_core(self, x, cos, sin, ck, cv, kp, vp, factor: int):
        """`step_time` on plain tensors — the cached layer's suffix ck, cv (B·S, Hkv, Ts, E) and prefix kp, vp
        (Bp·S, Hkv, Tp, E) or None — so a compiled version (`DynamicsModel.compile_sampling`) guards on their
        shapes, not on the cache object or the layer index."""
        B, S, W = x.shape
        q, k, v = self.attn.project(self.norm1(x).reshape(B * S, 1, W), cos, sin)
        segments = [(k, v)] if ck is None else [(ck, cv), (k, v)]
        o = cached_attention(q, segments, kp, vp, tokens=S, factor=factor, softcap=self.attn.softcap)
        x = x + self._drop(self.attn.o(o.transpose(1, 2).reshape(B, S, -1)))
        return x + self._drop(self.mlp(self.norm2(x))), (k, v)


class Transformer(nn.Module):
    """The stack: blocks + final RMSNorm. Token layout within a frame (TokenLayout): `layout.special` non-latent
    tokens first, then the grid² latent tokens in row-major order."""

    def __init__(self, cfg: ModelConfig, layout: TokenLayout):
        super().__init__()
        self.grid = int(round(layout.latents**0.5))
        self.cfg, self.special = cfg, layout.special
        self.tokens = layout.tokens_per_frame
        kinds = ["time" if (i + 1) % cfg.time_every == 0 else "space" for i in range(cfg.depth)]
        self.blocks = nn.ModuleList(Block(cfg, kind) for kind in kinds)
        self.time_layers = [i for i, kind in enumerate(kinds) if kind == "time"]
        self.norm = RMSNorm(cfg.width)
        self._space_rope: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._time_rope: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def space_rope(self, device) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin (S, E/2): special tokens at (0, 0) (unrotated), latent (r, c) at (r + 1, c + 1).
        Constant, so memoized per device (a plain dict, not a buffer: nothing to save, no dtype casts)."""
        key = str(device)
        if key not in self._space_rope or torch.compiler.is_compiling():
            idx = torch.arange(self.grid * self.grid, device=device)
            zero = torch.zeros(self.special, dtype=idx.dtype, device=device)
            rows = torch.cat([zero, idx // self.grid + 1])
            cols = torch.cat([zero, idx % self.grid + 1])
            table = rope_2d(rows, cols, self.cfg.head_dim, self.cfg.rope_base)
            if torch.compiler.is_compiling():
                return table
            self._space_rope[key] = table
        return self._space_rope[key]

    def time_rope(self, start: int, length: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin (length, E/2) for absolute frame indices start .. start + length − 1. The first
        _ROPE_MEMO positions come from a memoized table (saves ~10 small ops per generated frame)."""
        end = start + length
        if end > _ROPE_MEMO or torch.compiler.is_compiling():
            return rope_1d(torch.arange(start, end, device=device), self.cfg.head_dim, self.cfg.rope_base)
        key = str(device)
        if key not in self._time_rope:
            self._time_rope[key] = rope_1d(
                torch.arange(_ROPE_MEMO, device=device), self.cfg.head_dim, self.cfg.rope_base
            )
        cos, sin = self._time_rope[key]
        return cos[start:end], sin[start:end]

    def forward(self, x: torch.Tensor, teacher_forced: bool = False) -> torch.Tensor:
        """x (B, T, S, W) embedded tokens of frames 0..T−1 -> (B, T, S, W) final-normed outputs.

        teacher_forced: x is (B, 2T', S, W), a clip's clean frames 0..T'−1 then its noisy frames 0..T'−1 (both at
        time positions 0..T'−1); the time blocks use `teacher_forcing_mask`, so each noisy frame sees the clean
        frames before it and itself — what the KV cache holds when sampling — and the clean stream is the plain
        causal pass of the clean clip."""
        sp = self.space_rope(x.device)
        mask = None
        if teacher_forced:
            frames = x.shape[1] // 2
            cos, sin = self.time_rope(0, frames, x.device)
            tm = (torch.cat([cos, cos]), torch.cat([sin, sin]))
            mask = teacher_forcing_mask(frames, self.cfg.context_frames, x.device)
        else:
            tm = self.time_rope(0, x.shape[1], x.device)
        for blk in self.blocks:
            x = blk(x, *(sp if blk.kind == "space" else tm), mask=None if blk.kind == "space" else mask)
        return self.norm(x)

    def step(self, x: torch.Tensor, cache: KVCache | None, commit: bool) -> torch.Tensor:
        """x (B, S, W) tokens of one new frame at absolute index cache.time_index (0 without a cache)
        -> (B, S, W) final-normed outputs; with commit=True the frame's keys/values join the cache."""
        if cache is not None and cache.batch_size != x.shape[0]:
            raise ValueError(f"cache: batch size {cache.batch_size} does not match the frame's batch {x.shape[0]}")
        if commit and cache is None:
            raise ValueError("step(commit=True) needs a cache (model.init_cache(batch_size))")
        t = 0 if cache is None else cache.time_index
        sp = self.space_rope(x.device)
        tm = self.time_rope(t, 1, x.device)
        local: list[tuple[torch.Tensor, torch.Tensor]] = []
        for blk in cast("Iterable[Block]", self.blocks):  # nn.ModuleList iterates as nn.Module
            if blk.kind == "space":
                x = blk(x[:, None], *sp)[:, 0]
            else:
                x, kv = blk.step_time(x, *tm, cache, len(local))
                local.append(kv)
        if commit:
            assert cache is not None  # refused above
            cache._commit(local)
        return self.norm(x)

    def init_cache(self, batch_size: int, device=None, dtype=None) -> KVCache:
        p = next(self.parameters())
        return KVCache(
            num_layers=len(self.time_layers),
            batch_size=batch_size,
            tokens=self.tokens,
            kv_heads=self.cfg.kv_heads,
            head_dim=self.cfg.head_dim,
            window=self.cfg.context_frames,
            device=device if device is not None else p.device,
            dtype=dtype or p.dtype,
        )
