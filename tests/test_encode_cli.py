"""`latentwm encode` on a real-format source, then training from a weighted mixture of two caches."""

import numpy as np
import pytest

from latentwm.cli import main
from latentwm.config import get_preset
from latentwm.data.clip_sets import make_clip_datasets
from latentwm.data.latent_cache import LatentCache
from latentwm.data.mixture import MixtureDataset
from latentwm.data.video import write_video
from latentwm.train.trainer import Trainer


def _folder(path, n, seed, corrupt=False):
    path.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        frames = rng.integers(0, 255, (40, 32, 32, 3), dtype=np.uint8)
        write_video(path / f"clip_{i}.mp4", frames, fps=10)
    if corrupt:
        (path / "broken.mp4").write_bytes(b"\x00not a video" * 100)
    return path


def test_encode_video_folder_then_train_on_a_mixture(tmp_path, capsys):
    a = _folder(tmp_path / "videos_a", 3, 0, corrupt=True)
    b = _folder(tmp_path / "videos_b", 2, 1)
    for src, out in ((a, "lat_a"), (b, "lat_b")):
        assert (
            main(
                [
                    "encode",
                    "--preset",
                    "tiny",
                    "--source",
                    "video-folder",
                    "--root",
                    str(src),
                    "--out-dir",
                    str(tmp_path / out),
                ]
            )
            == 0
        )
    printed = capsys.readouterr().out
    assert "1 skipped" in printed  # the corrupt file is reported, the rest encoded
    ca = LatentCache(tmp_path / "lat_a")
    assert ca.complete and len(ca.entries) == 3 and ca.info["encoder"] == "random:tiny-random:seed0:56px"
    assert all(e["length"] == 40 for e in ca.entries)

    cfg = get_preset("tiny").replace(
        data__mixture=f"a={tmp_path / 'lat_a'}:0.75,b={tmp_path / 'lat_b'}:0.25",
        data__env_action_dim=0,
        data__eval_fraction=0.0,
        train__out_dir=str(tmp_path / "run"),
        train__steps=3,
        train__log_every=1,
    )
    train_set, eval_set, extra = make_clip_datasets(cfg)
    assert isinstance(train_set, MixtureDataset) and eval_set is None
    names = [train_set[k].meta.dataset for k in range(400)]
    assert abs(names.count("videos_a") / 400 - 0.75) < 0.05
    out = Trainer(cfg, train_set, None, extra_state=extra, device="cpu").fit()
    assert out["step"] == 3


def test_pool_averages_2x2_cells_of_the_token_grid():
    import torch

    from latentwm.config import EncoderConfig
    from latentwm.encoders.dino import DinoEncoder

    frames = np.random.default_rng(3).integers(0, 256, (3, 40, 40, 3), dtype=np.uint8)
    full = DinoEncoder.from_config(EncoderConfig(name="tiny-random", image_size=56))
    pooled = DinoEncoder.from_config(EncoderConfig(name="tiny-random", image_size=56, pool=2))
    assert (full.grid, full.num_tokens, pooled.patch_grid, pooled.grid, pooled.num_tokens) == (4, 16, 4, 2, 4)
    x, y = full.encode(frames), pooled.encode(frames)  # (3, 16, 64), (3, 4, 64)
    assert y.shape == (3, 4, 64)
    g = x.reshape(3, 4, 4, 64)  # row-major token grid
    want = torch.stack([g[:, 2 * r : 2 * r + 2, 2 * c : 2 * c + 2].mean((1, 2)) for r in range(2) for c in range(2)], 1)
    torch.testing.assert_close(y, want, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(y[:, 0], y[:, 3])  # different cells, not one global mean


def test_encode_pool_is_recorded_and_a_disagreeing_config_is_rejected(tmp_path):
    import pytest

    from latentwm.config import ConfigError

    src = _folder(tmp_path / "videos", 2, 4)
    assert (
        main(
            [
                "encode",
                "--preset",
                "tiny",
                "--source",
                "video-folder",
                "--root",
                str(src),
                "--out-dir",
                str(tmp_path / "lat"),
                "--encoder.pool",
                "2",
            ]
        )
        == 0
    )
    cache = LatentCache(tmp_path / "lat")
    assert (cache.info["pool"], cache.info["num_tokens"], cache.info["grid"]) == (2, 4, 2)
    assert cache.load_episode(0)["latents"].shape == (40, 4, 64)
    base = dict(data__cache_dir=str(tmp_path / "lat"), data__env_action_dim=0, data__eval_fraction=0.0)
    with pytest.raises(ConfigError, match=r"encoder.pool = 2.*encoder.pool = 1"):
        make_clip_datasets(get_preset("tiny").replace(**base))
    with pytest.raises(ConfigError, match="encoder.pool must be 1 or 2"):
        get_preset("tiny").replace(encoder__pool=3)
    train_set, _, extra = make_clip_datasets(get_preset("tiny").replace(encoder__pool=2, model__latent_grid=2, **base))
    assert train_set[0].latents.shape == (6, 4, 64) and extra["cache_info"]["pool"] == 2
    # a pooled and an unpooled cache do not mix
    assert (
        main(
            [
                "encode",
                "--preset",
                "tiny",
                "--source",
                "video-folder",
                "--root",
                str(src),
                "--out-dir",
                str(tmp_path / "lat1"),
            ]
        )
        == 0
    )
    assert LatentCache(tmp_path / "lat1").info["pool"] == 1
    from latentwm.data.clip_sets import make_mixture_datasets
    from latentwm.data.mixture import MixtureSpec

    spec = MixtureSpec.parse(f"a={tmp_path / 'lat'},b={tmp_path / 'lat1'}")
    with pytest.raises(ValueError, match="pool"):
        make_mixture_datasets(spec, 6, eval_fraction=0.0)


@pytest.mark.slow
def test_torchrun_two_ranks_write_the_same_cache_as_one_process(tmp_path):
    import json
    import os
    import socket
    import subprocess
    import sys

    from latentwm.data.episodes import Episode, save_episode
    from latentwm.data.latent_cache import merged_records
    from latentwm.data.sources.pusht import episode_path

    rng = np.random.default_rng(5)
    for i in range(7):  # 4 shards of 2 (the last holds 1): rank 0 writes shards 0, 2; rank 1 writes 1, 3
        save_episode(
            Episode(
                "toy",
                f"ep{i}",
                10.0,
                {"main": rng.integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)},
                actions=rng.normal(size=(6, 2)).astype(np.float32),
            ),
            episode_path(tmp_path / "eps", i),
        )
    args = [
        "encode",
        "--preset",
        "tiny",
        "--source",
        "pusht",
        "--root",
        str(tmp_path / "eps"),
        "--episodes-per-shard",
        "2",
    ]
    assert main([*args, "--out-dir", str(tmp_path / "one")]) == 0
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
        "--out-dir",
        str(tmp_path / "two"),
    ]
    r = subprocess.run(cmd, capture_output=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    out = (r.stdout + r.stderr).decode()
    assert r.returncode == 0, out[-3000:]
    assert "7 episodes encoded into 4 shards, 0 skipped; cache complete" in out  # totals over both ranks
    one, two = tmp_path / "one", tmp_path / "two"
    assert sorted(p.name for p in (two / "index").iterdir()) == ["rank-00000.json", "rank-00001.json"]
    assert {n: r["items"] for n, r in merged_records(two).items() if int(n[6:-4]) % 2 == 1} == {
        n: r["items"] for n, r in json.loads((two / "index" / "rank-00001.json").read_text())["shards"].items()
    }
    for name in ("plan.json", "cache.json", *(f"shard-{j:06d}.tar" for j in range(4))):
        assert (one / name).read_bytes() == (two / name).read_bytes(), name
    assert merged_records(one) == merged_records(two)
    a, b = LatentCache(one), LatentCache(two)
    np.testing.assert_allclose(a.latent_stats.mean, b.latent_stats.mean, rtol=1e-12)
    np.testing.assert_allclose(a.latent_stats.std, b.latent_stats.std, rtol=1e-12)
    assert (two / "latent_stats.json").exists() and (two / "stats" / "toy.json").exists()
    np.testing.assert_allclose(a.dataset_stats["toy"].actions.mean, b.dataset_stats["toy"].actions.mean, rtol=1e-12)
