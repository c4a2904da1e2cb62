"""The "magnitude" narration style of Push-T: sentences whose slots say how far and to where (language that can carry
a goal), beside today's direction sentences (unchanged). Words from crafted states, held-out paraphrases, parsing,
the pusht reader option through `latentwm encode` (recorded in cache.json), the motion-class control for it, and the
magnitude part of the meaning check."""

import json
import math

import numpy as np
import pytest
from pusht_states import state_at, states_for
from tiny_models import frozen_futures, meaning_model_and_probe, oracle_futures

from latentwm.config import ConfigError, EncodeConfig, GenerateConfig, TextEncoderConfig, get_preset
from latentwm.envs import pusht_language as L

MAG = "magnitude"


def test_magnitude_words_from_crafted_states():
    """Distances to the nearest 20 px, angles to the nearest 15 degrees, directions and senses as the frames show
    them (state y grows down; a growing angle turns the T clockwise), and where the pusher ends by the block."""
    c0 = (256.0, 300.0)
    moved = L.describe_segment(state_at(cog=c0), state_at(cog=(213.0, 300.0)), MAG)  # 43 px left
    assert moved == ("block_move_by", {"direction": "left", "distance": "40"})
    assert L.sentence(*moved, 0) == "push the T block about 40 px to the left"
    turned = L.describe_segment(state_at(angle=0.0), state_at(angle=math.radians(32)), MAG)
    assert turned == ("block_rotate_by", {"sense": "clockwise", "angle": "30"})  # growing angle: clockwise as seen
    assert L.sentence(*turned, 0) == "rotate the block about 30 degrees clockwise"
    assert (
        L.describe_segment(state_at(angle=0.0), state_at(angle=math.radians(-32)), MAG)[1]["sense"]
        == "counterclockwise"
    )
    both = L.describe_segment(state_at(cog=c0), state_at(cog=(226.0, 270.0), angle=0.5), MAG)  # 42.4 px up-left, 28.6°
    assert both == (
        "block_move_rotate_by",
        {"direction": "up_left", "distance": "40", "sense": "clockwise", "angle": "30"},
    )
    assert (
        L.sentence(*both, 0)
        == "push the T block about 40 px up and to the left while rotating it about 30 degrees clockwise"
    )
    # the pusher alone: it ends 70 px left of the block's centre (within NEAR_BLOCK_PX): "to the block's left side"
    side = L.describe_segment(state_at(agent=(60.0, 60.0), cog=c0), state_at(agent=(186.0, 300.0), cog=c0), MAG)
    assert side == ("pusher_to_block", {"side": "left"}) and 70 < L.NEAR_BLOCK_PX
    assert L.sentence(*side, 0) == "move the pusher to the block's left side"
    top = L.describe_segment(state_at(agent=(60.0, 60.0), cog=c0), state_at(agent=(266.0, 230.0), cog=c0), MAG)
    assert top == ("pusher_to_block", {"side": "top"})  # smaller y: above the block in the image
    far = L.describe_segment(
        state_at(agent=(100.0, 100.0)), state_at(agent=(100.0, 223.0)), MAG
    )  # 123 px down, 156 px off
    assert far == ("pusher_move_by", {"direction": "down", "distance": "120"})
    assert L.sentence(*far, 0) == "move the pusher about 120 px down"
    assert L.describe_segment(state_at(agent=(100.0, 100.0)), state_at(agent=(103.0, 102.0)), MAG) == (
        "pusher_still",
        {},
    )


def test_magnitude_bins_round_to_the_nearest_and_stay_within_their_range():
    assert L.magnitude_bin(43, 20, 200) == 40 and L.magnitude_bin(50, 20, 200) == 60  # halves round up
    assert L.magnitude_bin(9.9, 20, 200) == 0 and L.magnitude_bin(500, 20, 200) == 200
    c0 = np.array([256.0, 300.0])
    nudged = L.describe_segment(state_at(cog=c0), state_at(cog=c0 + (9.0, 0.0)), MAG)  # just above BLOCK_MOVE_PX
    assert nudged == ("block_move_by", {"direction": "right", "distance": "20"})  # never "about 0 px"
    assert L.describe_segment(state_at(angle=0.0), state_at(angle=math.radians(11)), MAG)[1]["angle"] == "15"
    far = L.describe_segment(state_at(cog=(60.0, 300.0)), state_at(cog=(320.0, 300.0)), MAG)  # 260 px: the block's cap
    assert far[1]["distance"] == str(L.BLOCK_DISTANCE_CAP_PX)
    run = L.describe_segment(
        state_at(agent=(10.0, 10.0), cog=(60.0, 480.0)), state_at(agent=(510.0, 10.0), cog=(60.0, 480.0)), MAG
    )
    assert run == ("pusher_move_by", {"direction": "right", "distance": str(L.PUSHER_DISTANCE_CAP_PX)})
    assert L.describe_segment(state_at(angle=0.0), state_at(angle=math.pi - 0.01), MAG)[1]["angle"] == "180"


def test_both_styles_pick_the_same_kind_of_template():
    """The same thresholds decide what moved: each direction template has its magnitude counterpart."""
    counterpart = {
        "block_move": {"block_move_by"},
        "block_rotate": {"block_rotate_by"},
        "block_move_rotate": {"block_move_rotate_by"},
        "pusher_move": {"pusher_move_by", "pusher_to_block"},
        "pusher_still": {"pusher_still"},
    }
    for tid in L.TEMPLATES:
        for slots in L.slot_values(tid):
            s0, s1 = states_for(tid, slots)
            mtid, mslots = L.describe_segment(s0, s1, MAG)
            assert mtid in counterpart[tid]
            assert {k: v for k, v in mslots.items() if k in slots} == slots  # direction and sense agree


def test_magnitude_templates_hold_out_paraphrases_and_parse_back():
    """Every sentence of every template / slot filling / paraphrase (both styles) parses back to itself, no two
    meanings share words, and held-out paraphrases never appear in training narrations."""
    assert set(L.MAGNITUDE_PARAPHRASES) == set(L.MAGNITUDE_SLOTS) == set(L.MAGNITUDE_TEMPLATES)
    assert all(len(p) >= 5 for p in L.MAGNITUDE_PARAPHRASES.values())
    n = 0
    for tid in dict.fromkeys([*L.TEMPLATES, *L.MAGNITUDE_TEMPLATES]):
        for slots in L.slot_values(tid):
            for p in range(len(L.train_paraphrases(tid)) + len(L.heldout_paraphrases(tid))):
                assert L.parse_sentence(L.sentence(tid, slots, p)) == (tid, slots, p)
                n += 1
    assert len(L._parse_table()) == n  # injective: one meaning per wording
    assert L.parse_sentence("push the T block about 40 px to the left") == (
        "block_move_by",
        {"direction": "left", "distance": "40"},
        0,
    )
    assert L.parse_sentence("push the T block about 41 px to the left") is None
    train, held = set(L.train_sentences(MAG)), set(L.heldout_sentences(MAG))
    assert not train & held and len(train) == 2 * len(held)
    rng = np.random.default_rng(1)
    for seed in range(20):  # random walks of the block and the pusher: every span narrated in both lists, one meaning
        states = np.cumsum(rng.normal(0, 6, (120, 7)), axis=0) + 256
        tr, he = L.narrate(states, 20, seed=seed, style=MAG)
        assert {x[2] for x in tr} <= train and {x[2] for x in he} <= held
        assert [L.parse_sentence(a[2])[:2] for a in tr] == [L.parse_sentence(b[2])[:2] for b in he]
        assert all(L.parse_sentence(a[2])[0] in L.MAGNITUDE_TEMPLATES for a in tr)
    with pytest.raises(ValueError, match="narration style"):
        L.narrate(states, 20, style="loud")


def test_the_default_style_is_unchanged():
    """Today's sentences, word for word (caches, tests and running experiments hold them)."""
    rng = np.random.default_rng(0)
    states = np.cumsum(rng.normal(0, 4, (200, 7)), axis=0) + 256
    train, held = L.narrate(states, seed=3)
    assert (train, held) == L.narrate(states, 20, 3, style="direction")
    assert [x[2] for x in train[:3]] == [
        "the T-shaped block moves to the right and turns clockwise",
        "the T-shaped block moves to the right and turns clockwise",
        "the T-shaped block moves to the upper right and turns counterclockwise",
    ]
    assert held[4] == [80, 100, "the block slides left, spinning counterclockwise"]
    assert len(L.train_sentences()) == 140 and len(L.heldout_sentences()) == 70
    assert L.train_sentences()[:2] == ["push the T block to the right", "slide the T-shaped block right"]
    assert L.heldout_sentences()[-1] == "hold the agent still" and L.train_sentences() == L.train_sentences("direction")
    assert L.describe_segment(state_at(cog=(256.0, 300.0)), state_at(cog=(213.0, 300.0))) == (
        "block_move",
        {"direction": "left"},
    )


def test_motion_class_control_for_magnitude_sentences():
    from latentwm.encoders.text import (
        MOTION_CLASS,
        MOTION_CLASS_MAGNITUDE,
        MotionClassEncoder,
        TextEncoder,
        open_text_encoder,
    )

    old = MotionClassEncoder()
    assert old.label == "pusht-motion-class#be2d49159d85c1cd" and old.dim == 35  # the label caches record
    assert open_text_encoder(MOTION_CLASS).label == old.label
    enc = TextEncoder.from_config(TextEncoderConfig(name=MOTION_CLASS_MAGNITUDE))
    assert isinstance(enc, MotionClassEncoder) and enc.label.startswith(MOTION_CLASS_MAGNITUDE + "#")
    assert open_text_encoder(enc.label.rpartition("#")[0]).label == enc.label != old.label  # rebuilt from its label
    slots40 = {"direction": "left", "distance": "40"}
    same = [L.sentence("block_move_by", slots40, p) for p in range(6)]  # held-out paraphrases too
    x = enc.embed([*same, L.sentence("block_move_by", {"direction": "left", "distance": "60"}, 0)])
    assert (x[:6] == x[0]).all() and x.shape == (7, enc.dim)
    differ = np.nonzero(x[0] != x[6])[0]
    assert [enc.classes[i] for i in differ] == [("distance", "40"), ("distance", "60")]  # only the distance group
    every = L.train_sentences(MAG) + L.heldout_sentences(MAG)
    rows = enc.embed(every)
    want = [1 + len(L.parse_sentence(t)[1]) for t in every]  # the template and one value per slot
    assert (rows.sum(1) == want).all() and set(np.unique(rows)) == {0.0, 1.0}
    with pytest.raises(ConfigError, match="pusht-motion-class for it"):
        enc.embed(["push the T block to the left"])
    with pytest.raises(ConfigError, match="pusht-motion-class-magnitude for it"):
        old.embed(["push the T block about 40 px to the left"])
    assert enc.embed(["nothing moves"]).sum() == 1 == old.embed(["nothing moves"]).sum()  # shared by both styles


@pytest.fixture(scope="module")
def episodes(tmp_path_factory):
    pytest.importorskip("gym_pusht")
    from latentwm.data.sources.pusht import generate_pusht

    tmp = tmp_path_factory.mktemp("magnitude")
    generate_pusht(GenerateConfig(out_dir=str(tmp / "eps"), num_episodes=8, max_steps=80, seed=5), show_progress=False)
    return tmp


def test_the_reader_option_selects_the_style_and_the_cache_records_it(episodes, tmp_path, capsys):
    from latentwm.cli import main
    from latentwm.data.latent_cache import LatentCache
    from latentwm.encoders.encode import source_items
    from latentwm.encoders.text import MOTION_CLASS_MAGNITUDE

    eps = str(episodes / "eps")
    args = ["encode", "--preset", "tiny", "--root", eps, "--text.name", MOTION_CLASS_MAGNITUDE]
    assert main([*args, "--out-dir", str(tmp_path / "mag"), "--options", "narration=magnitude"]) == 0
    info = json.loads((tmp_path / "mag" / "cache.json").read_text())
    assert info["narration"] == MAG and info["text_encoder"].startswith(MOTION_CLASS_MAGNITUDE + "#")
    cache = LatentCache(tmp_path / "mag")
    for i in range(len(cache)):
        extras = cache.raw(i)["meta"]["extras"]
        assert {L.parse_sentence(x[2])[0] for x in extras["narrations"]} <= set(L.MAGNITUDE_TEMPLATES)
        assert {x[2] for x in extras["narrations_heldout"]} <= set(L.heldout_sentences(MAG))
    # the default reads the stored direction sentences, and says so
    assert (
        main(["encode", "--preset", "tiny", "--root", eps, "--out-dir", str(tmp_path / "dir"), "--text.name", ""]) == 0
    )
    assert json.loads((tmp_path / "dir" / "cache.json").read_text())["narration"] == "direction"
    capsys.readouterr()
    # a cache is never mixed: the magnitude cache refuses a direction-style encode into it
    assert main([*args, "--out-dir", str(tmp_path / "mag")]) == 2
    err = capsys.readouterr().err
    assert "narration" in err and "'magnitude'" in err and "'direction'" in err
    # a bad value or another option: one line naming the option
    assert main([*args, "--out-dir", str(tmp_path / "bad"), "--options", "narration=loud"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "narration" in err and "'loud'" in err
    with pytest.raises(ConfigError, match="no option segment"):
        source_items(EncodeConfig(source="pusht", root=eps, options="segment=3"))
    with pytest.raises(ConfigError, match="option narration must be one of direction, magnitude"):
        source_items(EncodeConfig(source="pusht", root=eps, options="narration=loud"))


# ---- the meaning check on magnitude sentences ---------------------------------------------------------------------

E = 16


@pytest.fixture(scope="module")
def magnitude_setup(episodes):
    from latentwm.cli import main
    from latentwm.data.clip_sets import model_clip_options
    from latentwm.data.clips import LatentClipDataset
    from latentwm.encoders.text import save_tiny_text_model

    text = save_tiny_text_model(episodes / "text", hidden=E)
    args = ["encode", "--preset", "tiny", "--root", str(episodes / "eps"), "--out-dir", str(episodes / "cache")]
    assert main([*args, "--text.name", text, "--options", "narration=magnitude"]) == 0
    exp = get_preset("tiny").replace(model__text_dim=E, data__eval_fraction=0.5)
    data = LatentClipDataset(str(episodes / "cache"), 4, "eval", model_clip_options(exp))  # context + horizon
    model, probe = meaning_model_and_probe(exp, data)
    return model, probe, data


def _check():
    from latentwm.planning.text_meaning import MeaningCheck
    from latentwm.rollout import Sampling

    return MeaningCheck(context=2, horizon=2, clips=40, sampling=Sampling(steps=1), batch=8, permutations=5)


def test_magnitude_scores_are_rates_over_the_clips_that_name_one(magnitude_setup, meaning_setup):
    from latentwm.planning import text_meaning
    from latentwm.planning.text_meaning import direction_accuracy

    model, probe, data = magnitude_setup
    out = direction_accuracy(model, probe, data, _check())
    found = text_meaning._scored_clips(data, _check())
    assert out["magnitude_clips"] == sum(t.distance is not None for t in found) > 0
    assert out["angle_clips"] == sum(t.angle is not None for t in found) > 0
    for k in ("accuracy", "chance", "ceiling", "null_text_accuracy"):
        assert 0.0 <= out[f"magnitude_{k}"] <= 1.0 and 0.0 <= out[f"angle_{k}"] <= 1.0
    assert out["clips"] == sum(t.direction is not None for t in found)  # the direction part as before
    assert out == direction_accuracy(model, probe, data, _check())  # seeded
    # direction-style data: exactly the keys it had
    d_model, d_probe, d_data = meaning_setup  # conftest's direction-style cache
    keys = set(direction_accuracy(d_model, d_probe, d_data, _check()))
    assert keys == {
        "accuracy",
        "chance",
        "uniform_chance",
        "ceiling",
        "null_text_accuracy",
        "clips",
        "by_subject",
        "stderr",
    }


def test_an_oracle_future_scores_the_magnitude_ceiling_and_a_frozen_one_the_smallest_bin(magnitude_setup, monkeypatch):
    """The true future reads as the true frames (accuracy = ceiling); no motion rounds to 0, within one bin only of
    the smallest distance (20 px) and the smallest angle (15 degrees)."""
    from latentwm.planning import text_meaning
    from latentwm.planning.text_meaning import direction_accuracy

    model, probe, data = magnitude_setup
    check = _check()
    C, H = check.context, check.horizon

    oracle_futures(monkeypatch, C, H)
    out = direction_accuracy(model, probe, data, check)
    for k in ("magnitude", "angle"):
        assert out[f"{k}_accuracy"] == out[f"{k}_ceiling"] == out[f"{k}_null_text_accuracy"]

    frozen_futures(monkeypatch)
    still = direction_accuracy(model, probe, data, check)
    found = text_meaning._scored_clips(data, check)
    dist = [t.distance for t in found if t.distance is not None]
    angle = [t.angle for t in found if t.angle is not None]
    assert still["magnitude_accuracy"] == pytest.approx(np.mean([d == L.DISTANCE_BIN_PX for d in dist]))
    assert still["angle_accuracy"] == pytest.approx(np.mean([a == L.ANGLE_BIN_DEG for a in angle]))


@pytest.mark.parametrize("style", L.NARRATION_STYLES)
def test_the_change_that_made_a_sentence_always_fits_it(style):
    """Random state pairs (moves up to 300 px, turns up to 180°, pushers anywhere): the words describing the change
    fit it in every paraphrase, so a reached goal state always passes the words' test."""
    rng = np.random.default_rng(0)
    for _ in range(300):
        s0 = state_at(agent=rng.uniform(20, 490, 2), cog=rng.uniform(100, 400, 2), angle=rng.uniform(-3, 3))
        scale = rng.choice([3.0, 30.0, 300.0])
        s1 = state_at(
            agent=np.clip(s0[:2] + rng.normal(0, scale, 2), 0, 512),
            cog=L.block_centre(s0) + rng.normal(0, scale / 3, 2) * rng.integers(0, 2),
            angle=s0[4] + rng.normal(0, 0.6) * rng.integers(0, 2),
        )
        tid, slots = L.describe_segment(s0, s1, style)
        for p in range(len(L.train_paraphrases(tid)) + L.HELDOUT_PER_TEMPLATE):
            assert L.sentence_fits(L.sentence(tid, slots, p), s0, s1) is True, (tid, slots)


def test_sentence_fits_reads_direction_distance_angle_and_side():
    c0 = np.array([256.0, 300.0])
    s0 = state_at(agent=(80.0, 80.0), cog=c0)
    left40 = "push the T block about 40 px to the left"
    for dx, fits in ((-43, True), (-58, True), (-25, True), (-75, False), (43, False), (-5, False)):
        assert L.sentence_fits(left40, s0, state_at(agent=(80.0, 80.0), cog=c0 + (dx, 0))) is fits, dx
    assert not L.sentence_fits(left40, s0, state_at(agent=(80.0, 80.0), cog=c0 + (-30, -30)))  # up-left
    turn30 = "rotate the block about 30 degrees clockwise"
    assert L.sentence_fits(turn30, s0, state_at(agent=(80.0, 80.0), cog=c0, angle=math.radians(35)))
    assert not L.sentence_fits(turn30, s0, state_at(agent=(80.0, 80.0), cog=c0, angle=math.radians(-35)))
    assert not L.sentence_fits(turn30, s0, state_at(agent=(80.0, 80.0), cog=c0, angle=math.radians(70)))
    # what the words do not name is free: the block may also turn, the pusher go anywhere
    assert L.sentence_fits(left40, s0, state_at(agent=(400.0, 400.0), cog=c0 + (-40, 0), angle=0.5))
    side = "move the pusher to the block's left side"
    assert L.sentence_fits(side, s0, state_at(agent=(c0[0] - 60, c0[1]), cog=c0))
    assert not L.sentence_fits(side, s0, state_at(agent=(c0[0] + 60, c0[1]), cog=c0))
    assert not L.sentence_fits(side, s0, state_at(agent=(c0[0] - 150, c0[1]), cog=c0))  # not next to it
    assert L.sentence_fits("push the T block to the left", s0, state_at(agent=(80.0, 80.0), cog=c0 + (-90, 0)))
    assert L.sentence_fits("the pusher stays still", s0, s0)
    assert not L.sentence_fits("the pusher stays still", s0, state_at(agent=(80.0, 120.0), cog=c0))
    assert L.sentence_fits("make a cup of tea", s0, s0) is None
