"""TokenLayout owns the slot order: the model, its head and the feature readers agree with it."""

import dataclasses

import pytest
import torch

from latentwm.config import get_preset
from latentwm.model import DynamicsModel
from latentwm.model.layout import CONDITION_SLOTS, TokenLayout


def test_layout_indices():
    lay = TokenLayout(registers=4, latents=16)
    assert lay.special == 4 + len(CONDITION_SLOTS) - 1 == 7  # no proprio slot unless asked for
    assert lay.tokens_per_frame == lay.special + 16
    assert lay.slot("shortcut") == 4 and lay.slot("action") == 5 and lay.slot("text") == 6
    assert lay.register_slice == slice(0, 4)
    assert lay.latent_slice == slice(lay.special, lay.tokens_per_frame)
    # model.text_dim = 0: no text slot, the latents move up by one
    plain = TokenLayout.from_config(dataclasses.replace(get_preset("tiny").model, text_dim=0))
    assert plain.conditions == ("shortcut", "action") and plain.special == plain.registers + 2
    with pytest.raises(KeyError, match="no slot 'text'"):
        plain.slot("text")
    # model.proprio_input "slot": the proprio's token comes last among the conditions, the latents move up by one
    cfg = dataclasses.replace(get_preset("tiny").model, proprio_dim=4, proprio_input="slot")
    slot = TokenLayout.from_config(cfg)
    assert slot.conditions == ("shortcut", "action", "text", "proprio") and slot.slot("proprio") == slot.special - 1
    assert TokenLayout.from_config(dataclasses.replace(cfg, proprio_input="concat")).conditions[-1] == "text"


def test_model_follows_layout():
    cfg = get_preset("tiny").model
    m = DynamicsModel(cfg).eval()
    lay = TokenLayout.from_config(cfg)
    assert m.layout == lay and m.tokens_per_frame == lay.tokens_per_frame
    z = torch.randn(2, 3, cfg.num_latent_tokens, cfg.latent_dim)
    x_hat, h = m.hidden(z, 0.5, 0.25)
    assert h.shape == (2, 3, lay.tokens_per_frame, cfg.width)
    # the action slot's output is the only one that changes when an action is given (frame 1 sees a_0) ...
    a = torch.randn(2, 3, cfg.action_dim)
    tau, d, no_text = torch.full((2, 3), 0.5), torch.full((2, 3), 0.25), m._embed_text(None, None, 2, 3)
    tokens_plain = m._tokens(z, tau, d, m._embed_actions(None, None, 2, 3), no_text)
    tokens_act = m._tokens(z, tau, d, m._embed_actions(a, torch.ones(2, 3, dtype=torch.bool), 2, 3), no_text)
    changed = (tokens_plain - tokens_act).abs().amax(dim=(0, 1, 3)) > 0
    assert changed.nonzero().flatten().tolist() == [lay.slot("action")]
    # ... and the text slot's the only one that changes with a text
    text = m._embed_text(torch.randn(2, 3, cfg.text_dim), torch.ones(2, 3, dtype=torch.bool), 2, 3)
    tokens_text = m._tokens(z, tau, d, m._embed_actions(None, None, 2, 3), text)
    changed = (tokens_plain - tokens_text).abs().amax(dim=(0, 1, 3)) > 0
    assert changed.nonzero().flatten().tolist() == [lay.slot("text")]
