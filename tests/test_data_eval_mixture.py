"""Evaluation clips carry only the narrations overlapping their own frames, and an evaluation set over sources with
different optional fields (DROID has proprio, EPIC-KITCHENS none) batches like the training mixture does."""

import pytest
from formats import encode_fn, write_epic, write_lerobot_v3

from latentwm.data.batch import collate
from latentwm.data.clip_sets import make_mixture_datasets
from latentwm.data.clips import ClipOptions, LatentClipDataset
from latentwm.data.latent_cache import Encoding, encode_to_cache
from latentwm.data.mixture import ConcatClips, MixtureSpec
from latentwm.data.sources.droid import load_droid
from latentwm.data.sources.epic_kitchens import load_epic_kitchens

# EPIC fixture at 5 fps (frame j shows [0.2j, 0.2j + 0.2) s): P01_01 "open drawer" 0.5–1.2 s = frames [2, 6),
# "take knife" 2.1–2.3 s = frames [10, 12); P01_02 "close tap" 0.2–0.4 s = frame [1, 2)
SPANS = {"P01_01@0000": [("open drawer", 2, 6), ("take knife", 10, 12)], "P01_02@0000": [("close tap", 1, 2)]}


@pytest.fixture(scope="module")
def caches(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("evalmix")
    mean8, kw = Encoding(encode_fn, "mean8"), dict(episodes_per_shard=2, show_progress=False)
    encode_to_cache(load_droid(write_lerobot_v3(tmp / "droid"), fps=5), mean8, tmp / "droid_lat", **kw)
    encode_to_cache(
        load_epic_kitchens(write_epic(tmp / "epic"), fps=5, segment_s=None, participants="P01"),
        mean8,
        tmp / "epic_lat",
        **kw,
    )
    return tmp


def _want(episode_id, first, last):
    return [t for t, a, b in SPANS[episode_id] if a < last + 1 and b > first]


@pytest.mark.parametrize("frame_skip", [1, 2])
def test_eval_clips_carry_only_their_narrations(caches, frame_skip):
    ds = LatentClipDataset(
        caches / "epic_lat", 2, split="all", options=ClipOptions(frame_skip=frame_skip, eval_stride=1)
    )
    seen = set()
    for i in range(len(ds)):
        m = ds[i].meta
        first, last = m.start_frame, m.start_frame + frame_skip  # the clip shows frames first and last
        assert list(m.text) == _want(m.episode_id, first, last), (m.episode_id, first)
        seen.add(m.text)
    assert seen == {(), ("open drawer",), ("take knife",), ("close tap",)}
    # an episode's full text stays in the cache; clips narrow it
    assert set(ds.cache.entries[0]["text"]) == {t for t, _, _ in SPANS[ds.cache.entries[0]["episode_id"]]}


def test_eval_set_over_sources_with_different_fields(caches):
    spec = MixtureSpec.parse(f"epic={caches / 'epic_lat'}:0.5,droid={caches / 'droid_lat'}:0.5", seed=1, block=10)
    train, ev, _ = make_mixture_datasets(spec, clip_len=2, frame_skip=1, action_dim=7, eval_fraction=0.5, eval_len=3)
    assert isinstance(ev, ConcatClips) and ev.fields == train.fields == ()
    samples = [ev[i] for i in range(len(ev))]
    assert {s.meta.dataset for s in samples} == {"droid", "epic_kitchens"}
    assert all(s.proprio is None for s in samples)
    batch = collate(samples, action_dim=7)  # the raw parts would not batch: proprio in DROID clips only
    assert batch.proprio is None and batch.latents.shape[:2] == (len(samples), 3)
    with pytest.raises(ValueError, match="proprio"):
        collate([p[0] for p in ev.parts], action_dim=7)
    for s in samples:
        if s.meta.dataset == "epic_kitchens":
            assert list(s.meta.text) == _want(s.meta.episode_id, s.meta.start_frame, s.meta.start_frame + 2)
    # one source alone keeps its fields; an index past the end is an IndexError (iteration stops)
    droid_only = ConcatClips([p for p in ev.parts if p.cache.entries[0]["dataset"] == "droid"])
    assert droid_only.fields == ("proprio",) and droid_only[0].proprio is not None
    with pytest.raises(IndexError):
        droid_only[len(droid_only)]
