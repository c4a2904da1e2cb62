"""Shared helpers of the fault-injection tests: rewrite a checkpoint file and give it a matching manifest (what an
attacker or a careless copy can do), so that only the loader's own defences stand between the file and the run."""

import hashlib
import json
from pathlib import Path


def rewrite_manifest(ckpt_dir: Path) -> None:
    """Recompute manifest.json of `ckpt_dir` from its files, so that it verifies whatever they hold."""
    man = json.loads((ckpt_dir / "manifest.json").read_text())
    files = sorted(p for p in ckpt_dir.rglob("*") if p.is_file() and p.name != "manifest.json")
    man["files"] = {
        str(p.relative_to(ckpt_dir)): {"bytes": p.stat().st_size, "sha256": hashlib.sha256(p.read_bytes()).hexdigest()}
        for p in files
    }
    (ckpt_dir / "manifest.json").write_text(json.dumps(man))


class SlowClock:
    """A stand-in for time.monotonic / perf_counter on a machine 1000× slower: every reading advances a minute."""

    def __init__(self):
        import time

        self.t = time.monotonic()

    def __call__(self):
        self.t += 60.0
        return self.t


def reseal_shard(shard: Path) -> None:
    """Record a shard's current size and checksum in its cache's index, as if its bytes had been written so at
    encode time (values that were bad before they were stored: only the readers' value checks can catch them)."""
    from latentwm.data.cache_integrity import file_checksum

    for index in sorted((shard.parent / "index").glob("rank-*.json")):
        doc = json.loads(index.read_text())
        rec = doc.get("shards", {}).get(shard.name)
        if rec is not None:
            rec.update(bytes=shard.stat().st_size, checksum=file_checksum(shard))
            index.write_text(json.dumps(doc))
