"""`latentwm encode`: a dataset's frames → frozen encoder latents → a latent cache (WebDataset shards + index).

Resumable (finished shards are kept), and parallel under torchrun: each rank encodes its own shards, rank 0 writes
the index once every rank is done. Episodes' text (instructions, narrations) is embedded once here by the frozen
sentence encoder of `--text` into each entry's table (`data/frame_text.py`); that encoder is loaded only when the
first episode with text comes, so a dataset without text never needs the `[text]` extra."""

from __future__ import annotations

from pathlib import Path

import torch

from latentwm.config import ConfigError, EncodeConfig, TextEncoderConfig
from latentwm.data.frame_text import TextEmbedding
from latentwm.data.latent_cache import Encoding, encode_to_cache, finalize_cache
from latentwm.data.sources import load_source, parse_options, source_facts
from latentwm.distributed import init_distributed, shutdown
from latentwm.encoders.dino import DinoEncoder
from latentwm.encoders.text import TextEncoder


def source_items(cfg: EncodeConfig) -> list:
    """(key, loader) pairs of the chosen source; frames are decoded at the encoder's resolution."""
    try:
        return load_source(
            cfg.source,
            cfg.root,
            size=cfg.encoder.image_size,
            fps=cfg.fps,
            segment_s=cfg.segment_s,
            cameras=cfg.cameras,
            options=parse_options(cfg.options),
        )
    except ValueError as e:
        raise ConfigError(f"encode (--source {cfg.source} --root {cfg.root}): {e}") from e


def text_embedding(cfg: TextEncoderConfig, device=None):
    """A function building the TextEmbedding of `cfg` (called by the cache writer when it first meets text: data
    without text never loads it), or None when `cfg.name` is empty (no text stored)."""
    if not cfg.name:
        return None

    def build() -> TextEmbedding:
        enc = TextEncoder.from_config(cfg, device=device)
        return TextEmbedding(enc.embed, enc.label, enc.dim)

    return build


def run_encode(cfg: EncodeConfig) -> dict:
    """Encode every episode of cfg.source under cfg.root into cfg.out_dir; returns totals over ranks."""
    items = source_items(cfg)
    if not items:
        raise ConfigError(f"encode.root: no {cfg.source} episodes found in {cfg.root}")
    dist = init_distributed()  # under torchrun each rank encodes its own shards
    fresh = not (Path(cfg.out_dir) / "plan.json").exists()
    try:
        enc = DinoEncoder.from_config(cfg.encoder, device=dist.device)
        text = text_embedding(cfg.text, device=dist.device)
        encoding = Encoding(
            lambda f: enc.encode(f).cpu().numpy(),
            enc.weights_label,
            image_size=cfg.encoder.image_size,
            meta=dict(pool=cfg.encoder.pool, **source_facts(cfg.source, parse_options(cfg.options))),
            text=text,
        )
        res = encode_to_cache(
            items,
            encoding,
            cfg.out_dir,
            episodes_per_shard=cfg.episodes_per_shard,
            rank=dist.rank,
            world_size=dist.world_size,
            show_progress=dist.is_main,
        )
        res["shards"] = len(res["shards_written"])
        if dist.enabled:  # totals over ranks; the all-reduce returns once every rank has listed its shards
            tot = dist.all_reduce_sum(
                torch.tensor([res["episodes"], res["skipped"], res["shards"]], dtype=torch.float64, device=dist.device)
            ).tolist()
            res.update(
                episodes=int(tot[0]),
                skipped=int(tot[1]),
                shards=int(tot[2]),
                complete=finalize_cache(cfg.out_dir) if dist.is_main else res["complete"],
            )
            dist.barrier()  # leave together: a gloo rank tearing down while its peer still works can abort
    except BaseException:
        _forget_unstarted(Path(cfg.out_dir), fresh)
        raise
    finally:
        shutdown(dist)
    if dist.is_main:
        print(
            f"{res['episodes']} episodes encoded into {res['shards']} shards, {res['skipped']} skipped; "
            f"cache {'complete' if res['complete'] else 'incomplete'}: {cfg.out_dir}"
        )
    return res


def _forget_unstarted(out: Path, fresh: bool) -> None:
    """A run that failed before writing any episode (a damaged text encoder met with the first sentence, say) removes
    the plan.json it started the cache with, so no half-made cache is left for a later encode to trip over (the
    command's lock then removes the empty folder)."""
    if fresh and out.is_dir() and {p.name for p in out.iterdir()} <= {"plan.json", ".lock"}:
        (out / "plan.json").unlink(missing_ok=True)


__all__ = ["run_encode", "source_items", "text_embedding"]
