"""The text condition slot: causality, KV-cache equivalence, masking, condition dropout, classifier-free guidance."""

import dataclasses

import pytest
import torch
from tiny_models import TINY_TEXT, perturbed_text_model

from latentwm.conditions import Conditions, FrameConditions
from latentwm.config import ObjectiveConfig
from latentwm.objectives.shortcut_forcing import ShortcutForcing, TrainStep
from latentwm.rollout import Guided, Sampling, guided, observe, rollout

pytestmark = pytest.mark.usefixtures("one_thread")


def _inputs(B=2, T=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(B, T, TINY_TEXT.num_latent_tokens, TINY_TEXT.latent_dim, generator=g)
    tau = torch.rand(B, T, generator=g)
    a = torch.randn(B, T, 4, generator=g)
    text = torch.randn(B, T, TINY_TEXT.text_dim, generator=g)
    tmask = torch.rand(B, T, generator=g) > 0.3
    return z, tau, a, text, tmask


def test_text_changes_the_output_and_the_future_text_never_changes_the_past():
    m = perturbed_text_model()
    z, tau, a, text, _ = _inputs()
    with torch.no_grad():
        base = m(z, tau, 0.25, a, text=text)
        other = text.clone()
        other[:, 3:] = torch.randn_like(other[:, 3:])
        changed = m(z, tau, 0.25, a, text=other)
        none = m(z, tau, 0.25, a)
    assert torch.equal(base[:, :3], changed[:, :3])  # frames 0..2 do not see the text of frames 3, 4
    assert (base[:, 3:] - changed[:, 3:]).abs().amax() > 1e-4
    assert (base - none).abs().amax() > 1e-4  # the text is read at all


def test_masked_text_is_the_null_text_whatever_it_holds():
    m = perturbed_text_model()
    z, tau, a, text, tmask = _inputs()
    poisoned = torch.where(tmask[..., None], text, torch.full_like(text, float("nan")))
    with torch.no_grad():
        x = m(z, tau, 0.25, a, text=poisoned, text_mask=tmask)
        off = m(z, tau, 0.25, a, text=text, text_mask=torch.zeros_like(tmask))
        none = m(z, tau, 0.25, a)
    assert torch.isfinite(x).all()
    assert torch.equal(off, none)


def test_kv_cached_steps_equal_the_full_forward_with_text():
    m = perturbed_text_model()
    z, tau, a, text, tmask = _inputs(T=6)
    with torch.no_grad():
        full = m(z, tau, 0.25, a, text=text, text_mask=tmask)
        cache = m.init_cache(2)
        steps = []
        for t in range(6):
            prev = a[:, t - 1] if t else None
            steps.append(
                m.step(
                    z[:, t],
                    tau[:, t],
                    0.25,
                    FrameConditions(prev, text=text[:, t], text_mask=tmask[:, t]),
                    cache=cache,
                    commit=True,
                )
            )
    assert torch.allclose(torch.stack(steps, 1), full, atol=1e-5)


def test_model_without_text_slot_refuses_text_and_shapes_are_checked():
    m = perturbed_text_model(dataclasses.replace(TINY_TEXT, text_dim=0))
    assert not hasattr(m, "text_in") and m.tokens_per_frame == TINY_TEXT.registers + 2 + m.num_tokens
    z, tau, a, text, _ = _inputs()
    with pytest.raises(ValueError, match="no text slot"):
        m(z, tau, 0.25, a, text=text)
    with pytest.raises(ValueError, match="text: expected shape"):
        perturbed_text_model()(z, tau, 0.25, a, text=text[..., :5])
    with pytest.raises(ValueError, match="text_guidance"):
        guided(m, text_guidance=2.0)


def test_condition_dropout_is_per_sample_seeded_and_equals_the_null_conditions():
    m = perturbed_text_model()
    z, _, a, text, _ = _inputs(B=4, T=4)
    seeds = [101, 102, 103, 104]
    always = ShortcutForcing(ObjectiveConfig(action_dropout=1.0, text_dropout=1.0, bootstrap_start=0), TINY_TEXT.k_max)
    with torch.no_grad():
        dropped, _ = always(m, z, Conditions(a, text=text), at=TrainStep(5, seeds=seeds))
        null, _ = always(m, z, at=TrainStep(5, seeds=seeds))
    assert torch.equal(dropped, null)
    never = ShortcutForcing(ObjectiveConfig(action_dropout=0.0, text_dropout=0.0, bootstrap_start=0), TINY_TEXT.k_max)
    with torch.no_grad():
        kept, _ = never(m, z, Conditions(a, text=text), at=TrainStep(5, seeds=seeds))
    assert kept != dropped
    # the default 0.1 each: the rate over many samples, and each sample's decision depends on its own seed only
    obj = ShortcutForcing(ObjectiveConfig(), TINY_TEXT.k_max)
    x = torch.zeros(400, 2, 1, 1)
    *_, da, dt = obj.draw(x, 0, seeds=list(range(1000, 1400)))
    assert 0.05 < da.float().mean() < 0.15 and 0.05 < dt.float().mean() < 0.15 and not torch.equal(da, dt)
    *_, da2, dt2 = obj.draw(x[:150], 0, seeds=list(range(1250, 1400)))
    assert torch.equal(da2, da[250:]) and torch.equal(dt2, dt[250:])


def test_guidance_one_is_plain_sampling_and_guided_steps_combine_the_branches():
    m = perturbed_text_model()
    z, _, a, text, _ = _inputs(B=2, T=6)
    ctx, g = z[:, :3], torch.Generator().manual_seed(3)
    noise = torch.randn(2, 3, TINY_TEXT.num_latent_tokens, TINY_TEXT.latent_dim, generator=g)
    plain = rollout(m, ctx, 3, Conditions(a, text=text), Sampling(2), noise=noise)
    assert guided(m, 1.0, 1.0) is m
    assert torch.equal(plain, rollout(m, ctx, 3, Conditions(a, text=text, text_guidance=1.0), Sampling(2), noise=noise))
    # w != 1: one batched call over [cond | no-text | no-action] rows equals the three branches run apart
    w_t, w_a = 2.5, 1.5
    gm = Guided(m, w_t, w_a)
    assert gm.branches == 3
    with torch.no_grad():
        cache = observe(gm, ctx, Conditions(a, text=text))
        caches = {
            k: observe(m, ctx, Conditions(a if k != "action" else None, text=text if k != "text" else None))
            for k in ("cond", "text", "action")
        }
        zz = noise[:, 0]
        got = gm.step(zz, 0.0, 0.5, FrameConditions(a[:, 2], text=text[:, 3]), cache=cache)
        out = {
            k: m.step(
                zz,
                0.0,
                0.5,
                FrameConditions(a[:, 2] if k != "action" else None, text=text[:, 3] if k != "text" else None),
                cache=c,
            )
            for k, c in caches.items()
        }
    want = out["cond"] + (w_t - 1) * (out["cond"] - out["text"]) + (w_a - 1) * (out["cond"] - out["action"])
    assert torch.allclose(got, want, atol=1e-5)
    # a guided rollout runs, differs from the plain one, and accepts one sentence for every frame
    with torch.no_grad():
        gr = rollout(m, ctx, 3, Conditions(a, text=text[:, 0], text_guidance=3.0), Sampling(2), noise=noise)
    assert gr.shape == plain.shape and (gr - plain).abs().amax() > 1e-4
    with pytest.raises(ValueError, match="text has 4 frames"):
        rollout(m, ctx, 3, Conditions(a, text=text[:, :4]))


def test_guided_cache_expands_for_candidates_like_a_plain_one():
    m = perturbed_text_model()
    z, _, a, text, _ = _inputs(B=1, T=5)
    gm = Guided(m, 2.0)
    with torch.no_grad():
        cache = observe(gm, z[:, :3], Conditions(a, text=text)).expand(4)  # one history, 4 candidates
        acts = torch.randn(4, 5, 4)
        acts[:, :2] = a[:, :2]  # the observed history's actions; candidates differ in the future ones
        noise = torch.randn(1, 2, TINY_TEXT.num_latent_tokens, TINY_TEXT.latent_dim)
        many = rollout(gm, z[:, :3], 2, Conditions(acts, text=text), noise=noise, cache=cache)
        one = rollout(m, z[:, :3], 2, Conditions(acts[1:2], text=text, text_guidance=2.0), noise=noise)
    assert many.shape[0] == 4 and torch.allclose(many[1:2], one, atol=1e-5)


def test_broadcast_conditions_keep_causality_and_the_cache():
    """model.condition_broadcast adds each frame's action/text embeddings to its latent tokens: still causal,
    cached steps still equal the full forward, and the conditions now change the latents' input directly."""
    cfg = dataclasses.replace(TINY_TEXT, condition_broadcast=True)
    m = perturbed_text_model(cfg)
    z, tau, a, text, tmask = _inputs(T=6)
    with torch.no_grad():
        full = m(z, tau, 0.25, a, text=text, text_mask=tmask)
        other = text.clone()
        other[:, 4:] = torch.randn_like(other[:, 4:])
        assert torch.equal(full[:, :4], m(z, tau, 0.25, a, text=other, text_mask=tmask)[:, :4])
        cache = m.init_cache(2)
        steps = [
            m.step(
                z[:, t],
                tau[:, t],
                0.25,
                FrameConditions(a[:, t - 1] if t else None, text=text[:, t], text_mask=tmask[:, t]),
                cache=cache,
                commit=True,
            )
            for t in range(6)
        ]
        tokens = m._tokens(
            z, tau, torch.full_like(tau, 0.25), m._embed_actions(None, None, 2, 6), m._embed_text(text, tmask, 2, 6)
        )
        plain = perturbed_text_model(TINY_TEXT)._tokens(
            z, tau, torch.full_like(tau, 0.25), m._embed_actions(None, None, 2, 6), m._embed_text(text, tmask, 2, 6)
        )
    assert torch.allclose(torch.stack(steps, 1), full, atol=1e-5)
    assert (tokens[..., m.layout.latent_slice, :] - plain[..., m.layout.latent_slice, :]).abs().amax() > 1e-3
