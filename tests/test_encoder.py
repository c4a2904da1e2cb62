"""Frozen DINO encoder on tiny random configs of all three families (no downloads)."""

import inspect
import re
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from latentwm.config import ConfigError, EncoderConfig
from latentwm.config.registry import ENCODER_PRESETS
from latentwm.data.cache_integrity import same_encoder
from latentwm.data.episodes import NormStats
from latentwm.data.latent_stats import LatentStats, compute_latent_stats
from latentwm.encoders.dino import DinoEncoder, EncoderWeightsMissing, load_backbone, weights_hash

# (preset, image_size, registers): grids 4×4 (patch 14) and 4×4 (patch 16)
FAMILIES = [("tiny-random", 56, 0), ("tiny-random-reg", 56, 4), ("tiny-random-v3", 64, 4)]
NAMES = [f[0] for f in FAMILIES]
SIZE = {n: s for n, s, _ in FAMILIES}


def _frames(n=3, size=48, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def _enc(name, **kw):
    return DinoEncoder.from_config(EncoderConfig(name=name, image_size=SIZE[name], **kw))


def _reference(cfg, frames):
    """The RAE recipe on the untouched transformers model: bicubic-antialias resize, ImageNet mean/std, last block's
    output (hidden_states[-1], before the final norm), LayerNorm without affine, patch tokens only."""
    bare = load_backbone(cfg)[0].eval()
    S = cfg.image_size
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255
    x = F.interpolate(x, size=(S, S), mode="bicubic", antialias=True).clamp(0, 1)
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    x = (x - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)
    with torch.no_grad():
        out = bare(pixel_values=x, output_hidden_states=True)
    return out, F.layer_norm(out.hidden_states[-1], (bare.config.hidden_size,), eps=bare.config.layer_norm_eps)


@pytest.mark.parametrize("name,size,regs", FAMILIES)
def test_shapes_determinism_and_dropped_tokens(name, size, regs):
    cfg = EncoderConfig(name=name, image_size=size, batch_size=2)  # 3 frames: chunks of 2 + 1
    enc = DinoEncoder.from_config(cfg)
    frames = _frames()
    x = enc.encode(frames)
    g = size // enc.patch_size
    assert x.shape == (3, g * g, 64) and x.dtype == torch.float32
    assert (enc.num_tokens, enc.dim, enc.grid) == (g * g, 64, g) and enc.skip == 1 + regs
    assert enc.is_random and enc.weights_label == f"random:{name}:seed0:{size}px"
    # a second encoder from the same config is the same function
    torch.testing.assert_close(DinoEncoder.from_config(cfg).encode(frames), x, rtol=0, atol=0)
    out, ref = _reference(cfg, frames)
    assert out.last_hidden_state.shape[1] == g * g + 1 + regs  # CLS + registers + patches ...
    torch.testing.assert_close(x, ref[:, 1 + regs :], atol=1e-5, rtol=1e-5)  # ... of which only patches remain
    # per-token LayerNorm without affine: zero mean, unit variance over channels
    assert x.mean(-1).abs().max() < 1e-4 and (x.var(-1, unbiased=False) - 1).abs().max() < 1e-2


@pytest.mark.parametrize("name", NAMES)
def test_unfolded_path_matches(name):
    """CUDA's path (ImageNet normalization as an elementwise op, no folding) gives the CPU path's latents."""
    cfg = EncoderConfig(name=name, image_size=SIZE[name])
    folded = DinoEncoder.from_config(cfg)
    backbone, label = load_backbone(cfg)
    plain = DinoEncoder(backbone, cfg, label, fold_normalization=False)
    assert folded.folded and not plain.folded
    f = _frames(2)
    torch.testing.assert_close(plain.encode(f), folded.encode(f), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_channel_orders_video_and_buffer_reuse(name):
    enc = _enc(name)
    f = _frames(4)
    a = enc.encode(f)
    torch.testing.assert_close(enc.encode(torch.from_numpy(f).permute(0, 3, 1, 2)), a)
    torch.testing.assert_close(enc.encode(f[..., ::-1][..., ::-1]), a)  # negative-stride numpy views work
    v = enc.encode_video(f.reshape(2, 2, *f.shape[1:]))
    assert v.shape == (2, 2, enc.num_tokens, enc.dim)
    torch.testing.assert_close(v.reshape(4, *a.shape[1:]), a)
    # frames already at image_size go through a reused pixel buffer: results never leak between calls
    g = _frames(4, size=SIZE[name], seed=1)
    first = enc.encode(g)
    enc.encode(_frames(4, size=SIZE[name], seed=2))
    torch.testing.assert_close(enc.encode(g), first, rtol=0, atol=0)
    torch.testing.assert_close(enc.encode(torch.from_numpy(g).permute(0, 3, 1, 2).contiguous()), first)
    torch.testing.assert_close(enc.forward_pixels(enc.preprocess(g)), first, rtol=0, atol=0)


def test_frozen_eval_and_ordinary_outputs():
    enc = _enc("tiny-random")
    enc.train()
    assert not enc.training and not enc.backbone.training
    assert not any(p.requires_grad for p in enc.parameters())
    x = enc.encode(_frames(2))
    assert not x.is_inference() and not x.requires_grad
    w = torch.ones(64, 1, requires_grad=True)  # latents feed autograd (gradient planner) without complaint
    (x @ w).sum().backward()
    assert w.grad is not None


@pytest.mark.parametrize("name", NAMES)
def test_stats_normalization_gives_unit_channels(name):
    enc = _enc(name)
    f = _frames(16, seed=1)
    x = enc.encode(f)
    stats = compute_latent_stats([x[:5], x[5:].numpy()], encoder=enc.weights_label)  # torch and numpy chunks
    assert stats.count == 16 * enc.num_tokens and stats.mean.shape == (64,)
    enc.set_stats(stats)
    y = enc.encode(f).reshape(-1, 64)
    assert y.mean(0).abs().max() < 1e-4 and (y.std(0, unbiased=False) - 1).abs().max() < 1e-3
    np.testing.assert_allclose(y.numpy(), stats.normalize(x.reshape(-1, 64).numpy()), atol=1e-5)
    enc.set_stats(None)
    torch.testing.assert_close(enc.encode(f), x)
    with pytest.raises(ValueError, match="computed with 'random:other'"):
        enc.set_stats(LatentStats(stats.mean, stats.std, 1, "random:other"))
    with pytest.raises(ValueError, match=r"shape \(64,\)"):
        enc.set_stats(NormStats(np.zeros(3), np.ones(3), 1))


def test_latent_stats_streaming_and_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    chunks = [rng.normal(1e3, 0.5, (n, 7, 8)) for n in (1, 5, 3)]  # big offset: E[x²]−E[x]² would cancel
    stats = compute_latent_stats(iter(chunks), encoder="random:tiny-random")
    flat = np.concatenate([c.reshape(-1, 8) for c in chunks])
    np.testing.assert_allclose(stats.mean, flat.mean(0), rtol=1e-12)
    np.testing.assert_allclose(stats.std, flat.std(0), rtol=1e-9)
    assert stats.count == len(flat)
    stats.save(tmp_path / "latent_stats.safetensors")
    back = LatentStats.load(tmp_path / "latent_stats.safetensors")
    assert back.count == stats.count and back.encoder == "random:tiny-random"
    np.testing.assert_array_equal(back.mean, stats.mean)
    np.testing.assert_array_equal(back.std, stats.std)
    assert LatentStats.from_dict(stats.to_dict()).encoder == stats.encoder  # the cache's JSON form too
    assert isinstance(back, NormStats)
    with pytest.raises(ValueError, match="no latents"):
        compute_latent_stats([])
    assert compute_latent_stats([np.ones((4, 3))]).std.min() >= 1e-3  # constant channels stay finite


@pytest.mark.parametrize(
    "bad,match",
    [
        (np.zeros((2, 8, 8, 3), np.float32), r"uint8 .*got dtype torch.float32"),
        (np.zeros((2, 8, 8, 4), np.uint8), r"with 3 channels, got shape \(2, 8, 8, 4\)"),
        (np.zeros((8, 8, 3), np.uint8), r"\(B, H, W, 3\) or \(B, 3, H, W\)"),
    ],
)
def test_bad_frames_are_rejected(bad, match):
    enc = _enc("tiny-random")
    with pytest.raises(ValueError, match=match):
        enc.encode(bad)


def test_bad_clips_are_rejected():
    with pytest.raises(ValueError, match=r"\(B, T, H, W, 3\)"):
        _enc("tiny-random").encode_video(_frames(2))


@pytest.mark.parametrize(
    "name,hub_id",
    [
        ("dinov2-s", "facebook/dinov2-small"),
        ("facebook/dinov2-small", "facebook/dinov2-small"),
        ("dinov3-s", "facebook/dinov3-vits16-pretrain-lvd1689m"),
    ],
)
def test_missing_offline_weights_say_how_to_get_them(tmp_path, monkeypatch, name, hub_id):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(EncoderWeightsMissing) as err:
        DinoEncoder.from_config(EncoderConfig(name=name, image_size=224 if "v3" not in name else 256))
    msg = str(err.value)
    assert isinstance(err.value, RuntimeError)
    assert hub_id in msg and f"hf download {hub_id}" in msg and "huggingface-cli download" in msg
    assert "HF_HOME" in msg and "local folder" in msg
    assert ("gated" in msg) == ("dinov3" in hub_id)


def test_missing_local_folder(tmp_path):
    with pytest.raises(EncoderWeightsMissing, match="does not exist"):
        DinoEncoder.from_config(EncoderConfig(name=str(tmp_path / "nope")))
    with pytest.raises(EncoderWeightsMissing, match="does not hold a loadable"):
        DinoEncoder.from_config(EncoderConfig(name=str(tmp_path)))


@pytest.mark.parametrize("name", NAMES)
def test_local_folder_loads_like_the_preset(tmp_path, name):
    cfg = EncoderConfig(name=name, image_size=SIZE[name])
    ref = DinoEncoder.from_config(cfg)
    backbone, _ = load_backbone(cfg)  # untouched, with its affine final norm, as a user would save it
    backbone.to(torch.bfloat16).save_pretrained(tmp_path / "model")  # bf16 on disk: must still load as fp32
    local = DinoEncoder.from_config(EncoderConfig(name=str(tmp_path / "model"), image_size=SIZE[name]))
    assert local.weights_label == f"pretrained:{tmp_path / 'model'}#{weights_hash(tmp_path / 'model')}"
    assert re.fullmatch(r"[0-9a-f]{12}", local.weights_label.rsplit("#", 1)[1]) and not local.is_random
    assert all(p.dtype == torch.float32 for p in local.parameters())
    assert (local.skip, local.patch_size) == (ref.skip, ref.patch_size)
    # bf16-rounded weights: close, not equal
    torch.testing.assert_close(local.encode(_frames()), ref.encode(_frames()), atol=0.1, rtol=0.1)


def test_local_folder_is_exact_in_fp32(tmp_path):
    cfg = EncoderConfig(name="tiny-random-reg", image_size=56)
    load_backbone(cfg)[0].save_pretrained(tmp_path)
    local = DinoEncoder.from_config(EncoderConfig(name=str(tmp_path), image_size=56))
    torch.testing.assert_close(
        local.encode(_frames()), DinoEncoder.from_config(cfg).encode(_frames()), atol=1e-6, rtol=1e-6
    )


def test_local_folder_checks_image_size(tmp_path):
    load_backbone(EncoderConfig(name="tiny-random", image_size=56))[0].save_pretrained(tmp_path)
    with pytest.raises(ConfigError, match="multiple of the patch size 14"):
        DinoEncoder.from_config(EncoderConfig(name=str(tmp_path), image_size=64))


@pytest.mark.parametrize("name", [n for n, p in ENCODER_PRESETS.items() if p.tiny_config])
def test_random_preset_kwargs_are_real_config_fields(name):
    """Unknown config kwargs are stored silently by transformers and change nothing (e.g. intermediate_size on a
    Dinov2Config, which sizes its MLP by mlp_ratio): every preset key must be a parameter of the config class."""
    p = ENCODER_PRESETS[name]
    cfg = EncoderConfig(name=name, image_size=p.patch_size * 2)
    model, _ = load_backbone(cfg)
    params = inspect.signature(type(model.config).__init__).parameters
    for k, v in p.tiny_config.items():
        assert k in params and getattr(model.config, k) == v, k
    assert model.config.hidden_size == p.hidden_size and model.config.patch_size == p.patch_size
    assert int(getattr(model.config, "num_register_tokens", 0) or 0) == p.num_registers


def test_weights_label_identifies_the_weights(tmp_path):
    """Random presets: the seed and image size (position embeddings) are in the label; a local folder: a hash of
    its weight files, which changes with the weights and not with the folder's place."""
    labels = {
        DinoEncoder.from_config(EncoderConfig(name="tiny-random", image_size=s, seed=k)).weights_label
        for s, k in ((56, 0), (56, 1), (112, 0))
    }
    assert labels == {
        "random:tiny-random:seed0:56px",
        "random:tiny-random:seed1:56px",
        "random:tiny-random:seed0:112px",
    }
    backbone, _ = load_backbone(EncoderConfig(name="tiny-random", image_size=56))
    backbone.save_pretrained(tmp_path / "a")
    shutil.copytree(tmp_path / "a", tmp_path / "copy")
    load_backbone(EncoderConfig(name="tiny-random", image_size=56, seed=5))[0].save_pretrained(tmp_path / "b")
    a, copy, b = (load_backbone(EncoderConfig(name=str(tmp_path / n), image_size=56))[1] for n in ("a", "copy", "b"))
    assert a == f"pretrained:{tmp_path / 'a'}#{weights_hash(tmp_path / 'a')}" and a != copy
    assert same_encoder(a, copy) and not same_encoder(a, b)
    assert weights_hash(tmp_path / "a") != weights_hash(tmp_path / "b")
    assert not same_encoder("random:tiny-random:seed0:56px", "random:tiny-random:seed1:56px")
