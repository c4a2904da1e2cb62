"""Fault injection on text conditions: another sentence encoder's text added to (or resumed into) a cache, a resume
that would store no text into a cache that has it, a text encoder giving NaN or the wrong shape, a stored table
whose bytes turned into NaN or whose ids point past it, a model whose text slot has another width than the cache's
embeddings, and a mixture of caches embedded by two sentence encoders."""

import hashlib
import re
from pathlib import Path

import numpy as np
import pytest
from fault_helpers import reseal_shard

from latentwm.config import ConfigError, get_preset
from latentwm.data.cache_integrity import CacheError
from latentwm.data.clip_sets import check_text_dim, make_clip_datasets, make_mixture_datasets
from latentwm.data.episodes import Episode
from latentwm.data.frame_text import TextEmbedding
from latentwm.data.latent_cache import Encoding, LatentCache, LatentCacheWriter, encode_to_cache
from latentwm.data.mixture import MixtureSpec
from latentwm.data.online import EpisodeStore

TINY = get_preset("tiny")
N, D, E = TINY.model.num_latent_tokens, TINY.model.latent_dim, 8


def _fake(label="fake-a", dim=E, bad=None):
    def fn(sentences):
        out = np.stack(
            [
                np.random.default_rng(int(hashlib.sha1(s.encode()).hexdigest()[:8], 16)).normal(size=dim)
                for s in sentences
            ]
        ).astype(np.float32)
        if bad is not None:
            out[-1, 0] = bad
        return out

    return TextEmbedding(fn, label, dim)


def _episode(i, text=("push the block",)):
    g = np.random.default_rng(i)
    return Episode(
        dataset="toy",
        episode_id=f"ep{i}",
        fps=10.0,
        frames={"main": g.integers(0, 255, size=(12, 4, 4, 3), dtype=np.uint8)},
        actions=g.normal(size=(12, 2)).astype(np.float32),
        text=list(text),
    )


def _items(n=4):
    return [(f"toy/ep{i}", (lambda i=i: _episode(i))) for i in range(n)]


def _encode(frames):
    return np.random.default_rng(int(frames.sum()) % 997).normal(size=(len(frames), N, D)).astype(np.float32)


def _cache(path, text=None, n=4):
    encode_to_cache(
        _items(n),
        Encoding(_encode, "random:test", text=_fake() if text is None else text),
        path,
        episodes_per_shard=2,
        show_progress=False,
    )
    return path


def test_text_of_another_sentence_encoder_is_refused(tmp_path):
    cache = _cache(tmp_path / "c")
    both = r"'fake-a'.*'fake-b'"
    with LatentCacheWriter(cache, None, "random:test", text=_fake("fake-b")) as w:  # adding to the same cache
        w.open_shard()
        with pytest.raises(CacheError, match=both):
            w.add_episode(ep := _episode(9), "main", _encode(np.zeros((12, 4, 4, 3))), text=w.episode_text(ep))
    with pytest.raises(CacheError, match=both):  # a resume (every shard written: still refused)
        encode_to_cache(
            _items(),
            Encoding(_encode, "random:test", text=_fake("fake-b")),
            cache,
            episodes_per_shard=2,
            show_progress=False,
        )
    (cache / "shard-000001.tar").unlink()  # an interrupted encode, resumed with a lazily built other encoder
    built = []
    with pytest.raises(CacheError, match=both):
        encode_to_cache(
            _items(),
            Encoding(_encode, "random:test", text=lambda: built.append(1) or _fake("fake-b")),
            cache,
            episodes_per_shard=2,
            show_progress=False,
        )
    assert built == [1] and not (cache / "shard-000001.tar").exists()  # refused before anything was written
    with pytest.raises(CacheError, match=r"holds text embedded by 'fake-a'.*stores none.*--text\.name"):
        encode_to_cache(
            _items(), Encoding(_encode, "random:test", text=None), cache, episodes_per_shard=2, show_progress=False
        )
    encode_to_cache(
        _items(),
        Encoding(_encode, "random:test", text=_fake("fake-a")),
        cache,
        episodes_per_shard=2,
        show_progress=False,
    )  # the same encoder finishes it
    assert LatentCache(cache).complete and LatentCache(cache).text_encoder == "fake-a"


@pytest.mark.parametrize("bad, why", [(float("nan"), "non-finite"), (1e6, "non-finite"), (None, "returned")])
def test_a_text_encoder_giving_nan_or_the_wrong_shape_is_refused(tmp_path, bad, why):
    text = _fake(dim=E + 1) if bad is None else _fake(bad=bad)  # 1e6 overflows fp16: inf once stored
    text = TextEmbedding(text.fn, "fake-a", E)
    with pytest.raises(CacheError, match=rf"episode toy/ep0.*'fake-a'.*{why}"):
        _cache(tmp_path / "c", text=text)


def _poke(cache_dir, member: str, data: bytes) -> str:
    """Overwrite the last bytes of `member` (e.g. text_emb.npy) of the first entry in its shard; returns the shard."""
    e = LatentCache(cache_dir).entries[0]
    off, size = e["files"][member]
    with open(cache_dir / e["shard"], "r+b") as fh:
        fh.seek(off + size - len(data))
        fh.write(data)
    reseal_shard(cache_dir / e["shard"])  # stored so at encode time: the checksum matches, the value check must see it
    return e["shard"]


def test_a_stored_nan_text_embedding_is_named_with_its_shard(tmp_path):
    cache = _cache(tmp_path / "c")
    shard = _poke(cache, "text_emb.npy", np.array([np.nan], np.float16).tobytes())
    with pytest.raises(
        CacheError,
        match=rf"{re.escape(str(cache / shard))}: episode toy/ep0 .*non-finite text "
        r"embedding \(sentence row 0\)",
    ):
        LatentCache(cache).raw(0)
    cache = _cache(tmp_path / "d")
    shard = _poke(cache, "text_ids.npy", np.array([7], np.int16).tobytes())
    with pytest.raises(
        CacheError,
        match=rf"{re.escape(str(cache / shard))}.*`text_ids` refers to sentence 7 of a "
        "table of 1",
    ):
        LatentCache(cache).raw(0)


def _cfg(cache_dir, text_dim, **kw):
    return TINY.replace(
        data__cache_dir=str(cache_dir),
        data__env_action_dim=2,
        data__frame_skip=1,
        data__eval_fraction=0.0,
        model__text_dim=text_dim,
        **kw,
    )


def test_model_text_dim_must_match_the_cache(tmp_path):
    cache = _cache(tmp_path / "c")
    with pytest.raises(ConfigError, match=r"text_dim = 8 \(text encoder 'fake-a'\).*model\.text_dim = 24"):
        make_clip_datasets(_cfg(cache, 24))
    train, _, extra = make_clip_datasets(_cfg(cache, E))
    assert train[0].text.shape == (TINY.data.clip_len, E) and (extra["text_encoder"], extra["text_dim"]) == (
        "fake-a",
        E,
    )
    train, _, extra = make_clip_datasets(_cfg(cache, 0))  # no text slot: the cache's text is not used
    assert train[0].text is None and extra["text_encoder"] is None
    mix = f"a={cache}:1"
    with pytest.raises(ConfigError, match=r"data\.mixture source a .*text_dim = 8.*model\.text_dim = 24"):
        make_clip_datasets(_cfg("", 24, data__mixture=mix))
    store = EpisodeStore(_items(), show_progress=False, text=_fake())  # the online path checks the same
    with pytest.raises(ConfigError, match=r"data\.episodes_dir x holds text embeddings of text_dim = 8"):
        check_text_dim(store, _cfg("", 24), "data.episodes_dir x")


def test_a_mixture_of_two_sentence_encoders_is_refused(tmp_path):
    a, b = _cache(tmp_path / "a"), _cache(tmp_path / "b", text=_fake("fake-b"))
    spec = MixtureSpec.parse(f"a={a}:0.5,b={b}:0.5")
    with pytest.raises(ValueError, match=r"different sentence encoders.*fake-a.*fake-b"):
        make_mixture_datasets(spec, clip_len=2, eval_fraction=0.0)
    make_mixture_datasets(spec, clip_len=2, eval_fraction=0.0, text=False)  # a model without text: no matter


@pytest.mark.parametrize("damage", ["truncate", "bin_only"])
def test_a_damaged_text_encoder_folder_is_one_config_error(tmp_path, damage):
    """A truncated model.safetensors, or a folder with only a pytorch_model.bin of junk: SafetensorError /
    UnpicklingError tracebacks before; a ConfigError naming the folder now."""
    from latentwm.encoders.text import TextEncoder, save_tiny_text_model

    folder = Path(save_tiny_text_model(tmp_path / "t"))
    weights = next(folder.rglob("model.safetensors"))
    if damage == "truncate":
        weights.write_bytes(weights.read_bytes()[:200])
    else:
        weights.unlink()
        (weights.parent / "pytorch_model.bin").write_bytes(b"\x80\x04junk that is no pickle")
    with pytest.raises(ConfigError, match="does not hold a loadable transformers model"):
        TextEncoder(str(folder))


def test_encode_with_a_damaged_text_encoder_leaves_no_cache_folder(tmp_path, capsys):
    """A failed encode that wrote no episode removes the plan.json it started with, and the command's empty folder:
    before, the folder kept plan.json and .lock, a half-made cache a later encode would trip over."""
    from latentwm.cli import main
    from latentwm.data.episodes import save_episode
    from latentwm.encoders.text import save_tiny_text_model

    folder = Path(save_tiny_text_model(tmp_path / "t"))
    weights = next(folder.rglob("model.safetensors"))
    weights.write_bytes(weights.read_bytes()[:200])
    capsys.readouterr()  # the tiny model's own save progress
    frames = np.zeros((6, 32, 32, 3), np.uint8)
    ep = Episode("pusht", "0", 10.0, {"main": frames}, actions=np.zeros((6, 2), np.float32), text=["push left"])
    save_episode(ep, tmp_path / "eps" / "episode_000000.npz")
    out = tmp_path / "lat"
    argv = ["encode", "--preset", "tiny", "--root", str(tmp_path / "eps"), "--out-dir", str(out)]
    assert main([*argv, "--text.name", str(folder)]) == 2
    err = capsys.readouterr().err
    assert "latentwm encode: text encoder" in err and "does not hold a loadable transformers model" in err
    assert not out.exists()
