"""Does the imagined future move the way the sentence says? A meaning check for text conditioning on Push-T.

Latent error says whether text helps predict the future; it does not say whether the model understood the words. This
check reads the pose of imagined frames and compares the direction of the motion with the direction the sentence
names. On held-out clips whose predicted frames all carry one generated sentence with a direction ("push the T block
to the upper left", "move the pusher down"; `envs/pusht_language.py`), the model rolls out the future from the
context with every frame's own text and no actions (text-only), and the thing the sentence is about is read at the last
context frame and at the last predicted frame:

- the block: its centre of gravity from a `StateProbe` pose of the frame's encoder latents;
- the pusher: the model's own predicted proprio (the mean of the frame's proprio channels, denormalized) for a model
  with proprio channels, else the probe's agent position.

The 8-way image direction of that displacement (`direction_of`) is right when it equals the sentence's. Beside it:
- chance: the same predictions scored against the sentences of other clips (a random permutation, averaged over
  `permutations`), which is what a model that moves but ignores the words gets on this sentence mix; 1/8 for a
  uniform guess;
- ceiling: the true future frames read the same way (the probe's and the window's limit: a sentence describes its
  whole 20-step span, the window sees part of it);
- the null-text rollout scored the same way (what the context alone makes the model do).

Sentences of the "magnitude" narration style (`pusht_language`, reader option narration=magnitude) also say how far
and how much: on clips whose sentence has a distance, the length of the same displacement is right when, rounded to
the nearest DISTANCE_BIN_PX (capped as the words are, DISTANCE_CAPS), it is within one bin of the named distance
("magnitude_*" keys); on clips whose sentence has an angle, the probe's wrapped block-angle change (its size, in
degrees, to the nearest ANGLE_BIN_DEG) within one bin of the named angle ("angle_*" keys; a rotate-only sentence is
scored there and not for direction). Each has its chance (shuffled sentences), ceiling (true future) and null-text
score, over its own clips. Direction-style data gives exactly the direction keys.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from latentwm.conditions import Conditions
from latentwm.data.batch import collate
from latentwm.data.clips import LatentClipDataset
from latentwm.data.episodes import NormStats
from latentwm.data.proprio import split_proprio
from latentwm.envs.pusht_language import (
    ANGLE_BIN_DEG,
    ANGLE_CAP_DEG,
    DIRECTIONS,
    DISTANCE_BIN_PX,
    DISTANCE_CAPS,
    block_centre,
    direction_of,
    heldout_sentences,
    parse_sentence,
    train_sentences,
    within_one_bin,
)
from latentwm.planning.state_probe import StateProbe
from latentwm.rollout import Sampling, rollout

DIRECTIONAL = {
    "block_move": "block",
    "block_move_rotate": "block",
    "pusher_move": "pusher",
    "block_move_by": "block",
    "block_move_rotate_by": "block",
    "pusher_move_by": "pusher",
}
"""Templates whose sentence names a direction (either narration style), and what moves."""
ROTATION_ONLY = {"block_rotate_by": "block"}
"""Templates scored for their angle alone (the magnitude style's rotation: no direction to read)."""


@dataclass(frozen=True)
class ClipTarget:
    """What the sentence of clip `index` asks for: its subject ("block" / "pusher"), the direction (None: a rotation
    alone), the distance in arena px and the angle in degrees (None: the sentence names none)."""

    index: int
    subject: str
    direction: str | None = None
    distance: int | None = None
    angle: int | None = None


@dataclass(frozen=True)
class MeaningCheck:
    """context / horizon in model frames; clips: at most this many scored held-out clips; sampling: how the
    futures are drawn; batch: clips per rollout; permutations: shuffles averaged for the chance level; seed: the
    clip order and the noise."""

    context: int = 4
    horizon: int = 4
    clips: int = 300
    sampling: Sampling = Sampling(steps=4)
    batch: int = 32
    permutations: int = 20
    seed: int = 0


def future_sentence(c, context: int, horizon: int) -> str | None:
    """The one sentence every predicted frame of clip `c` (a ClipSample with text) carries, frames context ..
    context + horizon − 1; None when they span two narrations or the mapping is ambiguous.

    Frames carry sentence embeddings, the clip's metadata the sentences (unique, in time order): runs of identical
    embedding rows are matched to them in order, and a clip whose run count differs (a sentence repeated in
    adjacent spans) is left out rather than guessed."""
    if c.meta is None or c.text is None or c.text_mask is None or not bool(c.text_mask.all()):
        return None
    emb = c.text
    starts = [0] + [t for t in range(1, len(emb)) if not torch.equal(emb[t], emb[t - 1])]
    if len(starts) != len(c.meta.text):
        return None
    run = lambda t: sum(1 for s in starts if s <= t) - 1  # noqa: E731
    first, last = run(context), run(context + horizon - 1)
    return c.meta.text[first] if first == last else None


def _scored_clips(data: LatentClipDataset, check: MeaningCheck) -> list[ClipTarget]:
    """Targets of held-out clips with every frame valid whose predicted frames all carry one sentence with a
    direction or an angle (futures spanning two narrations are left out: which sentence would the motion follow?),
    at most check.clips of them, in the seeded order."""
    need = check.context + check.horizon
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(check.seed)).tolist()
    out = []
    for i in order:
        c = data[i]
        if len(c) < need or c.states is None:
            continue
        said = future_sentence(c, check.context, check.horizon)
        parsed = None if said is None else parse_sentence(said)
        if parsed is None or (parsed[0] not in DIRECTIONAL and parsed[0] not in ROTATION_ONLY):
            continue
        slots = parsed[1]
        subject = DIRECTIONAL.get(parsed[0]) or ROTATION_ONLY[parsed[0]]
        out.append(ClipTarget(i, subject, slots.get("direction"), _number(slots, "distance"), _number(slots, "angle")))
        if len(out) == check.clips:
            break
    return out


def _number(slots: dict[str, str], key: str) -> int | None:
    """The number a sentence's slot `key` says ("40" -> 40); None when it has no such slot."""
    return int(slots[key]) if key in slots else None


def _directional_clips(data: LatentClipDataset, check: MeaningCheck) -> list[tuple[int, str, str]]:
    """(index, direction, what) of the scored clips whose sentence names a direction (`_scored_clips`)."""
    return [(t.index, t.direction, t.subject) for t in _scored_clips(data, check) if t.direction is not None]


@torch.no_grad()
def _positions(frames: torch.Tensor, what: list[str], probe: StateProbe, proprio: NormStats | None, p_dim: int):
    """(B, 2) arena-px position of the sentence's subject in frames (B, N, D [+ P]): the block's centre of gravity,
    or the pusher (predicted proprio when the model has it, else the probe)."""
    lat, prop = split_proprio(frames, p_dim)
    pose = probe.predict_pose(lat.float()).double().cpu().numpy()  # (B, 5)
    block = block_centre(pose)
    agent = pose[:, :2]
    if prop is not None and proprio is not None:
        p = prop.float().cpu().numpy()  # (B, P): the mean of the tokens' proprio channels
        agent = proprio.denormalize(p)[:, :2].astype(np.float64)
    return np.stack([block[i] if w == "block" else agent[i] for i, w in enumerate(what)])


@torch.no_grad()
def _block_angles(frames: torch.Tensor, probe: StateProbe, p_dim: int) -> np.ndarray:
    """(B,) the probe's block angle (radians) in frames (B, N, D [+ P])."""
    lat, _ = split_proprio(frames, p_dim)
    return probe.predict_pose(lat.float()).double().cpu().numpy()[:, 4]


@dataclass(frozen=True)
class _Readings:
    """One future (imagined under text / without text / true), read per clip (M,): the subject's displacement length
    (arena px) and the size of the block's wrapped angle change (degrees)."""

    length: np.ndarray
    turn: np.ndarray


def _within_one_bin(value: np.ndarray, named: np.ndarray, step: float, caps: np.ndarray) -> np.ndarray:
    """(M,) bool: `value` rounded to the nearest multiple of `step` (at most `caps`, per clip) is within one bin of
    `named` (M,)."""
    return np.array([within_one_bin(float(v), float(n), step, float(c)) for v, n, c in zip(value, named, caps)])


def _magnitude_scores(prefix: str, reads: dict[str, _Readings], found: list[ClipTarget], check: MeaningCheck) -> dict:
    """`{prefix}_accuracy`, `_chance`, `_ceiling`, `_null_text_accuracy`, `_clips` of the distance ("magnitude")
    or angle ("angle") each clip's sentence names, over the clips that name one; {} when none does."""
    key = "distance" if prefix == "magnitude" else "angle"
    rows = np.array([getattr(t, key) is not None for t in found])
    if not rows.any():
        return {}
    named = np.array([getattr(t, key) for t in found if getattr(t, key) is not None], dtype=np.float64)
    if key == "distance":
        step, caps = DISTANCE_BIN_PX, np.array([DISTANCE_CAPS[t.subject] for t in found], dtype=np.float64)[rows]
    else:
        step, caps = ANGLE_BIN_DEG, np.full(int(rows.sum()), float(ANGLE_CAP_DEG))
    value = {n: (r.length if key == "distance" else r.turn)[rows] for n, r in reads.items()}
    rng = np.random.default_rng([check.seed, 1 if key == "distance" else 2])  # apart from the direction's shuffles
    shuffled = [
        np.mean(_within_one_bin(value["text"], rng.permutation(named), step, caps)) for _ in range(check.permutations)
    ]
    return {
        f"{prefix}_accuracy": float(np.mean(_within_one_bin(value["text"], named, step, caps))),
        f"{prefix}_chance": float(np.mean(shuffled)),
        f"{prefix}_ceiling": float(np.mean(_within_one_bin(value["true"], named, step, caps))),
        f"{prefix}_null_text_accuracy": float(np.mean(_within_one_bin(value["null"], named, step, caps))),
        f"{prefix}_clips": int(rows.sum()),
    }


@torch.no_grad()
def direction_accuracy(
    model,
    probe: StateProbe,
    data: LatentClipDataset,
    check: MeaningCheck = MeaningCheck(),
    proprio: NormStats | None = None,
    device: torch.device | str = "cpu",
) -> dict:
    """The meaning check (module docstring) on held-out clips of `data` (with text and simulator states; clips of at
    least context + horizon frames). proprio: the model's proprio statistics (`proprio_stats_of`) when it has
    proprio channels. Returns {"accuracy", "chance", "uniform_chance", "ceiling", "null_text_accuracy", "clips",
    "by_subject": {"block": {...}, "pusher": {...}}}; accuracy None (and clips 0) without a directional clip. With
    magnitude-style sentences also "magnitude_accuracy", "magnitude_chance", "magnitude_ceiling",
    "magnitude_null_text_accuracy", "magnitude_clips" (clips naming a distance) and the same "angle_*" keys (clips
    naming an angle); those keys are absent when no clip names one (direction-style data)."""
    if getattr(model.cfg, "text_dim", 0) == 0:
        raise ValueError("direction_accuracy: the model has no text slot (model.text_dim = 0)")
    found = _scored_clips(data, check)
    empty = {"accuracy": None, "chance": None, "uniform_chance": 1 / len(DIRECTIONS), "ceiling": None, "clips": 0}
    if not found:
        return {**empty, "null_text_accuracy": None, "by_subject": {}}
    C, H = check.context, check.horizon
    p_dim = int(getattr(model.cfg, "proprio_dim", 0))
    gen = torch.Generator(device=device).manual_seed(check.seed)
    dirs: dict[str, list[str]] = {"text": [], "null": [], "true": []}
    lengths: dict[str, list[float]] = {"text": [], "null": [], "true": []}
    turns: dict[str, list[float]] = {"text": [], "null": [], "true": []}
    for k in range(0, len(found), check.batch):
        part = found[k : k + check.batch]
        b = collate([data[t.index] for t in part], model.cfg.action_dim).to(device)
        assert b.latents is not None and b.text is not None and b.text_mask is not None  # chosen clips have them
        x = b.latents[:, : C + H]
        what = [t.subject for t in part]
        text = Conditions(text=b.text[:, : C + H], text_mask=b.text_mask[:, : C + H])
        noise = torch.randn((len(part), H, *x.shape[2:]), generator=gen, device=x.device, dtype=x.dtype)
        futures = {
            "text": rollout(model, x[:, :C], H, text, check.sampling, noise=noise),
            "null": rollout(model, x[:, :C], H, None, check.sampling, noise=noise),  # same noise, no text
            "true": x[:, C:],
        }
        start = _positions(x[:, C - 1], what, probe, proprio, p_dim)
        angle0 = _block_angles(x[:, C - 1], probe, p_dim)
        for name in ("text", "null", "true"):
            end = _positions(futures[name][:, -1], what, probe, proprio, p_dim)
            dirs[name] += [direction_of(*(e - s)) for s, e in zip(start, end)]
            lengths[name] += [float(np.hypot(*(e - s))) for s, e in zip(start, end)]
            turn = (_block_angles(futures[name][:, -1], probe, p_dim) - angle0 + math.pi) % (2 * math.pi) - math.pi
            turns[name] += np.abs(np.degrees(turn)).tolist()
    reads = {n: _Readings(np.array(lengths[n]), np.array(turns[n])) for n in dirs}
    extra = {**_magnitude_scores("magnitude", reads, found, check), **_magnitude_scores("angle", reads, found, check)}
    directional = np.array([t.direction is not None for t in found])
    if not directional.any():  # magnitude-style rotations only: no direction to score
        return {**empty, "null_text_accuracy": None, "by_subject": {}, **extra}
    pick = lambda values: np.array(values)[directional]  # noqa: E731
    pred, tgt = pick(dirs["text"]), np.array([t.direction for t in found if t.direction is not None])
    true_dir, null_dir = pick(dirs["true"]), pick(dirs["null"])
    rng = np.random.default_rng(check.seed)
    chance = float(np.mean([np.mean(pred == rng.permutation(tgt)) for _ in range(check.permutations)]))

    def score(mask: np.ndarray) -> dict:
        return {
            "accuracy": float(np.mean(pred[mask] == tgt[mask])),
            "ceiling": float(np.mean(true_dir[mask] == tgt[mask])),
            "null_text_accuracy": float(np.mean(null_dir[mask] == tgt[mask])),
            "clips": int(mask.sum()),
        }

    subj = pick([t.subject for t in found])
    out = {**score(np.ones(len(tgt), dtype=bool)), "chance": chance, "uniform_chance": 1 / len(DIRECTIONS)}
    out["by_subject"] = {w: score(subj == w) for w in ("block", "pusher") if (subj == w).any()}
    out["stderr"] = float(np.sqrt(out["accuracy"] * (1 - out["accuracy"]) / len(tgt)))
    return {**out, **extra}


READOUT_LABELS = {
    "direction": lambda tid, slots: slots.get("direction"),
    "template": lambda tid, slots: tid,
    "class": lambda tid, slots: (tid, tuple(sorted((k, v) for k, v in slots.items() if k in ("direction", "sense")))),
}
"""What the wording readout asks of a sentence's embedding: the 8-way direction it names (sentences naming one), its
template (what moves and how: block push, push and turn, pusher move, ...) and the motion class (template, direction
and sense: the direction style's classes; the magnitude style's without its numbers)."""


def wording_readout(embed: Callable[[list[str]], np.ndarray], style: str = "direction", ridge: float = 1.0) -> dict:
    """How much of what a sentence means a text encoder carries to wording the model never saw: a ridge readout
    (one-hot targets, penalty `ridge`) fitted on the embeddings of every training paraphrase of the narration style
    and scored on every held-out paraphrase, per label of READOUT_LABELS; beside it the label of the nearest training
    sentence (cosine) and chance (the held-out set's most frequent label). A model that learned the training
    sentences perfectly still meets new wording through this embedding: with a linear text layer the readout is
    roughly its ceiling. embed: sentences -> (U, E) (a text encoder's `embed`).
    Returns {label: {ridge_accuracy, train_accuracy, nearest_accuracy, chance, classes, heldout}}."""
    train, held = train_sentences(style), heldout_sentences(style)
    x_tr, x_he = np.asarray(embed(train), np.float64), np.asarray(embed(held), np.float64)
    parsed = [[parse_sentence(t) for t in train], [parse_sentence(t) for t in held]]
    unit = lambda x: x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)  # noqa: E731
    nearest = (unit(x_he) @ unit(x_tr).T).argmax(1)  # (U_held,) index of the closest training sentence
    out = {}
    for name, label in READOUT_LABELS.items():
        y_tr = [label(p[0], p[1]) if p else None for p in parsed[0]]
        y_he = [label(p[0], p[1]) if p else None for p in parsed[1]]
        keep_tr = np.array([y is not None for y in y_tr])
        keep_he = np.array([y is not None for y in y_he])
        classes = sorted({y for y in y_tr if y is not None}, key=repr)
        index = {c: i for i, c in enumerate(classes)}
        t_tr = np.array([index[y] for y in y_tr if y is not None])
        t_he = np.array([index.get(y, -1) for y in y_he if y is not None])
        a = x_tr[keep_tr]
        w = np.linalg.solve(a.T @ a + ridge * np.eye(a.shape[1]), a.T @ np.eye(len(classes))[t_tr])  # (E, C)
        near = np.array([index.get(y_tr[j], -2) for j in nearest[keep_he]])
        out[name] = {
            "ridge_accuracy": float(np.mean((x_he[keep_he] @ w).argmax(1) == t_he)),
            "train_accuracy": float(np.mean((a @ w).argmax(1) == t_tr)),
            "nearest_accuracy": float(np.mean(near == t_he)),
            "chance": float(np.bincount(t_he[t_he >= 0]).max() / len(t_he)),
            "classes": len(classes),
            "heldout": int(keep_he.sum()),
        }
    return out


__all__ = ["DIRECTIONAL", "READOUT_LABELS", "ROTATION_ONLY", "ClipTarget", "MeaningCheck", "direction_accuracy",
           "wording_readout"]  # fmt: skip
