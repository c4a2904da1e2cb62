"""Weighted mixture: exact proportions per block, determinism in the global sample number, disjoint per-source
streams, finite sources read epoch by epoch, (rank, worker) sharding with resume, and a real DROID + EPIC mixture
through latent caches (actions only where known, narrations per clip, dataset and camera in the metadata)."""

import numpy as np
import pytest
import torch
from formats import encode_fn, write_epic, write_lerobot_v3
from torch.utils.data import DataLoader, Dataset

from latentwm.data.batch import ClipSample, WorldBatchMetadata, collate
from latentwm.data.clip_sets import make_mixture_datasets
from latentwm.data.latent_cache import Encoding, encode_to_cache
from latentwm.data.mixture import MixtureDataset, MixtureSpec, MixtureStream, slot_counts
from latentwm.data.sources.droid import load_droid
from latentwm.data.sources.epic_kitchens import load_epic_kitchens


class Tagged(Dataset):
    """Item i is a 1-frame clip whose latent holds i; `stream` says whether any index is valid."""

    def __init__(self, name, size=None):
        self.name, self.size, self.stream = name, size, size is None

    def __len__(self):
        return self.size or (1 << 30)

    def __getitem__(self, i):
        if self.size is not None and not 0 <= i < self.size:
            raise IndexError(i)
        return ClipSample(latents=torch.full((1, 1, 1), float(i)), meta=WorldBatchMetadata(self.name, str(i)))


def _mix(seed=0, block=100):
    return MixtureDataset(
        [("a", Tagged("a"), 0.5), ("b", Tagged("b"), 0.3), ("c", Tagged("c", size=7), 0.2)], seed=seed, block=block
    )


def test_slot_counts():
    assert slot_counts([0.5, 0.3, 0.2], 100).tolist() == [50, 30, 20]
    assert slot_counts([1, 1, 1], 100).tolist() == [34, 33, 33]
    assert slot_counts([1000, 1], 10).tolist() == [9, 1]  # a positive weight gets a slot
    assert slot_counts([1, 0], 10).tolist() == [10, 0]
    with pytest.raises(ValueError):
        slot_counts([0, 0], 10)


def test_proportions_determinism_disjoint_streams():
    m = _mix()
    got = [(s.meta.dataset, int(s.latents.item())) for s in (m[k] for k in range(1000))]
    names = [d for d, _ in got]
    for name, p in (("a", 0.5), ("b", 0.3), ("c", 0.2)):
        assert names.count(name) == 1000 * p  # exact over whole blocks
        assert abs(names[:150].count(name) - 150 * p) <= 15  # and close over part of one
    # each stream source sees 0, 1, 2, ... exactly once
    for name, n in (("a", 500), ("b", 300)):
        assert sorted(i for d, i in got if d == name) == list(range(n))
    # the finite source is read in epochs: every item once per 7 draws
    c = [i for d, i in got if d == "c"]
    for e in range(len(c) // 7):
        assert sorted(c[7 * e : 7 * e + 7]) == list(range(7))
    assert c[:7] != list(range(7))  # permuted
    # deterministic in k, any order, any k; a different seed is a different order
    m2 = _mix()
    for k in (999, 3, 10**9, 0):
        assert (m2[k].meta.dataset, m2[k].latents.item()) == (m[k].meta.dataset, m[k].latents.item())
    assert [_mix(seed=1)[k].meta.dataset for k in range(50)] != names[:50]
    assert m.proportions == {"a": 0.5, "b": 0.3, "c": 0.2}


def test_stream_sharding_and_resume():
    m = _mix(block=10)
    world, workers = 2, 2
    shards = [
        [k for k, _ in zip(MixtureStream(m, r, world).indices(w, workers), range(25))]
        for r in range(world)
        for w in range(workers)
    ]
    flat = sorted(k for s in shards for k in s)
    assert flat == list(range(100))  # disjoint, and together every number
    # DataLoader workers over the stream; resume from a saved position gives the same continuation
    s = MixtureStream(m, rank=1, world_size=2)
    it = iter(s)
    first = [next(it).latents.item() for _ in range(6)]
    state = s.state_dict()
    rest = [next(it).latents.item() for _ in range(4)]
    s2 = MixtureStream(m, rank=1, world_size=2)
    s2.load_state_dict(state)
    assert [x.latents.item() for x, _ in zip(s2, range(4))] == rest
    assert first == [m[k].latents.item() for k in range(1, 12, 2)]
    loader = DataLoader(MixtureStream(m, 0, 1), batch_size=4, num_workers=0, collate_fn=lambda b: collate(b, 1))
    batch = next(iter(loader))
    assert [x.dataset for x in batch.meta] == [m[k].meta.dataset for k in range(4)]
    with pytest.raises(ValueError, match="differs"):
        s2.load_state_dict(dict(state, mixture=_mix(seed=5).state_dict()))


def test_parse_spec():
    spec = MixtureSpec.parse("epic=data/epic:0.7, droid=/x/y:z/droid:0.3,more=c")
    assert [(s.name, s.cache_dir, s.weight) for s in spec.sources] == [
        ("epic", "data/epic", 0.7),
        ("droid", "/x/y:z/droid", 0.3),
        ("more", "c", 1.0),
    ]
    with pytest.raises(ValueError):
        MixtureSpec.parse("nocache")


def test_droid_epic_mixture_through_caches(tmp_path):
    droid = write_lerobot_v3(tmp_path / "droid")
    epic = write_epic(tmp_path / "epic")
    mean8, kw = Encoding(encode_fn, "mean8"), dict(episodes_per_shard=2, show_progress=False)
    encode_to_cache(load_droid(droid, fps=5), mean8, tmp_path / "droid_lat", **kw)
    encode_to_cache(
        load_epic_kitchens(epic, fps=5, segment_s=None, participants="P01"), mean8, tmp_path / "epic_lat", **kw
    )
    spec = MixtureSpec.parse(f"epic={tmp_path / 'epic_lat'}:0.6,droid={tmp_path / 'droid_lat'}:0.4", seed=3, block=20)
    train, ev, extra = make_mixture_datasets(spec, clip_len=2, frame_skip=1, action_dim=7, eval_fraction=0.0)
    assert ev is None and extra["mixture"]["counts"] == [12, 8]
    samples = [train[k] for k in range(40)]
    assert sum(s.meta.dataset == "epic_kitchens" for s in samples) == 24
    batch = collate(samples, action_dim=7)
    is_epic = torch.tensor([s.meta.dataset == "epic_kitchens" for s in samples])
    assert not batch.action_mask[is_epic].any()  # EPIC: no actions
    assert batch.action_mask[~is_epic, 0].all()  # DROID clip's first step: known (pose delta to the next frame)
    assert {s.meta.camera for s in samples if s.meta.dataset == "droid"} == {
        "exterior_1_left",
        "exterior_2_left",
        "wrist_left",
    }
    # narrations narrowed to each clip: P01_01 at 5 fps (frame j shows [0.2j, 0.2j + 0.2) s): "open drawer"
    # 0.5–1.2 s is frames [2, 6), "take knife" 2.1–2.3 s is frames [10, 12); a clip covers frames [a, a + 2)
    seen = 0
    for s in samples:
        if s.meta.episode_id == "P01_01@0000":
            a, seen = s.meta.start_frame, seen + 1
            want = [t for t, (x, y) in (("open drawer", (2, 6)), ("take knife", (10, 12))) if a < y and a + 2 > x]
            assert list(s.meta.text) == want, a
    assert seen >= 3
    assert np.isfinite(batch.latents.numpy()).all()
