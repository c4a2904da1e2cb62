"""Text conditions from episodes to batches: sentences embedded once at encode time into a per-entry table, per-frame
ids (episode-level text on every frame, narrations on their spans, held-out paraphrases beside them), clips that
look the text up at their own raw frames (frame skip included), training alternatives drawn per clip, evaluation on
held-out paraphrases, online clips equal to cached ones, a mixture batch of text-only / action-only / both sources,
and `latentwm encode --text` (lazy: a dataset without text never loads the sentence encoder)."""

import dataclasses
import hashlib
import json

import numpy as np
import pytest
import torch
from formats import encode_fn, write_epic

from latentwm.cli import main
from latentwm.config import ObjectiveConfig, get_preset
from latentwm.data.batch import collate
from latentwm.data.clip_sets import make_mixture_datasets
from latentwm.data.clips import ClipOptions, LatentClipDataset
from latentwm.data.episodes import Episode
from latentwm.data.frame_text import TextEmbedding, frame_text
from latentwm.data.latent_cache import Encoding, LatentCache, encode_to_cache
from latentwm.data.mixture import MixtureSpec
from latentwm.data.online import EpisodeStore
from latentwm.data.sources.epic_kitchens import load_epic_kitchens
from latentwm.encoders.text import TextEncoder, save_tiny_text_model
from latentwm.model import DynamicsModel
from latentwm.objectives.shortcut_forcing import ShortcutForcing, TrainStep

E = 16


def fake_embed(sentences):
    """Deterministic stand-in sentence encoder: a unit vector seeded by the sentence's hash."""
    rows = [np.random.default_rng(int(hashlib.sha1(s.encode()).hexdigest()[:12], 16)).normal(size=E) for s in sentences]
    return np.stack([r / np.linalg.norm(r) for r in rows]).astype(np.float32)


FAKE = TextEmbedding(fake_embed, "fake-hash-16", E)


def emb(sentence):
    """The embedding as a clip carries it (stored in fp16)."""
    return torch.from_numpy(fake_embed([sentence])[0].astype(np.float16).astype(np.float32))


INSTR = ["pick up the cup", "grab the cup", "lift the mug"]
NARR = [[0, 6, "open drawer"], [4, 10, "take knife"], [14, 18, "wash cup"]]
HELD = [[0, 6, "pull the drawer open"], [4, 10, "grab a knife"], [14, 18, "rinse the cup"]]


def _episode(i, T=18, actions=True, name=None, **kw):
    g = np.random.default_rng(i)
    return Episode(
        dataset=kw.pop("dataset", "toy"),
        episode_id=name or f"ep{i}",
        fps=10.0,
        frames={"main": g.integers(0, 255, (T, 64, 96, 3), dtype=np.uint8)},
        actions=g.normal(size=(T, 2)).astype(np.float32) if actions else None,
        **kw,
    )


def _items():
    eps = [
        _episode(0, name="instr", text=INSTR),  # DROID-like: three paraphrases of one instruction
        _episode(
            1,
            name="narr",
            actions=False,
            text=["open drawer", "take knife", "wash cup"],  # EPIC-like
            extras=dict(narrations=NARR, narrations_heldout=HELD),
        ),
        _episode(2, name="none"),
    ]
    return [(f"toy/{ep.episode_id}", (lambda ep=ep: ep)) for ep in eps]


def _alternatives(t):
    """Training alternatives of frame t of the narrated episode."""
    return [s for a, b, s in NARR if a <= t < b]


def _heldout(t):
    return next((s for a, b, s in HELD if a <= t < b), None)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    out = tmp_path_factory.mktemp("text") / "cache"
    encode_to_cache(_items(), Encoding(encode_fn, "mean8", text=FAKE), out, episodes_per_shard=2, show_progress=False)
    return LatentCache(out)


def _entry(cache, name):
    return cache.raw(cache.find("toy", name, "main"))


def test_cache_holds_one_table_per_entry_and_ids_per_frame(cache):
    assert (cache.text_encoder, cache.text_dim) == ("fake-hash-16", E)
    assert json.loads((cache.path / "cache.json").read_text())["text_encoder"] == "fake-hash-16"
    instr = _entry(cache, "instr")
    assert instr["text_emb"].dtype == np.float16 and instr["text_emb"].shape == (3, E)
    assert instr["text_ids"].dtype == np.int16 and instr["text_ids"].shape == (18, 3)
    assert (instr["text_ids"] == [0, 1, 2]).all() and "text_ids_heldout" not in instr  # every frame: all three
    narr = _entry(cache, "narr")
    assert narr["text_emb"].shape == (6, E)  # 3 narrations (= the episode's text) + 3 held-out paraphrases
    assert narr["text_ids"].shape == (18, 2) and narr["text_ids_heldout"].shape == (18,)
    assert narr["text_ids_heldout"].dtype == np.int16
    sentences = frame_text(
        ["open drawer", "take knife", "wash cup"], dict(narrations=NARR, narrations_heldout=HELD), 18
    ).sentences
    for t in range(18):
        ids = [int(i) for i in narr["text_ids"][t] if i >= 0]
        assert [sentences[i] for i in ids] == _alternatives(t), t
        h = int(narr["text_ids_heldout"][t])
        assert (sentences[h] if h >= 0 else None) == _heldout(t), t
    np.testing.assert_array_equal(narr["text_emb"], fake_embed(sentences).astype(np.float16))
    assert "text_emb" not in _entry(cache, "none") and "text_ids" not in _entry(cache, "none")
    assert [e.get("text_dim") for e in cache.entries] == [E, E, None]


def test_clip_text_is_the_text_of_each_raw_frame_with_frame_skip(cache):
    ev = LatentClipDataset(cache, 4, split="all", options=ClipOptions(frame_skip=2, normalize=False, eval_stride=1))
    seen = 0
    for k in range(len(ev)):
        entry, start = ev.clip_at(k)
        s, frames = ev[k], ev.frames_of(start)
        name = ev.cache.entries[entry]["episode_id"]
        if name == "none":
            assert s.text is None and s.text_mask is None
            continue
        assert s.text.shape == (4, E) and s.text.dtype == torch.float32 and s.text_mask.dtype == torch.bool
        for row, t in enumerate(frames):
            want = INSTR[0] if name == "instr" else _heldout(int(t))  # evaluation: the held-out paraphrase
            assert bool(s.text_mask[row]) == (want is not None), (name, t)
            torch.testing.assert_close(s.text[row], emb(want) if want else torch.zeros(E), rtol=0, atol=0)
            seen += 1
    assert seen > 40


def test_evaluation_can_carry_the_training_paraphrase_instead(cache):
    """heldout_text=False: evaluation clips get each frame's first training alternative (the wording the model saw),
    never a held-out paraphrase; the default stays the held-out one."""
    opts = dict(frame_skip=2, normalize=False, eval_stride=1)
    ev = LatentClipDataset(cache, 4, split="all", options=ClipOptions(**opts, heldout_text=False))
    held = {s for *_, s in HELD}
    seen = 0
    for k in range(len(ev)):
        s = ev[k]
        if s.meta.episode_id != "narr":
            continue
        for row, t in enumerate(ev.frames_of(s.meta.start_frame)):
            alts = _alternatives(int(t))
            assert bool(s.text_mask[row]) == bool(alts)
            if alts:
                torch.testing.assert_close(s.text[row], emb(alts[0]), rtol=0, atol=0)
                assert alts[0] not in held
                seen += 1
    assert seen > 10


def test_training_alternatives_vary_per_clip_but_are_deterministic(cache):
    train = LatentClipDataset(
        cache, 3, split="train", options=ClipOptions(frame_skip=2, eval_fraction=0.0, normalize=False)
    )
    again = LatentClipDataset(
        cache, 3, split="train", options=ClipOptions(frame_skip=2, eval_fraction=0.0, normalize=False)
    )
    held = {s for *_, s in HELD}
    picked = {"instr": set(), "narr": set()}
    for k in range(120):
        s = train[k]
        if s.meta.episode_id == "none":
            assert s.text is None
            continue
        torch.testing.assert_close(s.text, again[k].text, rtol=0, atol=0)  # a function of the item alone
        assert torch.equal(s.text_mask, again[k].text_mask)
        frames = train.frames_of(s.meta.start_frame)
        for row, t in enumerate(frames):
            alts = INSTR if s.meta.episode_id == "instr" else _alternatives(int(t))
            assert bool(s.text_mask[row]) == bool(alts)
            if alts:
                match = [a for a in alts if torch.equal(s.text[row], emb(a))]
                assert len(match) == 1 and match[0] not in held  # training never sees held-out paraphrases
                picked[s.meta.episode_id].add(match[0])
        if s.meta.episode_id == "instr":  # one paraphrase per clip, the same on every frame
            assert all(torch.equal(s.text[0], r) for r in s.text)
    assert picked["instr"] == set(INSTR) and picked["narr"] == {"open drawer", "take knife", "wash cup"}


def test_text_off_keeps_clips_without_text(cache):
    ds = LatentClipDataset(cache, 3, split="all", options=ClipOptions(normalize=False, text=False))
    assert all(ds[k].text is None for k in range(len(ds)))
    assert ds[0].meta.text  # the strings stay in the metadata


def test_online_store_gives_the_cached_text(cache):
    store = EpisodeStore(_items(), show_progress=False, text=lambda: FAKE)  # built when the first text comes
    assert (store.text_encoder, store.text_dim) == (cache.text_encoder, cache.text_dim)
    assert [e["text_dim"] for e in store.entries] == [e.get("text_dim") for e in cache.entries]
    for split, idx in (("all", None), ("train", [0, 3, 7, 11, 50, (2, 5)])):
        opts = ClipOptions(frame_skip=2, eval_fraction=0.0, normalize=False)
        c, o = LatentClipDataset(cache, 3, split, opts), LatentClipDataset(store, 3, split, opts)
        for k in idx or range(len(c)):
            a, b = c[k], o[k]
            assert a.meta == b.meta
            if a.text is None:
                assert b.text is None
            else:
                assert torch.equal(a.text, b.text) and torch.equal(a.text_mask, b.text_mask)
    assert EpisodeStore(_items(), show_progress=False).text == {}  # no text function: no text


def _pusht_like(i, T=24):
    """Actions + narrations + held-out paraphrases, as Push-T language gives them."""
    narr = [[a, a + 8, f"the block moves {a}"] for a in range(0, T, 8)]
    held = [[a, b, t.replace("moves", "slides")] for a, b, t in narr]
    return _episode(10 + i, T=T, dataset="pusht", extras=dict(narrations=narr, narrations_heldout=held))


def test_mixture_of_text_only_action_only_and_both_in_one_batch(tmp_path):
    epic = write_epic(tmp_path / "epic")
    mean8, kw = Encoding(encode_fn, "mean8", text=FAKE), dict(episodes_per_shard=2, show_progress=False)
    encode_to_cache(
        load_epic_kitchens(epic, fps=5, segment_s=None, participants="P01"), mean8, tmp_path / "epic_lat", **kw
    )
    encode_to_cache(
        [(f"robot/ep{i}", (lambda i=i: _episode(20 + i, dataset="robot"))) for i in range(3)],
        mean8,
        tmp_path / "robot_lat",
        **kw,
    )
    encode_to_cache(
        [(f"pusht/ep{i}", (lambda i=i: _pusht_like(i))) for i in range(3)], mean8, tmp_path / "pusht_lat", **kw
    )
    assert LatentCache(tmp_path / "robot_lat").text_encoder is None  # no episode had text: nothing recorded
    spec = MixtureSpec.parse(
        f"epic={tmp_path / 'epic_lat'}:0.4,robot={tmp_path / 'robot_lat'}:0.3,pusht={tmp_path / 'pusht_lat'}:0.3",
        seed=1,
        block=10,
    )
    train, _, extra = make_mixture_datasets(spec, clip_len=3, frame_skip=2, action_dim=4, eval_fraction=0.0)
    assert (extra["text_encoder"], extra["text_dim"]) == ("fake-hash-16", E)
    narrations = {
        ep.episode_id: ep.extras["narrations"]
        for ep in (load() for _, load in load_epic_kitchens(epic, fps=5, segment_s=None, participants="P01"))
    }
    samples = [train[k] for k in range(30)]
    batch = collate(samples, action_dim=4)
    assert batch.text.shape == (30, 3, E) and batch.text_mask.shape == (30, 3)
    kinds = [s.meta.dataset for s in samples]
    assert set(kinds) == {"epic_kitchens", "robot", "pusht"}
    for i, s in enumerate(samples):
        frames = s.meta.start_frame + 2 * np.arange(3)
        if s.meta.dataset == "epic_kitchens":  # text only, on the narrations' frames (P01_01: [2, 6), [10, 12))
            want = [next((x for a, b, x in narrations[s.meta.episode_id] if a <= t < b), None) for t in frames]
            assert not batch.action_mask[i].any()
        elif s.meta.dataset == "robot":  # actions only
            want = [None] * 3
            assert batch.action_mask[i, :2].all()
        else:
            want = [f"the block moves {t // 8 * 8}" for t in frames]
            assert batch.action_mask[i, :2].all()
        assert batch.text_mask[i].tolist() == [w is not None for w in want], (s.meta, frames)
        for row, w in enumerate(want):
            torch.testing.assert_close(batch.text[i, row], emb(w) if w else torch.zeros(E), rtol=0, atol=0)
    assert batch.text_mask.any() and not batch.text_mask.all()
    # ... and trains: one shortcut-forcing step on that mixed batch, gradients reach both condition embeddings
    lat = batch.latents[:, :, :64]  # the stand-in encoder's 96 tokens are no square grid: an 8×8 model reads 64
    cfg = dataclasses.replace(
        get_preset("tiny").model, latent_dim=lat.shape[-1], latent_grid=8, action_dim=4, text_dim=E, attention="eager"
    )
    torch.manual_seed(0)
    model = DynamicsModel(cfg)
    with torch.no_grad():  # off the zero init (identity blocks, zero head), where inputs get no gradient yet
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    loss, _ = ShortcutForcing(ObjectiveConfig(action_dropout=0.0, text_dropout=0.0), cfg.k_max)(
        model, lat, batch.conditions, batch.valid, TrainStep(seeds=list(range(30)))
    )
    loss.backward()
    assert torch.isfinite(loss)
    for p in (model.text_in.weight, model.action_in.weight, model.no_text, model.no_action):
        assert p.grad is not None and p.grad.abs().sum() > 0


def test_encode_command_embeds_text_once_with_the_configured_encoder(tmp_path, monkeypatch):
    epic = write_epic(tmp_path / "epic")
    model = save_tiny_text_model(tmp_path / "tiny_text", hidden=32)
    calls = []
    embed = TextEncoder.embed
    monkeypatch.setattr(TextEncoder, "embed", lambda self, s: calls.append(list(s)) or embed(self, s))
    base = ["encode", "--preset", "tiny", "--source", "epic", "--root", str(epic), "--fps", "5", "--segment-s", "0"]
    assert main([*base, "--out-dir", str(tmp_path / "lat"), "--text.name", model]) == 0
    cache = LatentCache(tmp_path / "lat")
    enc = TextEncoder(model)
    assert cache.text_encoder == enc.label and cache.text_dim == 32
    assert len(calls) == len(cache.entries)  # one call per episode with its unique sentences, never per frame
    for i, e in enumerate(cache.entries):
        raw = cache.raw(i)
        sentences = list(dict.fromkeys(e["text"]))
        assert calls[i] == sentences
        np.testing.assert_allclose(raw["text_emb"].astype(np.float32), enc.embed(sentences), atol=2e-3)
    assert main([*base, "--out-dir", str(tmp_path / "plain"), "--text.name", ""]) == 0  # no text stored
    plain = LatentCache(tmp_path / "plain")
    assert plain.text_encoder is None and all("text_emb" not in plain.raw(i) for i in range(len(plain)))


def test_encode_without_any_text_never_loads_the_text_encoder(tmp_path):
    from latentwm.data.video import write_video

    (root := tmp_path / "videos").mkdir()
    write_video(root / "clip.mp4", np.random.default_rng(0).integers(0, 255, (12, 32, 32, 3), dtype=np.uint8), 10)
    assert (
        main(
            [
                "encode",
                "--preset",
                "tiny",
                "--source",
                "video-folder",
                "--root",
                str(root),
                "--out-dir",
                str(tmp_path / "lat"),
                "--text.name",
                str(tmp_path / "no_such_model"),
            ]
        )
        == 0
    )
    assert LatentCache(tmp_path / "lat").text_encoder is None
