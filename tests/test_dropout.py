"""model.dropout: residual-branch dropout while training, never in eval mode (EMA, rollouts, KV-cached sampling, the
bootstrap teacher), and no op at all at 0."""

import dataclasses

import pytest
import torch
from tiny_models import perturbed_model, random_inputs, run_cached

from latentwm.config import ConfigError, get_preset
from latentwm.data.sources.synthetic import MovingBlobClips
from latentwm.model.dynamics import DynamicsModel
from latentwm.train.trainer import Trainer

TINY = get_preset("tiny").model


def _cfg(**kw):
    return dataclasses.replace(TINY, attention="eager", **kw)


def test_dropout_is_validated():
    for bad in (-0.1, 1.0):
        with pytest.raises(ConfigError, match="model.dropout"):
            _cfg(dropout=bad)


def test_dropout_changes_train_mode_outputs_only():
    cfg = _cfg(dropout=0.3)
    m = perturbed_model(cfg)  # perturbed: residual branches are not zero, so dropping them shows
    z, tau, step, a, mask = random_inputs(cfg, 2, 4)
    with torch.no_grad():
        m.train()
        t1, t2 = m(z, tau, step, a, mask), m(z, tau, step, a, mask)
        m.eval()
        e1, e2 = m(z, tau, step, a, mask), m(z, tau, step, a, mask)
    assert (t1 - t2).abs().max() > 1e-3 and (t1 - e1).abs().max() > 1e-3
    assert torch.equal(e1, e2)
    ref = perturbed_model(_cfg())  # the same weights without dropout: eval mode is exactly the plain network
    ref.load_state_dict(m.state_dict())
    with torch.no_grad():
        assert torch.equal(ref.eval()(z, tau, step, a, mask), e1)


def test_zero_dropout_runs_no_op_and_draws_no_random_numbers():
    m = perturbed_model(_cfg()).train()
    z, tau, step, a, mask = random_inputs(m.cfg, 2, 3)
    state = torch.get_rng_state()
    with torch.no_grad():
        out = m(z, tau, step, a, mask)
    assert torch.equal(torch.get_rng_state(), state)
    with torch.no_grad():
        assert torch.equal(m.eval()(z, tau, step, a, mask), out)


@pytest.mark.parametrize("T", [3, 9])
@torch.no_grad()
def test_cached_generation_equals_full_recompute_with_dropout_in_eval_mode(T):
    cfg = _cfg(dropout=0.5)
    assert run_cached(perturbed_model(cfg).eval(), cfg, 2, T) < 1e-4


def test_trainer_ema_is_in_eval_mode_and_the_teacher_runs_without_dropout(tmp_path):
    cfg = get_preset("tiny").replace(
        train__out_dir=str(tmp_path),
        train__steps=2,
        model__dropout=0.2,
        objective__bootstrap_start=0,
        objective__bootstrap_fraction=1.0,
    )
    m = cfg.model
    tr = Trainer(
        cfg, MovingBlobClips(grid=m.latent_grid, dim=m.latent_dim, frames=cfg.data.clip_len), None, device="cpu"
    )
    assert not any(mod.training for mod in tr.ema.modules())
    assert all(mod.training for mod in tr.model.modules())
    seen = []
    hook = tr.model.register_forward_pre_hook(lambda mod, args: seen.append(mod.training))
    tr.fit()
    hook.remove()
    # per step: the student in train mode, then the two no-grad half steps of the teacher in eval mode
    assert seen == [True, False, False] * 2, seen
    assert all(mod.training for mod in tr.model.modules()) and not any(mod.training for mod in tr.ema.modules())


def test_evaluating_the_raw_model_turns_its_dropout_off(tmp_path):
    cfg = get_preset("tiny").replace(train__out_dir=str(tmp_path), model__dropout=0.5, rollout__use_ema=False)
    m = cfg.model
    ds = MovingBlobClips(grid=m.latent_grid, dim=m.latent_dim, frames=cfg.data.clip_len, length=2)
    tr = Trainer(cfg, ds, ds, device="cpu")
    with torch.no_grad():
        for p in tr.model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    a, b = tr.evaluate(0), tr.evaluate(0)
    assert a["model_error"] == b["model_error"] and tr.model.training
    assert isinstance(tr.model, DynamicsModel)
