"""The meaning check: is the direction of an imagined motion the direction its sentence names? Scored against the
true future (ceiling), shuffled sentences (chance) and the null-text rollout, on held-out Push-T clips."""

import dataclasses
import zlib

import numpy as np
import pytest
import torch
from tiny_models import frozen_futures, oracle_futures

from latentwm.config import get_preset
from latentwm.data.batch import ClipSample, WorldBatchMetadata
from latentwm.encoders.text import MotionClassEncoder
from latentwm.envs.pusht_language import DIRECTIONS, direction_of, parse_sentence
from latentwm.model.dynamics import DynamicsModel
from latentwm.planning import text_meaning
from latentwm.planning.text_meaning import (
    READOUT_LABELS,
    MeaningCheck,
    direction_accuracy,
    future_sentence,
    wording_readout,
)
from latentwm.rollout import Sampling

CHECK = MeaningCheck(context=2, horizon=2, clips=40, sampling=Sampling(steps=1), batch=8, permutations=5)


def test_scores_are_rates_with_their_references(meaning_setup):
    model, probe, data = meaning_setup
    out = direction_accuracy(model, probe, data, CHECK)
    assert out["clips"] > 0 and out["uniform_chance"] == 1 / 8
    for k in ("accuracy", "chance", "ceiling", "null_text_accuracy"):
        assert 0.0 <= out[k] <= 1.0
    assert sum(v["clips"] for v in out["by_subject"].values()) == out["clips"]
    assert out == direction_accuracy(model, probe, data, CHECK)  # seeded: clip order, noise, shuffles


def test_an_oracle_future_scores_the_ceiling_and_a_frozen_one_scores_right_only(meaning_setup, monkeypatch):
    """Predicting the true future reads exactly as the true frames do (accuracy = ceiling); predicting the last
    context frame again is no motion, direction_of(0, 0) = "right": right only on the sentences that say right."""
    model, probe, data = meaning_setup
    C, H = CHECK.context, CHECK.horizon

    oracle_futures(monkeypatch, C, H)
    out = direction_accuracy(model, probe, data, CHECK)
    assert out["accuracy"] == out["ceiling"] == out["null_text_accuracy"]

    frozen_futures(monkeypatch)
    still = direction_accuracy(model, probe, data, CHECK)
    found = text_meaning._directional_clips(data, CHECK)
    assert direction_of(0.0, 0.0) == DIRECTIONS[0]
    assert still["accuracy"] == pytest.approx(np.mean([d == "right" for _, d, _ in found]))


def test_only_clips_under_one_directional_sentence_are_scored(meaning_setup):
    _, _, data = meaning_setup
    check = dataclasses.replace(CHECK, clips=10_000)
    found = text_meaning._directional_clips(data, check)
    assert found, "the tiny data has directional held-out clips"
    for i, direction, what in found:
        said = future_sentence(data[i], check.context, check.horizon)
        assert said is not None and parse_sentence(said)[1]["direction"] == direction
        assert direction in DIRECTIONS and what in ("block", "pusher")


def _clip(rows: list[int], sentences: tuple[str, ...]) -> ClipSample:
    """A clip whose frame t carries embedding row rows[t] (one-hot), with the metadata's sentences."""
    text = torch.nn.functional.one_hot(torch.tensor(rows), 5).float()
    meta = WorldBatchMetadata(dataset="d", episode_id="e", text=sentences)
    return ClipSample(text=text, text_mask=torch.ones(len(rows), dtype=torch.bool), meta=meta)


def test_the_future_sentence_is_the_one_all_predicted_frames_carry():
    c = _clip([0, 0, 1, 1, 1, 1, 2, 2], ("a", "b", "c"))
    assert future_sentence(c, 2, 4) == "b"  # frames 2..5: one narration
    assert future_sentence(c, 3, 3) == "b" and future_sentence(c, 6, 2) == "c"
    assert future_sentence(c, 4, 3) is None  # frames 4..6 span two narrations
    assert future_sentence(_clip([0, 0, 1, 1, 0, 0], ("a", "b")), 4, 2) is None  # "a" again: which one? not guessed
    gap = _clip([0, 0, 1, 1], ("a", "b"))
    gap.text_mask[0] = False
    assert future_sentence(gap, 2, 2) is None


def test_a_model_without_text_is_refused(meaning_setup):
    _, probe, data = meaning_setup
    with pytest.raises(ValueError, match="text_dim"):
        direction_accuracy(DynamicsModel(get_preset("tiny").model), probe, data, CHECK)


def test_the_pusher_is_read_from_the_predicted_proprio_when_the_model_has_it(meaning_setup):
    """A model with proprio channels: the pusher's position is its own prediction (the tokens' mean proprio,
    denormalized), the block's still the probe's."""
    from latentwm.data.episodes import NormStats
    from latentwm.data.proprio import attach_proprio

    _, probe, data = meaning_setup
    lat = data[0].latents[:2]  # (2, N, D)
    prop = torch.tensor([[1.0, -1.0], [0.0, 0.5]])  # normalized (agent x, y)
    stats = NormStats(np.array([250.0, 260.0]), np.array([100.0, 110.0]), 1)
    pos = text_meaning._positions(attach_proprio(lat, prop), ["pusher", "block"], probe, stats, 2)
    assert np.allclose(pos[0], [350.0, 150.0])  # 1 × 100 + 250, −1 × 110 + 260
    with torch.no_grad():
        want = text_meaning.block_centre(probe.predict_pose(lat[1:]).double().numpy())[0]
    assert np.allclose(pos[1], want)


@pytest.mark.parametrize("style", ["direction", "magnitude"])
def test_wording_readout_is_perfect_for_the_class_and_near_chance_for_noise(style):
    """The motion class itself carries every label to held-out wording exactly; a random vector per sentence (no
    meaning shared between paraphrases) carries nothing beyond chance."""
    exact = wording_readout(MotionClassEncoder(style).embed, style)
    assert set(exact) == set(READOUT_LABELS)
    for name, r in exact.items():
        if style == "magnitude" and name == "class":
            continue  # the factored one-hot of the magnitude style has no row per class: only most labels read
        assert r["ridge_accuracy"] == 1.0 and r["nearest_accuracy"] == 1.0, name
        assert 0 < r["chance"] < 1 and r["heldout"] > 0 and r["classes"] >= 2

    def noise(sentences):
        return np.stack([np.random.default_rng(zlib.crc32(s.encode())).normal(size=32) for s in sentences])

    if style == "magnitude":
        return  # thousands of sentences: the noise case is the direction style's
    blind = wording_readout(noise, style)
    for name, r in blind.items():
        assert r["train_accuracy"] > r["ridge_accuracy"]  # it fits the wording it saw
        assert r["ridge_accuracy"] < r["chance"] + 0.2, name  # and reads new wording near chance
