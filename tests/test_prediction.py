"""model.prediction (issue 17): v-prediction (x̂ = z + (1 − τ)·v̂ returned, the loss in v-space) and the next-frame
regression baseline (teacher-forced MSE; deterministic sampling with the pending frame on the cache): conversion,
losses against direct computations, causality, cache equivalence, rollouts, planning, imagination, a short run."""

import dataclasses

import pytest
import torch

from latentwm.conditions import Conditions, FrameConditions
from latentwm.config import ConfigError, ExperimentConfig, ObjectiveConfig, RLConfig, get_preset
from latentwm.data.sources.synthetic import MovingBlobClips
from latentwm.engine import checkpoint as ckpt
from latentwm.engine.logging import read_metrics
from latentwm.model.dynamics import DynamicsModel
from latentwm.objectives import NextFrameRegression, ShortcutForcing, TrainStep, make_objective
from latentwm.objectives.shortcut_forcing import bootstrap_target, bootstrap_velocity, corrupt, ramp_weight
from latentwm.planning.cost import LatentGoalObjective
from latentwm.rl.heads import AgentHeads, frame_features
from latentwm.rl.imagination import imagine
from latentwm.rollout import Sampling, clip_hidden, observe, rollout, sample_frame
from latentwm.train.trainer import Trainer

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = get_preset("tiny").model  # D 64, N 16, width 32, depth 4, time_every 2, window 8, k_max 8, text 384
N, D = TINY.num_latent_tokens, TINY.latent_dim


def _model(prediction, seed=0, **kw):
    """Perturbed away from the zero init so every output depends on every input."""
    torch.manual_seed(seed)
    m = DynamicsModel(dataclasses.replace(TINY, attention="eager", prediction=prediction, **kw)).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return m


def _latents(B, T, seed=0):
    return torch.randn(B, T, N, D, generator=torch.Generator().manual_seed(seed))


def _actions(B, T, seed=1, A=4):
    return torch.randn(B, T, A, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------------------------ config


def test_config_rejects_unknown_prediction_and_old_checkpoints_load_as_x():
    with pytest.raises(ConfigError, match="model.prediction"):
        dataclasses.replace(TINY, prediction="eps")
    with pytest.raises(ConfigError, match="objective.clean_context"):
        ObjectiveConfig(clean_context=1.5)
    exp = get_preset("tiny").replace(model__prediction="v")
    assert ExperimentConfig.from_dict(exp.to_dict()).model.prediction == "v"
    old = exp.to_dict()
    del old["model"]["prediction"]  # a checkpoint written before the field
    assert ExperimentConfig.from_dict(old).model.prediction == "x"
    assert isinstance(make_objective(exp.objective, exp.model), ShortcutForcing)
    assert isinstance(
        make_objective(exp.objective, dataclasses.replace(exp.model, prediction="next")), NextFrameRegression
    )
    with pytest.raises(ValueError, match="next"):
        ShortcutForcing(exp.objective, 8, prediction="next")


# ------------------------------------------------------------------------------------------------ v-prediction


@torch.no_grad()
def test_v_model_returns_x_hat_from_its_head_velocity():
    m = _model("v")
    mx = DynamicsModel(dataclasses.replace(m.cfg, prediction="x")).eval()  # same weights, read as x: the head's
    mx.load_state_dict(m.state_dict())  # output itself
    z, tau = _latents(2, 3), torch.rand(2, 3, generator=torch.Generator().manual_seed(2))
    v_hat = mx(z, tau, 0.125)
    x_hat = m(z, tau, 0.125)
    torch.testing.assert_close(x_hat, z + (1 - tau)[..., None, None] * v_hat, atol=1e-6, rtol=0)
    assert (x_hat - v_hat).abs().max() > 1e-2  # a real conversion, not the identity
    xs = m.step(z[:, 0], tau[:, 0], 0.125, cache=m.init_cache(2))
    vs = mx.step(z[:, 0], tau[:, 0], 0.125, cache=mx.init_cache(2))
    torch.testing.assert_close(xs, z[:, 0] + (1 - tau[:, 0])[:, None, None] * vs, atol=1e-6, rtol=0)


def test_v_loss_is_the_velocity_error_weighted_by_w():
    m = _model("v")
    cfg = ObjectiveConfig(bootstrap_fraction=0.0, ramp_weight=True, action_dropout=0.0, text_dropout=0.0)
    obj = ShortcutForcing(cfg, 8, prediction="v")
    x, seeds = _latents(3, 4), [5, 6, 7]
    loss, metrics = obj(m, x, at=TrainStep(seeds=seeds))
    _, tau, step, noise, _, _ = obj.draw(x, 0, seeds)
    z = corrupt(x, tau, noise)
    with torch.no_grad():
        x_hat = m(z, tau, step)
    v_hat = (x_hat - z) / (1 - tau)[..., None, None]
    per = (v_hat - (x - noise)).pow(2).mean((-2, -1))  # ‖v̂ − (x − ε)‖²
    torch.testing.assert_close(loss.detach(), (ramp_weight(tau) * per).sum() / 12, rtol=1e-4, atol=0)
    # = the x-space error divided by (1 − τ)²
    per_x = (x_hat - x).pow(2).mean((-2, -1)) / (1 - tau) ** 2
    torch.testing.assert_close(per, per_x, rtol=1e-3, atol=0)
    x_loss, _ = ShortcutForcing(cfg, 8)(
        m, x, at=TrainStep(seeds=seeds)
    )  # the same outputs judged in x-space: another number
    assert abs(x_loss.item() - loss.item()) > 1e-3 * loss.item()


def test_v_bootstrap_target_is_the_x_target_in_velocity_space():
    m = _model("v")
    x = _latents(2, 3)
    g = torch.Generator().manual_seed(3)
    tau, step = torch.tensor([[0.0, 0.25, 0.5]] * 2), torch.tensor([[0.5, 0.25, 0.5]] * 2)
    z = corrupt(x, tau, torch.randn(x.shape, generator=g))
    v_star = bootstrap_velocity(m, z, tau, step)
    x_star = bootstrap_target(m, z, tau, step)
    torch.testing.assert_close(v_star, (x_star - z) / (1 - tau)[..., None, None], atol=1e-5, rtol=1e-5)
    obj = ShortcutForcing(
        ObjectiveConfig(
            bootstrap_fraction=1.0, bootstrap_start=0, ramp_weight=False, action_dropout=0.0, text_dropout=0.0
        ),
        8,
        prediction="v",
    )
    loss, metrics = obj(m, x, at=TrainStep(seeds=[1, 2]))
    boot, tau, step, noise, _, _ = obj.draw(x, 0, [1, 2])
    assert boot.all()
    z = corrupt(x, tau, noise)
    with torch.no_grad():
        v_hat = (m(z, tau, step) - z) / (1 - tau)[..., None, None]
        want = (v_hat - bootstrap_velocity(m, z, tau, step)).pow(2).mean((-2, -1)).mean()
    torch.testing.assert_close(loss.detach(), want, rtol=1e-4, atol=0)


def test_v_model_learns_a_toy():
    torch.manual_seed(0)
    m = DynamicsModel(dataclasses.replace(TINY, attention="eager", prediction="v", text_dim=0))
    data = MovingBlobClips(grid=TINY.latent_grid, dim=D, frames=4, seed=0)
    batch = [data[i] for i in range(8)]
    x = torch.stack([torch.as_tensor(b.latents) for b in batch])
    a = torch.stack([torch.as_tensor(b.actions) for b in batch])
    obj = ShortcutForcing(
        ObjectiveConfig(bootstrap_fraction=0.0, action_dropout=0.0, text_dropout=0.0), 8, prediction="v"
    )
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    held = [10**6 + i for i in range(8)]  # one fixed draw to judge by: the v-loss of a random draw is noisy

    def held_loss():
        with torch.no_grad():
            return obj(m, x, Conditions(a), at=TrainStep(seeds=held))[0].item()

    before = held_loss()
    for step in range(60):
        loss, _ = obj(m, x, Conditions(a), at=TrainStep(seeds=[1000 * step + i for i in range(8)]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    # 1.13 -> 0.58 here; it then levels off (the v-loss weighs near-clean frames' x-errors up to k_max² = 64 times
    # and at τ = 0 the net must reproduce the noise itself: the x-model of the same size goes far lower in x-space)
    assert held_loss() < 0.65 * before, (before, held_loss())


# ------------------------------------------------------------------------------------------------ causality, cache


@pytest.mark.parametrize("prediction", ["v", "next"])
@torch.no_grad()
def test_causality(prediction):
    m = _model(prediction)
    z, a = _latents(2, 5), _actions(2, 5)
    tau = torch.rand(2, 5, generator=torch.Generator().manual_seed(4)) if prediction == "v" else 1.0
    base = m(z, tau, 0.125, a)
    for t in (1, 3):
        z2, a2 = z.clone(), a.clone()
        z2[:, t] += 1.0
        # frame t's own action token: the action into it (v), the action after it (next)
        a2[:, t if prediction == "next" else t - 1] += 1.0
        for zz, aa in ((z2, a), (z, a2)):
            out = m(zz, tau, 0.125, aa)
            torch.testing.assert_close(out[:, :t], base[:, :t], atol=1e-6, rtol=0)
            assert (out[:, t] - base[:, t]).abs().max() > 1e-4


@torch.no_grad()
def test_v_cached_steps_equal_forward():
    m = _model("v")
    z, a = _latents(2, 6), _actions(2, 6)
    tau = torch.rand(2, 6, generator=torch.Generator().manual_seed(5))
    full = m(z, tau, 0.25, a)
    cache = m.init_cache(2)
    for t in range(6):
        prev = a[:, t - 1] if t else None
        x = m.step(z[:, t], tau[:, t], 0.25, FrameConditions(prev), cache=cache, commit=True)
        torch.testing.assert_close(x, full[:, t], atol=1e-4, rtol=0)


@torch.no_grad()
def test_next_cached_steps_equal_forward_and_use_the_action_at_frame_0():
    m = _model("next")
    z, a = _latents(2, 10), _actions(2, 10)  # 10 > window 8: the window slides
    full = m(z, 1.0, 0.125, a)
    cache = m.init_cache(2)
    for t in range(10):  # next: step's action is the one taken after the frame, at t = 0 too
        x = m.step(z[:, t], 1.0, 0.125, FrameConditions(a[:, t]), cache=cache, commit=True)
        torch.testing.assert_close(x, full[:, t], atol=1e-4, rtol=0)
    a2 = a.clone()
    a2[:, 0] += 1.0
    assert (m(z, 1.0, 0.125, a2)[:, 0] - full[:, 0]).abs().max() > 1e-4


# ------------------------------------------------------------------------------------------------ next: loss


def test_next_loss_is_the_teacher_forced_mse():
    m = _model("next")
    obj = NextFrameRegression(ObjectiveConfig(action_dropout=0.0, text_dropout=0.0), 8)
    x, a = _latents(3, 5), _actions(3, 5)
    valid = torch.ones(3, 5, dtype=torch.bool)
    valid[1, 3:] = False  # padding: pairs (2, 3) and (3, 4) of clip 1 are out
    x_pad = torch.where(valid[..., None, None], x, torch.full_like(x, float("nan")))
    loss, metrics = obj(m, x_pad, Conditions(a), valid=valid)
    with torch.no_grad():
        out = m(torch.where(valid[..., None, None], x, 0.0), 1.0, 0.125, a)
    pairs = [(b, t) for b in range(3) for t in range(4) if valid[b, t] and valid[b, t + 1]]
    want = sum((out[b, t] - x[b, t + 1]).pow(2).mean() for b, t in pairs) / len(pairs)
    torch.testing.assert_close(loss.detach(), want, rtol=1e-5, atol=0)
    assert torch.isfinite(loss) and metrics["loss_flow"] == metrics["loss"]
    assert metrics["loss_bootstrap"] == 0 and metrics["bootstrap_frac"] == 0
    # action dropout still applies (guidance stays measurable), from each sample's own seed
    drop = NextFrameRegression(ObjectiveConfig(action_dropout=1.0), 8)
    loss_null, m_null = drop(m, x, Conditions(a), at=TrainStep(seeds=[1, 2, 3]))
    assert m_null["action_dropped_frac"] == 1.0
    with torch.no_grad():
        ref = m(x, 1.0, 0.125, None)
    torch.testing.assert_close(loss_null.detach(), (ref[:, :-1] - x[:, 1:]).pow(2).mean(), rtol=1e-5, atol=0)


# ------------------------------------------------------------------------------------------------ next: sampling


@torch.no_grad()
def test_next_rollout_is_teacher_forced_and_equals_full_recompute():
    m = _model("next")
    C, H = 3, 7  # C + H = 10 > window 8
    ctx, a = _latents(2, C), _actions(2, C + H - 1)
    pred = rollout(m, ctx, H, Conditions(a), Sampling(4), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(pred[:, 0], m(ctx, 1.0, 0.125, a[:, :C])[:, -1], atol=1e-5, rtol=0)
    for h in range(H):  # frame C + h = the output at frame C + h − 1 of [context + predicted so far]
        seq = torch.cat([ctx, pred[:, :h]], 1)
        torch.testing.assert_close(pred[:, h], m(seq, 1.0, 0.125, a[:, : C + h])[:, -1], atol=1e-4, rtol=0)
    # deterministic: K, noise and the generator play no part
    again = rollout(m, ctx, H, Conditions(a), Sampling(1), generator=torch.Generator().manual_seed(9))
    assert torch.equal(pred, again)
    with pytest.raises(ValueError, match="observe at least one frame"):
        sample_frame(m, m.init_cache(2), 1, torch.zeros(2, N, D))


@torch.no_grad()
def test_next_rollout_from_an_observed_expanded_cache_equals_separate_rollouts():
    m = _model("next")
    B, n, C, H = 2, 3, 3, 4
    ctx, hist = _latents(B, C), _actions(B, C - 1)
    cache = observe(m, ctx, Conditions(hist))
    assert cache.time_index == C - 1 and torch.equal(cache.pending, ctx[:, -1])  # waits for its action
    fut = _actions(B * n, H, seed=7)
    full = torch.cat([hist.repeat_interleave(n, 0), fut], 1)
    got = rollout(m, ctx, H, Conditions(full), cache=cache.expand(n))
    want = rollout(m, ctx.repeat_interleave(n, 0), H, Conditions(full))
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    assert (got[0] - got[1]).abs().max() > 1e-4  # the candidates' own actions matter


@torch.no_grad()
def test_next_action_guidance_combines_the_branches():
    m = _model("next")
    ctx, a, w = _latents(2, 3), _actions(2, 4), 2.5
    pred = rollout(m, ctx, 2, Conditions(a, action_guidance=w))
    cond, null = m(ctx, 1.0, 0.125, a[:, :3])[:, -1], m(ctx, 1.0, 0.125, None)[:, -1]
    torch.testing.assert_close(pred[:, 0], cond + (w - 1) * (cond - null), atol=1e-5, rtol=0)


@torch.no_grad()
def test_planning_cost_runs_on_a_next_model_and_reads_action_free_features():
    m = _model("next")
    C, H, P = 3, 4, 5
    ctx, hist, goal = _latents(1, C), _actions(1, C - 1), _latents(1, 1, seed=9)[0, 0]
    obj = LatentGoalObjective(m, ctx, goal, hist)
    cand = _actions(P, H, seed=3)
    costs = obj(cand)
    assert costs.shape == (P,) and torch.isfinite(costs).all() and costs.std() > 0
    with torch.enable_grad():  # the gradient planner differentiates through the deterministic rollout
        a = cand.clone().requires_grad_(True)
        obj(a, grad=True).sum().backward()
    assert torch.isfinite(a.grad).all() and a.grad.abs().sum() > 0
    x, feats = obj.predict(cand, features=True)
    full = torch.cat([hist.expand(P, -1, -1), cand], 1)
    torch.testing.assert_close(x, rollout(m, ctx.expand(P, -1, -1, -1), H, Conditions(full)), atol=1e-5, rtol=0)
    # the last predicted frame's features = the clean pass with the action after it unknown
    mask = torch.ones(P, C + H, dtype=torch.bool)
    mask[:, -1] = False
    pad = torch.cat([full, torch.zeros_like(full[:, :1])], 1)
    h = m.clean_hidden(torch.cat([ctx.expand(P, -1, -1, -1), x], 1), pad, mask)[:, -1]
    torch.testing.assert_close(feats, h[:, m.layout.special_slice].flatten(-2), atol=1e-4, rtol=0)


@pytest.mark.parametrize("prediction", ["x", "next"])
@torch.no_grad()
def test_features_never_see_the_action_after_their_frame(prediction):
    m = _model(prediction)
    x, a = _latents(2, 5), _actions(2, 5)
    h = clip_hidden(m, x, Conditions(a))
    for t in (1, 3):
        after, into = a.clone(), a.clone()
        after[:, t] += 1.0
        into[:, t - 1] += 1.0
        torch.testing.assert_close(clip_hidden(m, x, Conditions(after))[:, t], h[:, t], atol=1e-5, rtol=0)
        assert (clip_hidden(m, x, Conditions(into))[:, t] - h[:, t]).abs().max() > 1e-4
    # imagination's context features are the policy's training features (rl.bc reads clip_hidden)
    heads = AgentHeads(m.layout.registers * m.cfg.width, 4, -torch.ones(4), torch.ones(4))
    traj = imagine(
        m,
        heads,
        x[:, :3],
        a[:, :2],
        None,
        RLConfig(horizon=2, sample_steps=2),
        generator=torch.Generator().manual_seed(0),
    )
    assert traj["latents"].shape == (2, 2, N, D) and torch.isfinite(traj["feats"]).all()
    torch.testing.assert_close(traj["feats"][:, 0], frame_features(h[:, 2], m.layout), atol=1e-4, rtol=0)


# ------------------------------------------------------------------------------------------------ next: training


def test_next_training_run_learns_evaluates_and_records_the_mode(tmp_path):
    cfg = get_preset("tiny").replace(
        model__prediction="next",
        train__out_dir=str(tmp_path),
        train__steps=30,
        train__log_every=1,
        train__ckpt_every=30,
        train__eval_every=15,
        train__warmup_steps=2,
        train__lr=3e-3,
        train__condition_gain=False,
    )
    m = cfg.model
    world = MovingBlobClips(grid=m.latent_grid, dim=m.latent_dim, frames=cfg.data.clip_len, seed=0, text_dim=m.text_dim)
    held = torch.utils.data.Subset(
        MovingBlobClips(grid=m.latent_grid, dim=m.latent_dim, frames=cfg.data.clip_len, seed=1, text_dim=m.text_dim),
        range(3),
    )
    Trainer(cfg, world, held, device="cpu").fit()
    rows = list(read_metrics(tmp_path / "metrics.jsonl"))
    losses = [r["train/loss"] for r in rows if "train/loss" in r]
    assert sum(losses[-5:]) < 0.5 * sum(losses[:5]), (losses[:5], losses[-5:])
    assert all(r["train/loss_bootstrap"] == 0 for r in rows if "train/loss" in r)
    evals = [r for r in rows if "eval/mean_model" in r]
    assert len(evals) == 2 and all(r["eval/mean_model"] == r["eval/mean_model"] for r in evals)
    model, exp, _ = ckpt.load_world_model(tmp_path)
    assert exp.model.prediction == "next" and model.cfg.prediction == "next"
