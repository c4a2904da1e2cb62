"""Condition gain (eval/metrics.py): error with another clip's / no future condition minus error with the true one,
noise-matched, for actions and text — zero exactly when the model cannot read the condition."""

import dataclasses

import pytest
import torch
from tiny_models import perturbed_text_model

from latentwm.config import get_preset
from latentwm.data.batch import WorldBatch, WorldBatchMetadata
from latentwm.eval.metrics import EvalOptions, rollout_errors
from latentwm.model import DynamicsModel

CFG = dataclasses.replace(get_preset("tiny").model, attention="eager", text_dim=8)


def _model(seed=0):
    return perturbed_text_model(CFG, seed)


def _batch(B=4, T=6, text=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    lat = torch.randn(B, T, CFG.num_latent_tokens, CFG.latent_dim, generator=g)
    kw = (
        dict(text=torch.randn(B, T, CFG.text_dim, generator=g), text_mask=torch.ones(B, T, dtype=torch.bool))
        if text
        else {}
    )
    return WorldBatch(
        actions=torch.randn(B, T, CFG.action_dim, generator=g),
        action_mask=torch.ones(B, T, dtype=bool),
        valid=torch.ones(B, T, dtype=torch.bool),
        latents=lat,
        meta=[WorldBatchMetadata("toy", str(i)) for i in range(B)],
        **kw,
    )


def test_condition_gain_keys_and_a_model_that_reads_text():
    torch.set_num_threads(1)
    res = rollout_errors(
        _model(),
        [_batch(), _batch(seed=1)],
        context=2,
        horizon=3,
        options=EvalOptions(sample_steps=2, condition_gain=True),
    )
    cg = res["condition_gain"]
    assert set(cg) == {"action", "text", "action_alone", "text_alone"}
    for name, c in cg.items():
        assert c["num_clips"] == 8 and all(len(c[k]) == 3 for k in ("true", "shuffled", "null", "gain", "null_gain"))
        assert max(abs(v) for v in c["gain"]) > 1e-6 and max(abs(v) for v in c["null_gain"]) > 1e-6
        if not name.endswith("_alone"):
            assert c["true"] == res["model_error"]  # the same noise as the plain rollout
    # alone: the other condition is gone from every frame, so the true rollout differs from the joint one
    assert cg["text_alone"]["true"] != res["model_error"] and cg["action_alone"]["true"] != res["model_error"]
    # text alone is exactly a rollout of the same clips with no actions anywhere (the same noise)
    b = _batch()
    no_actions = dataclasses.replace(b, action_mask=torch.zeros_like(b.action_mask))
    one = rollout_errors(_model(), [b], context=2, horizon=3, options=EvalOptions(sample_steps=2, condition_gain=True))[
        "condition_gain"
    ]
    plain = rollout_errors(_model(), [no_actions], context=2, horizon=3, options=EvalOptions(sample_steps=2))
    assert one["text_alone"]["true"] == plain["model_error"]


def test_a_model_blind_to_text_has_exactly_zero_text_gain():
    m = _model()
    with torch.no_grad():  # every text (and no text) becomes the same token
        m.text_in.weight.zero_()
        m.no_text.copy_(m.text_in.bias)
    cg = rollout_errors(m, [_batch()], context=2, horizon=3, options=EvalOptions(sample_steps=2, condition_gain=True))[
        "condition_gain"
    ]
    assert cg["text"]["gain"] == [0.0] * 3 and cg["text"]["null_gain"] == [0.0] * 3
    assert cg["text_alone"]["gain"] == [0.0] * 3 and cg["text_alone"]["null_gain"] == [0.0] * 3
    assert max(abs(v) for v in cg["action"]["gain"]) > 1e-6
    assert cg["action_alone"] == cg["action"]  # text cannot matter: removing it changes nothing


def test_a_model_blind_to_actions_gets_the_same_text_gain_with_or_without_them():
    m = _model()
    with torch.no_grad():  # every action (and no action) becomes the same token
        m.action_in.weight.zero_()
        m.no_action.copy_(m.action_in.bias)
    cg = rollout_errors(m, [_batch()], context=2, horizon=3, options=EvalOptions(sample_steps=2, condition_gain=True))[
        "condition_gain"
    ]
    assert cg["action"]["gain"] == [0.0] * 3 and cg["action_alone"]["gain"] == [0.0] * 3
    assert cg["text_alone"] == cg["text"] and max(abs(v) for v in cg["text"]["gain"]) > 1e-6


def test_condition_gain_of_chosen_conditions_only():
    cg = rollout_errors(
        _model(), [_batch()], context=2, horizon=2, options=EvalOptions(sample_steps=1, condition_gain=("text",))
    )["condition_gain"]
    assert set(cg) == {"text", "text_alone"}
    with pytest.raises(ValueError, match="condition_gain"):
        rollout_errors(_model(), [_batch()], context=2, horizon=2, options=EvalOptions(condition_gain=("txt",)))


def test_batches_without_text_report_the_action_gain_only():
    cg = rollout_errors(
        _model(), [_batch(text=False)], context=2, horizon=2, options=EvalOptions(sample_steps=1, condition_gain=True)
    )["condition_gain"]
    assert set(cg) == {"action"}


class _SaidFrames(torch.utils.data.Dataset):
    """Each frame is one of 4 prototype frames, chosen at random per frame and said by the frame's text (one fixed
    random "sentence" vector per prototype): only the text tells what comes next."""

    def __init__(self, n: int, offset: int = 0, frames: int = 5):
        g = torch.Generator().manual_seed(0)
        self.protos = torch.randn(4, CFG.num_latent_tokens, CFG.latent_dim, generator=g)
        self.words = torch.nn.functional.normalize(torch.randn(4, 8, generator=g), dim=-1)
        self.n, self.offset, self.frames = n, offset, frames

    def __len__(self):
        return self.n

    def __getitem__(self, k):
        from latentwm.data.batch import ClipSample

        g = torch.Generator().manual_seed(self.offset + int(k))
        ids = torch.randint(0, 4, (self.frames,), generator=g)
        lat = self.protos[ids] + 0.05 * torch.randn(self.frames, *self.protos.shape[1:], generator=g)
        return ClipSample(
            latents=lat,
            text=self.words[ids],
            text_mask=torch.ones(self.frames, dtype=torch.bool),
            meta=WorldBatchMetadata("said", str(k)),
        )


def test_training_on_text_only_data_teaches_the_model_to_listen(tmp_path):
    """A short run on frames said by their text: the text gain on held-out clips (error with another clip's text −
    with the true one, what the demo plots against steps) grows from ~0 to clearly positive."""
    from latentwm.train.trainer import Trainer

    torch.set_num_threads(1)
    cfg = get_preset("tiny").replace(
        train__out_dir=str(tmp_path),
        train__steps=300,
        train__log_every=50,
        train__ckpt_every=1000,
        train__eval_every=150,
        train__warmup_steps=10,
        train__lr=3e-3,
        train__ema_decay=0.9,
        model__text_dim=8,
        data__clip_len=5,
        rollout__context=2,
        rollout__horizon=3,
        rollout__sample_steps=2,
    )
    before = rollout_errors(
        DynamicsModel(cfg.model).eval(),
        [collate_said(_SaidFrames(16, 10**6))],
        2,
        3,
        options=EvalOptions(condition_gain=True, sample_steps=2),
    )["condition_gain"]["text"]["gain"]
    gains = []
    Trainer(
        cfg,
        _SaidFrames(1 << 20),
        _SaidFrames(16, 10**6),
        device="cpu",
        on_eval=lambda step, res: gains.append(res["condition_gain"]["text"]["gain"]),
    ).fit()
    mean = lambda g: sum(g) / len(g)  # noqa: E731
    assert len(gains) == 2 and abs(mean(before)) < 1e-6  # the zero-init model ignores everything
    assert mean(gains[-1]) > 0.5, gains


def collate_said(ds):
    from latentwm.data.batch import collate

    return collate([ds[i] for i in range(len(ds))], CFG.action_dim)


def test_standard_errors_per_horizon_are_those_of_the_clips():
    from latentwm.data.batch import WorldBatchMetadata
    from latentwm.eval.metrics import _Sums

    torch.manual_seed(0)
    a, b = torch.randn(3, 4), torch.randn(2, 4)
    sums = _Sums(4)
    meta = lambda n: [WorldBatchMetadata(dataset="d", episode_id=str(i)) for i in range(n)]  # noqa: E731
    sums.add({"k": a}, meta(3))
    sums.add({"k": b}, meta(2))
    x = torch.cat([a, b]).double()
    want = x.std(0, unbiased=True) / 5**0.5
    assert torch.allclose(torch.tensor(sums.stderr_by_horizon("k"), dtype=torch.float64), want)
    assert sums.stderr_by_horizon("missing") is None
