"""Timed language for Push-T, generated from the simulator state: what a viewer of the frames sees happen.

Push-T has no language, but the model is getting a text condition. Its episodes record the full state, so each stretch
of frames can be described by rule: the T block moved / turned / both, or else where the pusher (the agent) went.
The sentences take the form EPIC-KITCHENS narrations already take here (`Episode.extras["narrations"]`: a list of
`[first_frame, end_frame, text]` spans, end exclusive, frame indices of the stored frames). Every template has several
paraphrases, and the last `HELDOUT_PER_TEMPLATE` of each are held out: they never appear in training narrations.
They only appear in a parallel list (`extras["narrations_heldout"]`, same spans) for testing whether a model
conditioned on text follows a wording it never saw.

Image orientation, checked by rendering `PushTEnv` frames (tests/test_pusht_language.py repeats the checks):
- state x grows to the right of the image and state y grows DOWN it (agent at y = 100 is drawn near the top row,
  at y = 400 near the bottom; the block's drawn centre follows its centre of gravity, x → column, y → row).
  So "up" in the words means decreasing state y.
- a growing block angle turns the T CLOCKWISE as seen in the frame (the frame at angle +0.4 about the centre of
  gravity matches the angle-0 frame turned clockwise, not counterclockwise). This follows from y pointing down.

Shapes: a state is (≥5,) `[agent x, agent y, block x, block y, block angle, (agent vx, agent vy)]` in arena pixels
(512 × 512) and radians (envs/pusht.py); `narrate` takes the episode's states (T, 7) (or (T, 5)); only entries 0-4 are
read. The block's position is its body origin (the middle of the bar's top edge); its motion is measured at its
centre of gravity, body frame (0, 45) rotated by the angle (what the eye tracks, and what ScriptedPusher pushes).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

BLOCK_MOVE_PX = 8.0  # centre-of-gravity displacement (arena px, 512 wide) above which the block "moved"
BLOCK_TURN_DEG = 10.0  # wrapped angle change above which the block "turned"
PUSHER_STILL_PX = 5.0  # agent displacement below which the pusher "stays still"
TEE_COG = (0.0, 45.0)  # gym-pusht's tee: centre of gravity in the body frame
HELDOUT_PER_TEMPLATE = 2  # the last paraphrases of every template: evaluation only

DIRECTIONS = ("right", "up_right", "up", "up_left", "left", "down_left", "down", "down_right")
"""The 8 compass sectors of the image, counterclockwise on screen from "right" (45° each, centred on the axes)."""
SENSES = ("clockwise", "counterclockwise")

DIRECTION_FORMS = {  # slot form -> direction -> words (as the frames show it)
    "dir": (
        "to the right",
        "up and to the right",
        "up",
        "up and to the left",
        "to the left",
        "down and to the left",
        "down",
        "down and to the right",
    ),
    "dir_short": ("right", "up and right", "up", "up and left", "left", "down and left", "down", "down and right"),
    "toward": (
        "toward the right",
        "toward the top right",
        "toward the top",
        "toward the top left",
        "toward the left",
        "toward the bottom left",
        "toward the bottom",
        "toward the bottom right",
    ),
    "corner": (
        "to the right",
        "to the upper right",
        "upward",
        "to the upper left",
        "to the left",
        "to the lower left",
        "downward",
        "to the lower right",
    ),
}

PARAPHRASES: dict[str, tuple[str, ...]] = {
    # template id -> paraphrases (str.format with the slot forms above and {sense}); the last HELDOUT_PER_TEMPLATE
    # of each are held out
    "block_move": (
        "push the T block {dir}",
        "slide the T-shaped block {dir_short}",
        "move the block {toward}",
        "the T block is pushed {corner}",
        "shove the T piece {toward}",
        "the pusher drives the block {corner}",
    ),
    "block_rotate": (
        "rotate the block {sense}",
        "turn the T {sense}",
        "the T-shaped block rotates {sense}",
        "spin the T block {sense}",
        "twist the block around {sense}",
        "the T piece turns {sense}",
    ),
    "block_move_rotate": (
        "push the T block {dir} while rotating it {sense}",
        "slide the block {dir_short} and turn it {sense}",
        "move the T {toward}, rotating it {sense}",
        "the T-shaped block moves {corner} and turns {sense}",
        "shove the T piece {toward} while twisting it {sense}",
        "the block slides {dir_short}, spinning {sense}",
    ),
    "pusher_move": (
        "move the pusher {dir}",
        "the pusher goes {dir}",
        "the agent moves {toward} without moving the block",
        "slide the round pusher {dir_short}",
        "the blue circle travels {corner}",
        "bring the pusher {toward}, leaving the T alone",
    ),
    "pusher_still": (
        "the pusher stays still",
        "keep the pusher in place",
        "nothing moves",
        "the agent does not move",
        "the pusher rests where it is",
        "hold the agent still",
    ),
}
TEMPLATES = tuple(PARAPHRASES)
SLOTS = {
    "block_move": ("direction",),
    "block_rotate": ("sense",),
    "block_move_rotate": ("direction", "sense"),
    "pusher_move": ("direction",),
    "pusher_still": (),
}


def train_paraphrases(template_id: str) -> tuple[str, ...]:
    return PARAPHRASES[template_id][:-HELDOUT_PER_TEMPLATE]


def heldout_paraphrases(template_id: str) -> tuple[str, ...]:
    return PARAPHRASES[template_id][-HELDOUT_PER_TEMPLATE:]


def direction_of(dx: float, dy: float) -> str:
    """8-way image direction of a displacement (dx, dy) in state coordinates (y grows down the image)."""
    angle = math.atan2(-dy, dx)  # counterclockwise on screen from image-right
    return DIRECTIONS[int(round(angle / (math.pi / 4))) % 8]


def block_centre(state) -> np.ndarray:
    """(…, ≥5) states -> (…, 2) the block's centre of gravity in arena pixels."""
    s = np.asarray(state, dtype=np.float64)
    c, si = np.cos(s[..., 4]), np.sin(s[..., 4])
    gx, gy = TEE_COG
    return np.stack([s[..., 2] + c * gx - si * gy, s[..., 3] + si * gx + c * gy], axis=-1)


def describe_segment(s0, s1) -> tuple[str, dict[str, str]]:
    """(template id, slots) describing the change from state s0 to state s1 (each (≥5,)).

    Block centre moved > BLOCK_MOVE_PX -> "block_move" {direction}; turned > BLOCK_TURN_DEG -> "block_rotate"
    {sense} (clockwise as seen = growing angle); both -> "block_move_rotate"; else the pusher: "pusher_move"
    {direction}, or "pusher_still" when it moved < PUSHER_STILL_PX.
    """
    s0, s1 = np.asarray(s0, dtype=np.float64), np.asarray(s1, dtype=np.float64)
    d_block = block_centre(s1) - block_centre(s0)
    turn = (s1[4] - s0[4] + math.pi) % (2 * math.pi) - math.pi  # wrapped to [-π, π)
    moved = float(np.hypot(*d_block)) > BLOCK_MOVE_PX
    turned = abs(math.degrees(turn)) > BLOCK_TURN_DEG
    sense = "clockwise" if turn > 0 else "counterclockwise"
    if moved and turned:
        return "block_move_rotate", {"direction": direction_of(*d_block), "sense": sense}
    if moved:
        return "block_move", {"direction": direction_of(*d_block)}
    if turned:
        return "block_rotate", {"sense": sense}
    d_agent = s1[:2] - s0[:2]
    if float(np.hypot(*d_agent)) < PUSHER_STILL_PX:
        return "pusher_still", {}
    return "pusher_move", {"direction": direction_of(*d_agent)}


def sentence(template_id: str, slots: dict[str, str], paraphrase: int) -> str:
    """The text of paraphrase `paraphrase` (index into PARAPHRASES[template_id]) with `slots` filled in."""
    words = {}
    if "direction" in slots:
        k = DIRECTIONS.index(slots["direction"])
        words = {form: table[k] for form, table in DIRECTION_FORMS.items()}
    if "sense" in slots:
        words["sense"] = slots["sense"]
    return PARAPHRASES[template_id][paraphrase].format(**words)


def slot_values(template_id: str) -> list[dict[str, str]]:
    """Every slot filling of a template."""
    out: list[dict[str, str]] = [{}]
    for name in SLOTS[template_id]:
        out = [dict(o, **{name: v}) for o in out for v in (DIRECTIONS if name == "direction" else SENSES)]
    return out


def _sentences(heldout: bool) -> list[str]:
    out = []
    for tid in TEMPLATES:
        n = len(PARAPHRASES[tid])
        idx = range(n - HELDOUT_PER_TEMPLATE, n) if heldout else range(n - HELDOUT_PER_TEMPLATE)
        out += [sentence(tid, slots, p) for slots in slot_values(tid) for p in idx]
    return out


def train_sentences() -> list[str]:
    """Every sentence training narrations can contain (template order, then slots, then paraphrase)."""
    return _sentences(False)


def heldout_sentences() -> list[str]:
    """Every held-out sentence (never in training narrations), same order."""
    return _sentences(True)


@lru_cache(maxsize=1)
def _parse_table() -> dict[str, tuple[str, dict[str, str], int]]:
    return {
        sentence(tid, s, p): (tid, s, p)
        for tid in TEMPLATES
        for s in slot_values(tid)
        for p in range(len(PARAPHRASES[tid]))
    }


def parse_sentence(text: str) -> tuple[str, dict[str, str], int] | None:
    """(template id, slots, paraphrase index) of a generated sentence; None for any other text."""
    hit = _parse_table().get(text)
    return None if hit is None else (hit[0], dict(hit[1]), hit[2])


def segments(T: int, segment: int) -> list[tuple[int, int]]:
    """Consecutive [start, end) spans of `segment` frames covering 0..T; a last span of < 2 frames joins the one
    before it."""
    if segment < 2:
        raise ValueError(f"narrate: segment must be >= 2 frames, got {segment}")
    spans = [(a, min(a + segment, T)) for a in range(0, T, segment)]
    if len(spans) > 1 and spans[-1][1] - spans[-1][0] < 2:
        spans[-2:] = [(spans[-2][0], T)]
    return spans


def narrate(states: np.ndarray, segment: int = 20, seed: int = 0) -> tuple[list, list]:
    """(narrations, narrations_heldout) for an episode's states (T, ≥5): lists of `[start, end, text]`, one per
    span of `segments(T, segment)`, the span described from its first to its last frame (what its frames show).

    The training text is a training paraphrase drawn with default_rng([seed, span index, 0]); the held-out text
    (same template and slots) a held-out paraphrase drawn with default_rng([seed, span index, 1]). Deterministic.
    """
    states = np.asarray(states, dtype=np.float64)
    if states.ndim != 2 or states.shape[1] < 5:
        raise ValueError(f"narrate: states must be (T, >=5), got shape {states.shape}")
    seed = int(seed) % 2**63
    train, held = [], []
    for k, (a, b) in enumerate(segments(len(states), segment)):
        tid, slots = describe_segment(states[a], states[b - 1])
        n, h = len(PARAPHRASES[tid]), HELDOUT_PER_TEMPLATE
        p_train = int(np.random.default_rng([seed, k, 0]).integers(n - h))
        p_held = n - h + int(np.random.default_rng([seed, k, 1]).integers(h))
        train.append([a, b, sentence(tid, slots, p_train)])
        held.append([a, b, sentence(tid, slots, p_held)])
    return train, held
