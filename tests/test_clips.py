"""Clip sampling from a latent cache: frame-skip actions, splits, determinism, normalization, loaders."""

import numpy as np
import pytest
import torch

from latentwm.data.batch import WorldBatch
from latentwm.data.clips import ClipOptions, LatentClipDataset, ReadOrder, make_loader, split_episodes
from latentwm.data.episodes import Episode
from latentwm.data.latent_cache import Encoding, LatentCache, encode_to_cache

N, D = 4, 3


def make_episode(i: int, T: int, cameras=("main",)) -> Episode:
    g = np.random.default_rng(i)
    t = np.arange(T, dtype=np.float32)
    actions = np.stack([t + 1000 * i, 100 + 2 * t], 1)  # every raw action is recognizable
    mask = np.ones(T, dtype=bool)
    if i == 1:
        mask[7] = False  # one unknown raw action
    return Episode(
        dataset="toy",
        episode_id=f"ep{i:02d}",
        fps=10.0,
        frames={c: g.integers(0, 255, size=(T, 8, 8, 3), dtype=np.uint8) for c in cameras},
        actions=actions,
        action_mask=mask,
        proprio=g.normal(size=(T, 2)).astype(np.float32),
        rewards=(t + 1) / 10,
        states=np.stack([t, -t], 1).astype(np.float64) + 10 * i,
        text=["push"],
        success=True,
    )


def encode(frames):
    return frames.astype(np.float32).reshape(len(frames), N, -1, 3).mean(2) / 50.0 + 2.0


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    d = tmp_path_factory.mktemp("clipcache")
    eps = [make_episode(i, T=23 + 3 * (i % 3), cameras=("main", "wrist") if i % 2 else ("main",)) for i in range(9)]
    eps.append(make_episode(9, T=6))  # shorter than one clip
    encode_to_cache(
        [(f"toy/{e.episode_id}", (lambda e=e: e)) for e in eps],
        Encoding(encode, "t"),
        d,
        episodes_per_shard=3,
        show_progress=False,
    )
    return LatentCache(d), {e.episode_id: e for e in eps}


def test_frame_skip_actions_match_episode_with_frame_skip(cache):
    c, eps = cache
    ds = LatentClipDataset(c, clip_len=5, split="all", options=ClipOptions(frame_skip=5, normalize=False))
    for ep_id in ("ep00", "ep01"):
        ep = eps[ep_id]  # T = 23 and 26
        i = c.find("toy", ep_id, "main")
        skipped = ep.with_frame_skip(5)
        s = ds.make_clip(i, 0)
        np.testing.assert_array_equal(s.actions.numpy(), skipped.actions[:5])
        np.testing.assert_array_equal(s.action_mask.numpy(), skipped.action_mask[:5])
        np.testing.assert_allclose(s.rewards.numpy(), skipped.rewards[:5], rtol=1e-6)
        np.testing.assert_array_equal(s.latents.numpy(), c.raw(i)["latents"][::5][:5].astype(np.float32))
        assert s.actions.shape == (5, 10)
    s = ds.make_clip(c.find("toy", "ep00", "main"), 0)  # T = 23: the last kept frame (20) lacks actions 23, 24
    assert s.action_mask.tolist() == [True, True, True, True, False] and (s.actions[4] == 0).all()
    np.testing.assert_array_equal(s.actions[1].numpy(), [5, 110, 6, 112, 7, 114, 8, 116, 9, 118])
    s = ds.make_clip(c.find("toy", "ep01", "main"), 0)  # raw action 7 unknown → clip step 1 unknown
    assert s.action_mask.tolist() == [True, False, True, True, True]
    s = ds.make_clip(c.find("toy", "ep01", "wrist"), 3)
    assert s.meta.camera == "wrist" and s.meta.start_frame == 3 and s.meta.frame_stride == 5 and s.meta.fps == 2.0
    assert s.meta.text == ("push",) and s.meta.success is True and s.meta.episode_id == "ep01"
    ds_states = LatentClipDataset(
        c, clip_len=5, split="eval", options=ClipOptions(frame_skip=5, eval_fraction=0.5, normalize=False)
    )
    entry, start = ds_states.clip_at(0)
    e = c.entries[entry]
    np.testing.assert_array_equal(ds_states.states_for(0), eps[e["episode_id"]].states[start : start + 21 : 5])
    np.testing.assert_array_equal(ds_states[0].states.numpy(), ds_states.states_for(0))  # travels in the sample


def test_splits_are_by_episode_disjoint_and_seeded(cache):
    c, _ = cache
    o = ClipOptions(frame_skip=2, eval_fraction=0.3)
    tr, ev = LatentClipDataset(c, 4, "train", o), LatentClipDataset(c, 4, "eval", o)
    tr_eps, ev_eps = {k for k, _ in tr.groups}, {k for k, _ in ev.groups}
    assert tr_eps and ev_eps and not tr_eps & ev_eps
    assert len(tr_eps | ev_eps) + tr.num_skipped + ev.num_skipped == 10
    assert tr.num_skipped + ev.num_skipped == 1  # ep09 has 6 frames, a clip needs 7
    for _, entries in tr.groups + ev.groups:  # all cameras of an episode on one side
        assert len({c.entries[i]["episode_id"] for i in entries}) == 1
    assert {c.entries[i]["camera"] for i, _ in ev.grid} <= {"main", "wrist"}
    assert {k for k, _ in LatentClipDataset(c, 4, "eval", o).groups} == ev_eps
    keys = [f"e{i}" for i in range(50)]
    assert len(split_episodes(keys, 0.1, 0)) == 5 and split_episodes(keys, 0.1, 0) != split_episodes(keys, 0.1, 1)
    assert split_episodes(keys, 0.0, 0) == set() and len(split_episodes(keys[:3], 0.01, 0)) == 1


def test_train_items_are_deterministic_in_seed_epoch_index(cache):
    c, _ = cache
    a = LatentClipDataset(c, clip_len=4, options=ClipOptions(frame_skip=2, seed=3, epoch_size=10))
    b = LatentClipDataset(c, clip_len=4, options=ClipOptions(frame_skip=2, seed=3, epoch_size=10))
    for i in (0, 7, 123):
        x, y = a[i], b[i]
        assert x.meta == y.meta and torch.equal(x.latents, y.latents) and torch.equal(x.actions, y.actions)
    starts = [a.clip_at((0, i)) for i in range(10)]
    assert starts != [a.clip_at((1, i)) for i in range(10)]
    assert a.clip_at(13) == a.clip_at((1, 3))  # global index k = epoch · len + i
    a.set_epoch(1)
    assert a.clip_at(3) == b.clip_at((1, 3))
    other = LatentClipDataset(c, clip_len=4, options=ClipOptions(frame_skip=2, seed=4, epoch_size=10))
    assert [other.clip_at(i) for i in range(10)] != starts
    for i in range(200):  # every clip fits its episode
        entry, start = b.clip_at(i)
        assert start + 3 * 2 < c.entries[entry]["length"]


def test_normalization_uses_cache_stats(cache):
    c, _ = cache
    raw = LatentClipDataset(c, clip_len=4, split="all", options=ClipOptions(frame_skip=3, normalize=False))
    norm = LatentClipDataset(c, clip_len=4, split="all", options=ClipOptions(frame_skip=3, normalize=True))
    ls, st = c.latent_stats, c.dataset_stats["toy"]
    for i in (0, 5):
        r, n = raw[i], norm[i]
        np.testing.assert_allclose(n.latents.numpy(), (r.latents.numpy() - ls.mean) / ls.std, rtol=1e-5, atol=1e-5)
        a = r.actions.numpy().reshape(4, 3, 2)  # per env-step normalization before concatenation
        want = ((a - st.actions.mean) / st.actions.std).reshape(4, 6) * r.action_mask.numpy()[:, None]
        np.testing.assert_allclose(n.actions.numpy(), want, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(n.proprio.numpy(), st.proprio.normalize(r.proprio.numpy()), rtol=1e-5, atol=1e-6)
    lat = torch.stack([norm[i].latents for i in range(len(norm))])
    assert abs(float(lat.mean())) < 0.3 and 0.5 < float(lat.std()) < 1.5


def test_loader_collates_world_batches_and_splits_ranks(cache):
    c, _ = cache
    tr = LatentClipDataset(c, clip_len=5, options=ClipOptions(frame_skip=2, action_dim=12, epoch_size=12))
    batch = next(iter(make_loader(tr, batch_size=3)))
    assert isinstance(batch, WorldBatch)
    assert batch.latents.shape == (3, 5, N, D) and batch.actions.shape == (3, 5, 12)
    assert batch.action_mask.shape == (3, 5) and batch.valid.all() and len(batch.meta) == 3
    assert (batch.actions[..., 4:] == 0).all()  # 2 × 2 real action dims, padded to 12
    assert batch.proprio.shape == (3, 5, 2) and batch.rewards.shape == (3, 5)
    ref = [tr[i].meta for i in range(12)]
    seen = []
    for rank in range(2):
        for b in make_loader(tr, batch_size=2, order=ReadOrder(rank=rank, world_size=2)):
            seen += b.meta
    assert sorted(seen, key=repr) == sorted(ref, key=repr)
    ev = LatentClipDataset(c, clip_len=5, split="eval", options=ClipOptions(frame_skip=2, eval_fraction=0.4))
    per_rank = [
        [
            (m.episode_id, m.camera, m.start_frame)
            for b in make_loader(ev, 4, order=ReadOrder(rank=r, world_size=3))
            for m in b.meta
        ]
        for r in range(3)
    ]
    flat = [x for p in per_rank for x in p]
    assert len(flat) == len(ev) == len(set(flat))  # eval: every clip exactly once, even when uneven
    full = [m for b in make_loader(tr, batch_size=1, order=ReadOrder(rank=1, world_size=2)) for m in b.meta]
    resumed = make_loader(tr, batch_size=1, order=ReadOrder(rank=1, world_size=2))
    resumed.sampler.set_epoch(0, start=2)  # resume mid-epoch
    assert [m for b in resumed for m in b.meta] == full[2:]
    resumed.sampler.set_epoch(1)
    assert [m for b in resumed for m in b.meta] == [tr[(1, i)].meta for i in range(1, 12, 2)] != full
    workers = [m for b in make_loader(tr, batch_size=3, num_workers=2) for m in b.meta]
    assert workers == [m for b in make_loader(tr, batch_size=3) for m in b.meta]
