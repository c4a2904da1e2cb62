"""The DH head (model/dh_head.py, issue 17) on its own: shapes, the adaLN-zero identity start, per-frame locality,
FLOP and parameter arithmetic against counts, gradients, bf16."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from latentwm.model.dh_head import DHHead, DHShape

pytestmark = pytest.mark.usefixtures("one_thread")


def _shape(group=1, **kw) -> DHShape:
    """The tiny preset's sizes (W 32, D 64, grid 4) with a 2-block head of the default width max(2W, D·g²)."""
    out_dim = 64 * group * group
    base = dict(cond_width=32, out_dim=out_dim, grid=4 // group, blocks=2, width=max(64, out_dim), heads=4,
                mlp_hidden=0, softcap=50.0, attention="eager", rope_base=10000.0)
    base.update(kw)
    base["mlp_hidden"] = base["mlp_hidden"] or int(round(2 / 3 * 4.0 * base["width"] / 8)) * 8
    return DHShape(**base)


def _perturbed(shape: DHShape, seed=0) -> DHHead:
    """Away from the zero init so every output depends on every input."""
    torch.manual_seed(seed)
    head = DHHead(shape)
    with torch.no_grad():
        for p in head.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return head


def _inputs(shape: DHShape, lead=(2, 3), seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*lead, shape.tokens, shape.cond_width, generator=g),
            torch.randn(*lead, shape.cond_width, generator=g))


@pytest.mark.parametrize("group", [1, 2])
def test_shapes_any_leading_dims(group):
    s = _shape(group)
    head = _perturbed(s)
    for lead in [(2, 3), (5,), (1, 2, 2)]:
        h, c = _inputs(s, lead)
        out = head(h, c)
        assert out.shape == (*lead, s.tokens, s.out_dim) and torch.isfinite(out).all()
    with pytest.raises(ValueError, match="DH head: expected h"):
        head(h[..., :-1], c)
    with pytest.raises(ValueError, match="DH head: expected h"):
        head(h, c[..., :1, :])
    with pytest.raises(ValueError, match="divisible by 4"):
        DHHead(_shape(width=72, heads=4))  # head dim 18
    with pytest.raises(ValueError, match="must split into"):
        DHHead(_shape(width=66))


def test_init_is_zero_output_and_identity_blocks():
    s = _shape(2)
    head = DHHead(s)
    h, c = _inputs(s)
    assert torch.equal(head(h, c), torch.zeros(2, 3, s.tokens, s.out_dim))
    seen = {}
    head.norm.register_forward_hook(lambda mod, args, out: seen.setdefault("x", args[0]))
    head(h, c)
    # adaLN-zero: every gate is 0, so the residual stream after the blocks is exactly the input projection
    assert torch.equal(seen["x"], head.proj(h.reshape(-1, s.tokens, s.cond_width)))
    assert all(not blk.modulation.weight.any() for blk in head.blocks)
    assert all(blk.attn.o.weight.abs().sum() > 0 and blk.mlp.down.weight.abs().sum() > 0 for blk in head.blocks)


@torch.no_grad()
def test_each_frame_sees_only_its_own_features_and_condition():
    s = _shape(1)
    head = _perturbed(s)
    h, c = _inputs(s, (2, 4))
    base = head(h, c)
    for what in ("h", "c"):
        h2, c2 = h.clone(), c.clone()
        (h2 if what == "h" else c2)[:, 1] += 1.0
        out = head(h2, c2)
        others = [0, 2, 3]
        torch.testing.assert_close(out[:, others], base[:, others], atol=0, rtol=0)
        assert (out[:, 1] - base[:, 1]).abs().max() > 1e-3, f"changing {what} of frame 1 did not change it"
    # within a frame attention is bidirectional: a token's change reaches every token of that frame
    h2 = h.clone()
    h2[:, 1, -1] += 1.0
    diff = (head(h2, c) - base)[:, 1].abs().amax(dim=(0, 2))  # (N',)
    assert (diff > 1e-4).all()


@pytest.mark.parametrize("group", [1, 2])
def test_flops_per_frame_matches_counted_matmuls(group):
    s = _shape(group)
    head = _perturbed(s)
    h, c = _inputs(s, (3,))
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        head(h, c)
    assert fc.get_total_flops() == 3 * s.flops_per_frame()


@pytest.mark.parametrize("kw", [{}, {"heads": 2, "width": 96}, {"blocks": 3}])
def test_param_count_is_exact(kw):
    s = _shape(2, **kw)
    assert sum(p.numel() for p in DHHead(s).parameters()) == s.num_parameters()


def test_gradients_reach_every_parameter_within_three_steps():
    # the zero output Linear trains first; once it is nonzero the gates (modulation) and the input projection get
    # gradients; once the gates are nonzero the blocks' attention and MLP do (as in DiT's adaLN-zero)
    s = _shape(1)
    torch.manual_seed(0)
    head = DHHead(s)
    h, c = _inputs(s)
    target = torch.randn(2, 3, s.tokens, s.out_dim)
    opt = torch.optim.SGD(head.parameters(), lr=0.1)
    reached = []
    for _ in range(3):
        opt.zero_grad()
        (head(h, c) - target).square().mean().backward()
        reached.append({n for n, p in head.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0})
        opt.step()
    assert reached[0] == {"out.weight", "out.bias"}
    assert {"proj.weight", "norm.weight", "blocks.0.modulation.weight", "blocks.1.modulation.bias"} <= reached[1]
    assert reached[2] == {n for n, _ in head.named_parameters()}


def test_bf16_autocast_close_to_fp32():
    s = _shape(2)
    head = _perturbed(s)
    h, c = _inputs(s)
    with torch.no_grad():
        ref = head(h, c)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = head(h, c)
    assert torch.isfinite(out).all()
    assert (out.float() - ref).abs().max() < 0.05 * ref.abs().max()
