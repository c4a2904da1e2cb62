"""Condition gain (eval/metrics.py): error with another clip's / no future condition minus error with the true one,
noise-matched, for actions and text — zero exactly when the model cannot read the condition."""

import dataclasses

import torch

from latentwm.config import get_preset
from latentwm.data.batch import WorldBatch, WorldBatchMetadata
from latentwm.eval.metrics import rollout_errors
from latentwm.model import DynamicsModel

CFG = dataclasses.replace(get_preset("tiny").model, attention="eager", text_dim=8)


def _model(seed=0):
    torch.manual_seed(seed)
    m = DynamicsModel(CFG).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return m


def _batch(B=4, T=6, text=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    lat = torch.randn(B, T, CFG.num_latent_tokens, CFG.latent_dim, generator=g)
    kw = dict(text=torch.randn(B, T, CFG.text_dim, generator=g), text_mask=torch.ones(B, T, dtype=torch.bool)) \
        if text else {}
    return WorldBatch(actions=torch.randn(B, T, CFG.action_dim, generator=g), action_mask=torch.ones(B, T, dtype=bool),
                      valid=torch.ones(B, T, dtype=torch.bool), latents=lat,
                      meta=[WorldBatchMetadata("toy", str(i)) for i in range(B)], **kw)


def test_condition_gain_keys_and_a_model_that_reads_text():
    torch.set_num_threads(1)
    res = rollout_errors(_model(), [_batch(), _batch(seed=1)], context=2, horizon=3, sample_steps=2,
                         condition_gain=True)
    cg = res["condition_gain"]
    assert set(cg) == {"action", "text"}
    for c in cg.values():
        assert c["num_clips"] == 8 and all(len(c[k]) == 3 for k in ("true", "shuffled", "null", "gain", "null_gain"))
        assert c["true"] == res["model_error"]  # the same noise as the plain rollout
        assert max(abs(v) for v in c["gain"]) > 1e-6 and max(abs(v) for v in c["null_gain"]) > 1e-6


def test_a_model_blind_to_text_has_exactly_zero_text_gain():
    m = _model()
    with torch.no_grad():  # every text (and no text) becomes the same token
        m.text_in.weight.zero_()
        m.no_text.copy_(m.text_in.bias)
    cg = rollout_errors(m, [_batch()], context=2, horizon=3, sample_steps=2, condition_gain=True)["condition_gain"]
    assert cg["text"]["gain"] == [0.0] * 3 and cg["text"]["null_gain"] == [0.0] * 3
    assert max(abs(v) for v in cg["action"]["gain"]) > 1e-6


def test_batches_without_text_report_the_action_gain_only():
    cg = rollout_errors(_model(), [_batch(text=False)], context=2, horizon=2, sample_steps=1,
                        condition_gain=True)["condition_gain"]
    assert set(cg) == {"action"}
