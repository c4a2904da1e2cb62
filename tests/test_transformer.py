"""The space/time stack and the KV cache's bookkeeping (equality with the full forward is in test_dynamics)."""

import dataclasses

import pytest
import torch

from latentwm.config import get_preset
from latentwm.model import DynamicsModel, KVCache
from latentwm.model.layout import TokenLayout
from latentwm.model.transformer import Transformer


def _cfg(**kw):
    return dataclasses.replace(get_preset("tiny").model, attention="eager", **kw)


def _perturbed(cfg, seed=0):
    torch.manual_seed(seed)
    m = DynamicsModel(cfg)
    with torch.no_grad():  # leave the zero init, which would make every block an identity
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return m


@pytest.mark.parametrize("depth,every,kinds", [(4, 2, "stst"), (6, 4, "ssstss"), (3, 1, "ttt")])
def test_block_layout(depth, every, kinds):
    t = Transformer(_cfg(depth=depth, time_every=every), TokenLayout(registers=2, latents=16))
    assert "".join(b.kind[0] for b in t.blocks) == kinds
    assert t.time_layers == [i for i, k in enumerate(kinds) if k == "t"]


def test_blocks_start_as_identity():
    cfg = _cfg()
    t = Transformer(cfg, TokenLayout(registers=2, latents=16))
    for b in t.blocks:  # the model zeroes these in reset_parameters
        torch.nn.init.zeros_(b.attn.o.weight)
        torch.nn.init.zeros_(b.mlp.down.weight)
    x = torch.randn(2, 3, t.tokens, cfg.width)
    torch.testing.assert_close(t(x), t.norm(x))
    m = DynamicsModel(cfg)  # the real init: head zero -> x̂ = 0
    assert m(torch.randn(1, 2, 16, 64), 0.5, 0.25).abs().max() == 0


def _fill(model, cache, frames, seed=0):
    g = torch.Generator().manual_seed(seed)
    B, dev = cache.batch_size, next(model.parameters()).device
    for _ in range(frames):
        model.step(torch.randn(B, 16, 64, generator=g).to(dev), 1.0, 1 / 8, cache=cache, commit=True)


def test_cache_window_and_time_index(device):
    cfg = _cfg(context_frames=4)
    m = _perturbed(cfg).to(device)
    cache = m.init_cache(2)
    assert (cache.length, cache.time_index, cache.window) == (0, 0, 4)
    S = m.tokens_per_frame
    with torch.no_grad():
        for t in range(7):
            _fill(m, cache, 1, seed=t)
            assert cache.time_index == t + 1
            assert cache.length == min(t + 1, 3)  # window − 1: the next frame is the window's last
    k, v = cache.materialize(0)
    assert k.shape == (2 * S, cfg.kv_heads, 3, cfg.head_dim) and v.shape == k.shape
    assert len(cache.k) == 2  # one entry per time layer


def test_commit_false_leaves_cache_untouched():
    m = _perturbed(_cfg())
    cache = m.init_cache(2)
    with torch.no_grad():
        _fill(m, cache, 3)
        before = [t for t in cache.k + cache.v + cache.prefix_k + cache.prefix_v]
        ti, ln = cache.time_index, cache.length
        m.step(torch.randn(2, 16, 64), 0.3, 0.5, cache=cache, commit=False)
    after = cache.k + cache.v + cache.prefix_k + cache.prefix_v
    assert all(a is b for a, b in zip(before, after)) and (cache.time_index, cache.length) == (ti, ln)


def test_clone_is_independent():
    m = _perturbed(_cfg())
    cache = m.init_cache(1)
    with torch.no_grad():
        _fill(m, cache, 2)
        c2 = cache.clone()
        _fill(m, c2, 2, seed=5)
    assert (cache.length, cache.time_index) == (2, 2) and (c2.length, c2.time_index) == (4, 4)


def _rep(x, n, S):
    """(B·S, Hkv, T, E) -> (B·n·S, Hkv, T, E): each sample's rows repeated n times (repeat_interleave over B)."""
    return x.view(-1, 1, S, *x.shape[1:]).expand(-1, n, -1, -1, -1, -1).reshape(-1, *x.shape[1:])


def test_expand_shares_history_without_copy(device):
    m = _perturbed(_cfg()).to(device)
    S = m.tokens_per_frame
    cache = m.init_cache(2)
    with torch.no_grad():
        _fill(m, cache, 3)
        big = cache.expand(5)
    assert big.batch_size == 10 and big.factor == 5 and big.length == 3 and big.time_index == 3
    assert big.prefix_k[0].data_ptr() == cache.k[0].data_ptr()  # shared, not copied
    assert big.suffix_length == 0
    torch.testing.assert_close(big.materialize(0)[0], _rep(cache.k[0], 5, S))
    with torch.no_grad():
        _fill(m, big, 2)
        assert big.prefix_length == 3 and big.suffix_length == 2
        bigger = big.expand(2)  # prefix and suffix both present: merged once
    assert bigger.batch_size == 20 and bigger.factor == 2 and bigger.prefix_length == 5
    torch.testing.assert_close(bigger.materialize(1)[1], _rep(big.materialize(1)[1], 2, S))
    with pytest.raises(ValueError, match="n must be"):
        cache.expand(0)


def test_window_slides_through_shared_prefix():
    m = _perturbed(_cfg(context_frames=4))
    cache = m.init_cache(1)
    with torch.no_grad():
        _fill(m, cache, 3)
        big = cache.expand(3)
        _fill(m, big, 2)
    assert (big.prefix_length, big.suffix_length) == (1, 2)  # oldest frames dropped from the shared part first


def test_cache_errors():
    m = _perturbed(_cfg())
    with pytest.raises(ValueError, match="cache"):
        m.step(torch.randn(3, 16, 64), 1.0, 1.0, cache=m.init_cache(2))
    with pytest.raises(ValueError, match="commit"):
        m.step(torch.randn(3, 16, 64), 1.0, 1.0, commit=True)
    assert isinstance(m.init_cache(1), KVCache)
    assert "KVCache(" in repr(m.init_cache(1))
