"""Encoded episodes as WebDataset tar shards + an index: written resumably (and by several ranks), read at random.

Layout of a cache directory:

    cache.json             encoder label, image size, token pooling, N tokens, D, fps, dtype (float16), user facts
                           (the pusht reader's `narration` style: another style's encode into it is refused);
                           text_encoder (label) and text_dim once an episode with text is stored
    plan.json              which items (episode keys) go to which shard, fixed before anything is written
    shard-000000.tar ...   WebDataset shards, one sample per (episode, camera) keyed `{dataset}/{episode}/{camera}`
                           ('%', '.', '/' in a part escaped as %25, %2E, %2F: webdataset splits keys at dots), files
                           `.latents.npy` (T, N, D) fp16, `.actions.npy` (T, A) f32, `.action_mask.npy` (T,) bool,
                           `.proprio.npy`, `.rewards.npy`, `.states.npy`, `.meta.json`; with text (`frame_text`):
                           `.text_emb.npy` (U, E) fp16, `.text_ids.npy` (T, K) int16, `.text_ids_heldout.npy` (T,)
    index/rank-00000.json  per writer rank: its completed shards with their entries (byte offsets of every file in
                           the tar) and partial sums for statistics; rewritten atomically after each shard
    latent_stats.json      per-channel mean/std (D,) of the stored latents (NormStats)    } once every planned
    stats/<dataset>.json   DatasetStats (per env-step actions, proprio)                   } shard is complete

A shard is written to `.<name>.tmp`, fsynced, renamed, and only then listed in the index: a reader (which reads only
listed shards) never sees a half-written one; a temp file left by a crash is deleted and the shard rewritten.
Each index record carries the shard's checksum, checked before a resumed encode skips the shard and when a reader
first opens the shard; latents are checked finite when read (`cache_integrity`; `data/verify.py`: a whole cache).
Ranks own disjoint shards (k % world_size == rank) and separate index files, merged on read, so nothing races.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tarfile
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from latentwm.data.cache_files import (
    FORMAT,
    SHARD,
    VERSION,
    _escape,
    _npy,
    _read_json,
    _stats_from_records,
    merged_records,
    sample_key,
    write_stats,
)
from latentwm.data.cache_integrity import (
    CacheError,
    cache_pool,
    check_cache_identity,
    check_inside,
    check_latents,
    check_narration_identity,
    check_shard_once,
    check_text,
    check_text_identity,
    decode_member,
    file_checksum,
    recheck,
    retry_skipped,
    write_error,
)
from latentwm.data.episodes import ChannelSums, DatasetStats, Episode, EpisodeError, NormStats, frames_at
from latentwm.data.frame_text import EpisodeTexts, TextEmbedding
from latentwm.data.video import VideoError
from latentwm.io.files import atomic_write


@dataclass(frozen=True, eq=False)
class StepArrays:
    """The optional per-step arrays stored beside one (episode, camera)'s latents, each with its T steps: actions
    (T, A) (a stored step of frame skip k holds k env actions of equal width), action_mask (T,) bool (None with
    actions: all known), proprio (T, P), rewards (T,), states (T, S)."""

    actions: np.ndarray | None = None
    action_mask: np.ndarray | None = None
    proprio: np.ndarray | None = None
    rewards: np.ndarray | None = None
    states: np.ndarray | None = None


class LatentCacheWriter:
    """Appends samples to tar shards of `out_dir`; `add` one (episode, camera) at a time.

    Shards roll over at `shard_size_mb` (None: only when `close_shard`/`open_shard` is called, as `encode_to_cache`
    does to follow its plan). Use as a context manager: an exception discards the open shard's temp file.
    `text`: how sentences are embedded (`EpisodeTexts`: a TextEmbedding or a function building one); None: no text.
    """

    def __init__(
        self,
        out_dir: str | os.PathLike,
        shard_size_mb: float | None = 256.0,
        encoder_label: str = "unknown",
        meta: dict | None = None,
        rank: int = 0,
        image_size: int | None = None,
        text: TextEmbedding | Callable[[], TextEmbedding] | None = None,
    ):
        (out := Path(out_dir)).mkdir(parents=True, exist_ok=True)
        self.out, self.limit = out, None if shard_size_mb is None else int(shard_size_mb * 2**20)
        self.text = None if text is None else EpisodeTexts(text, partial(_check_text_encoder, out))
        self.label, self.meta, self.image_size = encoder_label, dict(meta or {}), image_size
        self.index_path = self.out / "index" / f"rank-{rank:05d}.json"
        self.records = (_read_json(self.index_path) or {}).get("shards", {})
        self._info, self._tar, self._name = _read_json(self.out / "cache.json"), None, None

    # ------------------------------------------------------------------------------------------------ shards
    def open_shard(self, name: str | None = None) -> str:
        self.close_shard()
        if name is None:  # next number after every shard this directory knows of
            known = {*self.records, *merged_records(self.out), *(p.name for p in self.out.glob("shard-*.tar"))}
            name = SHARD.format(max((int(n[6:-4]) for n in known if n[6:-4].isdigit()), default=-1) + 1)
        self._name, self._entries, self._skipped, self._items = name, [], [], []  # items: in processing order
        self._stats, self._tmp = dict(latents=ChannelSums(), actions={}, proprio={}), self.out / f".{name}.tmp"
        self._tar = tarfile.open(self._tmp, "w", format=tarfile.PAX_FORMAT)
        return name

    def close_shard(self) -> dict | None:
        """Finish the open shard: fsync, rename into place, then record it in this rank's index."""
        if self._tar is None:
            return None
        self._tar.close()
        with open(self._tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        final = self.out / self._name
        with tarfile.open(self._tmp) as tf:  # byte offsets of every file: random access without parsing the tar
            offsets = {m.name: (m.offset_data, m.size) for m in tf.getmembers()}
        for e in self._entries:
            e["files"] = {ext: offsets[f"{e['key']}.{ext}"] for ext in e.pop("_exts")}
        checksum = file_checksum(self._tmp)
        os.replace(self._tmp, final)
        stats = {
            k: v.to_dict() if isinstance(v, ChannelSums) else {d: x.to_dict() for d, x in v.items()}
            for k, v in self._stats.items()
        }
        rec = dict(
            name=self._name,
            bytes=final.stat().st_size,
            checksum=checksum,
            items=self._items,
            entries=self._entries,
            skipped=self._skipped,
            stats=stats,
        )
        self.records[self._name], self._tar, self._name = rec, None, None
        atomic_write(self.index_path, json.dumps(dict(format=FORMAT, version=VERSION, shards=self.records)))
        return rec

    def abort_shard(self) -> None:
        if self._tar is not None:
            with contextlib.suppress(OSError):  # a full disk fails the close too: the partial file goes anyway
                self._tar.close()
            self._tmp.unlink(missing_ok=True)
            self._tar = self._name = None

    def skip(self, item: str, error: str) -> None:
        """Record an item that could not be read (counted and named in the index; the next encode into this cache
        encodes its shard again, so a repaired file gets in)."""
        if self._tar is None:
            self.open_shard()
        self._skipped.append(dict(item=item, error=error))
        self._items += [item] if item not in self._items else []

    # ------------------------------------------------------------------------------------------------ samples
    def episode_text(self, ep: Episode) -> dict[str, np.ndarray] | None:
        """`ep`'s text arrays (`frame_text`), to embed once for all its cameras; None: no text, or none stored."""
        try:
            return (
                None
                if self.text is None
                else self.text.arrays(ep.text, ep.extras, len(ep), f"episode {ep.dataset}/{ep.episode_id}")
            )
        except ValueError as e:  # the text encoder's output (wrong shape, non-finite): nothing may be stored
            raise e if isinstance(e, CacheError) else CacheError(str(e)) from e

    def add(
        self,
        episode_id: str,
        camera: str,
        latents: np.ndarray,
        *,
        dataset: str,
        steps: StepArrays | None = None,
        meta: dict | None = None,
        item: str | None = None,
        text: dict[str, np.ndarray] | None = None,
    ) -> str:
        """Store one (episode, camera): latents (T, N, D) → fp16; `steps` its optional per-step arrays; `text` from
        `episode_text`."""
        steps = steps or StepArrays()
        actions, action_mask, proprio = steps.actions, steps.action_mask, steps.proprio
        lat = np.asarray(latents)
        if lat.ndim != 3 or not np.isfinite(lat).all():
            raise CacheError(f"{dataset}/{episode_id}/{camera}: latents must be finite (T, N, D), got {lat.shape}")
        self._check_info(lat, meta or {})
        if self._tar is None or (self.limit is not None and self._tar.offset > self.limit):
            self.open_shard()
        T, key = len(lat), sample_key(dataset, episode_id, camera)
        skip = int((meta or {}).get("frame_skip") or 1)
        if actions is not None and np.asarray(actions).shape[1] % skip:
            raise CacheError(
                f"{key}: actions of width {np.asarray(actions).shape[1]} cannot hold frame_skip {skip} "
                f"env steps of equal width"
            )
        if actions is not None and action_mask is None:
            action_mask = np.ones(T, dtype=bool)
        self._record_text(text)
        arrays = dict(
            latents=lat.astype(np.float16),
            actions=actions,
            action_mask=action_mask,
            proprio=proprio,
            rewards=steps.rewards,
            states=steps.states,
            **(text or {}),
        )
        for name, a in arrays.items():
            if a is not None and len(a) != T and name != "text_emb":
                raise CacheError(f"{key}: `{name}` has {len(a)} steps for {T} latent frames")
        meta = dict(meta or {}, dataset=dataset, episode_id=episode_id, camera=camera, length=T)
        files = {f"{n}.npy": _npy(a) for n, a in arrays.items() if a is not None}
        files["meta.json"] = json.dumps(meta).encode()
        for ext, data in files.items():
            ti = tarfile.TarInfo(f"{key}.{ext}")
            ti.size, ti.mode, ti.mtime = len(data), 0o644, 0  # deterministic bytes
            self._tar.addfile(ti, io.BytesIO(data))
        st = self._stats
        st["latents"].add(arrays["latents"])
        if actions is not None:  # statistics per env step: a stored step of frame skip k holds k actions
            known = np.asarray(actions)[np.asarray(action_mask, bool)]
            st["actions"].setdefault(dataset, ChannelSums()).add(known.reshape(-1, known.shape[1] // skip))
        if proprio is not None:
            st["proprio"].setdefault(dataset, ChannelSums()).add(np.asarray(proprio))
        item = item or f"{dataset}/{episode_id}"
        self._entries.append(
            dict(
                {k: v for k, v in meta.items() if k != "extras"},
                key=key,
                item=item,
                shard=self._name,
                _exts=list(files),
                action_dim=None if actions is None else int(np.asarray(actions).shape[1]),
                proprio_dim=None if proprio is None else int(np.asarray(proprio).shape[1]),
                text_dim=None if text is None else int(text["text_emb"].shape[1]),
            )
        )
        self._items += [item] if item not in self._items else []
        return key

    def add_episode(
        self,
        ep: Episode,
        camera: str,
        latents: np.ndarray,
        item: str | None = None,
        text: dict[str, np.ndarray] | None = None,
    ) -> str:
        meta = dict(fps=ep.fps, success=ep.success, text=list(ep.text), frame_skip=ep.frame_skip, extras=ep.extras)
        return self.add(
            ep.episode_id,
            camera,
            latents,
            dataset=ep.dataset,
            steps=StepArrays(
                actions=ep.actions,
                action_mask=None if ep.actions is None else ep.mask(),
                proprio=ep.proprio,
                rewards=ep.rewards,
                states=ep.states,
            ),
            meta=meta,
            item=item,
            text=text,
        )

    def _record_text(self, text: dict | None) -> None:
        """The first text stored records the writer's text encoder in cache.json (unless another rank did first:
        then it must be the same)."""
        if text is not None and "text_encoder" not in self._info:
            emb = self.text.embedding
            _check_text_encoder(self.out, emb.label)
            self._info = dict(self._info, text_encoder=emb.label, text_dim=int(emb.dim))
            self._save_info()

    def _save_info(self) -> None:  # keeps a text encoder another rank recorded since we read cache.json
        now = _read_json(self.out / "cache.json") or {}
        self._info = {**{k: now[k] for k in ("text_encoder", "text_dim") if k in now}, **self._info}
        atomic_write(self.out / "cache.json", json.dumps(self._info, indent=1))

    def _check_info(self, lat: np.ndarray, meta: dict) -> None:
        N, D, g = int(lat.shape[1]), int(lat.shape[2]), int(round(lat.shape[1] ** 0.5))
        if self._info is None:
            self._info = dict(
                self.meta,
                format=FORMAT,
                version=VERSION,
                encoder=self.label,
                image_size=self.image_size,
                num_tokens=N,
                latent_dim=D,
                grid=g if g * g == N else None,
                fps=meta.get("fps"),
                dtype="float16",
            )
            self._save_info()
        check_cache_identity(self.out, self._info, self.label, cache_pool(self.meta), self.image_size)
        if (have := (self._info.get("num_tokens"), self._info.get("latent_dim"))) != (N, D):
            raise CacheError(
                f"latent cache {self.out} holds latents of (N, D) = {have}, refusing to add "
                f"{self.label!r} latents of N = {N}, D = {D}; use another directory"
            )

    close = close_shard

    def __enter__(self) -> LatentCacheWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        shard = self.out / str(self._name)
        try:
            self.abort_shard() if exc_type is not None else self.close_shard()
        except OSError as e:
            self.abort_shard()
            raise write_error(shard, e) from e
        if isinstance(exc, OSError):
            raise write_error(shard, exc) from exc


def _check_text_encoder(out: Path, label: str) -> None:
    check_text_identity(out, _read_json(out / "cache.json"), label)


@dataclass(frozen=True)
class Encoding:
    """What `encode_to_cache` runs on every episode and what the cache records of it (cache.json; a resume with other
    values is refused): the image encoder `fn` ((T, H, W, 3) uint8 → (T, N, D)) with its `label`, the `image_size`
    its frames are resized to and further `meta` facts (e.g. dict(pool=2)); `text`: how the episodes' sentences are
    embedded (LatentCacheWriter's `text`; None: no text stored)."""

    fn: Callable[[np.ndarray], np.ndarray]
    label: str
    image_size: int | None = None
    meta: dict | None = None
    text: TextEmbedding | Callable[[], TextEmbedding] | None = None


def encode_to_cache(
    items: Iterable[tuple[str, Callable[[], Episode]]],
    encoding: Encoding,
    out_dir: str | os.PathLike,
    *,
    episodes_per_shard: int = 32,
    rank: int = 0,
    world_size: int = 1,
    cameras: list[str] | None = None,
    show_progress: bool = True,
) -> dict:
    """Encode every item's frames with `encoding.fn` into the cache at `out_dir`.
    Item k goes to shard k // episodes_per_shard (the plan, written first); this rank writes the shards with
    shard % world_size == rank that the index does not list as complete, fail their checksum, or skipped items (so
    they are retried). An unreadable episode (EpisodeError) is skipped and counted; a cache.json of another encoder
    (label, pooling, image size) is refused; when all shards are complete the statistics files are written. Another
    text encoder (`encoding.text`) than the cache records, or none for a cache that has text, is refused. Returns a
    summary dict."""
    loaders = dict(items := list(items))
    keys = [k for k, _ in items]
    if len(loaders) != len(keys) or not 0 <= rank < world_size or episodes_per_shard <= 0:
        raise CacheError(
            f"encode_to_cache: need unique item keys, 0 <= rank < world_size, episodes_per_shard > 0; "
            f"got {len(keys) - len(loaders)} duplicates, {rank}, {world_size}, {episodes_per_shard}"
        )
    (out := Path(out_dir)).mkdir(parents=True, exist_ok=True)
    # a resume with another encoder is refused even when every shard is written (the writer checks each new one)
    check_cache_identity(
        out,
        info := _read_json(out / "cache.json"),
        encoding.label,
        cache_pool(encoding.meta or {}),
        encoding.image_size,
    )
    check_narration_identity(out, info, (encoding.meta or {}).get("narration"))
    if encoding.text is None and (info or {}).get("text_encoder"):
        raise CacheError(
            f"latent cache {out} holds text embedded by {info['text_encoder']!r}, this encode stores "
            "none (--text.name ''): pass the same text encoder, or encode into another directory"
        )
    plan = _write_plan(out, keys, episodes_per_shard)
    ours = [s["name"] for j, s in enumerate(plan["shards"]) if j % world_size == rank]
    done = recheck(out, records := merged_records(out), _complete(out, records, plan), ours)
    done = retry_skipped(out, records, done, ours)  # a skipped episode may have been repaired since
    mine = [j for j, s in enumerate(plan["shards"]) if j % world_size == rank and s["name"] not in done]
    from tqdm.auto import tqdm

    bar = tqdm(
        total=sum(len(plan["shards"][j]["items"]) for j in mine),
        desc=f"encode (rank {rank})",
        unit="ep",
        disable=not show_progress,
        dynamic_ncols=True,
    )
    n_eps = n_skip = 0
    with LatentCacheWriter(
        out, None, encoding.label, encoding.meta, rank=rank, image_size=encoding.image_size, text=encoding.text
    ) as w:
        if w.text is not None and (info or {}).get("text_encoder"):
            _ = w.text.embedding  # a resume: refuse another text encoder (as another image encoder) up front
        for j in mine:
            (out / f".{plan['shards'][j]['name']}.tmp").unlink(missing_ok=True)  # an interrupted attempt
            w.open_shard(plan["shards"][j]["name"])
            for key in plan["shards"][j]["items"]:
                ok = _encode_item(w, key, loaders[key], encoding.fn, cameras)
                n_eps, n_skip = n_eps + ok, n_skip + (not ok)
                bar.update(1)
            w.close_shard()
    bar.close()
    complete = finalize_cache(out)
    return dict(
        shards_written=[plan["shards"][j]["name"] for j in mine],
        episodes=n_eps,
        skipped=n_skip,
        complete=complete,
        num_shards=len(plan["shards"]),
    )


def _write_plan(out: Path, keys: list[str], episodes_per_shard: int) -> dict:
    """The cache's plan (item k in shard k // episodes_per_shard), written to plan.json on the first run; a later run
    must plan the same (a CacheError otherwise)."""
    plan = dict(
        format=FORMAT,
        version=VERSION,
        episodes_per_shard=episodes_per_shard,
        shards=[
            dict(name=SHARD.format(j), items=keys[s : s + episodes_per_shard])
            for j, s in enumerate(range(0, len(keys), episodes_per_shard))
        ],
    )
    if (old := _read_json(out / "plan.json")) is None:
        atomic_write(out / "plan.json", json.dumps(plan))
    elif old != plan:
        n_old = sum(len(s["items"]) for s in old.get("shards", []))
        raise CacheError(
            f"latent cache {out} was planned for a different list of {n_old} items "
            f"({old.get('episodes_per_shard')} per shard); encode into a new directory or delete it"
        )
    return plan


def _encode_item(
    w: LatentCacheWriter,
    key: str,
    loader: Callable[[], Episode],
    encode_fn: Callable[[np.ndarray], np.ndarray],
    cameras: list[str] | None,
) -> bool:
    """Encode item `key`'s cameras into the open shard of `w`: True, or False when its data is bad (skipped, counted
    and named)."""
    try:
        ep = loader()
        cams = cameras or ep.cameras
        if missing := [c for c in cams if c not in ep.frames]:
            raise EpisodeError(f"episode {key} has no camera {missing} (has {ep.cameras})")
        frames = {c: frames_at(ep.frames[c], range(len(ep))) for c in cams}
    except (EpisodeError, VideoError) as e:  # bad data: skipped, counted, named
        w.skip(key, str(e))
        print(f"encode: skipping {key}: {e}")
        return False
    text = w.episode_text(ep)  # its sentences embedded once, shared by its cameras
    for cam in cams:
        lat = np.asarray(encode_fn(frames[cam]))
        if lat.ndim != 3 or lat.shape[0] != len(ep):
            raise CacheError(f"encode_fn returned {lat.shape} for {len(ep)} frames of {key}; expected (T, N, D)")
        w.add_episode(ep, cam, lat, item=key, text=text)
    return True


def finalize_cache(cache_dir: str | os.PathLike) -> bool:
    """Write the statistics files if every planned shard is complete; returns whether it is. Ranks call it after
    their own shards (the last to finish sees them all) and rank 0 again after a barrier, so the job's end state
    never depends on which rank finished last."""
    out = Path(cache_dir)
    plan = _read_json(out / "plan.json")
    if plan is None:
        return False
    if complete := len(_complete(out, merged_records(out), plan)) == len(plan["shards"]):
        write_stats(out)
    return complete


def _complete(out: Path, records: dict, plan: dict) -> set[str]:
    """Shards of `plan` that are listed in the index, present with the recorded size, and hold the planned items."""
    return {
        s["name"]
        for s in plan["shards"]
        if (r := records.get(s["name"])) is not None
        and r["items"] == s["items"]
        and (out / s["name"]).exists()
        and (out / s["name"]).stat().st_size == r["bytes"]
    }


class LatentCache:
    """Reader: `entries` (one row per (episode, camera)), `load_episode(i)`, statistics and `info` (cache.json).

    Files are read by byte offset from the index (no tar parsing), decoded samples kept in an LRU of
    `memory_mb` (a small cache such as Push-T's stays entirely in memory after first use).
    """

    def __init__(self, path: str | os.PathLike, memory_mb: float = 2048.0):
        self.path = Path(path)
        self.info = _read_json(self.path / "cache.json")
        if self.info is None or self.info.get("format") != FORMAT:
            raise CacheError(f"{self.path} is not a latent cache (no cache.json); create one with `latentwm encode`")
        self.plan = _read_json(self.path / "plan.json")
        records = merged_records(self.path)
        order = [s["name"] for s in self.plan["shards"]] if self.plan else sorted(records)
        self.records = {n: records[n] for n in order if n in records}
        self.missing_shards = [n for n in order if n not in records]
        self.complete = not self.missing_shards  # every planned shard is written
        self.entries: list[dict] = [e for r in self.records.values() for e in r["entries"]]
        check_inside(self.path, [*self.records, *(e["shard"] for e in self.entries)])
        self._checked: set[str] = set()  # shards whose size and checksum were verified by this reader
        self.skipped = [s for r in self.records.values() for s in r.get("skipped", [])]
        self._by_key = {e["key"]: i for i, e in enumerate(self.entries)}
        self._budget, self._used = int(memory_mb * 2**20), 0
        self._lru: OrderedDict[int, dict] = OrderedDict()

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def text_encoder(self) -> str | None:
        """Label of the sentence encoder of the cache's text (None: no text), for checkpoints to record."""
        return self.info.get("text_encoder")

    @property
    def text_dim(self) -> int:
        """Width E of the cache's text embeddings (0: the cache has no text)."""
        return int(self.info.get("text_dim") or 0)

    @property
    def latent_stats(self) -> NormStats:
        d = _read_json(self.path / "latent_stats.json")
        return NormStats.from_dict(d) if d is not None else _stats_from_records(self.records)[0]

    @property
    def dataset_stats(self) -> dict[str, DatasetStats]:
        files = {n: self.path / "stats" / f"{_escape(n)}.json" for n in {e["dataset"] for e in self.entries}}
        if all(p.exists() for p in files.values()):
            return {n: DatasetStats.load(p) for n, p in sorted(files.items())}
        return _stats_from_records(self.records)[1]

    def find(self, dataset: str, episode_id: str, camera: str) -> int:
        return self._by_key[sample_key(dataset, episode_id, camera)]

    def raw(self, i: int) -> dict:
        """Stored arrays of entry i (latents fp16, shared: do not modify) and `meta`."""
        if i in self._lru:
            self._lru.move_to_end(i)
            return self._lru[i]
        e, out = self.entries[i], self._read(i)
        check_latents(out.get("latents"), self.path / e["shard"], e)
        check_text(out, self.path / e["shard"], e)
        self._lru[i], self._used = out, self._used + _nbytes(out)
        while self._used > self._budget and len(self._lru) > 1:
            self._used -= _nbytes(self._lru.popitem(last=False)[1])
        return out

    def members(self, i: int, names: tuple[str, ...]) -> dict:
        """Only the named arrays of entry i (e.g. ("actions", "proprio")) that it stores, without its latents."""
        return {k: v for k, v in self._lru[i].items() if k in names} if i in self._lru else self._read(i, names)

    def _read(self, i: int, names: tuple[str, ...] | None = None) -> dict:
        """Entry i's stored files (only `names`, if given), by byte offset, after its shard's first-open check."""
        e, out = self.entries[i], {}
        check_shard_once(self._checked, self.path / e["shard"], self.records[e["shard"]])
        with open(self.path / e["shard"], "rb") as fh:  # opened per read: safe in forked DataLoader workers
            for ext, (off, size) in e["files"].items():
                if names is None or ext.split(".")[0] in names:
                    fh.seek(off)
                    if fh.readinto(data := bytearray(size)) != size:
                        raise CacheError(f"{self.path / e['shard']}: truncated while reading {e['key']}.{ext}")
                    out[ext.split(".")[0]] = decode_member(data, ext, self.path / e["shard"], e["key"])
        return out

    def load_episode(self, i: int, dtype=np.float32) -> dict:
        """Arrays of entry i (latents as `dtype`; others as stored) plus `meta` (dict)."""
        out = dict(self.raw(i))
        out["latents"] = out["latents"].astype(dtype)
        return out

    def __getstate__(self) -> dict:  # pickled to spawned workers without the decoded samples
        return {**self.__dict__, "_lru": OrderedDict(), "_used": 0}


def _nbytes(d: dict) -> int:
    return sum(v.nbytes for v in d.values() if isinstance(v, np.ndarray))
