"""What torch.compile captures has no graph breaks: the training forward of every model variant (the region
`--train.compile` compiles, as one graph with `compile_scope model`, block by block with `blocks`) and the KV-cached
denoising step (what `compile_sampling` compiles). A break splits the compiled region, so fusion stops at it and
every break costs a Python round trip per call; counted with torch._dynamo.explain, which traces without generating
kernels — on the CPU here, on CUDA in benchmarks/gpu_check.sh (where attention="fused" traces flex_attention)."""

import dataclasses
import warnings

import pytest
import torch

from latentwm.conditions import FrameConditions, History
from latentwm.config import get_preset
from latentwm.model import layers
from latentwm.model.dynamics import DynamicsModel

VARIANTS = {
    "plain": {},
    "eager_attention": {"attention": "eager"},
    "dh_head": {"dh_blocks": 1},
    "previous_frame": {"previous_frame": True},
    "text": {"text_dim": 8},
    "v_prediction": {"prediction": "v"},
}

pytestmark = pytest.mark.filterwarnings("ignore:attention='fused' with a soft cap")


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _model(device, **kw):
    torch.manual_seed(0)
    cfg = dataclasses.replace(get_preset("tiny").model, **kw)
    return DynamicsModel(cfg).to(device), cfg


def _breaks(fn, *args) -> tuple[int, list[str]]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ex = torch._dynamo.explain(fn)(*args)
    return ex.graph_break_count, [str(r.reason).splitlines()[0] for r in ex.break_reasons]


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "teacher_forced"])
@pytest.mark.parametrize("name", list(VARIANTS))
def test_training_forward_has_no_graph_breaks(name, stream, device):
    model, cfg = _model(device, **VARIANTS[name])
    model.train()
    B, T = 2, 4
    g = torch.Generator().manual_seed(1)
    z = torch.randn(B, T, cfg.num_latent_tokens, cfg.latent_dim, generator=g).to(device)
    tau, step = torch.rand(B, T, generator=g).to(device), torch.full((B, T), 0.25, device=device)
    acts = torch.randn(B, T, cfg.action_dim, generator=g).to(device)
    text = torch.randn(B, T, cfg.text_dim, generator=g).to(device) if cfg.text_dim else None
    history = History(z, stream=stream) if (stream or cfg.previous_frame) else None

    def loss(z, tau, step, acts):
        return model(z, tau, step, acts, text=text, history=history).square().mean()

    # the CPU soft-cap fallback of attention="fused" warns once per process; a warning inside the traced region
    # was a break per attention layer, so the warned-set is emptied to trace the first call's path too
    layers._warned.clear()
    breaks, reasons = _breaks(loss, z, tau, step, acts)
    assert breaks == 0, reasons


@pytest.mark.parametrize("name", ["plain", "dh_head", "previous_frame", "text"])
def test_cached_denoising_step_has_no_graph_breaks(name, device):
    model, cfg = _model(device, **VARIANTS[name])
    model.eval()
    B = 2
    g = torch.Generator().manual_seed(2)
    cache = model.init_cache(B)
    ones, d, half = (torch.full((B,), v, device=device) for v in (1.0, 0.25, 0.5))
    with torch.no_grad():  # two committed frames, so the step attends to a real cache
        for _ in range(2):
            x = torch.randn(B, cfg.num_latent_tokens, cfg.latent_dim, generator=g).to(device)
            model.step(x, ones, d, None, cache, commit=True)
    z = torch.randn(B, cfg.num_latent_tokens, cfg.latent_dim, generator=g).to(device)
    acts = torch.randn(B, cfg.action_dim, generator=g).to(device)
    text = torch.randn(B, cfg.text_dim, generator=g).to(device) if cfg.text_dim else None

    def denoise(z, acts):
        with torch.no_grad():
            return model.step(z, half, d, FrameConditions(acts, text=text), cache)

    layers._warned.clear()
    breaks, reasons = _breaks(denoise, z, acts)
    assert breaks == 0, reasons
