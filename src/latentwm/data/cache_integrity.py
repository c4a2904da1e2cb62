"""Integrity of latent caches: a checksum per shard and finite latents (`data/verify.py`: `latentwm verify CACHE`).

A shard's size alone does not prove it whole: a bad sector, a copy that wrote zeros, a shard overwritten by another
job can all keep the size. So the writer records a checksum of every finished shard in the index, `encode` checks
its own completed shards against it before skipping them on resume (a mismatch is encoded again), and
`verify.verify_cache` checks them all. CRC-32 (zlib) is the checksum: it detects accidental corruption, which is the
threat here (nobody forges cache shards to subvert training), and it runs at ~4 GB/s on one core against ~0.8 for
BLAKE2b and ~1.7 for SHA-256 (12 MB arrays, this project's CI machine), so verifying a cache costs little more
than reading it.

Reading does not re-hash shards (entries are read by byte offset, never whole shards); instead every latent array
is checked finite when it is read from disk (`first_nonfinite`: two integer max-reductions over the fp16 bits), so a
NaN that got in (a shard written by a buggy tool, bytes flipped into a NaN pattern) is named with its shard and
episode instead of silently poisoning training (text embedding tables likewise, `check_text`). The check is a
pass over memory, ~15% of a page-cache-warm read; reading .npy files in place (`npy_view`, no np.load copies) more
than pays for it: bench_data's shard read went from ~2.7-3.0 to ~3.3 GB/s with both (interleaved runs, 2-core CPU
machine).
"""

from __future__ import annotations

import errno
import io
import json
import os
import re
import zlib
from pathlib import Path

import numpy as np

from latentwm.config.base import LatentwmError

CHECKSUM = "crc32"


class CacheError(LatentwmError, ValueError):
    """The cache directory is missing, inconsistent, or was written for something else; the message says which."""


_WEIGHTS_HASH = re.compile(r"^pretrained:.*#([0-9a-f]{12})$")


def same_encoder(a: str | None, b: str | None) -> bool:
    """Whether two encoder labels (`DinoEncoder.weights_label`) name the same weights: equal labels, or two local
    folders whose weight files hash the same (`pretrained:<folder>#<hash>`: a copied or moved model folder)."""
    ha, hb = (_WEIGHTS_HASH.match(x or "") for x in (a, b))
    return a == b or (ha is not None and hb is not None and ha[1] == hb[1])


def cache_pool(info: dict) -> int:
    """The encoder's token pooling recorded in cache.json (`pool`; caches written before it existed: 1)."""
    return int(info.get("pool") or 1)


def check_cache_identity(out: Path, info: dict | None, label: str, pool: int, image_size: int | None) -> None:
    """Refuse to put latents of another encoder (weights label, token pooling, image size) into the cache at `out`,
    whose cache.json is `info` (None: a new cache). Raises CacheError naming each difference, the cache's first."""
    if info is None:
        return
    diffs = [] if same_encoder(have := info.get("encoder"), label) else [f"encoder {have!r} vs {label!r}"]
    diffs += [] if cache_pool(info) == pool else [f"pool {cache_pool(info)} vs {pool}"]
    if image_size is not None and info.get("image_size") not in (None, image_size):
        diffs.append(f"image_size {info['image_size']} vs {image_size}")
    if diffs:
        raise CacheError(
            f"latent cache {out} was encoded with another encoder ({'; '.join(diffs)}: the cache's, then "
            "this encode's); refusing to mix their latents: encode into another directory"
        )


def check_text_identity(out: Path, info: dict | None, label: str) -> None:
    """Refuse to add text embedded by sentence encoder `label` to the cache at `out` whose cache.json (`info`)
    records text of another one: rows of two encoders' tables are not comparable, even at the same width."""
    have = (info or {}).get("text_encoder")
    if have is not None and not same_encoder(have, label):
        raise CacheError(
            f"latent cache {out} holds text embedded by {have!r}, this encode's text encoder is "
            f"{label!r}; refusing to mix their embeddings: pass the cache's text encoder (--text.name), "
            "or encode into another directory"
        )


def check_narration_identity(out: Path, info: dict | None, narration: str | None) -> None:
    """Refuse to add episodes whose generated sentences are of narration style `narration` (None: the encode's
    source has no such choice) to the cache at `out` whose cache.json (`info`; None: a new cache) records another
    style. A cache written before the style was recorded holds the only style there was then, "direction"."""
    if info is None or narration is None:
        return
    have = info.get("narration", "direction")
    if have != narration:
        raise CacheError(
            f"latent cache {out} holds Push-T narrations of style {have!r}, this encode reads them as "
            f"{narration!r} (reader option narration); refusing to mix the two: pass --options "
            f"narration={have}, or encode into another directory"
        )


def file_checksum(path: str | os.PathLike, chunk: int = 4 << 20) -> str:
    """`crc32:xxxxxxxx` of a file's bytes, read in chunks."""
    crc = 0
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            crc = zlib.crc32(block, crc)
    return f"{CHECKSUM}:{crc:08x}"


def shard_problem(path: Path, record: dict, checksum: bool = True) -> str | None:
    """Why the shard at `path` does not match its index record (None: it does). Without a recorded checksum (a
    cache written before checksums) only the size is checked."""
    if not path.is_file():
        return "file missing"
    if (size := path.stat().st_size) != record["bytes"]:
        return f"{size} bytes, the index says {record['bytes']}"
    want = record.get("checksum")
    if checksum and want is not None and (have := file_checksum(path)) != want:
        return f"checksum {have} does not match the index ({want}): corrupt"
    return None


def check_inside(folder: Path, names) -> None:
    """An index is data, not a path to trust: every shard it names must lie inside the cache folder."""
    root = folder.resolve()
    for name in names:
        if not (folder / name).resolve().is_relative_to(root):
            raise CacheError(
                f"{folder}: the index names a shard outside the cache folder ({name!r}); refused (a "
                "damaged or crafted index)"
            )


def check_shard_once(checked: set[str], path: Path, record: dict) -> None:
    """Size and checksum of a shard, the first time a reader opens it (`checked`: the names already done). Finite
    garbage inside a shard (same size, other bytes) would otherwise be trained on: it is named instead."""
    if path.name in checked:
        return
    if why := shard_problem(path, record):
        raise CacheError(
            f"{path}: {why}; `latentwm verify {path.parent}` lists every damaged shard, `latentwm "
            "encode` with the same settings rewrites it"
        )
    checked.add(path.name)


def write_error(shard: Path, exc: OSError) -> Exception:
    """A full disk (or quota) while writing `shard` as a CacheError that names it and says what is kept; any other
    OSError unchanged."""
    if exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return exc
    return CacheError(
        f"{shard}: could not be written ({exc.strerror}); the partial shard was removed, the finished "
        "ones are kept: free disk space and run the same `latentwm encode` again to continue"
    )


def recheck(out: Path, records: dict, done: set[str], names: list[str]) -> set[str]:
    """`done` (shards complete by index and size) less those of `names` whose bytes no longer match their checksum:
    same size, different bytes, which a size check alone would skip as complete. Each is named; encode rewrites it."""
    done = set(done)
    for name in names:
        if name in done and (why := shard_problem(out / name, records[name])):
            print(f"encode: {out / name} fails its check ({why}); encoding it again")
            done.discard(name)
    return done


def retry_skipped(out: Path, records: dict, done: set[str], names: list[str]) -> set[str]:
    """`done` less the shards of `names` whose index record lists skipped (unreadable) items: they are encoded
    again, so a file repaired since gets in (one still broken is skipped and counted again)."""
    retry = {n for n in names if n in done and records[n].get("skipped")}
    for n in sorted(retry):
        items = [s["item"] for s in records[n]["skipped"]]
        print(
            f"encode: {out / n} skipped {len(items)} unreadable items; encoding it again to retry them "
            f"({', '.join(items[:5])}{', ...' if len(items) > 5 else ''})"
        )
    return set(done) - retry


def check_latents(latents: np.ndarray | None, shard: Path, entry: dict) -> None:
    """Raise CacheError naming the shard, episode and frame of the first non-finite value of an entry's latents."""
    if latents is not None and (bad := first_nonfinite(latents)) is not None:
        raise CacheError(
            f"{shard}: episode {entry['dataset']}/{entry['episode_id']} (camera {entry['camera']}) holds "
            f"a non-finite latent at frame {bad[0]} (index {bad}); the shard is corrupt: delete it and "
            "run the same `latentwm encode` again to rewrite it"
        )


def check_text(arrays: dict, shard: Path, entry: dict) -> None:
    """Raise CacheError naming the shard, episode and sentence row of the first non-finite text embedding of an
    entry (`text_emb`), or text ids pointing past the table."""
    emb = arrays.get("text_emb")
    if emb is None:
        return
    who = f"{shard}: episode {entry['dataset']}/{entry['episode_id']} (camera {entry['camera']})"
    if (bad := first_nonfinite(emb)) is not None:
        raise CacheError(
            f"{who} holds a non-finite text embedding (sentence row {bad[0]}); the shard is corrupt: "
            "delete it and run the same `latentwm encode` again to rewrite it"
        )
    for name in ("text_ids", "text_ids_heldout"):
        ids = arrays.get(name)
        if ids is not None and ids.size and int(ids.max()) >= len(emb):
            raise CacheError(
                f"{who}: `{name}` refers to sentence {int(ids.max())} of a table of {len(emb)}; the "
                "shard is corrupt: delete it and run the same `latentwm encode` again to rewrite it"
            )


def decode_member(data: bytearray, ext: str, shard: Path, key: str):
    """A shard member read by offset: `.json` parsed, `.npy` viewed; malformed bytes raise CacheError naming the
    shard and the member."""
    try:
        return json.loads(data) if ext.endswith(".json") else npy_view(data)
    except ValueError as e:
        raise CacheError(
            f"{shard}: {key}.{ext} is malformed ({e}); the shard is corrupt: delete it and run the "
            "same `latentwm encode` again to rewrite it"
        ) from e


def npy_view(buf: bytearray) -> np.ndarray:
    """The array of an in-memory .npy file as a view of `buf`, no copy (np.load from a BytesIO copies the data
    twice more, which costs more than the finite check it makes room for). Object arrays are refused, as
    np.load(allow_pickle=False) refuses them."""
    version = (buf[6], buf[7]) if bytes(buf[:6]) == b"\x93NUMPY" else None
    if version not in ((1, 0), (2, 0)):  # not an .npy (np.load names the problem), or a rare utf-8 header
        return np.load(io.BytesIO(buf), allow_pickle=False)
    width = 2 if version == (1, 0) else 4
    start = 8 + width + int.from_bytes(buf[8 : 8 + width], "little")
    head = io.BytesIO(bytes(buf[8:start]))
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, fortran, dtype = read(head)
    if dtype.hasobject:
        raise ValueError("object arrays cannot be loaded from a latent cache (they would need pickle)")
    a = np.frombuffer(buf, dtype=dtype, count=int(np.prod(shape)), offset=start)
    return a.reshape(shape[::-1]).T if fortran else a.reshape(shape)


def first_nonfinite(a: np.ndarray) -> tuple[int, ...] | None:
    """Index of the first NaN/inf in `a`, or None when every value is finite.

    float16 (what caches store) is checked on its bits without temporaries: an fp16 value is non-finite iff its
    exponent bits are all set, i.e. its int16 view is >= 0x7C00 (positive) or its uint16 view >= 0xFC00 (negative),
    and every finite value lies below both bounds.
    """
    if a.size == 0:
        return None
    if a.dtype == np.float16:
        if a.view(np.int16).max() < 0x7C00 and a.view(np.uint16).max() < 0xFC00:
            return None
    elif not np.issubdtype(a.dtype, np.floating) or np.isfinite(a).all():
        return None
    return tuple(int(i) for i in np.argwhere(~np.isfinite(a))[0])
