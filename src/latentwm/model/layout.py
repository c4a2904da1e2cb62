"""TokenLayout: the order and count of the tokens of one frame, in one place (DESIGN section 5).

    [R registers | 1 shortcut | 1 action | 1 text | 1 proprio | N' latent]
    (no text slot when model.text_dim = 0; a proprio slot only with model.proprio_input "slot")

Condition slots (shortcut, action, and any added later such as text) sit between the registers and the latents, so
every non-latent token has a fixed index and the latents are always the tail. Everything that needs an index — the
model's token assembly and head, the 2D RoPE table (which leaves the non-latent tokens unrotated), the probes and
agent heads that read per-frame features, throughput logging — asks the layout instead of recomputing `R + 2`.
"""

from __future__ import annotations

from dataclasses import dataclass

from latentwm.config import ModelConfig

CONDITION_SLOTS: tuple[str, ...] = ("shortcut", "action", "text", "proprio")
"""Condition tokens after the registers, in order (one token each); "text" only when model.text_dim > 0, "proprio"
only when the proprio has its own slot (ModelConfig.proprio_slot)."""


@dataclass(frozen=True)
class TokenLayout:
    """Slot order and index ranges of one frame's S = R + len(CONDITION_SLOTS) + N' tokens."""

    registers: int
    latents: int
    """N': latent tokens after 2×2 grouping (model.latent_grid² / patch_group²)."""
    conditions: tuple[str, ...] = CONDITION_SLOTS[:3]
    """The condition slots present, in CONDITION_SLOTS order (default: shortcut, action, text)."""

    @classmethod
    def from_config(cls, cfg: ModelConfig) -> TokenLayout:
        has = {"text": cfg.text_dim > 0, "proprio": cfg.proprio_slot}
        slots = tuple(s for s in CONDITION_SLOTS if has.get(s, True))
        return cls(registers=cfg.registers, latents=(cfg.latent_grid // cfg.patch_group) ** 2, conditions=slots)

    @property
    def special(self) -> int:
        """Tokens before the latents (registers + condition slots)."""
        return self.registers + len(self.conditions)

    @property
    def tokens_per_frame(self) -> int:
        """S."""
        return self.special + self.latents

    def slot(self, name: str) -> int:
        """Index of a one-token condition slot ('shortcut', 'action', ...) within the frame."""
        try:
            return self.registers + self.conditions.index(name)
        except ValueError:
            raise KeyError(f"token layout has no slot {name!r}; slots: {self.conditions}") from None

    @property
    def register_slice(self) -> slice:
        return slice(0, self.registers)

    @property
    def special_slice(self) -> slice:
        """Registers and condition tokens: the per-frame summary that probes and agent heads read."""
        return slice(0, self.special)

    @property
    def latent_slice(self) -> slice:
        return slice(self.special, self.tokens_per_frame)


__all__ = ["TokenLayout", "CONDITION_SLOTS"]
