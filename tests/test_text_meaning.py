"""The meaning check: is the direction of an imagined motion the direction its sentence names? Scored against the
true future (ceiling), shuffled sentences (chance) and the null-text rollout, on held-out Push-T clips."""

import dataclasses

import numpy as np
import pytest
import torch

from latentwm.config import GenerateConfig, get_preset
from latentwm.data.batch import ClipSample, WorldBatchMetadata
from latentwm.data.clip_sets import model_clip_options
from latentwm.data.clips import LatentClipDataset
from latentwm.data.sources.pusht import generate_pusht
from latentwm.encoders.text import save_tiny_text_model
from latentwm.envs.pusht_language import DIRECTIONS, direction_of, parse_sentence
from latentwm.model.dynamics import DynamicsModel
from latentwm.planning import text_meaning
from latentwm.planning.state_probe import StateProbe
from latentwm.planning.text_meaning import MeaningCheck, direction_accuracy, future_sentence
from latentwm.rollout import Sampling

E = 16


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from latentwm.cli import main

    tmp = tmp_path_factory.mktemp("meaning")
    text = save_tiny_text_model(tmp / "text", hidden=E)
    generate_pusht(GenerateConfig(out_dir=str(tmp / "eps"), num_episodes=6, max_steps=60, seed=5), show_progress=False)
    args = ["encode", "--preset", "tiny", "--root", str(tmp / "eps"), "--out-dir", str(tmp / "cache")]
    assert main([*args, "--text.name", text]) == 0
    exp = get_preset("tiny").replace(model__text_dim=E, data__eval_fraction=0.5)
    data = LatentClipDataset(str(tmp / "cache"), 8, "eval", model_clip_options(exp))
    torch.manual_seed(0)
    model = DynamicsModel(exp.model).eval().requires_grad_(False)
    with torch.no_grad():  # off the zero-initialized head: predictions that depend on their inputs
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    N, D = data[0].latents.shape[1:]
    probe = StateProbe(N, D, 4, 32, torch.full((4,), 256.0), torch.full((4,), 100.0))
    with torch.no_grad():
        for p in probe.parameters():
            p.add_(0.5 * torch.randn_like(p))  # a probe that reads different frames differently
    return model, probe, data


CHECK = MeaningCheck(context=2, horizon=2, clips=40, sampling=Sampling(steps=1), batch=8, permutations=5)


def test_scores_are_rates_with_their_references(setup):
    model, probe, data = setup
    out = direction_accuracy(model, probe, data, CHECK)
    assert out["clips"] > 0 and out["uniform_chance"] == 1 / 8
    for k in ("accuracy", "chance", "ceiling", "null_text_accuracy"):
        assert 0.0 <= out[k] <= 1.0
    assert sum(v["clips"] for v in out["by_subject"].values()) == out["clips"]
    assert out == direction_accuracy(model, probe, data, CHECK)  # seeded: clip order, noise, shuffles


def test_an_oracle_future_scores_the_ceiling_and_a_frozen_one_scores_right_only(setup, monkeypatch):
    """Predicting the true future reads exactly as the true frames do (accuracy = ceiling); predicting the last
    context frame again is no motion, direction_of(0, 0) = "right": right only on the sentences that say right."""
    model, probe, data = setup
    C, H = CHECK.context, CHECK.horizon

    def oracle(model, context, horizon, cond=None, sampling=None, *, noise=None, generator=None, cache=None):
        return oracle.future  # the true frames after the context of the batch just collated

    real_collate = text_meaning.collate

    def remember(samples, action_dim):
        b = real_collate(samples, action_dim)
        oracle.future = b.latents[:, C : C + H]
        return b

    monkeypatch.setattr(text_meaning, "collate", remember)
    monkeypatch.setattr(text_meaning, "rollout", oracle)
    out = direction_accuracy(model, probe, data, CHECK)
    assert out["accuracy"] == out["ceiling"] == out["null_text_accuracy"]

    def frozen(model, context, horizon, cond=None, sampling=None, *, noise=None, generator=None, cache=None):
        return context[:, -1:].expand(-1, horizon, -1, -1)

    monkeypatch.setattr(text_meaning, "rollout", frozen)
    still = direction_accuracy(model, probe, data, CHECK)
    found = text_meaning._directional_clips(data, CHECK)
    assert direction_of(0.0, 0.0) == DIRECTIONS[0]
    assert still["accuracy"] == pytest.approx(np.mean([d == "right" for _, d, _ in found]))


def test_only_clips_under_one_directional_sentence_are_scored(setup):
    _, _, data = setup
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


def test_a_model_without_text_is_refused(setup):
    _, probe, data = setup
    with pytest.raises(ValueError, match="text_dim"):
        direction_accuracy(DynamicsModel(get_preset("tiny").model), probe, data, CHECK)


def test_the_pusher_is_read_from_the_predicted_proprio_when_the_model_has_it(setup):
    """A model with proprio channels: the pusher's position is its own prediction (the tokens' mean proprio,
    denormalized), the block's still the probe's."""
    from latentwm.data.episodes import NormStats
    from latentwm.data.proprio import attach_proprio

    _, probe, data = setup
    lat = data[0].latents[:2]  # (2, N, D)
    prop = torch.tensor([[1.0, -1.0], [0.0, 0.5]])  # normalized (agent x, y)
    stats = NormStats(np.array([250.0, 260.0]), np.array([100.0, 110.0]), 1)
    pos = text_meaning._positions(attach_proprio(lat, prop), ["pusher", "block"], probe, stats, 2)
    assert np.allclose(pos[0], [350.0, 150.0])  # 1 × 100 + 250, −1 × 110 + 260
    with torch.no_grad():
        want = text_meaning.block_centre(probe.predict_pose(lat[1:]).double().numpy())[0]
    assert np.allclose(pos[1], want)
