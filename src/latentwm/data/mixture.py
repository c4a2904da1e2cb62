"""A weighted mixture of clip datasets (e.g. EPIC-KITCHENS video + DROID robot episodes), deterministic in the global
sample number, so it satisfies the trainer's stream contract: `mixture[k]` is a ClipSample for any k ≥ 0, a pure
function of (seed, k).

Schedule: global sample numbers are cut into blocks of `block` slots. Each source s owns `c_s` slots of every block
(largest-remainder rounding of its weight; a positive weight gets at least one slot), placed by a permutation seeded
by (seed, block number). So the proportions are exact over every block (within 1/block of the weights), the order is
random, and slot k maps to source s's own sample number n = b·c_s + (rank of k among s's slots of block b): every
source sees its own stream 0, 1, 2, ... with no repeats and no gaps, however the global numbers are split over
ranks and workers. A stream source (a training `LatentClipDataset`, whose item n is a random clip drawn from
(seed, n); anything else whose `stream` attribute is True) is asked for item n; a finite source (an eval grid, a
list) is read as successive epochs, each a permutation seeded by (seed, source, epoch).

Sharding and resume: the trainer's `StreamBatchSampler` hands rank r the numbers k of its share and DataLoader
workers whole batches, so a mixture needs no sharding of its own there and resumes at the trainer's sample number.
For other loops, `MixtureStream` is an IterableDataset over the numbers k ≡ (rank·num_workers + worker) mod
(world_size·num_workers) from `start` on, with `state_dict()` / `load_state_dict()` of its position.

Optional fields: a batch cannot mix samples with and without proprio / rewards / terminal / states, so the mixture
keeps only those every source has; the evaluation set (`ConcatClips`, every source's held-out grid) keeps the same.
Narrations are narrowed to each clip's frames by `LatentClipDataset.make_clip` itself.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

import numpy as np
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from latentwm.data.batch import ClipSample

OPTIONAL_FIELDS = ("proprio", "rewards", "terminal", "states")  # per-step fields a source may lack
STREAM_LENGTH = 1 << 40  # `len()` of the mixture: any k ≥ 0 is valid; samplers that want a length get a huge one


@dataclass(frozen=True)
class MixtureSource:
    """One entry of a mixture spec: a latent cache and its sampling weight (relative; normalized over sources)."""

    name: str
    cache_dir: str
    weight: float = 1.0


@dataclass(frozen=True)
class MixtureSpec:
    """Which caches to mix and how: `sources`, the schedule's `seed` and `block` (slots per exact-proportion block)."""

    sources: tuple[MixtureSource, ...] = ()
    seed: int = 0
    block: int = 1000

    @classmethod
    def parse(cls, text: str, seed: int = 0, block: int = 1000) -> MixtureSpec:
        """'epic=data/epic_latents:0.7,droid=data/droid_latents:0.3' (weight optional, default 1)."""
        out = []
        for part in filter(None, (p.strip() for p in text.split(","))):
            name, sep, rest = part.partition("=")
            if not sep or not name:
                raise ValueError(f"mixture entry {part!r}: expected name=cache_dir[:weight]")
            path, w = rest, 1.0
            if ":" in rest:
                head, _, tail = rest.rpartition(":")
                try:
                    path, w = head, float(tail)
                except ValueError:
                    path, w = rest, 1.0  # a ':' inside the path
            out.append(MixtureSource(name.strip(), path.strip(), w))
        return cls(tuple(out), seed, block)


def slot_counts(weights: Sequence[float], block: int) -> np.ndarray:
    """Slots per block of each source: largest-remainder rounding of weights·block, ≥ 1 for a positive weight."""
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 1 or not len(w) or (w < 0).any() or not np.isfinite(w).all() or w.sum() <= 0:
        raise ValueError(f"mixture weights must be finite, ≥ 0 and not all 0; got {list(weights)}")
    if block < int((w > 0).sum()):
        raise ValueError(f"mixture block {block} is smaller than the number of sources with weight > 0")
    exact = w / w.sum() * block
    counts = np.floor(exact).astype(np.int64)
    counts[(w > 0) & (counts == 0)] = 1
    while counts.sum() > block:  # the ≥ 1 floor overshot: take from the largest
        counts[np.argmax(counts - exact)] -= 1
    rema = exact - counts
    for i in np.argsort(-rema, kind="stable")[: block - counts.sum()]:
        counts[i] += 1
    return counts


class MixtureDataset(Dataset):
    """`mixture[k]` → the ClipSample of slot k (see the module docstring). `sources`: [(name, dataset, weight)].

    `fields`: optional per-step fields (proprio, rewards, terminal, states) kept in the samples; default: those
    every source provides (read off each source's first sample), since a batch cannot mix present and absent.
    """

    def __init__(
        self,
        sources: Sequence[tuple[str, Dataset, float]],
        seed: int = 0,
        block: int = 1000,
        fields: Sequence[str] | None = None,
    ):
        if not sources:
            raise ValueError("MixtureDataset needs at least one source")
        names = [s[0] for s in sources]
        if len(set(names)) != len(names):
            raise ValueError(f"MixtureDataset: duplicate source names {names}")
        self.names, self.datasets = names, [s[1] for s in sources]
        self.weights = [float(s[2]) for s in sources]
        self.seed, self.block = int(seed), int(block)
        self.counts = slot_counts(self.weights, self.block)
        self._base = np.repeat(np.arange(len(names)), self.counts)  # block layout before permutation
        self.stream = [_is_stream(d) for d in self.datasets]
        for name, d, s in zip(names, self.datasets, self.stream):
            if not s and len(d) == 0:
                raise ValueError(f"MixtureDataset: source {name!r} is empty")
        self._blocks: OrderedDict[int, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        if fields is None:  # `collate` needs every sample of a batch to have the same optional fields
            first = [self._get(s, self.source_index(s, 0)) for s in range(len(names))]
            fields = [f for f in OPTIONAL_FIELDS if all(getattr(x, f) is not None for x in first)]
        self.fields = tuple(fields)
        self._drop = {f: None for f in OPTIONAL_FIELDS if f not in self.fields}

    def __len__(self) -> int:
        return STREAM_LENGTH

    @property
    def proportions(self) -> dict[str, float]:
        return {n: float(c) / self.block for n, c in zip(self.names, self.counts)}

    def _layout(self, b: int) -> tuple[np.ndarray, np.ndarray]:
        """(source of each slot, rank of the slot among its source's slots) for block b (a few kept in an LRU)."""
        if b in self._blocks:
            self._blocks.move_to_end(b)
            return self._blocks[b]
        src = self._base[np.random.default_rng([self.seed, 0x313C, b]).permutation(self.block)]
        rank = np.empty(self.block, dtype=np.int64)
        for s in range(len(self.names)):
            where = src == s
            rank[where] = np.arange(int(where.sum()))
        self._blocks[b] = (src, rank)
        if len(self._blocks) > 16:
            self._blocks.popitem(last=False)
        return src, rank

    def locate(self, k: int) -> tuple[int, int]:
        """(source number, that source's own sample number) of global sample number k."""
        k = int(k)
        if k < 0:
            raise IndexError(f"mixture sample number must be >= 0, got {k}")
        b, j = divmod(k, self.block)
        src, rank = self._layout(b)
        s = int(src[j])
        return s, b * int(self.counts[s]) + int(rank[j])

    def source_index(self, s: int, n: int):
        """The index into source s of its n-th sample (stream: n itself; finite: epoch-wise permutation)."""
        if self.stream[s]:
            return n
        size = len(self.datasets[s])
        epoch, i = divmod(n, size)
        return int(np.random.default_rng([self.seed, 0xE90C, s, epoch]).permutation(size)[i])

    def __getitem__(self, k: int) -> ClipSample:
        s, n = self.locate(k)
        sample = self._get(s, self.source_index(s, n))
        return replace(sample, **self._drop) if self._drop else sample

    def _get(self, s: int, idx) -> ClipSample:
        return self.datasets[s][idx]

    def state_dict(self) -> dict:
        """What fixes the schedule (saved with checkpoints; `check_state` refuses a resume with a different one)."""
        return dict(
            names=self.names, weights=self.weights, counts=self.counts.tolist(), seed=self.seed, block=self.block
        )

    def check_state(self, state: dict) -> None:
        if state != self.state_dict():
            raise ValueError(f"mixture schedule differs from the checkpoint's: {state} vs {self.state_dict()}")


def _is_stream(ds) -> bool:
    flag = getattr(ds, "stream", None)
    if flag is not None:
        return bool(flag)
    return getattr(ds, "split", None) == "train"  # LatentClipDataset: any training index ≥ 0 is a fresh clip


class ConcatClips(Dataset):
    """Finite clip datasets one after another (an evaluation set over several sources), keeping only the optional
    per-step `fields` (default: those every part's first sample has), so any of its items batch together.
    `parts[i]` and `offsets` say which part an item comes from."""

    def __init__(self, parts: Sequence[Dataset], fields: Sequence[str] | None = None):
        self.parts = [p for p in parts if len(p)]
        if not self.parts:
            raise ValueError("ConcatClips needs at least one non-empty dataset")
        self.offsets = np.cumsum([0] + [len(p) for p in self.parts])
        have = [f for f in OPTIONAL_FIELDS if all(getattr(p[0], f) is not None for p in self.parts)]
        self.fields = tuple(f for f in have if fields is None or f in fields)
        self._drop = {f: None for f in OPTIONAL_FIELDS if f not in self.fields}

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, i: int) -> ClipSample:
        i = int(i)
        if not 0 <= i < len(self):
            raise IndexError(f"ConcatClips index {i} out of range [0, {len(self)})")
        j = int(np.searchsorted(self.offsets, i, side="right")) - 1
        sample = self.parts[j][i - int(self.offsets[j])]
        return replace(sample, **self._drop) if self._drop else sample


class MixtureStream(IterableDataset):
    """Samples `mixture[k]` for this (rank, worker)'s share of k = start, start + 1, ... (k mod world·workers).

    `state_dict()["position"]` is the number of global sample numbers fully handed out (a multiple of
    world_size·num_workers, counted from the last complete round in this process); pass it back as `start` (or
    `load_state_dict`) to resume. Use with DataLoader(batch_size=..., num_workers=...) and the same num_workers.
    """

    def __init__(self, mixture: MixtureDataset, rank: int = 0, world_size: int = 1, start: int = 0):
        if not 0 <= rank < world_size:
            raise ValueError(f"MixtureStream: need 0 <= rank < world_size, got {rank}, {world_size}")
        self.mixture, self.rank, self.world, self.start = mixture, rank, world_size, int(start)
        self.position = self.start

    def indices(self, worker: int = 0, num_workers: int = 1) -> Iterator[int]:
        shards = self.world * num_workers
        if self.start % shards:
            raise ValueError(
                f"MixtureStream: start {self.start} is not a multiple of world_size·num_workers = {shards}"
            )
        k = self.start + self.rank * num_workers + worker
        while True:
            yield k
            k += shards

    def __iter__(self) -> Iterator[ClipSample]:
        info = get_worker_info()
        worker, nw = (0, 1) if info is None else (info.id, info.num_workers)
        shards = self.world * nw
        for k in self.indices(worker, nw):
            sample = self.mixture[k]
            self.position = k - (self.rank * nw + worker) + shards  # this round is handed out with this sample
            yield sample

    def state_dict(self) -> dict:
        return dict(position=self.position, mixture=self.mixture.state_dict())

    def load_state_dict(self, state: dict) -> None:
        self.mixture.check_state(state["mixture"])
        self.start = self.position = int(state["position"])
