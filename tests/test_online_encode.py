"""Online encoding: raw episodes → the same clips and WorldBatches as a latent cache of them (tiny-random encoder)."""

import numpy as np
import pytest
import torch

from latentwm.cli import main
from latentwm.config import ConfigError, get_preset
from latentwm.data.batch import collate
from latentwm.data.clip_sets import make_clip_datasets
from latentwm.data.episodes import Episode, save_episode
from latentwm.data.latent_cache import LatentCache
from latentwm.data.latent_stats import LatentStats
from latentwm.data.online import EpisodeStore, OnlineEncoding, make_online_datasets
from latentwm.data.sources.pusht import episode_path, load_pusht
from latentwm.encoders.dino import DinoEncoder


def _episodes(root, n=6, T=24, cams=("front", "wrist")):
    """Two-camera episodes with actions (some unknown), proprio, rewards and states, in the pusht file layout."""
    rng = np.random.default_rng(0)
    for i in range(n):
        mask = np.ones(T, bool)
        mask[rng.integers(T)] = False
        ep = Episode(
            dataset="toy",
            episode_id=f"ep{i}",
            fps=10.0,
            frames={c: rng.integers(0, 256, (T, 40, 40, 3), dtype=np.uint8) for c in cams},
            actions=rng.normal(size=(T, 2)).astype(np.float32),
            action_mask=mask,
            proprio=rng.normal(size=(T, 3)).astype(np.float32),
            rewards=rng.random(T).astype(np.float32),
            states=rng.normal(size=(T, 5)),
            text=[f"task {i}"],
            success=bool(i % 2),
        )
        save_episode(ep, episode_path(root, i))
    return root


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("online")
    root = _episodes(tmp / "episodes")
    assert (
        main(["encode", "--preset", "tiny", "--source", "pusht", "--root", str(root), "--out-dir", str(tmp / "cache")])
        == 0
    )
    cfg = get_preset("tiny").replace(
        data__cache_dir=str(tmp / "cache"),
        data__frame_skip=2,
        data__clip_len=4,
        data__eval_fraction=0.34,
        train__out_dir=str(tmp / "run"),
    )
    online = cfg.replace(data__online_encode=True, data__episodes_dir=str(root), data__latent_stats=str(tmp / "cache"))
    enc = DinoEncoder.from_config(cfg.encoder)
    return tmp, cfg, online, enc


def _same_batch(a, b, atol):
    torch.testing.assert_close(a.latents, b.latents, rtol=0, atol=atol)
    for name in ("actions", "action_mask", "valid", "proprio", "rewards", "states"):
        torch.testing.assert_close(getattr(a, name), getattr(b, name), rtol=1e-6, atol=1e-6, msg=name)
    assert a.frames is None and b.frames is None and a.meta == b.meta


def test_online_batches_equal_cached_batches(data):
    tmp, cfg, online, enc = data
    c_train, c_eval, c_extra = make_clip_datasets(cfg)
    o_train, o_eval, o_extra, transform = make_online_datasets(online, enc.encode, enc.weights_label)
    assert len(o_train.cache) == len(c_train.cache) == 12 and len(o_eval) == len(c_eval) > 0
    assert o_extra["data_stats"]["datasets"]["toy"]["actions"]["mean"] == pytest.approx(
        c_extra["data_stats"]["datasets"]["toy"]["actions"]["mean"], abs=1e-12
    )
    # the cache holds fp16 latents: |x| ≲ 4 rounds by ≤ 2e-3, divided by per-channel std ≥ 0.8 (measured max 1.6e-3)
    assert c_train.latent_std.min() > 0.5
    atol = 5e-3
    A = cfg.model.action_dim
    for ks in ([0, 1, 2, 3], [101, 57, 9, 1000]):
        sample = o_train[ks[0]]
        assert sample.latents is None and sample.frames.shape == (4, 3, 40, 40) and sample.frames.dtype == torch.uint8
        cached = collate([c_train[k] for k in ks], A)
        built = transform(collate([o_train[k] for k in ks], A))
        _same_batch(built, cached, atol)
        assert {m.camera for m in cached.meta} <= {"front", "wrist"}
    grid = list(range(len(c_eval)))
    _same_batch(transform(collate([o_eval[i] for i in grid], A)), collate([c_eval[i] for i in grid], A), atol)
    # the transform encodes exactly the clip's frames, normalized like the cache path (float32 matmuls of another
    # batch composition round differently on some CPUs' kernels: 7e-6 measured on a 2-core Xeon, hence 2e-5)
    s = o_train[5]
    raw = enc.encode(s.frames)
    torch.testing.assert_close(
        transform(collate([s], A)).latents[0],
        (raw - torch.from_numpy(c_train.latent_mean)) / torch.from_numpy(c_train.latent_std),
        rtol=0,
        atol=2e-5,
    )


def test_estimated_stats_and_store_facts(data):
    tmp, cfg, online, enc = data
    est = make_online_datasets(online.replace(data__latent_stats=""), enc.encode, enc.weights_label)
    cache_stats = LatentCache(tmp / "cache").latent_stats
    lat = est[2]["data_stats"]["latents"]  # every frame of the fixture fits the 1024-frame budget
    np.testing.assert_allclose(lat["mean"], cache_stats.mean, atol=2e-3)
    np.testing.assert_allclose(lat["std"], cache_stats.std, rtol=2e-3)
    assert lat["encoder"] == enc.weights_label == "random:tiny-random:seed0:56px"
    assert est[2]["cache_info"]["format"] == "online"
    # a LatentStats file works too; one from another encoder is refused
    LatentStats(cache_stats.mean, cache_stats.std, 1, enc.weights_label).save(tmp / "s.safetensors")
    make_online_datasets(online.replace(data__latent_stats=str(tmp / "s.safetensors")), enc.encode, enc.weights_label)
    LatentStats(cache_stats.mean, cache_stats.std, 1, "pretrained:x").save(tmp / "bad.safetensors")
    with pytest.raises(ConfigError, match="computed with 'pretrained:x'"):
        make_online_datasets(
            online.replace(data__latent_stats=str(tmp / "bad.safetensors")), enc.encode, enc.weights_label
        )
    # stats of a cache with other pooling, and a pooled encoder for an unpooled model, are refused with the field
    pooled_cfg = online.replace(encoder__pool=2, model__latent_grid=2)
    pooled = DinoEncoder.from_config(pooled_cfg.encoder)
    with pytest.raises(ConfigError, match=r"\(encoder, pool\) = \('random:tiny-random:seed0:56px', 1\)"):
        make_online_datasets(pooled_cfg, pooled.encode, pooled.weights_label)
    with pytest.raises(ConfigError, match="the encoder gives N = 4"):
        make_online_datasets(online, pooled.encode, pooled.weights_label)
    assert make_online_datasets(pooled_cfg.replace(data__latent_stats=""), pooled.encode, pooled.weights_label)[0][
        0
    ].frames.shape == (4, 3, 40, 40)
    with pytest.raises(ConfigError, match="data.episodes_dir"):
        make_online_datasets(cfg.replace(data__online_encode=True), enc.encode, enc.weights_label)


def test_store_skips_unreadable_episodes(tmp_path, capsys):
    root = _episodes(tmp_path / "eps", n=2, T=8, cams=("main",))
    (root / "episode_000002.npz").write_bytes(b"not a zip file")
    store = EpisodeStore(load_pusht(root), root, show_progress=False)
    assert len(store) == 2 and [s["item"] for s in store.skipped] == ["pusht/episode_000002"]
    assert "skipping pusht/episode_000002" in capsys.readouterr().out
    assert store.frames(1, [0, 7]).shape == (2, 40, 40, 3)


def test_padding_steps_stay_zero():
    from latentwm.data.batch import ClipSample
    from latentwm.data.episodes import NormStats

    enc = DinoEncoder.from_config(get_preset("tiny").encoder)
    rng = np.random.default_rng(1)
    clips = [ClipSample(frames=torch.from_numpy(rng.integers(0, 256, (L, 3, 56, 56), dtype=np.uint8))) for L in (3, 2)]
    stats = NormStats(np.zeros(64), np.full(64, 0.5), 1)
    out = OnlineEncoding(enc.encode, stats)(collate(clips, 2))
    assert out.latents.shape == (2, 3, 16, 64) and out.frames is None
    assert out.latents[1, 2].abs().sum() == 0 and out.latents[1, 1].abs().sum() > 0
    torch.testing.assert_close(out.latents[0], enc.encode(clips[0].frames) * 2, rtol=0, atol=1e-5)


def test_train_command_with_online_encoding(data):
    tmp, cfg, online, enc = data
    args = [
        "train",
        "--preset",
        "tiny",
        "--data.online-encode",
        "--data.episodes-dir",
        online.data.episodes_dir,
        "--data.frame-skip",
        "2",
        "--data.clip-len",
        "4",
        "--data.eval-fraction",
        "0.34",
        "--train.steps",
        "2",
        "--train.log-every",
        "1",
        "--train.out-dir",
        str(tmp / "run_online"),
    ]
    assert main(args) == 0
    from latentwm.engine.checkpoint import latest_checkpoint, load_checkpoint

    st = load_checkpoint(latest_checkpoint(tmp / "run_online" / "checkpoints"))
    assert st["step"] == 2 and st["cache_info"]["format"] == "online"
    assert st["encoder"] == "random:tiny-random:seed0:56px"
    # the episodes' text is embedded on the fly by data.text_encoder, as `encode` stored it in the cache
    assert st["text_encoder"] == LatentCache(tmp / "cache").text_encoder and st["text_encoder"].startswith("minilm#")
    assert any((tmp / "run_online" / "eval").glob("rollout_step*.gif"))  # evaluation encoded its clips online
