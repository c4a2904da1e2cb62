"""Per-frame text of an episode as ids into a table of unique sentences, embedded once (docs/design.md sections 3, 4).

Text conditions are frozen sentence embeddings. A training step must never run the sentence encoder, so every
sentence of an episode is embedded once (at encode time for a latent cache, when the episode is first scanned for
online encoding) into a table, and each frame refers to rows of that table:

    sentences     U unique sentences, in first-seen order: the episode's `text`, then its narrations, then its
                  held-out narrations (empty strings dropped)
    text_emb      (U, E) float16: row u is the embedding of sentence u (stored as the latents are, in fp16)
    text_ids      (T, K) int16: frame t's text alternatives (row ids, −1 padding; K = the most any frame has)
    text_ids_heldout  (T,) int16: frame t's held-out paraphrase (−1: none); only when the episode has them

Which sentences a frame gets, the same rule as a clip's `meta.text` (`clips.py`): an episode with timed narrations
(`extras["narrations"]` = [first_frame, end_frame, text] spans, end exclusive; EPIC-KITCHENS, Push-T language) gives
frame t the narrations whose span covers t (none: the frame has no text), because the episode-level `text` of such
an episode is only the list of its narrations; any other episode gives every frame all of its `text` (DROID's up to
three paraphrased instructions are alternatives of one instruction). `extras["narrations_heldout"]` are the same
spans with paraphrases kept for evaluation: frame t's held-out id is that of the first held-out span covering t.

The table is computed by the cache writer and by the online `EpisodeStore` with the same function, so a clip's text
is the same from either.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

TextFn = Callable[[list[str]], np.ndarray]  # U sentences -> (U, E) float32 embeddings
MAX_SENTENCES = np.iinfo(np.int16).max  # ids are int16


class TextEmbedding(NamedTuple):
    """How sentences become embeddings: `fn` (sentences → (U, E) float32), its identity `label` (recorded in the
    cache and checked on every later write, like the image encoder's) and width `dim` = E."""

    fn: TextFn
    label: str
    dim: int


@dataclass(frozen=True)
class FrameText:
    """An episode's sentence table and per-frame ids (module docstring); `embed` turns it into stored arrays."""

    sentences: list[str]
    ids: np.ndarray  # (T, K) int16, −1 padding
    heldout: np.ndarray | None  # (T,) int16, −1 none; None: the episode has no held-out narrations

    def embed(self, text: TextEmbedding, who: str) -> dict[str, np.ndarray]:
        """The arrays a cache entry stores: text_emb (U, E) float16, text_ids, and text_ids_heldout when present.
        Raises ValueError naming `who` when the embedding function returns the wrong shape or non-finite values."""
        emb = np.asarray(text.fn(list(self.sentences)), dtype=np.float32)
        if emb.shape != (len(self.sentences), text.dim):
            raise ValueError(
                f"{who}: the text encoder {text.label!r} returned {emb.shape} for {len(self.sentences)} "
                f"sentences, expected ({len(self.sentences)}, {text.dim})"
            )
        bad = ~(np.abs(emb) <= np.finfo(np.float16).max)  # NaN, inf, or inf once stored in fp16
        if bad.any():
            row = int(np.argwhere(bad)[0, 0])
            raise ValueError(
                f"{who}: the text encoder {text.label!r} gave a non-finite embedding (or one beyond "
                f"fp16's range) for sentence {row} {self.sentences[row]!r}"
            )
        out = dict(text_emb=emb.astype(np.float16), text_ids=self.ids)
        if self.heldout is not None:
            out["text_ids_heldout"] = self.heldout
        return out


class EpisodeTexts:
    """Embeds episodes' sentence tables (`arrays`) with a TextEmbedding, or a function building one that is called
    only when the first episode with text comes (so data without text never loads a sentence encoder). `check`
    (label → None or raise) vets the embedding once it is built: the cache writer refuses another text encoder than
    the one its cache records."""

    def __init__(self, text: TextEmbedding | Callable[[], TextEmbedding], check: Callable[[str], None] | None = None):
        self._text, self._check, self._ready = text, check, False

    @property
    def embedding(self) -> TextEmbedding:
        if not self._ready:
            text = self._text if isinstance(self._text, TextEmbedding) else self._text()
            if self._check is not None:
                self._check(text.label)
            self._text, self._ready = text, True
        return self._text

    def arrays(self, text: list[str], extras: dict | None, T: int, who: str) -> dict[str, np.ndarray] | None:
        """The stored text arrays (`FrameText.embed`) of an episode of T frames; None when it has no text."""
        ft = frame_text(text, extras, T)
        return None if ft is None else ft.embed(self.embedding, who)


def _spans(extras: dict, key: str, T: int) -> list[tuple[int, int, str]]:
    return [(max(0, int(s)), min(T, int(e)), str(t)) for s, e, t in (extras.get(key) or []) if str(t)]


def frame_text(text: list[str], extras: dict | None, T: int) -> FrameText | None:
    """The sentence table and per-frame ids of an episode of T frames with episode-level `text` and `extras`
    (narrations); None when it has no sentence at all."""
    extras = extras or {}
    narr, held = _spans(extras, "narrations", T), _spans(extras, "narrations_heldout", T)
    sentences = list(dict.fromkeys([str(s) for s in text if str(s)] + [t for *_, t in narr] + [t for *_, t in held]))
    if not sentences:
        return None
    if len(sentences) > MAX_SENTENCES:
        raise ValueError(
            f"an episode has {len(sentences)} unique sentences; text ids are int16 (at most {MAX_SENTENCES})"
        )
    row = {s: i for i, s in enumerate(sentences)}
    per_frame: list[list[int]] = [[] for _ in range(T)]
    if extras.get("narrations"):  # timed: each frame its own narrations (none between them)
        for s, e, t in narr:
            for f in range(s, e):
                if row[t] not in per_frame[f]:
                    per_frame[f].append(row[t])
    else:  # episode-level: every frame, all of them
        ep_ids = list(dict.fromkeys(row[str(s)] for s in text if str(s)))
        per_frame = [ep_ids] * T
    ids = np.full((T, max(1, max(map(len, per_frame), default=0))), -1, dtype=np.int16)
    for f, r in enumerate(per_frame):
        ids[f, : len(r)] = r
    heldout = None
    if held:
        heldout = np.full(T, -1, dtype=np.int16)
        for s, e, t in reversed(held):  # reversed: the first span covering a frame is written last
            heldout[s:e] = row[t]
    return FrameText(sentences, ids, heldout)


def pick_text(
    emb: np.ndarray, ids: np.ndarray, heldout: np.ndarray | None, choice: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """(text (L, E) float32, mask (L,) bool) of L frames whose alternatives are `ids` (L, K) rows of `emb` (U, E).

    choice: an int picks alternative `choice % count` of each frame (training: one draw per clip, so DROID's
    paraphrase stays the same along a clip); None picks the frame's held-out paraphrase where `heldout` (L,) has
    one, else alternative 0 (evaluation). Frames without text get zeros and False.
    """
    ids = np.asarray(ids, dtype=np.int64)
    if choice is None:
        sel = ids[:, 0]
        if heldout is not None:
            sel = np.where(np.asarray(heldout) >= 0, np.asarray(heldout, dtype=np.int64), sel)
    else:
        count = (ids >= 0).sum(1)
        sel = np.where(count > 0, ids[np.arange(len(ids)), choice % np.maximum(count, 1)], -1)
    mask = sel >= 0
    text = np.where(mask[:, None], np.asarray(emb)[np.maximum(sel, 0)].astype(np.float32), np.float32(0.0))
    return text.astype(np.float32), mask


__all__ = ["EpisodeTexts", "FrameText", "MAX_SENTENCES", "TextEmbedding", "TextFn", "frame_text", "pick_text"]
