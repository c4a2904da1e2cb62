"""The DH head (model/dh_head.py, issue 17): on its own (shapes, the adaLN-zero identity start, per-frame locality,
FLOP and parameter arithmetic against counts, gradients, bf16) and inside DynamicsModel (model.dh_blocks: init,
the shortcut embedding it is given, FLOP / parameter accounting, training). Causality and cached generation with the
head are in test_dynamics.py."""

import dataclasses
import re

import pytest
import torch
from tiny_models import perturbed_model
from torch.utils.flop_counter import FlopCounterMode

from latentwm.config import ConfigError, ObjectiveConfig, get_preset
from latentwm.data.batch import collate
from latentwm.data.sources.synthetic import MovingBlobClips
from latentwm.model import DynamicsModel
from latentwm.model.dh_head import DHHead, DHShape
from latentwm.model.dynamics import approx_param_count
from latentwm.model.layers import linear_flops
from latentwm.objectives.shortcut_forcing import ShortcutForcing, TrainStep

pytestmark = pytest.mark.usefixtures("one_thread")


def _shape(group=1, **kw) -> DHShape:
    """The tiny preset's sizes (W 32, D 64, grid 4) with a 2-block head of the default width max(2W, D·g²)."""
    out_dim = 64 * group * group
    base = dict(
        cond_width=32,
        out_dim=out_dim,
        grid=4 // group,
        blocks=2,
        width=max(64, out_dim),
        heads=4,
        mlp_hidden=0,
        softcap=50.0,
        attention="eager",
        rope_base=10000.0,
    )
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
    return (
        torch.randn(*lead, shape.tokens, shape.cond_width, generator=g),
        torch.randn(*lead, shape.cond_width, generator=g),
    )


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


# ------------------------------------------------------------------------------------------------ in the model

TINY = get_preset("tiny").model


def _cfg(**kw):
    kw.setdefault("attention", "eager")
    kw.setdefault("dh_blocks", 2)
    return dataclasses.replace(TINY, **kw)


def test_config_defaults_and_errors():
    c = _cfg()
    assert (c.dh_resolved_width, c.dh_resolved_heads) == (64, 4)  # max(2·32, 64·1²), model.heads
    assert _cfg(patch_group=2).dh_resolved_width == 256  # the 2×2-grouped token is 4·64 wide
    assert _cfg(dh_width=48, dh_heads=3).dh_resolved_width == 48
    with pytest.raises(ConfigError, match="model.dh_blocks must be >= 0"):
        _cfg(dh_blocks=-1)
    with pytest.raises(ConfigError, match=re.escape("model.dh_width (72 -> 72) must split into model.dh_heads")):
        _cfg(dh_width=72)  # 4 heads of 18
    with pytest.raises(ConfigError, match="model.dh_heads"):
        _cfg(dh_heads=3)  # 64 / 3
    _cfg(dh_blocks=0, dh_heads=3)  # no head: its sizes are not used, so not checked


@pytest.mark.parametrize("group", [1, 2])
def test_model_shapes_and_zero_init(group):
    cfg = _cfg(patch_group=group)
    m = DynamicsModel(cfg)
    assert not hasattr(m, "head") and m.dh_head.shape == DHShape.from_config(cfg)
    g = torch.Generator().manual_seed(0)
    z = torch.randn(2, 3, 16, 64, generator=g)
    x, h = m.hidden(z, torch.rand(2, 3, generator=g), 0.25)
    assert x.shape == z.shape and x.dtype == torch.float32 and h.shape == (2, 3, m.tokens_per_frame, cfg.width)
    assert torch.equal(x, torch.zeros_like(x))  # adaLN-zero + zero output Linear: x̂ = 0 like the plain head
    assert torch.equal(m.step(z[:, 0], 0.5, 0.25), torch.zeros_like(z[:, 0]))
    plain = DynamicsModel(_cfg(patch_group=group, dh_blocks=0))
    assert not any(k.startswith("dh_head") for k in plain.state_dict()) and "head.weight" in plain.state_dict()


def test_head_is_conditioned_on_the_shortcut_slot_vector():
    cfg = _cfg()
    m = perturbed_model(cfg)
    seen = {}
    m.transformer.register_forward_hook(lambda mod, args, out: seen.setdefault("tokens", args[0]))
    m.dh_head.register_forward_hook(lambda mod, args, out: seen.setdefault("cond", args[1]))
    g = torch.Generator().manual_seed(1)
    m(torch.randn(2, 3, 16, 64, generator=g), torch.rand(2, 3, generator=g), torch.tensor([[0.5, 0.125, 1.0]] * 2))
    torch.testing.assert_close(seen["cond"], seen["tokens"][:, :, m.layout.slot("shortcut")], atol=0, rtol=0)


@pytest.mark.parametrize("group", [1, 2])
def test_flops_per_frame_increase_matches_counted_matmuls(group):
    plain, dh = DynamicsModel(_cfg(patch_group=group, dh_blocks=0)), DynamicsModel(_cfg(patch_group=group))
    z = torch.randn(3, 16, 64)
    counted = []
    for m in (plain, dh):
        with torch.no_grad(), FlopCounterMode(display=False) as fc:
            m.step(z, 0.5, 0.25)  # one frame, no context
        counted.append(fc.get_total_flops())
    analytic = dh.flops_per_frame(0) - plain.flops_per_frame(0)
    assert counted[1] - counted[0] == 3 * analytic > 0
    # the plain head's Linear (N' tokens, W 32 -> patch_dim 64·g²) is what the DH head replaces
    assert analytic == DHShape.from_config(dh.cfg).flops_per_frame() - linear_flops(16 // group**2, 32, 64 * group**2)


@pytest.mark.parametrize("name", ["tiny", "cpu", "base"])
def test_param_counts_with_the_head(name):
    cfg = dataclasses.replace(get_preset(name).model, dh_blocks=2)
    with torch.device("meta"):
        m = DynamicsModel(cfg)
    n = m.num_parameters()
    assert sum(p.numel() for p in m.dh_head.parameters()) == DHShape.from_config(cfg).num_parameters()
    assert abs(n - approx_param_count(cfg)) <= 0.05 * n, (name, n, approx_param_count(cfg))


def test_gradients_reach_the_head_in_the_model():
    cfg = _cfg()
    torch.manual_seed(0)
    m = DynamicsModel(cfg)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 16, 64, generator=g)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
    reached = []
    for _ in range(3):
        opt.zero_grad()
        (m(0.5 * x, 0.5, 0.25) - x).square().mean().backward()
        reached.append({n for n, p in m.dh_head.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0})
        opt.step()
    assert {"out.weight", "out.bias"} <= reached[0]  # after one step the head is no longer zero
    assert reached[2] == {n for n, _ in m.dh_head.named_parameters()}


def test_tiny_model_with_the_head_trains():
    """Shortcut forcing (flow term) on moving-blob clips: the loss of the model with the DH head falls well below
    its x̂ = 0 start within 60 Adam steps (measured: 0.26 -> 0.009)."""
    cfg = _cfg(patch_group=2)
    torch.manual_seed(0)
    m = DynamicsModel(cfg)
    data = MovingBlobClips(grid=cfg.latent_grid, dim=cfg.latent_dim, frames=4)
    batch = collate([data[i] for i in range(8)], cfg.action_dim)
    obj = ShortcutForcing(ObjectiveConfig(bootstrap_fraction=0.0, action_dropout=0.0), cfg.k_max)
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    losses = []
    for step in range(60):
        loss, _ = obj(
            m, batch.latents, batch.conditions, batch.valid, TrainStep(step, seeds=[1000 * step + i for i in range(8)])
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.1 * first, (first, last)


def test_repeated_blocks_include_the_head_for_compile_and_fsdp():
    """train.compile_scope "blocks" compiles, and FSDP2 shards, every block of model.repeated_blocks(): the DH head's
    blocks too (at the base preset the default head holds half the parameters)."""
    plain, with_head = DynamicsModel(_cfg(dh_blocks=0)), DynamicsModel(_cfg())
    assert plain.repeated_blocks() == list(plain.transformer.blocks)
    blocks = with_head.repeated_blocks()
    assert len(blocks) == len(with_head.transformer.blocks) + 2 and blocks[-1] is with_head.dh_head.blocks[-1]
