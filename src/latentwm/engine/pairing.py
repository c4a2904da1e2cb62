"""Pairing a checkpoint with a latent cache: both must hold the same latents (encoder, image size, pooling, grid,
dim), or every number computed from the pair is garbage, silently."""

from __future__ import annotations

from latentwm.data.cache_integrity import cache_pool, same_encoder
from latentwm.engine.state_file import CheckpointError


def _fact(info: dict, key: str):
    """A fact of a cache.json (or of online encoding); a cache written before `pool` was recorded has pool 1."""
    return cache_pool(info) if key == "pool" and "format" in info else info.get(key)


def check_pairing(state: dict, cache_info: dict, cache_path) -> None:
    """Refuse to pair a checkpoint with a latent cache of other latents: its numbers would be garbage, silently.

    Compares what the checkpoint was trained on (state["cache_info"]: the training cache's cache.json or the online
    encoder's facts; older checkpoints: state["encoder"] and the model's N, D) with `cache_info` (a cache.json):
    encoder (weights label), image_size, pool, num_tokens, latent_dim. Facts one side does not record are skipped.
    Raises CheckpointError naming each differing fact with both values and both paths."""
    model = (state.get("config") or {}).get("model") or {}
    grid = model.get("latent_grid")
    trained = {
        "encoder": state.get("encoder"),
        "latent_dim": model.get("latent_dim"),
        "num_tokens": None if grid is None else grid * grid,
        **(state.get("cache_info") or {}),
    }
    diffs = []
    for key in ("encoder", "image_size", "pool", "num_tokens", "latent_dim"):
        a, b = (_fact(i, key) for i in (trained, cache_info))
        if a is not None and b is not None and not (same_encoder(a, b) if key == "encoder" else a == b):
            diffs.append(f"{key} {a!r} (checkpoint) vs {b!r} (cache)")
    if diffs:
        raise CheckpointError(
            f"checkpoint {state.get('path', '?')} was trained on other latents than the cache "
            f"{cache_path} holds: {'; '.join(diffs)}. Use the cache it was trained on (or one "
            "encoded with the same encoder settings)"
        )


__all__ = ["check_pairing"]
