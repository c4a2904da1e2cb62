"""Latent cache: shard round trip with its index, resume after an interrupted write, rank splits, skipped data."""

import json

import numpy as np
import pytest

from latentwm.data.episodes import Episode, EpisodeError, compute_norm_stats
from latentwm.data.latent_cache import (
    CacheError,
    Encoding,
    LatentCache,
    LatentCacheWriter,
    encode_to_cache,
    merged_records,
    sample_key,
)

N, D = 4, 3


def make_episode(i: int, T: int | None = None, cameras=("main",), dataset="toy.v1") -> Episode:
    g = np.random.default_rng(i)
    T = T or 5 + i % 4
    frames = {c: g.integers(0, 255, size=(T, 8, 8, 3), dtype=np.uint8) for c in cameras}
    return Episode(
        dataset=dataset,
        episode_id=f"ep.{i:03d}",
        fps=10.0,
        frames=frames,
        actions=g.normal(size=(T, 2)).astype(np.float32),
        proprio=g.normal(size=(T, 4)).astype(np.float32),
        rewards=g.random(T).astype(np.float32),
        states=g.normal(size=(T, 7)),
        text=[f"task {i}"],
        success=bool(i % 2),
        extras=dict(seed=i),
    )


def encode(frames: np.ndarray) -> np.ndarray:
    """Deterministic stand-in encoder: (T, 8, 8, 3) uint8 → (T, 4, 3)."""
    x = frames.astype(np.float32).reshape(len(frames), N, -1, 3).mean(2) / 255.0
    return x * 3.0 - 1.0 + 1e-3 * np.arange(D)


def items(n, **kw):
    eps = [make_episode(i, **kw) for i in range(n)]
    return [(f"item/{e.episode_id}", (lambda e=e: e)) for e in eps], eps


def snapshot(d):
    """Everything a run leaves in a cache dir (bytes per file), except per-process temp names."""
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def test_round_trip_with_index_and_stats(tmp_path):
    its, eps = items(5, cameras=("main", "wrist"))
    summary = encode_to_cache(
        its,
        Encoding(encode, "random:test", image_size=8, meta=dict(note="x")),
        tmp_path,
        episodes_per_shard=2,
        show_progress=False,
    )
    assert summary["complete"] and summary["episodes"] == 5 and summary["num_shards"] == 3
    c = LatentCache(tmp_path)
    assert c.complete and len(c) == 10
    assert c.info["encoder"] == "random:test" and (c.info["num_tokens"], c.info["latent_dim"]) == (N, D)
    assert c.info["dtype"] == "float16" and c.info["image_size"] == 8 and c.info["note"] == "x"
    assert c.info["fps"] == 10.0
    assert [e["shard"] for e in c.entries[::2]] == ["shard-000000.tar"] * 2 + ["shard-000001.tar"] * 2 + [
        "shard-000002.tar"
    ]
    for e, ep in zip(c.entries[::2], eps):
        assert e["key"] == "toy%2Ev1/ep%2E000/main".replace("000", ep.episode_id[3:])
        assert "." not in e["key"]
    for i, e in enumerate(c.entries):
        ep = eps[i // 2]
        assert (e["dataset"], e["episode_id"], e["camera"]) == (ep.dataset, ep.episode_id, ("main", "wrist")[i % 2])
        assert e["length"] == len(ep) and e["success"] == ep.success and e["text"] == ep.text
        d = c.load_episode(i)
        want = encode(ep.frames[e["camera"]])
        assert d["latents"].dtype == np.float32
        np.testing.assert_allclose(d["latents"], want, atol=2e-3)  # fp16
        np.testing.assert_array_equal(d["latents"], want.astype(np.float16).astype(np.float32))
        for k in ("actions", "proprio", "rewards", "states"):
            np.testing.assert_array_equal(d[k], getattr(ep, k))
        assert d["action_mask"].all() and d["meta"]["extras"] == ep.extras
        assert c.find(ep.dataset, ep.episode_id, e["camera"]) == i
    # statistics: latents over all stored (fp16) tokens; actions/proprio per env step, written by DatasetStats
    lat = np.concatenate([c.raw(i)["latents"].astype(np.float64).reshape(-1, D) for i in range(len(c))])
    np.testing.assert_allclose(c.latent_stats.mean, lat.mean(0), rtol=1e-9)
    np.testing.assert_allclose(c.latent_stats.std, lat.std(0), rtol=1e-6)
    ref = compute_norm_stats([e.actions for e in eps for _ in range(2)])
    st = c.dataset_stats["toy.v1"]
    np.testing.assert_allclose(st.actions.mean, ref.mean)
    np.testing.assert_allclose(st.actions.std, ref.std)
    assert (tmp_path / "latent_stats.json").exists() and (tmp_path / "stats" / "toy%2Ev1.json").exists()
    assert not list(tmp_path.glob(".*.tmp"))


def test_shards_are_webdataset_readable(tmp_path):
    wds = pytest.importorskip("webdataset")
    its, _ = items(3)
    encode_to_cache(its, Encoding(encode, "t"), tmp_path, episodes_per_shard=8, show_progress=False)
    samples = list(wds.WebDataset(str(tmp_path / "shard-000000.tar"), shardshuffle=False, empty_check=False))
    assert [s["__key__"] for s in samples] == [e["key"] for e in LatentCache(tmp_path).entries]
    assert {"latents.npy", "actions.npy", "action_mask.npy", "meta.json"} <= set(samples[0])
    assert json.loads(samples[0]["meta.json"])["episode_id"] == "ep.000"


def test_streaming_writer_rolls_shards(tmp_path):
    _, eps = items(6, T=20)
    with LatentCacheWriter(tmp_path, shard_size_mb=0.0005, encoder_label="t") as w:
        for ep in eps:
            w.add_episode(ep, "main", encode(ep.frames["main"]))
    c = LatentCache(tmp_path)
    assert len(c) == 6 and len({e["shard"] for e in c.entries}) > 1
    np.testing.assert_array_equal(c.load_episode(5)["actions"], eps[5].actions)
    with pytest.raises(CacheError, match="refusing"):  # another encoder's latents never mix in
        LatentCacheWriter(tmp_path, encoder_label="other").add("x", "main", np.zeros((2, N, D)), dataset="d")
    assert sample_key("a.b", "c/d", "e%") == "a%2Eb/c%2Fd/e%25"


def test_resume_after_interrupted_write(tmp_path):
    its, _ = items(7)
    ref = tmp_path / "ref"
    encode_to_cache(its, Encoding(encode, "t"), ref, episodes_per_shard=2, show_progress=False)

    out = tmp_path / "run"
    calls = {"n": 0}

    def flaky(frames):
        calls["n"] += 1
        if calls["n"] == 6:  # the 2nd episode of shard 2
            raise RuntimeError("killed")
        return encode(frames)

    with pytest.raises(RuntimeError, match="killed"):
        encode_to_cache(its, Encoding(flaky, "t"), out, episodes_per_shard=2, show_progress=False)
    (out / ".shard-000002.tar.tmp").write_bytes(b"half a shard")  # as if the process had died mid-write
    c = LatentCache(out)  # readers only see what is complete
    assert [r for r in c.records] == ["shard-000000.tar", "shard-000001.tar"]
    assert c.missing_shards == ["shard-000002.tar", "shard-000003.tar"] and len(c) == 4
    assert not (out / "latent_stats.json").exists()
    mtimes = {n: (out / n).stat().st_mtime_ns for n in c.records}
    summary = encode_to_cache(its, Encoding(encode, "t"), out, episodes_per_shard=2, show_progress=False)
    assert summary["shards_written"] == ["shard-000002.tar", "shard-000003.tar"] and summary["complete"]
    assert {n: (out / n).stat().st_mtime_ns for n in mtimes} == mtimes  # finished shards not rewritten
    assert snapshot(out) == snapshot(ref)  # byte-identical to an uninterrupted run
    again = encode_to_cache(its, Encoding(encode, "t"), out, episodes_per_shard=2, show_progress=False)
    assert again["shards_written"] == []
    with pytest.raises(CacheError, match="different list"):
        encode_to_cache(its[:5], Encoding(encode, "t"), out, episodes_per_shard=2, show_progress=False)


def test_rank_split_covers_every_episode_once(tmp_path):
    its, _ = items(11)
    world = 3
    for rank in range(world):
        s = encode_to_cache(
            its,
            Encoding(encode, "t"),
            tmp_path / "split",
            episodes_per_shard=2,
            rank=rank,
            world_size=world,
            show_progress=False,
        )
        assert all(int(n[6:12]) % world == rank for n in s["shards_written"])
        assert s["complete"] == (rank == world - 1)  # stats are written by whoever finishes last
    per_rank = [json.loads(p.read_text())["shards"] for p in sorted((tmp_path / "split" / "index").glob("*.json"))]
    assert len(per_rank) == world and not set(per_rank[0]) & set(per_rank[1])
    c = LatentCache(tmp_path / "split")
    keys = [e["item"] for e in c.entries]
    assert sorted(keys) == sorted(k for k, _ in its) and len(set(keys)) == len(keys)
    encode_to_cache(its, Encoding(encode, "t"), tmp_path / "single", episodes_per_shard=2, show_progress=False)
    one = LatentCache(tmp_path / "single")
    assert [e["key"] for e in one.entries] == [e["key"] for e in c.entries]
    np.testing.assert_array_equal(one.latent_stats.std, c.latent_stats.std)
    assert merged_records(tmp_path / "single").keys() == merged_records(tmp_path / "split").keys()


def test_unreadable_episode_is_skipped_and_counted(tmp_path):
    its, _ = items(3)

    def broken():
        raise EpisodeError("cannot read episode file x.npz: truncated")

    its[1] = (its[1][0], broken)
    s = encode_to_cache(its, Encoding(encode, "t"), tmp_path, episodes_per_shard=2, show_progress=False)
    assert s["skipped"] == 1 and s["episodes"] == 2 and s["complete"]
    c = LatentCache(tmp_path)
    assert len(c) == 2 and c.skipped[0]["item"] == its[1][0] and "truncated" in c.skipped[0]["error"]
    again = encode_to_cache(its, Encoding(encode, "t"), tmp_path, episodes_per_shard=2, show_progress=False)
    # a shard with a skipped item is complete, but encoded again on resume to retry the item (still unreadable)
    assert again["shards_written"] == ["shard-000000.tar"] and again["skipped"] == 1 and again["complete"]
    assert len(LatentCache(tmp_path)) == 2
