"""Push-T language from the simulator state: words match what the rendered frames show, paraphrase hold-out,
contiguous spans, determinism, and narrations on generated / old (narration-less) episodes."""

import math

import numpy as np
import pytest
from pusht_states import state_at, states_for

from latentwm.data.episodes import load_episode, narrations_in, save_episode
from latentwm.envs import pusht_language as L

BLOCK_RGB = (119, 136, 153)  # gym-pusht's LightSlateGray tee


@pytest.fixture(scope="module")
def env():
    pytest.importorskip("gym_pusht")
    from latentwm.envs.pusht import PushTEnv

    e = PushTEnv(image_size=96)
    yield e
    e.close()


def _block_mask(frame):
    return np.abs(frame.astype(int) - BLOCK_RGB).sum(-1) < 40


def _agent_row_col(frame):  # the blue pusher: strongly blue pixels
    f = frame.astype(int)
    r, c = np.nonzero((f[..., 2] > 200) & (f[..., 0] < 120))
    return r.mean(), c.mean()


def test_image_orientation_matches_the_words(env):
    """State y grows DOWN the rendered frame, x to the right; the words say so."""
    f_hi, _ = env.reset(state=state_at(agent=(100.0, 100.0)))
    f_lo, _ = env.reset(state=state_at(agent=(100.0, 400.0)))
    f_rt, _ = env.reset(state=state_at(agent=(400.0, 100.0)))
    (r_hi, c_hi), (r_lo, _), (_, c_rt) = _agent_row_col(f_hi), _agent_row_col(f_lo), _agent_row_col(f_rt)
    assert r_lo > r_hi + 40 and c_rt > c_hi + 40  # larger y: lower in the image; larger x: further right
    s0, s1 = state_at(agent=(100.0, 100.0)), state_at(agent=(100.0, 400.0))
    assert L.describe_segment(s0, s1) == ("pusher_move", {"direction": "down"})
    assert L.describe_segment(s0, state_at(agent=(400.0, 100.0))) == ("pusher_move", {"direction": "right"})
    # the block: its drawn centre follows the centre of gravity, and moving it +y / +x reads "down" / "right"
    a, b = state_at(cog=(256.0, 256.0)), state_at(cog=(300.0, 300.0))
    ma, mb = _block_mask(env.reset(state=a)[0]), _block_mask(env.reset(state=b)[0])
    ra, ca = np.nonzero(ma)
    rb, cb = np.nonzero(mb)
    assert rb.mean() > ra.mean() + 5 and cb.mean() > ca.mean() + 5  # drawn lower and to the right
    assert abs(ca.mean() - 256 * 96 / 512) < 1.5 and abs(ra.mean() - 256 * 96 / 512) < 1.5
    assert L.describe_segment(a, b) == ("block_move", {"direction": "down_right"})
    assert L.describe_segment(a, state_at(cog=(256.0, 200.0))) == ("block_move", {"direction": "up"})
    assert L.describe_segment(a, state_at(cog=(200.0, 256.0))) == ("block_move", {"direction": "left"})
    text = L.sentence("block_move", {"direction": "down_right"}, 0)
    assert text == "push the T block down and to the right"


def test_growing_angle_turns_the_t_clockwise_in_the_frame(env):
    cog = np.array([256.0, 300.0]) * 96 / 512
    m0 = _block_mask(env.reset(state=state_at(angle=0.0))[0])
    r, c = np.nonzero(m0)
    dc, dr = c + 0.5 - cog[0], r + 0.5 - cog[1]
    for angle in (0.4, -0.4):
        m1 = _block_mask(env.reset(state=state_at(angle=angle))[0])
        fit = {}
        for name, phi in (("cw", 0.4), ("ccw", -0.4)):  # (col right, row down): phi > 0 is clockwise on screen
            nc = np.floor(cog[0] + math.cos(phi) * dc - math.sin(phi) * dr).astype(int)
            nr = np.floor(cog[1] + math.sin(phi) * dc + math.cos(phi) * dr).astype(int)
            fit[name] = m1[nr, nc].mean()
        seen = "clockwise" if fit["cw"] > fit["ccw"] else "counterclockwise"
        assert max(fit.values()) > 2 * min(fit.values())
        assert L.describe_segment(state_at(angle=0.0), state_at(angle=angle)) == ("block_rotate", {"sense": seen})
    assert seen == "counterclockwise"  # the last one, angle -0.4


def test_rotation_sense_wraps_and_combines():
    assert L.describe_segment(state_at(angle=0.1), state_at(angle=-0.2)) == (
        "block_rotate",
        {"sense": "counterclockwise"},
    )
    assert L.describe_segment(state_at(angle=2 * math.pi - 0.1), state_at(angle=0.2)) == (
        "block_rotate",
        {"sense": "clockwise"},
    )
    assert L.describe_segment(state_at(angle=0.0), state_at(angle=math.radians(8))) == ("pusher_still", {})
    tid, slots = L.describe_segment(state_at(cog=(256.0, 300.0)), state_at(cog=(226.0, 270.0), angle=0.5))
    assert (tid, slots) == ("block_move_rotate", {"direction": "up_left", "sense": "clockwise"})
    assert L.sentence(tid, slots, 1) == "slide the block up and left and turn it clockwise"


def test_pusher_only_motion_and_still():
    s0 = state_at(agent=(100.0, 100.0))
    assert L.describe_segment(s0, state_at(agent=(60.0, 140.0))) == ("pusher_move", {"direction": "down_left"})
    assert L.describe_segment(s0, state_at(agent=(130.0, 70.0))) == ("pusher_move", {"direction": "up_right"})
    assert L.describe_segment(s0, state_at(agent=(103.0, 102.0))) == ("pusher_still", {})
    # the block nudged below the threshold does not count as moved
    assert L.describe_segment(s0, state_at(agent=(100.0, 140.0), cog=(259.0, 303.0)))[0] == "pusher_move"


def test_heldout_paraphrases_never_train_and_all_reachable():
    train, held = set(L.train_sentences()), set(L.heldout_sentences())
    assert not train & held
    assert all(len(p) >= 4 for p in L.PARAPHRASES.values()) and set(L.PARAPHRASES) == set(L.SLOTS)
    assert len(train) + len(held) == sum(len(p) * len(L.slot_values(t)) for t, p in L.PARAPHRASES.items())
    seen_train, seen_held = set(), set()
    for tid in L.TEMPLATES:
        for slots in L.slot_values(tid):
            s0, s1 = states_for(tid, slots)
            assert L.describe_segment(s0, s1) == (tid, slots)
            for seed in range(40):
                ((_, _, t),) = L.narrate(np.stack([s0, s1]), seed=seed)[0]
                ((_, _, h),) = L.narrate(np.stack([s0, s1]), seed=seed)[1]
                assert L.parse_sentence(t)[:2] == L.parse_sentence(h)[:2] == (tid, slots)
                seen_train.add(t)
                seen_held.add(h)
    assert seen_train == train and seen_held == held  # only training words in training, every held-out reachable
    assert L.parse_sentence("push the block somewhere") is None


def test_spans_cover_the_episode_contiguously():
    for T in (1, 2, 3, 19, 20, 21, 22, 39, 40, 41, 200):
        spans = L.segments(T, 20)
        assert spans[0][0] == 0 and spans[-1][1] == T
        assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
        assert all(2 <= e - s <= 21 for s, e in spans) or T == 1
        states = np.tile(state_at(), (T, 1))
        train, held = L.narrate(states)
        assert [x[:2] for x in train] == [x[:2] for x in held] == [list(s) for s in spans]
    assert L.segments(41, 20) == [(0, 20), (20, 41)] and L.segments(42, 20)[-1] == (40, 42)
    with pytest.raises(ValueError):
        L.segments(10, 1)


def test_narrate_is_deterministic_and_seeded():
    rng = np.random.default_rng(0)
    states = np.cumsum(rng.normal(0, 4, (200, 7)), axis=0) + 256
    a, b = L.narrate(states, seed=3), L.narrate(states, seed=3)
    assert a == b
    c = L.narrate(states, seed=4)
    assert [L.parse_sentence(x[2])[:2] for x in a[0]] == [L.parse_sentence(x[2])[:2] for x in c[0]]
    assert [x[2] for x in a[0]] != [x[2] for x in c[0]]  # other paraphrases, same meaning
    assert L.narrate(states[:, :5], seed=3) == a


def test_generated_and_old_episodes_carry_identical_narrations(tmp_path):
    pytest.importorskip("gym_pusht")
    from latentwm.config import GenerateConfig
    from latentwm.data.sources.pusht import NARRATION_SEGMENT, generate_pusht, load_pusht

    (path,) = generate_pusht(
        GenerateConfig(out_dir=str(tmp_path / "new"), num_episodes=1, max_steps=41, seed=2), show_progress=False
    )
    ep = load_episode(path)
    assert ep.text == []
    train, held = ep.extras["narrations"], ep.extras["narrations_heldout"]
    assert [x[:2] for x in train] == [x[:2] for x in held] == [[0, 20], [20, 41]] and NARRATION_SEGMENT == 20
    assert set(x[2] for x in train) <= set(L.train_sentences())
    assert set(x[2] for x in held) <= set(L.heldout_sentences())
    assert (train, held) == L.narrate(ep.states, NARRATION_SEGMENT, seed=ep.extras["seed"])
    assert narrations_in(ep.extras, 0, 40) == list(dict.fromkeys([train[0][2], train[1][2]]))  # a 40-frame clip
    assert narrations_in(ep.extras, 25, 30) == [train[1][2]]
    # an episode written before narrations existed: the loader computes the same ones from its states
    old = load_episode(path)
    old.extras = {k: v for k, v in old.extras.items() if not k.startswith("narrations")}
    save_episode(old, tmp_path / "old" / path.name)
    assert "narrations" not in load_episode(tmp_path / "old" / path.name).extras
    ((key, loader),) = load_pusht(tmp_path / "old")
    assert key == "pusht/episode_000000" and loader().extras == ep.extras and loader().text == []
    ((_, loader_new),) = load_pusht(tmp_path / "new")
    assert loader_new().extras == ep.extras
