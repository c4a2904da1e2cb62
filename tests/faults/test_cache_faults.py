"""Fault injection on latent caches: bytes changed inside a shard (same size), NaN latents on disk."""

import numpy as np
import pytest
from fault_helpers import reseal_shard

from latentwm.data.episodes import Episode
from latentwm.data.latent_cache import CacheError, Encoding, LatentCache, encode_to_cache
from latentwm.data.verify import verify_cache

N, D = 4, 3


def _items(n):
    def episode(i):
        g = np.random.default_rng(i)
        T = 6 + i % 3
        return Episode(
            dataset="toy",
            episode_id=f"ep{i}",
            fps=10.0,
            frames={"main": g.integers(0, 255, size=(T, 8, 8, 3), dtype=np.uint8)},
            actions=g.normal(size=(T, 2)).astype(np.float32),
        )

    return [(f"item/ep{i}", (lambda i=i: episode(i))) for i in range(n)]


def _encode(frames):
    return frames.astype(np.float32).reshape(len(frames), N, -1, 3).mean(2) / 255.0


def _cache(path, n=6):
    encode_to_cache(_items(n), Encoding(_encode, "random:test"), path, episodes_per_shard=2, show_progress=False)
    return LatentCache(path)


def _overwrite(path, offset, data: bytes):
    with open(path, "r+b") as fh:
        fh.seek(offset)
        fh.write(data)


def _latents_span(cache, i):
    e = cache.entries[i]
    off, size = e["files"]["latents.npy"]
    return cache.path / e["shard"], off, size


def test_flipped_bytes_inside_a_shard_are_found_and_encode_rewrites_the_shard(tmp_path, capsys):
    cache = _cache(tmp_path)
    shard, off, size = _latents_span(cache, 2)  # entry 2 lives in shard-000001
    good = shard.read_bytes()
    _overwrite(shard, off + size - 8, bytes(8))  # the last latent values zeroed: finite, same size
    report = verify_cache(tmp_path)
    assert not report["ok"] and report["num_bad"] == 1 and report["num_ok"] == 2
    assert report["shards"][shard.name]["status"] == "bad" and "checksum" in report["shards"][shard.name]["reason"]
    summary = encode_to_cache(
        _items(6), Encoding(_encode, "random:test"), tmp_path, episodes_per_shard=2, show_progress=False
    )
    assert summary["shards_written"] == [shard.name]  # only the damaged shard, the others are trusted
    assert f"{shard} fails its check" in capsys.readouterr().out
    assert shard.read_bytes() == good and verify_cache(tmp_path)["ok"]


def test_verify_reports_missing_and_truncated_shards(tmp_path):
    cache = _cache(tmp_path)
    (tmp_path / "shard-000000.tar").unlink()
    (p := tmp_path / "shard-000002.tar").write_bytes(p.read_bytes()[:-512])
    report = verify_cache(cache.path)
    assert (report["num_ok"], report["num_bad"], report["ok"]) == (1, 2, False)
    assert report["shards"]["shard-000000.tar"]["reason"] == "file missing"
    assert "bytes, the index says" in report["shards"]["shard-000002.tar"]["reason"]


def test_nan_latents_on_disk_are_named_by_shard_and_episode_when_read(tmp_path):
    from latentwm.data.clips import ClipOptions, LatentClipDataset

    cache = _cache(tmp_path)
    shard, off, size = _latents_span(cache, 3)
    nan = np.full(N * D, np.nan, np.float16).tobytes()
    _overwrite(shard, off + size - len(nan), nan)  # the last frame of episode ep3 becomes NaN
    reseal_shard(shard)  # NaN stored at encode time: the checksum matches, the value check must see it
    fresh = LatentCache(tmp_path)
    for i in (0, 1, 2, 4, 5):
        fresh.load_episode(i)
    last = cache.entries[3]["length"] - 1
    with pytest.raises(CacheError, match=rf"{shard.name}: episode toy/ep3 \(camera main\).*at frame {last}"):
        fresh.load_episode(3)
    ds = LatentClipDataset(LatentCache(tmp_path), clip_len=2, split="all", options=ClipOptions(normalize=False))
    with pytest.raises(CacheError, match="toy/ep3"):
        for k in range(len(ds)):
            ds[k]


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_first_nonfinite_bit_test_matches_isfinite(dtype):
    from latentwm.data.cache_integrity import first_nonfinite

    a = np.array([0.0, -0.0, 65504.0, -65504.0, 6e-8, -6e-8, 1.5, -2.0], dtype=dtype).reshape(2, 4)
    assert first_nonfinite(a) is None and first_nonfinite(a[:0]) is None
    for bad in (np.nan, -np.nan, np.inf, -np.inf):
        b = a.copy()
        b[1, 2] = bad
        assert first_nonfinite(b) == (1, 2)
    every = np.arange(2**16, dtype=np.uint32).astype(np.uint16).view(np.float16)  # all fp16 bit patterns
    assert first_nonfinite(every[np.isfinite(every)]) is None and first_nonfinite(every) == (
        int(np.argmin(np.isfinite(every))),
    )


def test_an_index_naming_a_shard_outside_the_cache_is_refused(tmp_path):
    """An index entry `../outside/stolen.tar` was read by verify and train: refused when the cache is opened."""
    import json

    _cache(tmp_path / "c")
    index = next((tmp_path / "c" / "index").glob("rank-*.json"))
    doc = json.loads(index.read_text())
    name, rec = next(iter(doc["shards"].items()))
    for e in rec["entries"]:
        e["shard"] = "../outside/stolen.tar"
    index.write_text(json.dumps(doc))
    with pytest.raises(CacheError, match="outside the cache folder"):
        LatentCache(tmp_path / "c")
    doc["shards"] = {"../outside/stolen.tar": rec}
    index.write_text(json.dumps(doc))
    plan = tmp_path / "c" / "plan.json"
    if plan.exists():  # the plan names the shards the index may list: edited alike
        p = json.loads(plan.read_text())
        p["shards"] = [{**s, "name": "../outside/stolen.tar"} if s["name"] == name else s for s in p["shards"]]
        plan.write_text(json.dumps(p))
    with pytest.raises(CacheError, match="outside the cache folder"):
        verify_cache(tmp_path / "c")


def test_finite_garbage_inside_a_shard_is_named_when_training_first_reads_it(tmp_path):
    """4 KiB of finite float16 values over a shard: training read them (loss 3e8, kept as the best step); the
    shard's checksum is now verified the first time a reader opens it, and the shard is named."""
    from latentwm.data.clips import ClipOptions, LatentClipDataset

    cache = _cache(tmp_path)
    shard, off, size = _latents_span(cache, 3)
    _overwrite(shard, off, bytes([0xF0, 0x7B]) * min(2048, size // 2))
    ds = LatentClipDataset(LatentCache(tmp_path), clip_len=2, split="all", options=ClipOptions(normalize=False))
    with pytest.raises(CacheError, match=rf"{shard.name}: checksum .* corrupt.*latentwm verify"):
        for k in range(len(ds)):
            ds[k]
    ok = LatentCache(tmp_path)
    ok.raw(next(i for i, e in enumerate(ok.entries) if e["shard"] != shard.name))  # other shards still read


def test_an_index_without_checksums_is_unverifiable_until_they_are_added(tmp_path, capsys):
    """A cache written before checksums passed `latentwm verify` with exit 0: it now fails as unverifiable, and
    --add-checksums records them (after which damage is found)."""
    import json

    from latentwm.cli import main

    _cache(tmp_path / "c")
    for index in (tmp_path / "c" / "index").glob("rank-*.json"):
        doc = json.loads(index.read_text())
        for rec in doc["shards"].values():
            rec.pop("checksum", None)
        index.write_text(json.dumps(doc))
    assert main(["verify", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert "cannot be verified" in err and "--add-checksums" in err and len(err.strip().splitlines()) == 1
    assert main(["verify", str(tmp_path / "c"), "--add-checksums"]) == 0
    assert verify_cache(tmp_path / "c")["num_unchecked"] == 0
    shard, off, size = _latents_span(LatentCache(tmp_path / "c"), 1)
    _overwrite(shard, off, bytes(16))
    assert main(["verify", str(tmp_path / "c")]) == 2 and "damaged" in capsys.readouterr().err


def test_disk_full_during_encode_names_the_shard_and_leaves_no_temp_file(tmp_path, monkeypatch):
    """`[Errno 28]` with no path, and a `.shard-*.tar.tmp` left behind, before: now a CacheError naming the shard;
    the finished shards stay, and the same encode continues once there is space."""
    import errno
    import tarfile

    real, calls = tarfile.TarFile.addfile, [0]

    def full_after_a_while(self, *a, **kw):
        calls[0] += 1
        if calls[0] > 20:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, *a, **kw)

    monkeypatch.setattr(tarfile.TarFile, "addfile", full_after_a_while)
    with pytest.raises(CacheError, match=r"shard-\d+\.tar: could not be written \(No space left on device\).*again"):
        _cache(tmp_path)
    assert not list(tmp_path.glob(".*.tmp")) and list(tmp_path.glob("shard-*.tar"))  # finished shards kept
    monkeypatch.setattr(tarfile.TarFile, "addfile", real)
    _cache(tmp_path)  # space again: the same encode finishes the cache
    assert verify_cache(tmp_path)["ok"]
