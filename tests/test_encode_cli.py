"""`latentwm encode` on a real-format source, then training from a weighted mixture of two caches."""

import numpy as np

from latentwm.cli import main
from latentwm.data.clips import make_clip_datasets
from latentwm.data.latent_cache import LatentCache
from latentwm.data.mixture import MixtureDataset
from latentwm.data.video import write_video
from latentwm.config import get_preset
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
        assert main(["encode", "--preset", "tiny", "--source", "video-folder", "--root", str(src),
                     "--out-dir", str(tmp_path / out)]) == 0
    printed = capsys.readouterr().out
    assert "1 skipped" in printed  # the corrupt file is reported, the rest encoded
    ca = LatentCache(tmp_path / "lat_a")
    assert ca.complete and len(ca.entries) == 3 and ca.info["encoder"] == "random:tiny-random"
    assert all(e["length"] == 40 for e in ca.entries)

    cfg = get_preset("tiny").replace(
        data__mixture=f"a={tmp_path / 'lat_a'}:0.75,b={tmp_path / 'lat_b'}:0.25", data__env_action_dim=0,
        data__eval_fraction=0.0, train__out_dir=str(tmp_path / "run"), train__steps=3, train__log_every=1)
    train_set, eval_set, extra = make_clip_datasets(cfg)
    assert isinstance(train_set, MixtureDataset) and eval_set is None
    names = [train_set[k].meta.dataset for k in range(400)]
    assert abs(names.count("videos_a") / 400 - 0.75) < 0.05
    out = Trainer(cfg, train_set, None, extra_state=extra, device="cpu").fit()
    assert out["step"] == 3
