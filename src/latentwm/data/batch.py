"""WorldBatch (the tensors a model step sees), its per-sample metadata, and the collate that pads clips.

A batch holds either encoded `latents` (B, T, N, D) or raw `frames` (B, T, 3, H, W) uint8 for online encoding.
Clips of different lengths are right-padded; `valid` (B, T) marks real frames and `action_mask` (B, T) marks known
actions (False for action-free video, padding, and a clip's last step when the action after it is unknown).
Text is a per-frame condition like actions: `text` (B, T, E) holds the frozen sentence embedding of each frame's
text (looked up from the cache's table, never computed per step) and `text_mask` (B, T) marks frames that have one;
a batch may mix samples with and without text (those without get zeros and False).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from latentwm.conditions import Conditions

_TENSORS = (
    "latents",
    "frames",
    "actions",
    "action_mask",
    "valid",
    "proprio",
    "rewards",
    "terminal",
    "states",
    "text",
    "text_mask",
)


@dataclass(frozen=True)
class WorldBatchMetadata:
    """Plain-Python facts about one sample, so evaluation can be split by dataset and camera."""

    dataset: str
    episode_id: str
    camera: str = "main"
    start_frame: int = 0  # index in the episode's original (not frame-skipped) frames
    frame_stride: int = 1  # original frames per clip step (frame skip / temporal stride)
    fps: float = 0.0  # clip frame rate after the stride
    text: tuple[str, ...] = ()
    success: bool | None = None


@dataclass
class ClipSample:
    """One clip before batching (tensors without the batch dimension)."""

    latents: torch.Tensor | None = None  # (T, N, D) float
    frames: torch.Tensor | None = None  # (T, 3, H, W) uint8
    actions: torch.Tensor | None = None  # (T, A) float, normalized
    action_mask: torch.Tensor | None = None  # (T,) bool
    proprio: torch.Tensor | None = None  # (T, P)
    rewards: torch.Tensor | None = None  # (T,)
    terminal: torch.Tensor | None = None  # (T,) bool
    states: torch.Tensor | None = None  # (T, S) float64 simulator state (goals, scoring)
    text: torch.Tensor | None = None  # (T, E) float32 sentence embedding of each frame's text (zeros where none)
    text_mask: torch.Tensor | None = None  # (T,) bool: the frame has a text
    meta: WorldBatchMetadata | None = None

    def __len__(self) -> int:
        x = self.latents if self.latents is not None else self.frames
        return int(x.shape[0])


@dataclass
class WorldBatch:
    """Tensors of one training/eval batch; `meta` (one entry per sample) travels beside them, untouched by `.to()`."""

    actions: torch.Tensor  # (B, T, A) float, zero-padded to the model's action_dim
    action_mask: torch.Tensor  # (B, T) bool
    valid: torch.Tensor  # (B, T) bool
    latents: torch.Tensor | None = None  # (B, T, N, D) float
    frames: torch.Tensor | None = None  # (B, T, 3, H, W) uint8
    proprio: torch.Tensor | None = None  # (B, T, P)
    rewards: torch.Tensor | None = None  # (B, T)
    terminal: torch.Tensor | None = None  # (B, T) bool
    states: torch.Tensor | None = None  # (B, T, S) float64 simulator state
    text: torch.Tensor | None = None  # (B, T, E) float sentence embeddings (zeros where text_mask is False)
    text_mask: torch.Tensor | None = None  # (B, T) bool
    meta: list[WorldBatchMetadata] = field(default_factory=list)

    def __post_init__(self):
        if self.latents is None and self.frames is None:
            raise ValueError("WorldBatch needs `latents` (B, T, N, D) or `frames` (B, T, 3, H, W)")
        B, T = self.valid.shape
        for name in _TENSORS:
            t = getattr(self, name)
            if t is not None and tuple(t.shape[:2]) != (B, T):
                raise ValueError(
                    f"WorldBatch.{name} has leading shape {tuple(t.shape[:2])}, expected (B, T) = "
                    f"({B}, {T}) like `valid`"
                )
        if self.meta and len(self.meta) != B:
            raise ValueError(f"WorldBatch.meta has {len(self.meta)} entries for batch size {B}")

    @property
    def batch_size(self) -> int:
        return int(self.valid.shape[0])

    @property
    def seq_len(self) -> int:
        return int(self.valid.shape[1])

    @property
    def conditions(self) -> Conditions:
        """The batch's actions, text and their masks as one value (what objectives and rollouts take)."""
        return Conditions(self.actions, self.action_mask, self.text, self.text_mask)

    def _map(self, fn) -> WorldBatch:
        return replace(self, **{n: fn(getattr(self, n)) for n in _TENSORS if getattr(self, n) is not None})

    def to(self, device: torch.device | str, non_blocking: bool = False) -> WorldBatch:
        return self._map(lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> WorldBatch:
        # DataLoader(pin_memory=True) calls this on custom batch types.
        return self._map(lambda t: t.pin_memory())

    def __getitem__(self, idx) -> WorldBatch:
        """Select samples (int, slice, list, index or bool-mask tensor/array) keeping the batch dimension.

        A scalar index (int, 0-d tensor or array) selects one sample as a batch of one; a one-element index tensor
        (e.g. `mask.nonzero().squeeze(1)` with one hit) too.
        """
        if isinstance(idx, slice):
            pos = list(range(self.batch_size))[idx]
            sel = idx
        else:
            arr = np.asarray(idx.cpu() if isinstance(idx, torch.Tensor) else idx)
            pos = np.atleast_1d(np.arange(self.batch_size)[arr]).tolist()
            sel = torch.tensor(pos, dtype=torch.long)
        meta = [self.meta[i] for i in pos] if self.meta else []
        out = {
            n: getattr(self, n)[sel.to(t.device) if isinstance(sel, torch.Tensor) else sel]
            for n in _TENSORS
            if (t := getattr(self, n)) is not None
        }
        return WorldBatch(**out, meta=meta)


def collate(samples: Sequence[ClipSample], action_dim: int) -> WorldBatch:
    """Stack clips into a WorldBatch, right-padding to the longest clip and actions to `action_dim`.

    Padded steps have valid = False and action_mask = False; padded values are zeros (never garbage).
    """
    if not samples:
        raise ValueError("collate: empty list of samples")
    B, T = len(samples), max(len(s) for s in samples)
    valid = torch.zeros(B, T, dtype=torch.bool)
    actions = torch.zeros(B, T, action_dim)
    action_mask = torch.zeros(B, T, dtype=torch.bool)
    out: dict[str, torch.Tensor] = {}

    def put(name: str, i: int, value: torch.Tensor, dtype=None):
        if name not in out:
            out[name] = torch.zeros((B, T, *value.shape[1:]), dtype=dtype or value.dtype)
        if out[name].shape[2:] != value.shape[1:]:
            raise ValueError(
                f"collate: sample {i} `{name}` has per-step shape {tuple(value.shape[1:])}, "
                f"sample 0 has {tuple(out[name].shape[2:])}"
            )
        out[name][i, : len(value)] = value

    kinds = {
        n: [getattr(s, n) is not None for s in samples]
        for n in ("latents", "frames", "proprio", "rewards", "terminal", "states")
    }
    for name, present in kinds.items():
        if any(present) and not all(present):
            raise ValueError(f"collate: `{name}` is present in some samples and missing in others")
    widths = {int(s.text.shape[-1]) for s in samples if s.text is not None}
    if len(widths) > 1:
        raise ValueError(
            f"collate: samples carry text embeddings of different widths {sorted(widths)} (caches "
            "encoded with different text encoders cannot share a batch)"
        )
    if widths:  # text is a condition like actions: samples without it get zeros and text_mask False
        out["text"] = torch.zeros(B, T, widths.pop())
        out["text_mask"] = torch.zeros(B, T, dtype=torch.bool)
    for i, s in enumerate(samples):
        L = len(s)
        valid[i, :L] = True
        if s.text is not None:
            if s.text.shape[0] != L:
                raise ValueError(f"collate: sample {i} ({_who(s)}) has {s.text.shape[0]} text rows for {L} frames")
            m = torch.ones(L, dtype=torch.bool) if s.text_mask is None else s.text_mask.bool()
            out["text"][i, :L] = torch.where(m[:, None], s.text.float(), torch.zeros((), dtype=torch.float))
            out["text_mask"][i, :L] = m
        for name in kinds:
            v = getattr(s, name)
            if v is not None:
                put(name, i, v)
        if s.actions is not None:
            a = s.actions
            if a.shape[0] != L:
                raise ValueError(f"collate: sample {i} has {a.shape[0]} actions for {L} frames")
            if a.shape[1] > action_dim:
                raise ValueError(
                    f"collate: sample {i} ({_who(s)}) has action dim {a.shape[1]}, larger than the "
                    f"model's action_dim {action_dim}"
                )
            m = torch.ones(L, dtype=torch.bool) if s.action_mask is None else s.action_mask.bool()
            actions[i, :L, : a.shape[1]] = torch.where(m[:, None], a.float(), torch.zeros_like(a, dtype=torch.float))
            action_mask[i, :L] = m
    meta = [s.meta if s.meta is not None else WorldBatchMetadata("unknown", str(i)) for i, s in enumerate(samples)]
    return WorldBatch(actions=actions, action_mask=action_mask, valid=valid, meta=meta, **out)


def _who(s: ClipSample) -> str:
    return "unknown" if s.meta is None else f"{s.meta.dataset}/{s.meta.episode_id}"
