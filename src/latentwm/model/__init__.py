"""The dynamics transformer: layers, the block-causal space/time stack with its KV cache, and the model."""

from latentwm.model.dynamics import DynamicsModel
from latentwm.model.transformer import KVCache

__all__ = ["DynamicsModel", "KVCache"]
