"""Frozen DINO encoder on tiny random configs of all three families (no downloads)."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from latentwm.config import EncoderConfig
from latentwm.data.episodes import NormStats
from latentwm.encoders.dino import DinoEncoder, EncoderWeightsMissing, compute_latent_stats, load_backbone

FAMILIES = [("tiny-random", 56, 0), ("tiny-random-reg", 56, 4), ("tiny-random-v3", 64, 4)]


def _frames(n=3, size=48, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


@pytest.mark.parametrize("name,size,regs", FAMILIES)
def test_shapes_determinism_and_dropped_tokens(name, size, regs):
    cfg = EncoderConfig(name=name, image_size=size, batch_size=2)
    enc = DinoEncoder.from_config(cfg)
    frames = _frames()
    x = enc.encode(frames)
    g = size // enc.patch_size
    assert x.shape == (3, g * g, 64) and x.dtype == torch.float32 and enc.num_tokens == g * g
    assert enc.skip == 1 + regs and enc.is_random and enc.weights_label == f"random:{name}"
    # a second encoder from the same config is the same function
    torch.testing.assert_close(DinoEncoder.from_config(cfg).encode(frames), x, rtol=0, atol=0)
    # the output is exactly the patch tokens of the untouched model (CLS/registers dropped) on ImageNet-normalized
    # pixels, LayerNorm-ed without affine (the wrapper folds normalization and the norm's affine into the weights)
    bare = load_backbone(cfg)[0].eval()
    x01 = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255
    x01 = F.interpolate(x01, size=(size, size), mode="bicubic", antialias=True).clamp(0, 1)
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    pixels = (x01 - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)
    with torch.no_grad():
        out = bare(pixel_values=pixels, output_hidden_states=True)
    assert out.last_hidden_state.shape[1] == g * g + 1 + regs
    pre_norm = out.hidden_states[-1]  # the last block's output, before the final norm (all three families)
    eps = getattr(enc.backbone.config, "layer_norm_eps", 1e-6)
    torch.testing.assert_close(x, F.layer_norm(pre_norm, (64,), eps=eps)[:, 1 + regs:], atol=1e-5, rtol=1e-5)
    # per-token LayerNorm: zero mean, unit variance over channels
    assert x.mean(-1).abs().max() < 1e-4 and (x.var(-1, unbiased=False) - 1).abs().max() < 1e-2


def test_channels_first_and_video_inputs_agree():
    enc = DinoEncoder.from_config(EncoderConfig(name="tiny-random", image_size=56))
    f = _frames(4)
    a = enc.encode(f)
    b = enc.encode(torch.from_numpy(f).permute(0, 3, 1, 2))
    torch.testing.assert_close(a, b)
    v = enc.encode_video(f.reshape(2, 2, *f.shape[1:]))
    torch.testing.assert_close(v.reshape(4, *a.shape[1:]), a)
    # frames already at image_size go through a reused pixel buffer: results never leak between calls
    g = _frames(4, size=56, seed=1)
    first = enc.encode(g).clone()
    enc.encode(_frames(4, size=56, seed=2))
    torch.testing.assert_close(enc.encode(g), first, rtol=0, atol=0)
    torch.testing.assert_close(first, enc.forward_pixels(enc.preprocess(g)), rtol=0, atol=0)


def test_frozen_and_eval():
    enc = DinoEncoder.from_config(EncoderConfig(name="tiny-random", image_size=56))
    enc.train()
    assert not enc.training and not enc.backbone.training
    assert not any(p.requires_grad for p in enc.parameters())


def test_stats_normalization_gives_unit_channels(tmp_path):
    enc = DinoEncoder.from_config(EncoderConfig(name="tiny-random", image_size=56))
    x = enc.encode(_frames(16, seed=1))
    stats = compute_latent_stats([x.numpy()])
    path = tmp_path / "latent_stats.json"
    path.write_text(json.dumps(stats.to_dict()))
    back = NormStats.from_dict(json.loads(path.read_text()))
    np.testing.assert_allclose(back.mean, stats.mean)
    enc.set_stats(back)
    y = enc.encode(_frames(16, seed=1)).reshape(-1, 64)
    assert y.mean(0).abs().max() < 1e-3 and (y.std(0, unbiased=False) - 1).abs().max() < 1e-3


@pytest.mark.parametrize("bad,match", [
    (np.zeros((2, 8, 8, 3), np.float32), "uint8"),
    (np.zeros((2, 8, 8, 4), np.uint8), "3 channels"),
    (np.zeros((8, 8, 3), np.uint8), "3 channels"),
])
def test_bad_frames_are_rejected(bad, match):
    enc = DinoEncoder.from_config(EncoderConfig(name="tiny-random", image_size=56))
    with pytest.raises(ValueError, match=match):
        enc.encode(bad)


def test_missing_offline_weights_say_how_to_get_them(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(EncoderWeightsMissing, match=r"facebook/dinov2-small.*huggingface-cli download"):
        DinoEncoder.from_config(EncoderConfig(name="dinov2-s", image_size=224))


@pytest.mark.parametrize("name,size", [("tiny-random", 56), ("tiny-random-reg", 56), ("tiny-random-v3", 64)])
def test_local_folder_loads_like_the_hub(tmp_path, name, size):
    cfg = EncoderConfig(name=name, image_size=size)
    ref = DinoEncoder.from_config(cfg)
    backbone, _ = load_backbone(cfg)  # fresh, with its affine final norm, as a user would save it
    backbone.save_pretrained(tmp_path / "model")
    local = DinoEncoder.from_config(EncoderConfig(name=str(tmp_path / "model"), image_size=size))
    assert local.weights_label == f"pretrained:{tmp_path / 'model'}" and not local.is_random
    torch.testing.assert_close(local.encode(_frames()), ref.encode(_frames()), atol=1e-5, rtol=1e-5)
