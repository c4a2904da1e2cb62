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

Two narration styles describe the same spans (`NARRATION_STYLES`, `narrate(..., style=)`):
- "direction" (the default, what every cache so far holds): where things went, 5 templates (PARAPHRASES).
- "magnitude": language that can carry a goal, its slots say how far and to where (MAGNITUDE_PARAPHRASES): "push the
  T block about 40 px to the left" (distance to the nearest DISTANCE_BIN_PX), "rotate the block about 30 degrees
  clockwise" (nearest ANGLE_BIN_DEG), both at once, "move the pusher about 120 px up", or, when the pusher ends next
  to the block (within NEAR_BLOCK_PX of its centre of gravity), "move the pusher to the block's left side" (the side
  in image terms: left / right / top / bottom of the block's centre). The same thresholds decide what moved, so the
  two styles pick the same kind of template on every span; "pusher_still" is shared word for word.
Template ids of the two styles are distinct (but for "pusher_still"), so `parse_sentence` reads both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

BLOCK_MOVE_PX = 8.0  # centre-of-gravity displacement (arena px, 512 wide) above which the block "moved"
BLOCK_TURN_DEG = 10.0  # wrapped angle change above which the block "turned"
PUSHER_STILL_PX = 5.0  # agent displacement below which the pusher "stays still"
TEE_COG = (0.0, 45.0)  # gym-pusht's tee: centre of gravity in the body frame
HELDOUT_PER_TEMPLATE = 2  # the last paraphrases of every template: evaluation only

NARRATION_STYLES = ("direction", "magnitude")
"""`narrate`'s styles; "direction" is the default (the sentences every existing episode cache and test holds)."""
DISTANCE_BIN_PX = 20
"""Magnitude style: distances are said to the nearest 20 arena px. The research question is whether words can pin a
pose to about 20 px (the T's bar is 30 px thick), so a coarser bin could not carry such a goal; a finer one would
multiply the slot values for differences of one or two pixels on a 96-px frame (20 arena px are 3.75 of them)."""
BLOCK_DISTANCE_CAP_PX = 200
"""Magnitude style: the largest block distance said. In 600 generated 2-s spans (40 episodes, every policy) the
block's centre of gravity moved at most 220 px and over 200 px only twice: farther moves read as this one."""
PUSHER_DISTANCE_CAP_PX = 400
"""Magnitude style: the largest pusher distance said. The free pusher travels up to ~570 px in 2 s, but about 1% of
the same 600 spans go over 400 px; a longer travel reads as this one (a goal that far is most of the arena's width)."""
ANGLE_BIN_DEG = 15
"""Magnitude style: block turns are said to the nearest 15 degrees: a 15-degree turn moves the bar's ends (60 px from
the centre) by about 16 px, one distance bin, so angles are as fine as distances (turns just over BLOCK_TURN_DEG
read as the first bin)."""
ANGLE_CAP_DEG = 180  # a wrapped turn is at most half a revolution: the largest angle ever said
NEAR_BLOCK_PX = 90.0
"""Magnitude style: a pusher whose centre ends within this many arena px of the block's centre of gravity is "next
to" the block. The tee's farthest points (bar corners, stem end) are 75 px from its centre of gravity and the
pusher's radius is 15 px, so within 90 px the pusher touches the T or is a few px off its outline."""

DISTANCE_CAPS = {"block": BLOCK_DISTANCE_CAP_PX, "pusher": PUSHER_DISTANCE_CAP_PX}
"""The subject of a distance (what moves) -> the largest distance said of it."""

DIRECTIONS = ("right", "up_right", "up", "up_left", "left", "down_left", "down", "down_right")
"""The 8 compass sectors of the image, counterclockwise on screen from "right" (45° each, centred on the axes)."""
SENSES = ("clockwise", "counterclockwise")
SIDES = ("left", "right", "top", "bottom")
"""Sides of the block in image terms (top = smaller state y), relative to its centre of gravity."""

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

MAGNITUDE_PARAPHRASES: dict[str, tuple[str, ...]] = {
    # the "magnitude" style: as PARAPHRASES, plus {distance} (arena px), {angle} (degrees) and {side}; the last
    # HELDOUT_PER_TEMPLATE of each are held out
    "block_move_by": (
        "push the T block about {distance} px {dir}",
        "slide the T-shaped block roughly {distance} pixels {dir_short}",
        "move the block about {distance} px {toward}",
        "the T block is pushed around {distance} px {corner}",
        "shove the T piece some {distance} pixels {toward}",
        "the pusher drives the block about {distance} px {corner}",
    ),
    "block_rotate_by": (
        "rotate the block about {angle} degrees {sense}",
        "turn the T roughly {angle} degrees {sense}",
        "the T-shaped block rotates about {angle} degrees {sense}",
        "spin the T block around {angle} degrees {sense}",
        "twist the block some {angle} degrees {sense}",
        "the T piece turns about {angle} degrees {sense}",
    ),
    "block_move_rotate_by": (
        "push the T block about {distance} px {dir} while rotating it about {angle} degrees {sense}",
        "slide the block roughly {distance} pixels {dir_short} and turn it {angle} degrees {sense}",
        "move the T about {distance} px {toward}, rotating it about {angle} degrees {sense}",
        "the T-shaped block moves around {distance} px {corner} and turns about {angle} degrees {sense}",
        "shove the T piece some {distance} pixels {toward} while twisting it {angle} degrees {sense}",
        "the block slides about {distance} px {dir_short}, spinning {angle} degrees {sense}",
    ),
    "pusher_move_by": (
        "move the pusher about {distance} px {dir}",
        "the pusher goes roughly {distance} pixels {dir}",
        "the agent moves about {distance} px {toward} without moving the block",
        "slide the round pusher some {distance} px {dir_short}",
        "the blue circle travels around {distance} pixels {corner}",
        "bring the pusher about {distance} px {toward}, leaving the T alone",
    ),
    "pusher_to_block": (
        "move the pusher to the block's {side} side",
        "bring the pusher next to the {side} side of the T",
        "the agent goes to the {side} side of the T block",
        "place the round pusher at the block's {side} side",
        "the blue circle stops beside the {side} side of the T",
        "put the pusher against the T piece on its {side} side",
    ),
    "pusher_still": PARAPHRASES["pusher_still"],  # nothing to measure: the same words in both styles
}
MAGNITUDE_TEMPLATES = tuple(MAGNITUDE_PARAPHRASES)
MAGNITUDE_SLOTS = {
    "block_move_by": ("direction", "distance"),
    "block_rotate_by": ("sense", "angle"),
    "block_move_rotate_by": ("direction", "distance", "sense", "angle"),
    "pusher_move_by": ("direction", "distance"),
    "pusher_to_block": ("side",),
    "pusher_still": (),
}
MAGNITUDE_SUBJECT = {"block_move_by": "block", "block_move_rotate_by": "block", "pusher_move_by": "pusher"}
"""Magnitude templates with a distance slot -> what moved that far (it picks the cap, DISTANCE_CAPS)."""

_ALL_PARAPHRASES = {**PARAPHRASES, **MAGNITUDE_PARAPHRASES}  # template id -> paraphrases, both styles
_ALL_SLOTS = {**SLOTS, **MAGNITUDE_SLOTS}


def style_templates(style: str = "direction") -> tuple[str, ...]:
    """The template ids of narration style `style` (NARRATION_STYLES), in order."""
    return {"direction": TEMPLATES, "magnitude": MAGNITUDE_TEMPLATES}[_checked_style(style)]


def _checked_style(style: str) -> str:
    if style not in NARRATION_STYLES:
        raise ValueError(f"narration style must be one of {', '.join(NARRATION_STYLES)}, got {style!r}")
    return style


def train_paraphrases(template_id: str) -> tuple[str, ...]:
    return _ALL_PARAPHRASES[template_id][:-HELDOUT_PER_TEMPLATE]


def heldout_paraphrases(template_id: str) -> tuple[str, ...]:
    return _ALL_PARAPHRASES[template_id][-HELDOUT_PER_TEMPLATE:]


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


@dataclass(frozen=True)
class SegmentMotion:
    """What changed from state s0 to state s1, in arena px / degrees: `block` (2,) the block's centre-of-gravity
    displacement, `turn_deg` the wrapped angle change in [-180, 180) (> 0: clockwise as seen), `agent` (2,) the
    pusher's displacement, `agent_from_block` (2,) the pusher's end position relative to the block's end centre."""

    block: np.ndarray
    turn_deg: float
    agent: np.ndarray
    agent_from_block: np.ndarray

    @classmethod
    def between(cls, s0, s1) -> SegmentMotion:
        s0, s1 = np.asarray(s0, dtype=np.float64), np.asarray(s1, dtype=np.float64)
        turn = (s1[4] - s0[4] + math.pi) % (2 * math.pi) - math.pi  # wrapped to [-π, π)
        return cls(block_centre(s1) - block_centre(s0), math.degrees(turn), s1[:2] - s0[:2], s1[:2] - block_centre(s1))

    @property
    def moved(self) -> bool:
        return float(np.hypot(*self.block)) > BLOCK_MOVE_PX

    @property
    def turned(self) -> bool:
        return abs(self.turn_deg) > BLOCK_TURN_DEG

    @property
    def sense(self) -> str:
        return "clockwise" if self.turn_deg > 0 else "counterclockwise"

    @property
    def pusher_still(self) -> bool:
        return float(np.hypot(*self.agent)) < PUSHER_STILL_PX


def describe_segment(s0, s1, style: str = "direction") -> tuple[str, dict[str, str]]:
    """(template id, slots) describing the change from state s0 to state s1 (each (≥5,)) in narration `style`.

    Block centre moved > BLOCK_MOVE_PX -> "block_move" {direction}; turned > BLOCK_TURN_DEG -> "block_rotate"
    {sense} (clockwise as seen = growing angle); both -> "block_move_rotate"; else the pusher: "pusher_move"
    {direction}, or "pusher_still" when it moved < PUSHER_STILL_PX. The "magnitude" style: `describe_magnitude`.
    """
    if _checked_style(style) == "magnitude":
        return describe_magnitude(s0, s1)
    m = SegmentMotion.between(s0, s1)
    if m.moved and m.turned:
        return "block_move_rotate", {"direction": direction_of(*m.block), "sense": m.sense}
    if m.moved:
        return "block_move", {"direction": direction_of(*m.block)}
    if m.turned:
        return "block_rotate", {"sense": m.sense}
    if m.pusher_still:
        return "pusher_still", {}
    return "pusher_move", {"direction": direction_of(*m.agent)}


def magnitude_bin(value: float, step: float, cap: float) -> int:
    """`value` (≥ 0) to the nearest multiple of `step` (halves round up), at most `cap`; 0 for values < step / 2."""
    return int(min(math.floor(value / step + 0.5) * step, cap))


def side_of(offset) -> str:
    """SIDES entry of a position `offset` (dx, dy) from the block's centre (state y grows down the image): the axis
    it is farther along decides; a tie reads as left / right."""
    dx, dy = float(offset[0]), float(offset[1])
    if abs(dx) >= abs(dy):
        return "right" if dx > 0 else "left"
    return "bottom" if dy > 0 else "top"


def describe_magnitude(s0, s1) -> tuple[str, dict[str, str]]:
    """(template id, slots) of the "magnitude" style for the change from s0 to s1 (each (≥5,)): what moved is decided
    as in the direction style (same thresholds); the slots add how far (`distance`, arena px to the nearest
    DISTANCE_BIN_PX, at least one bin, at most the subject's cap) and how much it turned (`angle`, degrees to the
    nearest ANGLE_BIN_DEG, at least one bin). A pusher that moved alone and ends within NEAR_BLOCK_PX of the block's
    centre -> "pusher_to_block" {side}. Slot values are strings ("40"), as the sentence says them."""
    m = SegmentMotion.between(s0, s1)
    block = {
        "direction": direction_of(*m.block),
        "distance": str(
            max(DISTANCE_BIN_PX, magnitude_bin(float(np.hypot(*m.block)), DISTANCE_BIN_PX, BLOCK_DISTANCE_CAP_PX))
        ),
    }
    turn = {
        "sense": m.sense,
        "angle": str(max(ANGLE_BIN_DEG, magnitude_bin(abs(m.turn_deg), ANGLE_BIN_DEG, ANGLE_CAP_DEG))),
    }
    if m.moved and m.turned:
        return "block_move_rotate_by", {**block, **turn}
    if m.moved:
        return "block_move_by", block
    if m.turned:
        return "block_rotate_by", turn
    if m.pusher_still:
        return "pusher_still", {}
    if float(np.hypot(*m.agent_from_block)) <= NEAR_BLOCK_PX:
        return "pusher_to_block", {"side": side_of(m.agent_from_block)}
    d = magnitude_bin(float(np.hypot(*m.agent)), DISTANCE_BIN_PX, PUSHER_DISTANCE_CAP_PX)
    return "pusher_move_by", {"direction": direction_of(*m.agent), "distance": str(max(DISTANCE_BIN_PX, d))}


def sentence(template_id: str, slots: dict[str, str], paraphrase: int) -> str:
    """The text of paraphrase `paraphrase` (index into the template's paraphrases, PARAPHRASES or
    MAGNITUDE_PARAPHRASES) with `slots` filled in."""
    words = {}
    if "direction" in slots:
        k = DIRECTIONS.index(slots["direction"])
        words = {form: table[k] for form, table in DIRECTION_FORMS.items()}
    for name in ("sense", "distance", "angle", "side"):
        if name in slots:
            words[name] = slots[name]
    return _ALL_PARAPHRASES[template_id][paraphrase].format(**words)


def _values(template_id: str, slot: str) -> tuple[str, ...]:
    """Every value of `slot` in template `template_id` (distances up to the template's subject's cap)."""
    if slot == "distance":
        cap = DISTANCE_CAPS[MAGNITUDE_SUBJECT[template_id]]
        return tuple(str(v) for v in range(DISTANCE_BIN_PX, cap + 1, DISTANCE_BIN_PX))
    if slot == "angle":
        return tuple(str(v) for v in range(ANGLE_BIN_DEG, ANGLE_CAP_DEG + 1, ANGLE_BIN_DEG))
    return {"direction": DIRECTIONS, "sense": SENSES, "side": SIDES}[slot]


def slot_values(template_id: str) -> list[dict[str, str]]:
    """Every slot filling of a template (of either style)."""
    out: list[dict[str, str]] = [{}]
    for name in _ALL_SLOTS[template_id]:
        out = [dict(o, **{name: v}) for o in out for v in _values(template_id, name)]
    return out


def _sentences(heldout: bool, style: str) -> list[str]:
    out = []
    for tid in style_templates(style):
        n = len(_ALL_PARAPHRASES[tid])
        idx = range(n - HELDOUT_PER_TEMPLATE, n) if heldout else range(n - HELDOUT_PER_TEMPLATE)
        out += [sentence(tid, slots, p) for slots in slot_values(tid) for p in idx]
    return out


def train_sentences(style: str = "direction") -> list[str]:
    """Every sentence training narrations of `style` can contain (template order, then slots, then paraphrase)."""
    return _sentences(False, style)


def heldout_sentences(style: str = "direction") -> list[str]:
    """Every held-out sentence of `style` (never in training narrations), same order."""
    return _sentences(True, style)


@lru_cache(maxsize=1)
def _parse_table() -> dict[str, tuple[str, dict[str, str], int]]:
    # both styles; "pusher_still" is in both with the same words, so it maps to itself either way
    return {
        sentence(tid, s, p): (tid, s, p)
        for tid in _ALL_PARAPHRASES
        for s in slot_values(tid)
        for p in range(len(_ALL_PARAPHRASES[tid]))
    }


def parse_sentence(text: str) -> tuple[str, dict[str, str], int] | None:
    """(template id, slots, paraphrase index) of a generated sentence of either style, e.g. ("block_move_by",
    {"direction": "left", "distance": "40"}, 0); None for any other text."""
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


def narrate(states: np.ndarray, segment: int = 20, seed: int = 0, style: str = "direction") -> tuple[list, list]:
    """(narrations, narrations_heldout) for an episode's states (T, ≥5): lists of `[start, end, text]`, one per
    span of `segments(T, segment)`, the span described from its first to its last frame (what its frames show),
    in narration `style` (NARRATION_STYLES; "direction" is what every existing cache holds).

    The training text is a training paraphrase drawn with default_rng([seed, span index, 0]); the held-out text
    (same template and slots) a held-out paraphrase drawn with default_rng([seed, span index, 1]). Deterministic.
    """
    states = np.asarray(states, dtype=np.float64)
    if states.ndim != 2 or states.shape[1] < 5:
        raise ValueError(f"narrate: states must be (T, >=5), got shape {states.shape}")
    _checked_style(style)
    seed = int(seed) % 2**63
    train, held = [], []
    for k, (a, b) in enumerate(segments(len(states), segment)):
        tid, slots = describe_segment(states[a], states[b - 1], style)
        n, h = len(_ALL_PARAPHRASES[tid]), HELDOUT_PER_TEMPLATE
        p_train = int(np.random.default_rng([seed, k, 0]).integers(n - h))
        p_held = n - h + int(np.random.default_rng([seed, k, 1]).integers(h))
        train.append([a, b, sentence(tid, slots, p_train)])
        held.append([a, b, sentence(tid, slots, p_held)])
    return train, held


def within_one_bin(value: float, named: float, step: float, cap: float) -> bool:
    """`value` rounded as the words round it (nearest `step`, at most `cap`) is within one bin of the `named` one:
    the change that produced a sentence always fits it, and so does one bin more or less. The tolerance of every
    magnitude judged against words (`sentence_fits`, the meaning check)."""
    return abs(magnitude_bin(value, step, cap) - float(named)) <= step


def sentence_fits(text: str, s0, s1) -> bool | None:
    """Does the change from state s0 to state s1 (each (≥5,)) do what the generated sentence `text` says? None when
    `text` is not one of the Push-T language's sentences (either style).

    A goal given in words is reached when the words fit what happened, not when an image is matched: the subject the
    sentence names must have moved (BLOCK_MOVE_PX / BLOCK_TURN_DEG / PUSHER_STILL_PX, the thresholds that chose the
    words) in the named 8-way direction and sense, named distances and angles within one bin of what happened
    (rounded as the words round: DISTANCE_BIN_PX, ANGLE_BIN_DEG, with the subject's cap), a named side of the block
    is where the pusher ends (within NEAR_BLOCK_PX), and "stays still" means nothing moved. What a sentence does
    not name is free ("push the block left" says nothing about the pusher). The change that generated a sentence
    always fits it (`describe_segment` then `sentence`)."""
    parsed = parse_sentence(text)
    if parsed is None:
        return None
    tid, slots, _ = parsed
    m = SegmentMotion.between(s0, s1)
    subject = "pusher" if tid.startswith("pusher") else "block"
    ok = True
    if tid == "pusher_still":
        return m.pusher_still and not m.moved and not m.turned
    if tid == "pusher_to_block":
        return (
            not m.pusher_still
            and float(np.hypot(*m.agent_from_block)) <= NEAR_BLOCK_PX
            and side_of(m.agent_from_block) == slots["side"]
        )
    if "direction" in slots:
        motion = m.agent if subject == "pusher" else m.block
        moved = not m.pusher_still if subject == "pusher" else m.moved
        ok = ok and moved and direction_of(*motion) == slots["direction"]
        if "distance" in slots:
            dist = float(np.hypot(*motion))
            ok = ok and within_one_bin(dist, int(slots["distance"]), DISTANCE_BIN_PX, DISTANCE_CAPS[subject])
    if "sense" in slots:
        ok = ok and m.turned and m.sense == slots["sense"]
        if "angle" in slots:
            ok = ok and within_one_bin(abs(m.turn_deg), int(slots["angle"]), ANGLE_BIN_DEG, ANGLE_CAP_DEG)
    return bool(ok)
