"""The files of a latent cache directory (layout: `latent_cache`): sample keys, atomic writes, JSON reads, the
per-rank index records and the statistics files summed from them. Kept apart from the writer and reader so both stay
readable; `latent_cache` re-exports the public names."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np

from latentwm.data.cache_integrity import CacheError
from latentwm.data.episodes import ChannelSums, DatasetStats, NormStats
from latentwm.io.files import atomic_write, read_json

FORMAT, VERSION = "latentwm-latent-cache", 1
SHARD = "shard-{:06d}.tar"


def _escape(part: str) -> str:
    return str(part).replace("%", "%25").replace(".", "%2E").replace("/", "%2F")


def sample_key(dataset: str, episode_id: str, camera: str) -> str:
    """WebDataset key `{dataset}/{episode}/{camera}` with dots (and slashes inside parts) escaped."""
    return "/".join(_escape(p) for p in (dataset, episode_id, camera))


def _read_json(path: Path):
    return read_json(path, "latent cache file", CacheError, missing_ok=True)


def _npy(a: np.ndarray) -> bytes:
    np.save(buf := io.BytesIO(), np.ascontiguousarray(a), allow_pickle=False)
    return buf.getvalue()


def merged_records(cache_dir: str | os.PathLike) -> dict[str, dict]:
    """Completed shards from every rank's index file (a shard listed twice has identical records)."""
    return {
        k: v
        for p in sorted(Path(cache_dir).glob("index/rank-*.json"))
        for k, v in (_read_json(p) or {}).get("shards", {}).items()
    }


def write_stats(cache_dir: str | os.PathLike) -> tuple[NormStats | None, dict[str, DatasetStats]]:
    """Merge the shards' sums into latent_stats.json and stats/<dataset>.json (atomic writes)."""
    cache_dir = Path(cache_dir)
    lat, ds = _stats_from_records(merged_records(cache_dir))
    if lat is not None:
        atomic_write(cache_dir / "latent_stats.json", json.dumps(lat.to_dict()))
    for name, s in ds.items():
        atomic_write(cache_dir / "stats" / f"{_escape(name)}.json", json.dumps(s.to_dict(), indent=1))
    return lat, ds


def _stats_from_records(records: dict) -> tuple[NormStats | None, dict[str, DatasetStats]]:
    lat, per = ChannelSums(), {"actions": {}, "proprio": {}}
    for rec in records.values():
        lat.add(ChannelSums(rec["stats"]["latents"]))
        for q, sums in per.items():
            for k, v in rec["stats"][q].items():
                sums.setdefault(k, ChannelSums()).add(ChannelSums(v))
    names = sorted({e["dataset"] for r in records.values() for e in r["entries"]})
    return lat.stats(), {
        n: DatasetStats(n, **{q: s[n].stats() if n in s else None for q, s in per.items()}) for n in names
    }
