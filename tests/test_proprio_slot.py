"""The proprio as its own token (model.proprio_input "slot") beside DINO-WM's per-patch concatenation: the frames'
layout is unchanged ((N, latent_dim + P) in and out), the slot reads the first token's noisy proprio copy and writes
one prediction into every copy; causality, the KV cache, v-prediction's conversion, checkpoints and a toy it learns."""

import dataclasses

import pytest
import torch
from tiny_models import perturbed_model

from latentwm.conditions import Conditions, FrameConditions
from latentwm.config import ConfigError, ExperimentConfig, ObjectiveConfig, get_preset
from latentwm.model import DynamicsModel
from latentwm.model.dynamics import approx_param_count
from latentwm.objectives import TrainStep, make_objective

pytestmark = pytest.mark.usefixtures("one_thread")

P = 4
TINY = dataclasses.replace(get_preset("tiny").model, attention="eager", proprio_dim=P, text_dim=0)
N, D = TINY.num_latent_tokens, TINY.latent_dim


def _cfg(**kw):
    return dataclasses.replace(TINY, proprio_input="slot", **kw)


def _frames(B, T, seed=0):
    """(B, T, N, D + P): random latents, each frame's proprio copied on every token (as the data attaches it)."""
    g = torch.Generator().manual_seed(seed)
    lat = torch.randn(B, T, N, D, generator=g)
    prop = torch.randn(B, T, 1, P, generator=g).expand(B, T, N, P)
    return torch.cat([lat, prop], -1)


def _noisy(x, tau, seed=1):
    """z_τ = (1 − τ)·ε + τ·x with independent noise on every token (every proprio copy its own), as training does."""
    eps = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed))
    t = torch.as_tensor(tau).reshape(*torch.as_tensor(tau).shape, *([1] * (x.dim() - torch.as_tensor(tau).dim())))
    return (1 - t) * eps + t * x


def test_layout_shapes_and_parameter_count():
    m = DynamicsModel(_cfg())
    assert (
        m.layout.conditions == ("shortcut", "action", "proprio")
        and m.tokens_per_frame == DynamicsModel(TINY).tokens_per_frame + 1
    )
    assert m.latent_in.in_features == D and m.cfg.token_dim == D and m.cfg.frame_dim == D + P
    x = m(_frames(2, 3), 0.5, 0.125)
    assert x.shape == (2, 3, N, D + P)
    assert torch.all(x[..., D:] == 0)  # zero-init head: x̂ = 0 for the proprio too
    for cfg in (_cfg(), _cfg(patch_group=2, latent_grid=4), _cfg(dh_blocks=1)):
        n = DynamicsModel(cfg).num_parameters()
        assert abs(approx_param_count(cfg) - n) / n < 0.02, (cfg.patch_group, cfg.dh_blocks)
    # concat is the default and unchanged: no proprio slot, the proprio in every token's input
    assert DynamicsModel(TINY).layout.conditions == ("shortcut", "action") and TINY.token_dim == D + P


@pytest.mark.parametrize("prediction", ["x", "v"])
@torch.no_grad()
def test_the_slot_reads_the_first_copy_and_writes_every_copy(prediction):
    m = perturbed_model(_cfg(prediction=prediction)).eval()
    tau = torch.rand(2, 3, generator=torch.Generator().manual_seed(2)) * 0.9
    z = _noisy(_frames(2, 3), tau)
    x = m(z, tau, 0.125)
    assert torch.equal(x[..., :1, D:].expand_as(x[..., D:]), x[..., D:])  # one proprio per frame, on every token
    other = z.clone()
    other[..., 1:, D:] += 3.0  # the other copies are not read
    torch.testing.assert_close(m(other, tau, 0.125), x, atol=0, rtol=0)
    first = z.clone()
    first[:, :, 0, D:] += 1.0  # the first copy is the frame's proprio
    moved = m(first, tau, 0.125)
    assert (moved[..., D:] - x[..., D:]).abs().max() > 1e-3 and (moved[..., :D] - x[..., :D]).abs().max() > 1e-4


@torch.no_grad()
def test_v_prediction_velocity_is_each_copys_own():
    """v̂ = (x̂ − z)/(1 − τ) per token: the model's x̂ proprio is the first copy's z + (1 − τ)·v̂, the same on every
    token, so a sampler step moves every copy toward the same x̂ and they all land on it at τ = 1."""
    m = perturbed_model(_cfg(prediction="v")).eval()
    tau = torch.full((2, 3), 0.25)
    z = _noisy(_frames(2, 3), tau)
    x = m(z, tau, 0.125)
    v = (x - z) / 0.75
    step = z + 0.75 * v  # the last step of a K = 1 sampler from τ = 0.25
    torch.testing.assert_close(step, x, atol=1e-5, rtol=0)
    torch.testing.assert_close(step[..., 1:, D:], step[..., :1, D:].expand_as(step[..., 1:, D:]), atol=1e-5, rtol=0)


@pytest.mark.parametrize("group", [1, 2])
@torch.no_grad()
def test_causality(group):
    m = perturbed_model(_cfg(patch_group=group)).eval()
    z, a = _frames(2, 5), torch.randn(2, 5, 4, generator=torch.Generator().manual_seed(3))
    tau = torch.rand(2, 5, generator=torch.Generator().manual_seed(4))
    base = m(z, tau, 0.125, a)
    for t in (1, 3):
        for channel in (slice(0, D), slice(D, D + P)):  # a future latent, a future proprio
            z2 = z.clone()
            z2[:, t, :, channel] += 1.0
            out = m(z2, tau, 0.125, a)
            torch.testing.assert_close(out[:, :t], base[:, :t], atol=1e-6, rtol=0)
            assert (out[:, t] - base[:, t]).abs().max() > 1e-4


@pytest.mark.parametrize("prediction", ["x", "v"])
@pytest.mark.parametrize("group", [1, 2])
@torch.no_grad()
def test_cached_steps_equal_forward(prediction, group):
    m = perturbed_model(_cfg(prediction=prediction, patch_group=group)).eval()
    T = 10  # > the window of 8: the cache slides
    z, a = _frames(2, T), torch.randn(2, T, 4, generator=torch.Generator().manual_seed(5))
    tau = torch.rand(2, T, generator=torch.Generator().manual_seed(6)) * 0.9
    full = m(z, tau, 0.25, a)
    cache = m.init_cache(2)
    for t in range(T):
        x = m.step(z[:, t], tau[:, t], 0.25, FrameConditions(a[:, t - 1] if t else None), cache=cache, commit=True)
        torch.testing.assert_close(x, full[:, t], atol=1e-4, rtol=0)


def test_checkpoint_configs_round_trip_and_old_ones_load_as_concat():
    exp = dataclasses.replace(get_preset("tiny"), model=_cfg())
    back = ExperimentConfig.from_dict(exp.to_dict())
    assert back.model.proprio_input == "slot" and back.model.proprio_slot
    old = exp.to_dict()
    del old["model"]["proprio_input"]  # a checkpoint from before the option
    assert ExperimentConfig.from_dict(old).model.proprio_input == "concat"
    with pytest.raises(ConfigError, match="model.proprio_input"):
        dataclasses.replace(TINY, proprio_input="token")
    assert not dataclasses.replace(TINY, proprio_dim=0, proprio_input="slot").proprio_slot  # no proprio: no slot


def test_a_slot_model_learns_the_proprio_from_the_actions():
    """The proprio integrates the actions (p_t = p_{t−1} + a_{t−1}); the latents are noise. Shortcut forcing on
    the slot model brings the proprio channels' held-out flow error well below the untrained model's."""
    torch.manual_seed(0)
    cfg = _cfg(k_max=4)
    m = DynamicsModel(cfg)
    obj = make_objective(ObjectiveConfig(bootstrap_fraction=0.0), cfg)
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3)

    def batch(seed, B=16, T=6):
        g = torch.Generator().manual_seed(seed)
        a = torch.randn(B, T, 4, generator=g) * 0.5
        p = torch.cumsum(torch.cat([torch.randn(B, 1, P, generator=g), a[:, :-1, :P]], 1), 1)
        lat = torch.randn(B, T, N, D, generator=g) * 0.1
        return torch.cat([lat, p[:, :, None].expand(B, T, N, P)], -1), a

    def held_error():
        x, a = batch(999)
        tau = torch.full(x.shape[:2], 0.5)
        with torch.no_grad():
            out = m(_noisy(x, tau, 7), tau, 0.25, a)
        return float((out[:, 1:, :, D:] - x[:, 1:, :, D:]).pow(2).mean())

    before = held_error()
    for i in range(150):
        x, a = batch(i)
        loss = obj(m, x, Conditions(actions=a), None, TrainStep(global_step=i))[0]
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert held_error() < 0.3 * before, (before, held_error())
