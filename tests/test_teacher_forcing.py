"""Teacher-forced shortcut forcing (objective.teacher_forcing): one pass carries a clip's clean frames and its noisy
frames; each noisy frame sees the clean frames before it and itself — what sampling's KV cache holds."""

import dataclasses

import pytest
import torch
from tiny_models import history_spy, perturbed_model, random_inputs

from latentwm.conditions import Conditions, FrameConditions, History
from latentwm.config import ConfigError, ObjectiveConfig, get_preset
from latentwm.model.transformer import teacher_forcing_mask
from latentwm.objectives import TrainStep, make_objective

TINY = get_preset("tiny").model  # window 8, k_max 8


def _cfg(**kw):
    kw.setdefault("attention", "eager")
    return dataclasses.replace(TINY, **kw)


def test_mask_pattern():
    m = teacher_forcing_mask(4, 3)
    clean, noisy = slice(0, 4), slice(4, 8)
    # clean stream: the causal window; never a noisy key
    assert torch.equal(m[clean, clean], torch.tensor([[1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0], [0, 1, 1, 1]]).bool())
    assert not m[clean, noisy].any()
    # noisy frame i: clean frames i − 2..i − 1 and itself, no other noisy frame
    assert torch.equal(m[noisy, clean], torch.tensor([[0, 0, 0, 0], [1, 0, 0, 0], [1, 1, 0, 0], [0, 1, 1, 0]]).bool())
    assert torch.equal(m[noisy, noisy], torch.eye(4, dtype=torch.bool))


@pytest.mark.parametrize(
    "kw",
    [
        {"attention": "eager", "softcap": 50.0},
        {"attention": "fused", "softcap": None},
        {"attention": "eager", "softcap": 50.0, "context_frames": 3, "patch_group": 2},
        {"attention": "eager", "softcap": 50.0, "proprio_dim": 2, "proprio_input": "slot"},
    ],
)
@torch.no_grad()
def test_teacher_forced_pass_equals_sampling_with_a_clean_cache(kw):
    """Output t of forward(z, history=x) equals model.step(z_t) after committing the clean frames 0..t−1 at τ = 1,
    d = 1/k_max with their actions — the cache sampling builds — window slide included (T 6 > window 3)."""
    cfg = _cfg(**kw)
    m = perturbed_model(cfg)
    B, T = 2, 6
    z, tau, step, a, mask = random_inputs(cfg, B, T, A=4)
    x = torch.randn_like(z)
    if cfg.proprio_dim:
        z = torch.cat([z, torch.randn(B, T, z.shape[2], cfg.proprio_dim)], -1)
        x = torch.cat([x, x[..., :1, :2].expand(B, T, x.shape[2], 2)], -1)  # one proprio value per frame
    out = m(z, tau, step, a, mask, history=History(x, stream=True))
    cache = m.init_cache(B)
    for t in range(T):
        prev = FrameConditions(a[:, t - 1], mask[:, t - 1]) if t else FrameConditions()
        got = m.step(z[:, t], tau[:, t], step[:, t], prev, cache=cache)
        torch.testing.assert_close(got, out[:, t], atol=1e-4, rtol=0)
        m.step(x[:, t], torch.ones(B), torch.full((B,), 1.0 / cfg.k_max), prev, cache=cache, commit=True)


@torch.no_grad()
def test_noisy_frames_do_not_see_each_other_or_the_future():
    cfg = _cfg(softcap=50.0)
    m = perturbed_model(cfg)
    z, tau, step, a, mask = random_inputs(cfg, 2, 5, A=4)
    x = torch.randn_like(z)
    base = m(z, tau, step, a, mask, history=History(x, stream=True))
    z2 = z.clone()
    z2[:, 1] += 3.0  # another noisy frame 1: only output 1 moves
    out = m(z2, tau, step, a, mask, history=History(x, stream=True))
    assert (out[:, 1] - base[:, 1]).abs().max() > 1e-4
    torch.testing.assert_close(out[:, [0, 2, 3, 4]], base[:, [0, 2, 3, 4]], atol=1e-6, rtol=0)
    x2 = x.clone()
    x2[:, 2] += 3.0  # another clean frame 2: outputs 3 and 4 move, 0..2 do not (the future never changes the past)
    out = m(z, tau, step, a, mask, history=History(x2, stream=True))
    torch.testing.assert_close(out[:, :3], base[:, :3], atol=1e-6, rtol=0)
    assert (out[:, 3:] - base[:, 3:]).abs().max() > 1e-4


def test_history_errors():
    m = perturbed_model(_cfg())
    z, tau, step, *_ = random_inputs(TINY, 1, 3)
    with pytest.raises(ValueError, match="history.frames: expected the shape of z"):
        m(z, tau, step, history=History(z[:, :2], stream=True))
    with pytest.raises(ValueError, match="expected a conditions.History"):
        m(z, tau, step, history=z)
    nxt = perturbed_model(_cfg(prediction="next"))
    with pytest.raises(ValueError, match="teacher forced already"):
        nxt(z, tau, step, history=History(z, stream=True))
    with pytest.raises(ConfigError, match="objective.clean_context 0"):
        ObjectiveConfig(teacher_forcing=True, clean_context=0.5)
    with pytest.raises(ConfigError, match="objective.teacher_forcing"):
        get_preset("tiny").replace(model__prediction="next", objective__teacher_forcing=True)


def test_objective_passes_the_clean_clip_to_student_and_teacher():
    """With teacher forcing every model call of the loss — the student's and the bootstrap teacher's half steps —
    gets the clean clip (its rows, for the bootstrap subset) as history; without, none does."""
    cfg = _cfg(softcap=50.0)
    m = perturbed_model(cfg)
    z, *_ = random_inputs(cfg, 8, 4)
    spy, seen = history_spy(m)

    obj_cfg = ObjectiveConfig(bootstrap_fraction=0.5, bootstrap_start=0, teacher_forcing=True)
    loss, metrics = make_objective(obj_cfg, cfg)(spy, z, Conditions(), at=TrainStep(global_step=1))
    assert torch.isfinite(loss) and metrics["bootstrap_frac"] > 0
    assert len(seen) == 3 and torch.equal(seen[0].frames, z)  # student, then the teacher's two half steps
    assert all(h is not None and h.stream and h.frames.shape[0] == 4 for h in seen[1:])  # on the bootstrap rows
    seen.clear()
    make_objective(dataclasses.replace(obj_cfg, teacher_forcing=False), cfg)(spy, z, at=TrainStep(global_step=1))
    assert seen == [None, None, None]


def test_teacher_forced_training_learns_a_toy_dynamics():
    """A clip whose frames drift by a fixed vector: the teacher-forced loss falls on it."""
    torch.manual_seed(0)
    cfg = _cfg(softcap=50.0)
    m = perturbed_model(cfg)
    obj = make_objective(ObjectiveConfig(bootstrap_fraction=0.0, teacher_forcing=True), cfg)
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
    start = torch.randn(64, 1, cfg.num_latent_tokens, cfg.latent_dim)
    drift = torch.randn(1, 1, cfg.num_latent_tokens, cfg.latent_dim) * 0.3
    clips = start + drift * torch.arange(4).view(1, 4, 1, 1)
    losses = []
    for i in range(60):
        loss, _ = obj(m, clips[(i % 4) * 16 : (i % 4 + 1) * 16], at=TrainStep(seeds=list(range(16 * i, 16 * i + 16))))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-10:]) < 0.7 * sum(losses[:10])
