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
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from latentwm.conditions import Conditions
from latentwm.data.batch import collate
from latentwm.data.clips import LatentClipDataset
from latentwm.data.episodes import NormStats
from latentwm.data.proprio import split_proprio
from latentwm.envs.pusht_language import DIRECTIONS, block_centre, direction_of, parse_sentence
from latentwm.planning.state_probe import StateProbe
from latentwm.rollout import Sampling, rollout

DIRECTIONAL = {"block_move": "block", "block_move_rotate": "block", "pusher_move": "pusher"}
"""Templates whose sentence names a direction, and what moves."""


@dataclass(frozen=True)
class MeaningCheck:
    """context / horizon in model frames; clips: at most this many directional held-out clips; sampling: how the
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


def _directional_clips(data: LatentClipDataset, check: MeaningCheck) -> list[tuple[int, str, str]]:
    """(index, direction, what) of held-out clips with every frame valid whose predicted frames all carry one
    directional sentence (futures spanning two narrations are left out: which sentence would the motion follow?)."""
    need = check.context + check.horizon
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(check.seed)).tolist()
    out = []
    for i in order:
        c = data[i]
        if len(c) < need or c.states is None:
            continue
        said = future_sentence(c, check.context, check.horizon)
        parsed = None if said is None else parse_sentence(said)
        if parsed is None or parsed[0] not in DIRECTIONAL:
            continue
        out.append((i, parsed[1]["direction"], DIRECTIONAL[parsed[0]]))
        if len(out) == check.clips:
            break
    return out


def _positions(frames: torch.Tensor, what: list[str], probe: StateProbe, proprio: NormStats | None, p_dim: int):
    """(B, 2) arena-px position of the sentence's subject in frames (B, N, D [+ P]): the block's centre of gravity,
    or the pusher (predicted proprio when the model has it, else the probe)."""
    lat, prop = split_proprio(frames, p_dim)
    pose = probe.predict_pose(lat.float()).double().cpu().numpy()  # (B, 5)
    block = block_centre(pose)
    agent = pose[:, :2]
    if prop is not None and proprio is not None:
        p = prop.float().mean(-2).cpu().numpy()  # (B, P): the tokens' proprio channels
        agent = proprio.denormalize(p)[:, :2].astype(np.float64)
    return np.stack([block[i] if w == "block" else agent[i] for i, w in enumerate(what)])


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
    "by_subject": {"block": {...}, "pusher": {...}}}; accuracy None (and clips 0) without a directional clip."""
    if getattr(model.cfg, "text_dim", 0) == 0:
        raise ValueError("direction_accuracy: the model has no text slot (model.text_dim = 0)")
    found = _directional_clips(data, check)
    empty = {"accuracy": None, "chance": None, "uniform_chance": 1 / len(DIRECTIONS), "ceiling": None, "clips": 0}
    if not found:
        return {**empty, "null_text_accuracy": None, "by_subject": {}}
    C, H = check.context, check.horizon
    p_dim = int(getattr(model.cfg, "proprio_dim", 0))
    gen = torch.Generator(device=device).manual_seed(check.seed)
    pred_dir: list[str] = []
    true_dir: list[str] = []
    null_dir: list[str] = []
    target: list[str] = []
    subject: list[str] = []
    for k in range(0, len(found), check.batch):
        part = found[k : k + check.batch]
        b = collate([data[i] for i, _, _ in part], model.cfg.action_dim).to(device)
        assert b.latents is not None and b.text is not None and b.text_mask is not None  # chosen clips have them
        x = b.latents[:, : C + H]
        what = [w for _, _, w in part]
        text = Conditions(text=b.text[:, : C + H], text_mask=b.text_mask[:, : C + H])
        noise = torch.randn((len(part), H, *x.shape[2:]), generator=gen, device=x.device, dtype=x.dtype)
        futures = {
            "text": rollout(model, x[:, :C], H, text, check.sampling, noise=noise),
            "null": rollout(model, x[:, :C], H, None, check.sampling, noise=noise),  # same noise, no text
            "true": x[:, C:],
        }
        start = _positions(x[:, C - 1], what, probe, proprio, p_dim)
        for name, dirs in (("text", pred_dir), ("null", null_dir), ("true", true_dir)):
            end = _positions(futures[name][:, -1], what, probe, proprio, p_dim)
            dirs += [direction_of(*(e - s)) for s, e in zip(start, end)]
        target += [d for _, d, _ in part]
        subject += what
    pred, tgt = np.array(pred_dir), np.array(target)
    rng = np.random.default_rng(check.seed)
    chance = float(np.mean([np.mean(pred == rng.permutation(tgt)) for _ in range(check.permutations)]))

    def score(mask: np.ndarray) -> dict:
        return {
            "accuracy": float(np.mean(pred[mask] == tgt[mask])),
            "ceiling": float(np.mean(np.array(true_dir)[mask] == tgt[mask])),
            "null_text_accuracy": float(np.mean(np.array(null_dir)[mask] == tgt[mask])),
            "clips": int(mask.sum()),
        }

    subj = np.array(subject)
    out = {**score(np.ones(len(tgt), dtype=bool)), "chance": chance, "uniform_chance": 1 / len(DIRECTIONS)}
    out["by_subject"] = {w: score(subj == w) for w in ("block", "pusher") if (subj == w).any()}
    out["stderr"] = float(np.sqrt(out["accuracy"] * (1 - out["accuracy"]) / len(tgt)))
    return out


__all__ = ["DIRECTIONAL", "MeaningCheck", "direction_accuracy"]
