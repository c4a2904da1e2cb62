"""`latentwm verify CACHE`: check every shard of a latent cache against its index (presence, size, CRC-32)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from latentwm.config import VerifyConfig
from latentwm.data.cache_integrity import CacheError, file_checksum, shard_problem
from latentwm.data.latent_cache import LatentCache
from latentwm.io.files import atomic_write


def verify_cache(path: str | os.PathLike) -> dict:
    """Check every shard of the latent cache at `path` against its index record (presence, size, checksum);
    what `latentwm verify CACHE` prints. Reads every shard once.

    Returns {"path", "ok" (every planned shard present and sound), "complete" (every planned shard listed),
    "shards": {name: {"status": "ok" | "bad" | "unchecked" (no checksum recorded), "reason": str | None,
    "bytes": int}}, "missing": [planned shards not listed in the index], "num_ok", "num_bad", "num_unchecked",
    "bytes"}. Raises CacheError when `path` is not a latent cache.
    """
    cache = LatentCache(path)
    shards = {}
    for name, rec in cache.records.items():
        why = shard_problem(cache.path / name, rec)
        status = "bad" if why else ("ok" if rec.get("checksum") else "unchecked")
        shards[name] = dict(
            status=status,
            reason=why
            or (None if status == "ok" else "no checksum in the index (written before checksums): size checked only"),
            bytes=int(rec["bytes"]),
        )
    count = {s: sum(v["status"] == s for v in shards.values()) for s in ("ok", "bad", "unchecked")}
    return dict(
        path=str(cache.path),
        ok=not count["bad"] and not cache.missing_shards,
        complete=cache.complete,
        shards=shards,
        missing=list(cache.missing_shards),
        num_ok=count["ok"],
        num_bad=count["bad"],
        num_unchecked=count["unchecked"],
        bytes=sum(v["bytes"] for v in shards.values()),
    )


def add_checksums(path: str | os.PathLike) -> int:
    """Write the CRC-32 of every shard whose index record has none into the index (atomically); returns how many."""
    added = 0
    for index in sorted(Path(path).glob("index/rank-*.json")):
        doc = json.loads(index.read_text())
        todo = [n for n, rec in doc.get("shards", {}).items() if not rec.get("checksum")]
        for name in todo:
            doc["shards"][name]["checksum"] = file_checksum(Path(path) / name)
        if todo:
            atomic_write(index, json.dumps(doc))
            added += len(todo)
    return added


def run_verify(cfg: VerifyConfig) -> dict:
    """Print one line per damaged shard and a summary; a damaged, incomplete or unverifiable (shards without a
    checksum, unless --add-checksums records them) cache is a CacheError (exit 2)."""
    if cfg.add_checksums and verify_cache(cfg.cache_dir)["num_bad"] == 0:
        print(f"recorded the checksums of {add_checksums(cfg.cache_dir)} shards that had none")
    res = verify_cache(cfg.cache_dir)
    for name, sh in res["shards"].items():
        if sh["status"] != "ok" or cfg.verbose:
            print(f"{sh['status']:>9}  {name}" + (f"  ({sh['reason']})" if sh["reason"] else ""))
    for name in res["missing"]:
        print(f"{'missing':>9}  {name}  (planned, not written yet: re-run the same `latentwm encode` to finish)")
    print(
        f"{res['path']}: {res['num_ok']} shards ok, {res['num_bad']} damaged, {res['num_unchecked']} without a "
        f"checksum, {len(res['missing'])} missing; {res['bytes'] / 1e6:.1f} MB read"
    )
    if not res["ok"]:
        raise CacheError(
            f"cache {res['path']} failed verification ({res['num_bad']} damaged, "
            f"{len(res['missing'])} missing shards); re-run `latentwm encode` into it to rewrite them"
        )
    if res["num_unchecked"]:
        raise CacheError(
            f"cache {res['path']}: {res['num_unchecked']} shards have no checksum in the index (written "
            "before checksums) and cannot be verified; `latentwm verify CACHE --add-checksums` records "
            "them from the bytes as they are now"
        )
    return res


__all__ = ["run_verify", "verify_cache"]
