"""What a world model is conditioned on besides its frames: actions, text, their masks and guidance scales — and
`History`, what a whole-clip training pass may know of the clean clip it denoises.

`Conditions` covers a clip or a rollout (time on dim 1); `FrameConditions` is one frame's share of it, what
`DynamicsModel.step` takes. One value travels through sampling (`rollout`, `observe`), the training objectives and
the planning costs, so a new condition is one field here, not one more argument in twenty signatures.

Action convention (docs/design.md section 3): actions[:, t] is taken after frame t, so the action INTO frame t is
actions[:, t − 1] (none into frame 0). Text is per frame and not shifted: frame t goes with text[:, t].
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class FrameConditions:
    """One frame's conditions, each None when absent.

    action (B, A): the action into this frame (a next-frame model: the action taken after it); action_mask (B,) bool,
    False = unknown (None with an action: known); text (B, E): this frame's sentence embedding; text_mask (B,) bool,
    False = no text (None with text: present)."""

    action: torch.Tensor | None = None
    action_mask: torch.Tensor | None = None
    text: torch.Tensor | None = None
    text_mask: torch.Tensor | None = None

    def text_only(self) -> FrameConditions:
        """The same frame without its action (what a next-frame model keeps of a frame waiting for its action)."""
        return FrameConditions(text=self.text, text_mask=self.text_mask)

    def with_action(self, action: torch.Tensor | None, action_mask: torch.Tensor | None) -> FrameConditions:
        return dataclasses.replace(self, action=action, action_mask=action_mask)

    def map(self, fn) -> FrameConditions:
        """fn applied to every tensor that is present (e.g. repeating rows when a KV cache is expanded)."""
        return FrameConditions(
            *(None if t is None else fn(t) for t in (getattr(self, f.name) for f in dataclasses.fields(self)))
        )


NO_FRAME_CONDITIONS = FrameConditions()


@dataclass(frozen=True)
class Conditions:
    """A clip's or a rollout's conditions, each None when absent; a leading 1 instead of B is shared by every row
    (one action sequence or sentence for many planning candidates).

    actions (B or 1, T, A), actions[:, t] taken after frame t; action_mask (B or 1, T) bool, False = unknown (None
    with actions: all known). text (B or 1, T, E) per frame, or (B or 1, E) one sentence for every frame; text_mask
    (B or 1, T) / (B or 1,) bool, False = no text (None with text: present). text_guidance / action_guidance:
    classifier-free guidance scales for sampling (1: none)."""

    actions: torch.Tensor | None = None
    action_mask: torch.Tensor | None = None
    text: torch.Tensor | None = None
    text_mask: torch.Tensor | None = None
    text_guidance: float = 1.0
    action_guidance: float = 1.0

    def replace(self, **changes) -> Conditions:
        return dataclasses.replace(self, **changes)

    def known(self) -> Conditions:
        """Given actions with no mask are known actions: the mask made explicit (all True)."""
        if self.actions is None or self.action_mask is not None:
            return self
        return self.replace(
            action_mask=torch.ones(self.actions.shape[:2], dtype=torch.bool, device=self.actions.device)
        )

    @property
    def guided(self) -> bool:
        return self.text_guidance != 1.0 or self.action_guidance != 1.0

    def action_into(self, t: int, batch: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(action (batch, A), mask (batch,) or None) that led into frame t; (None, None) at t = 0 or without
        actions."""
        if self.actions is None or t == 0:
            return None, None
        a = self.actions[:, t - 1]
        m = None if self.action_mask is None else self.action_mask[:, t - 1]
        if a.shape[0] != batch:  # one action sequence shared by every candidate
            a = a.expand(batch, *a.shape[1:])
            m = None if m is None else m.expand(batch)
        return a, m

    def text_of(self, t: int, batch: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(text (batch, E), mask (batch,) or None) of frame t; (None, None) without text."""
        if self.text is None:
            return None, None
        x = self.text[:, t] if self.text.dim() == 3 else self.text
        tm = self.text_mask
        m = None if tm is None else (tm[:, t] if tm.dim() == 2 else tm)
        if x.shape[0] != batch:  # one sentence shared by every candidate
            x = x.expand(batch, *x.shape[1:])
            m = None if m is None else m.expand(batch)
        return x, m

    def at(self, t: int, batch: int) -> FrameConditions:
        """Frame t's conditions for `batch` rows: the action into it and its own text."""
        a, m = self.action_into(t, batch)
        x, tm = self.text_of(t, batch)
        return FrameConditions(a, m, x, tm)


NO_CONDITIONS = Conditions()


@dataclass(frozen=True)
class History:
    """What a whole-clip pass may know of the clean clip its noisy frames z come from — what sampling will have
    committed to the KV cache by each frame.

    frames (B, T, N, D): the clip's clean frames. A model with model.previous_frame reads frame t − 1's as frame
    t's previous-frame input (required there: without it a pass would have to guess the frame it conditions on).
    stream: teacher forcing (objective.teacher_forcing) — the frames also run as a second, clean stream of the same
    pass (τ = 1, d = 1/k_max, the frames' own actions and text), and frame t of z sees the clean frames before it
    and itself instead of the noisy frames before it (`transformer.teacher_forcing_mask`; about twice the compute)."""

    frames: torch.Tensor
    stream: bool = False


__all__ = ["Conditions", "FrameConditions", "History", "NO_CONDITIONS", "NO_FRAME_CONDITIONS"]
