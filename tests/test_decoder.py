"""RAE-style decoder: shapes for every encoder family, noise augmentation, training (loss, GAN switch-on),
checkpoints / resume, metrics and the CLI (tiny sizes, the tiny-random encoders)."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from latentwm.cli import main
from latentwm.config import ConfigError, EncoderConfig
from latentwm.config.registry import ENCODER_PRESETS
from latentwm.data.episodes import Episode, NormStats, save_episode
from latentwm.data.sources.pusht import episode_path
from latentwm.encoders.decoder import DECODER_SIZES, DecoderSpec, RAEDecoder, decode_latents, noise_augment, sincos_2d
from latentwm.encoders.dino import DinoEncoder
from latentwm.engine.checkpoint import load_decoder
from latentwm.eval.decoder_metrics import PerceptualLoss, psnr, recon_grid, ssim
from latentwm.train.decoder_trainer import DecoderConfig, DecoderTrainer, load_frame_sets


@pytest.mark.parametrize("name,size", [("tiny-random", 56), ("tiny-random-reg", 56), ("tiny-random-v3", 64)])
@pytest.mark.parametrize("pool", [1, 2])
def test_shapes_for_every_family_and_patch_size(name, size, pool):
    enc = DinoEncoder.from_config(EncoderConfig(name=name, image_size=size, pool=pool))
    lat = enc.encode(torch.randint(0, 256, (2, 3, 40, 40), dtype=torch.uint8))  # (2, N, D)
    for p in (8, 14, 16):
        dec = RAEDecoder(DecoderSpec(enc.dim, enc.grid, p, "tiny"))
        assert dec(lat).shape == (2, 3, enc.grid * p, enc.grid * p)
        assert dec.decode(lat[None]).shape == (1, 2, enc.grid * p, enc.grid * p, 3)


@pytest.mark.parametrize("preset", ["dinov2-s", "dinov2-reg-b", "dinov3-l"])
def test_shapes_of_the_pretrained_families(preset):
    """Real latent shapes (224 px for patch 14, 256 px for patch 16 → 16×16 tokens) with 16 px output patches."""
    p = ENCODER_PRESETS[preset]
    grid = (224 if p.patch_size == 14 else 256) // p.patch_size
    dec = RAEDecoder(DecoderSpec(p.hidden_size, grid, 16, "tiny"))
    assert dec(torch.randn(1, grid * grid, p.hidden_size)).shape == (1, 3, 256, 256)


def test_sizes_and_bad_input():
    assert {"B", "L", "XL", "cpu", "tiny"} <= set(DECODER_SIZES)
    assert DECODER_SIZES["B"].width == 768 and DECODER_SIZES["XL"].depth == 28
    dec = RAEDecoder(DecoderSpec(64, 4, 8, "tiny"))
    with pytest.raises(ValueError, match=r"\(B, 16, 64\)"):
        dec(torch.randn(2, 9, 64))
    with pytest.raises(ValueError, match="decoder.size"):
        DecoderSpec(64, 4, 8, "huge")
    pos = sincos_2d(4, 32)
    assert pos.shape == (16, 32) and len({tuple(r) for r in pos.tolist()}) == 16  # every token its own position


def test_noise_augmentation_statistics():
    g = torch.Generator().manual_seed(0)
    z = torch.zeros(4000, 8, 16)
    noisy, sigma = noise_augment(z, 0.8, g)
    assert sigma.min() >= 0 and sigma.max() <= 0.8
    assert abs(sigma.mean().item() - 0.4) < 0.02  # U(0, τ): mean τ/2, variance τ²/12
    assert abs(sigma.var().item() - 0.8**2 / 12) < 0.005
    per_sample_std = noisy.flatten(1).std(1)
    assert torch.corrcoef(torch.stack([per_sample_std, sigma]))[0, 1] > 0.99  # each frame's noise has std σ
    assert abs(noisy.var().item() - 0.8**2 / 3) < 0.01  # E[σ²] = τ²/3
    same, s0 = noise_augment(z + 1, 0.0, g)
    assert torch.equal(same, z + 1) and (s0 == 0).all()
    dec = RAEDecoder(DecoderSpec(16, 2, 4, "tiny"))
    x = torch.randn(3, 4, 16)
    assert torch.equal(dec(x), dec(x)) and not torch.allclose(dec(x), dec(x, noise_tau=0.8))


def test_metrics():
    a = torch.rand(2, 3, 20, 20) * 2 - 1
    assert (psnr(a, a) > 90).all() and torch.allclose(ssim(a, a), torch.ones(2))
    b = (a + 0.2 * torch.randn_like(a)).clamp(-1, 1)
    assert (ssim(a, b) < 0.95).all() and (psnr(a, b) < 30).all()
    assert abs(psnr(torch.zeros(1, 3, 4, 4), torch.full((1, 3, 4, 4), 0.2)).item() - 20.0) < 1e-4  # mse 0.01
    loss = PerceptualLoss("ssim")
    assert loss.kind == "ssim" and abs(float(loss(a, a))) < 1e-6
    grid = recon_grid(np.zeros((3, 8, 8, 3), np.uint8), np.ones((3, 8, 8, 3), np.uint8), gap=2)
    assert grid.shape == (2 * 8 + 6, 3 * 8 + 8, 3)


# ---------------------------------------------------------------------------------------------------------------
# Training on a tiny set


def _episodes(root, n=6, T=24):
    """A coloured square moving over a gradient: structure a decoder can learn in a few steps."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:32, 0:32]
    for i in range(n):
        frames = np.zeros((T, 32, 32, 3), np.uint8)
        frames[..., 0], frames[..., 2] = (xx * 6)[None], (yy * 6)[None]
        colour = rng.integers(60, 255, 3)
        for t in range(T):
            r, c = (2 + t + 3 * i) % 24, (5 + 2 * t + i) % 24
            frames[t, r : r + 8, c : c + 8] = colour
        ep = Episode(
            dataset="toy",
            episode_id=f"ep{i}",
            fps=10.0,
            frames={"front": frames},
            actions=rng.normal(size=(T, 2)).astype(np.float32),
        )
        save_episode(ep, episode_path(root, i))
    return root


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("decoder")
    root = _episodes(tmp / "episodes")
    assert main(["encode", "--preset", "tiny", "--root", str(root), "--out-dir", str(tmp / "cache")]) == 0
    cfg = DecoderConfig(
        episodes_dir=str(root),
        cache_dir=str(tmp / "cache"),
        size="tiny",
        patch_size=4,
        epochs=6,
        batch_size=16,
        lr=2e-3,
        warmup_steps=2,
        eval_fraction=0.34,
        log_every=1,
        ckpt_every=4,
        eval_frames=16,
        grid_images=3,
        perceptual="ssim",
        ema_decay=0.9,
    )
    sets = load_frame_sets(cfg, show_progress=False)
    return tmp, cfg, sets


def _trainer(cfg, sets, **kw):
    return DecoderTrainer(replace(cfg, **kw), *sets)


def test_frame_sets_follow_the_dynamics_split(data):
    _, cfg, (train, held, facts) = data
    assert len(train) == 4 * 24 and len(held) == 2 * 24  # 2 of 6 episodes held out, every frame
    assert train.latents.shape == (96, 16, 64) and facts["grid"] == 4 and facts["latent_dim"] == 64
    assert facts["encoder"] == "random:tiny-random:seed0:56px"
    lat, target = train.batch(torch.arange(5), "cpu", 16)
    assert lat.shape == (5, 16, 64) and target.shape == (5, 3, 16, 16) and target.min() >= -1


def test_loss_falls_on_a_tiny_set(data):
    tmp, cfg, sets = data
    t = _trainer(cfg, sets, out_dir=str(tmp / "falls"), epochs=30)
    res = t.fit()
    losses = [h[2] for h in t.history]
    assert np.mean(losses[-4:]) < 0.6 * np.mean(losses[:2])
    assert res["psnr"] > res["mean_image_psnr"] and res["split"] == "eval" and res["frames"] == 16
    assert (tmp / "falls" / "metrics.json").exists() and list((tmp / "falls" / "eval").glob("recon_step*.png"))


def test_adversarial_term_switches_on_at_its_epoch(data):
    tmp, cfg, sets = data
    t = _trainer(cfg, sets, out_dir=str(tmp / "gan"), adv_weight=0.5, disc_start_epoch=2, epochs=3)
    spe = t.steps_per_epoch
    before = [p.clone() for p in t.disc.parameters()]
    t.fit(stop_at=2 * spe)
    assert all(torch.equal(a, b) for a, b in zip(before, t.disc.parameters()))  # untouched during warm-up
    assert all(h[3] == 0 for h in t.history)
    t2 = _trainer(cfg, sets, out_dir=str(tmp / "gan"), adv_weight=0.5, disc_start_epoch=2, epochs=3, resume=True)
    t2.fit()
    on = [h for h in t2.history if h[1] >= 2]
    assert len(on) == spe and all(h[3] > 0 for h in on)
    assert not all(torch.equal(a, b) for a, b in zip(before, t2.disc.parameters()))


def test_checkpoint_round_trip_and_exact_resume(data):
    tmp, cfg, sets = data
    full = _trainer(cfg, sets, out_dir=str(tmp / "full"), epochs=2)
    full.fit()
    part = _trainer(cfg, sets, out_dir=str(tmp / "part"), epochs=2)
    part.fit(stop_at=part.steps_per_epoch + 1)  # stops mid-epoch
    resumed = _trainer(cfg, sets, out_dir=str(tmp / "part"), epochs=2, resume=True)
    resumed.fit()
    for a, b in zip(full.ema.state_dict().values(), resumed.ema.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6)
    with pytest.raises(ConfigError, match="already has checkpoints"):
        _trainer(cfg, sets, out_dir=str(tmp / "full"), epochs=2).fit()
    dec, state = load_decoder(tmp / "full")
    assert state["step"] == full.step and state["encoder"] == "random:tiny-random:seed0:56px"
    lat = sets[1].latents[:4].float()
    assert torch.equal(dec(lat), full.ema(lat))
    # world-model space → the decoder's: decode_latents undoes the data normalization
    st = NormStats(np.full(64, 0.5), np.full(64, 2.0), 1)
    frames = decode_latents(dec, (lat - 0.5) / 2.0, latent_stats=st.to_dict())
    assert frames.shape == (4, 16, 16, 3) and frames.dtype == np.uint8
    assert np.array_equal(frames, dec.decode(lat).numpy())


def test_rollout_video_uses_a_decoder_when_given(data):
    from latentwm.eval.visualize import decoded_frames, rollout_video

    tmp, cfg, sets = data
    run = tmp / "full"  # written by the round-trip test; train one here when run alone
    if not (run / "metrics.json").exists():
        _trainer(cfg, sets, out_dir=str(run), epochs=1).fit()
    dec, state = load_decoder(run)
    st = NormStats.from_dict(dict(mean=state["latent_stats"]["mean"], std=state["latent_stats"]["std"], count=1))
    lat = sets[1].latents[:6].float()  # (6, N, D) in the encoder's space
    norm = torch.from_numpy(st.normalize(lat.numpy()))  # as a world model sees them
    frames = decoded_frames(dec, norm, latent_stats=st, size=16)
    assert np.abs(frames.astype(int) - dec.decode(lat).numpy().astype(int)).max() <= 1  # float32 round trip
    pca = rollout_video(norm[:2], norm[2:], norm[2:] + 0.1, size=32)
    video = rollout_video(norm[:2], norm[2:], norm[2:] + 0.1, size=32, decoder=dec, latent_stats=st)
    assert video.shape == pca.shape == (6, 32, 2 * 32 + 4, 3)
    assert np.array_equal(video[:, :, :32], decoded_frames(dec, norm, st, size=32))  # the real side is decoded
    assert not np.array_equal(video, pca)


def test_eval_command_decodes_rollout_videos(data):
    """`latentwm eval --decoder RUN`: rollout GIFs of a dynamics checkpoint decoded through the decoder."""
    from PIL import Image

    tmp, cfg, sets = data
    run = tmp / "dec_for_eval"
    _trainer(cfg, sets, out_dir=str(run), epochs=1).fit()
    common = [
        "--preset",
        "tiny",
        "--data.cache-dir",
        cfg.cache_dir,
        "--data.frame-skip",
        "2",
        "--data.eval-fraction",
        "0.34",
    ]
    assert (
        main(
            [
                "train",
                *common,
                "--train.out-dir",
                str(tmp / "wm"),
                "--train.steps",
                "4",
                "--train.eval-every",
                "100",
                "--train.ckpt-every",
                "4",
            ]
        )
        == 0
    )
    for name, extra in (("pca", []), ("decoded", ["--decoder", str(run)])):
        assert (
            main(["eval", "--checkpoint", str(tmp / "wm"), "--out-dir", str(tmp / name), "--videos", "1", *extra]) == 0
        )
    pca, decoded = (np.asarray(Image.open(tmp / n / "rollout_0.gif").convert("RGB")) for n in ("pca", "decoded"))
    assert pca.shape == decoded.shape and not np.array_equal(pca, decoded)


def test_cli_online_encoding(data, capsys):
    tmp, cfg, _ = data
    out = tmp / "cli"
    assert (
        main(
            [
                "train-decoder",
                "--preset",
                "tiny",
                "--episodes-dir",
                cfg.episodes_dir,
                "--cache-dir",
                "",
                "--out-dir",
                str(out),
                "--epochs",
                "1",
                "--eval-fraction",
                "0.34",
                "--eval-frames",
                "8",
            ]
        )
        == 0
    )
    assert "held-out PSNR" in capsys.readouterr().out
    m = json.loads((out / "metrics.json").read_text())
    assert m["split"] == "eval" and m["decoder"]["grid"] == 4 and m["encoder"] == "random:tiny-random:seed0:56px"
    dec, state = load_decoder(out)
    assert dec.image_size == 16 and len(state["latent_stats"]["mean"]) == 64


def test_bad_config_names_the_field(tmp_path):
    with pytest.raises(ConfigError, match="decoder.patch_size"):
        DecoderConfig(patch_size=0)
    with pytest.raises(ConfigError, match="decoder.episodes_dir"):
        load_frame_sets(DecoderConfig(episodes_dir=str(tmp_path), cache_dir=""), show_progress=False)


@pytest.mark.slow
def test_torchrun_two_ranks_match_one_process(data):
    """DDP: two gloo ranks each take half of every batch; without noise augmentation the averaged gradients are
    the one-process gradients, so the weights agree. A second run checks the GAN term under DDP."""
    import os
    import socket
    import subprocess
    import sys

    tmp, cfg, _ = data
    args = [
        "train-decoder",
        "--preset",
        "tiny",
        "--episodes-dir",
        cfg.episodes_dir,
        "--cache-dir",
        cfg.cache_dir,
        "--epochs",
        "2",
        "--eval-fraction",
        "0.34",
        "--noise-tau",
        "0",
        "--perceptual",
        "ssim",
        "--eval-frames",
        "8",
    ]
    assert main([*args, "--out-dir", str(tmp / "ddp1")]) == 0

    def torchrun(*extra):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = str(s.getsockname()[1])
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc-per-node",
            "2",
            "--master-port",
            port,
            "-m",
            "latentwm.cli",
            *args,
            *extra,
        ]
        r = subprocess.run(cmd, capture_output=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert r.returncode == 0, (r.stdout + r.stderr).decode()[-3000:]

    torchrun("--out-dir", str(tmp / "ddp2"))
    one, two = load_decoder(tmp / "ddp1")[1], load_decoder(tmp / "ddp2")[1]
    assert one["step"] == two["step"] and two["world_size"] == 2
    for k, v in one["ema"].items():
        assert torch.allclose(v, two["ema"][k], atol=1e-5), k
    torchrun("--out-dir", str(tmp / "ddp_gan"), "--adv-weight", "0.5", "--disc-start-epoch", "1")
    gan = load_decoder(tmp / "ddp_gan")[1]
    assert "disc" in gan and json.loads((tmp / "ddp_gan" / "metrics.json").read_text())["psnr"] > 0


def test_lpips_fallback_notice_once_and_cli_help(capsys):
    from latentwm.config import preset
    from latentwm.eval import decoder_metrics

    if decoder_metrics.load_lpips()[0] is None:  # this machine has no LPIPS weights: one notice, SSIM instead
        decoder_metrics._notices.clear()
        capsys.readouterr()
        a, b = PerceptualLoss("auto"), PerceptualLoss("auto")
        assert a.kind == b.kind == "ssim"
        assert capsys.readouterr().out.count("LPIPS unavailable") == 1
    assert PerceptualLoss("off").kind == "off"
    big = preset("small").decoder
    assert big.size == "B" and big.patch_size == 16 and big.adv_weight > 0 and big.encoder.name == "dinov2-s"
    with pytest.raises(SystemExit) as e:
        main(["train-decoder", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for f in ("--noise-tau", "--adv-weight", "--disc-start-epoch", "--cache-dir", "--encoder.name", "--size"):
        assert f in out
