"""Fault injection on training data: a cache whose actions do not match data.env_action_dim, a half-written cache."""

import re

import numpy as np
import pytest

from latentwm.config import ConfigError, get_preset
from latentwm.data.clip_sets import make_clip_datasets
from latentwm.data.episodes import Episode
from latentwm.data.latent_cache import Encoding, LatentCache, encode_to_cache

TINY = get_preset("tiny")
N, D = TINY.model.num_latent_tokens, TINY.model.latent_dim


def _items(n, action_width, dataset="toy"):
    def episode(i):
        g = np.random.default_rng(i)
        T = 20
        return Episode(
            dataset=dataset,
            episode_id=f"ep{i}",
            fps=10.0,
            frames={"main": g.integers(0, 255, size=(T, 4, 4, 3), dtype=np.uint8)},
            actions=None if action_width == 0 else g.normal(size=(T, action_width)).astype(np.float32),
        )

    return [(f"{dataset}/ep{i}", (lambda i=i: episode(i))) for i in range(n)]


def _encode(frames):
    g = np.random.default_rng(int(frames.sum()) % 997)
    return g.normal(size=(len(frames), N, D)).astype(np.float32)


def _cache(path, action_width, n=6, dataset="toy", **kw):
    encode_to_cache(
        _items(n, action_width, dataset),
        Encoding(_encode, "random:test"),
        path,
        episodes_per_shard=2,
        show_progress=False,
        **kw,
    )
    return path


def _cfg(cache_dir, env_action_dim=2, frame_skip=2, **kw):
    return TINY.replace(
        data__cache_dir=str(cache_dir),
        data__env_action_dim=env_action_dim,
        data__frame_skip=frame_skip,
        data__eval_fraction=0.2,
        **kw,
    )


def test_env_action_dim_that_disagrees_with_the_cache_is_refused(tmp_path):
    """Before: a cache of 3-D actions trained with --data.env-action-dim 2 ran, its concatenated frame-skip actions
    split at the wrong places (the model's action_dim just had to be large enough)."""
    cache = _cache(tmp_path / "c3", action_width=3)
    with pytest.raises(ConfigError, match=r"actions of 3 per env step.*data\.env_action_dim = 2.*data\.frame_skip 2"):
        make_clip_datasets(_cfg(cache, env_action_dim=2))
    train, _, _ = make_clip_datasets(_cfg(cache, env_action_dim=3, frame_skip=2))  # the cache's width is fine
    assert train[0].actions.shape[-1] == 3 * 2  # frame_skip actions of 3 per model step


def test_env_action_dim_is_checked_for_every_mixture_source(tmp_path):
    robot = _cache(tmp_path / "robot", action_width=3, dataset="robot")
    video = _cache(tmp_path / "video", action_width=0, dataset="video")  # action-free video: any width goes
    mix = f"video={video}:0.5,robot={robot}:0.5"
    with pytest.raises(ConfigError, match=rf"{re.escape(str(robot))}.*3 per env step.*data\.env_action_dim = 2"):
        make_clip_datasets(_cfg("", env_action_dim=2, data__mixture=mix))
    make_clip_datasets(_cfg("", env_action_dim=3, data__mixture=mix))


def test_training_on_a_half_written_cache_is_refused_unless_allowed(tmp_path, capsys):
    """Before: a cache whose encode was interrupted (here: rank 1 of 2 never ran) trained silently on the shards
    that were there."""
    cache = _cache(tmp_path / "half", action_width=2, world_size=2, rank=0)  # shards 0 and 2 of 3
    assert not LatentCache(cache).complete
    with pytest.raises(ConfigError, match=r"(?s)incomplete.*1 of 3 planned shards.*shard-000001.*latentwm encode"):
        make_clip_datasets(_cfg(cache))
    train, _, _ = make_clip_datasets(_cfg(cache), allow_partial=True)  # explicitly asked for: a loud warning
    assert "1 of 3 planned shards" in capsys.readouterr().out
    assert {train.cache.entries[i]["episode_id"] for _, v in train.groups for i in v} <= {"ep0", "ep1", "ep4", "ep5"}
    _cache(tmp_path / "half", action_width=2, world_size=2, rank=1)  # finishing the encode
    make_clip_datasets(_cfg(cache))


def test_a_half_written_mixture_source_is_refused(tmp_path):
    whole = _cache(tmp_path / "whole", action_width=2, dataset="a")
    half = _cache(tmp_path / "half", action_width=2, dataset="b", world_size=2, rank=0)
    with pytest.raises(ConfigError, match=rf"{re.escape(str(half))}.*incomplete"):
        make_clip_datasets(_cfg("", data__mixture=f"a={whole}:0.5,b={half}:0.5"))
    make_clip_datasets(_cfg("", data__mixture=f"a={whole}:0.5,b={half}:0.5"), allow_partial=True)


def test_an_unknown_reader_option_is_one_line_naming_it(tmp_path, capsys):
    from latentwm.cli import main

    (tmp_path / "videos").mkdir()
    assert (
        main(
            [
                "encode",
                "--source",
                "video-folder",
                "--root",
                str(tmp_path / "videos"),
                "--options",
                "bogus=1",
                "--out-dir",
                str(tmp_path / "out"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert "no option bogus" in err and "captions" in err and "\n" not in err


def test_fps_given_as_a_reader_option_is_the_fps_setting(tmp_path, monkeypatch):
    """`--data.source-options "fps=4"` (the README's online-encoding example) used to raise TypeError (fps passed
    twice); now it is the fps setting, and two different values are refused naming both."""
    from latentwm.data import sources

    seen = {}
    monkeypatch.setattr(sources.video_folder, "load_video_folder", lambda root, **kw: seen.update(kw) or [])
    sources.load_source("video-folder", tmp_path, options={"fps": 4.0})
    assert seen["fps"] == 4.0
    with pytest.raises(ValueError, match="fps twice"):
        sources.load_source("video-folder", tmp_path, fps=2.0, options={"fps": 4.0})


def test_holding_out_every_episode_says_so(tmp_path):
    """--data.eval-fraction 1.0 leaves no training episode: said as such, not blamed on short episodes."""
    encode_to_cache(_items(4, 2), Encoding(_encode, "random:test"), tmp_path / "c", show_progress=False)
    cfg = TINY.replace(
        data__cache_dir=str(tmp_path / "c"), data__eval_fraction=1.0, data__env_action_dim=2, model__text_dim=0
    )
    with pytest.raises(ConfigError, match=r"holds out all 4 episodes.*--data.eval-fraction"):
        make_clip_datasets(cfg)


def test_proprio_channels_and_relative_actions_need_a_cache_with_proprio(tmp_path):
    """A model with proprio channels (or relative actions) on a cache without proprio: one error naming the flag."""
    encode_to_cache(_items(4, 2), Encoding(_encode, "random:test"), tmp_path / "c", show_progress=False)
    base = TINY.replace(data__cache_dir=str(tmp_path / "c"), data__env_action_dim=2, model__text_dim=0)
    with pytest.raises(ConfigError, match="--model.proprio-dim 0"):
        make_clip_datasets(base.replace(model__proprio_dim=4))
    with pytest.raises(ConfigError, match="--data.no-relative-actions"):
        make_clip_datasets(base.replace(data__relative_actions=True))
