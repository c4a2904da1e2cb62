"""Fault injection: a corrupt episode repaired after an encode gets into the cache on re-encode; plan / eval fail at
once, naming the out dir, when it is a file or not writable (before loading any checkpoint)."""

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from latentwm.cli import main
from latentwm.config import EvalConfig, LatentwmError, PlanRunConfig
from latentwm.data.episodes import Episode, save_episode
from latentwm.data.latent_cache import LatentCache
from latentwm.data.sources.pusht import episode_path
from latentwm.planning.evaluate import run_plan
from latentwm.train.evaluate import run_eval


def _episodes(root, n=5, T=8):
    rng = np.random.default_rng(0)
    for i in range(n):
        ep = Episode(
            dataset="toy",
            episode_id=f"ep{i}",
            fps=10.0,
            frames={"front": rng.integers(0, 256, (T, 32, 32, 3), dtype=np.uint8)},
            actions=rng.normal(size=(T, 2)).astype(np.float32),
        )
        save_episode(ep, episode_path(root, i))
    return root


def test_a_repaired_episode_gets_in_on_reencode(tmp_path, capsys):
    root = _episodes(tmp_path / "episodes")
    bad = episode_path(root, 1)
    shutil.copy(bad, tmp_path / "good.npz")
    bad.write_bytes(bad.read_bytes()[:200])  # truncated by a failed copy
    args = [
        "encode",
        "--preset",
        "tiny",
        "--root",
        str(root),
        "--out-dir",
        str(tmp_path / "cache"),
        "--episodes-per-shard",
        "2",
    ]
    assert main(args) == 0
    cache = LatentCache(tmp_path / "cache")
    assert cache.complete and len(cache) == 4 and len(cache.skipped) == 1 and "1 skipped" in capsys.readouterr().out
    shutil.copy(tmp_path / "good.npz", bad)  # repaired
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "encoding it again to retry" in out  # only the shard that skipped it is encoded again:
    assert "2 episodes encoded into 1 shards, 0 skipped" in out
    cache = LatentCache(tmp_path / "cache")
    assert cache.complete and len(cache) == 5 and cache.skipped == []
    assert sorted(e["episode_id"] for e in cache.entries) == [f"ep{i}" for i in range(5)]
    assert main(args) == 0 and "retry" not in capsys.readouterr().out  # nothing left to retry: nothing rewritten


def _unwritable(tmp_path) -> Path:
    """A folder this process cannot create files in: read-only for a normal user; root writes anywhere on a normal
    file system, so there /proc/self (a folder where no file can be created) stands in."""
    if os.geteuid() != 0:
        d = tmp_path / "ro"
        d.mkdir()
        d.chmod(0o555)
        return d
    if not Path("/proc/self").is_dir():
        pytest.skip("running as root without /proc: no folder is unwritable")
    return Path("/proc/self")


@pytest.mark.parametrize("kind", ["file", "read-only"])
def test_plan_and_eval_check_the_out_dir_before_loading_anything(tmp_path, kind):
    if kind == "file":
        out = tmp_path / "a_file"
        out.write_text("not a folder")
    else:
        out = _unwritable(tmp_path)
    missing = str(tmp_path / "no_such_run")  # loading it would fail with another error
    with pytest.raises(LatentwmError, match=rf"out dir {out} is (a file|not writable)"):
        run_plan(PlanRunConfig(checkpoint=missing, episodes_dir=str(tmp_path), out_dir=str(out)))
    with pytest.raises(LatentwmError, match=rf"out dir {out} is (a file|not writable)"):
        run_eval(EvalConfig(checkpoint=missing, out_dir=str(out)))


def test_plan_with_a_file_as_out_dir_prints_one_line(tmp_path, capsys):
    out = tmp_path / "a_file"
    out.write_text("not a folder")
    assert main(["plan", "--checkpoint", str(tmp_path / "no_such_run"), "--out-dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert err == f"latentwm plan: out dir {out} is a file, not a folder; choose another out dir\n"
