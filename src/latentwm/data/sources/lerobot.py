"""Any LeRobot dataset (layouts v3.0 and v2.1; pyarrow + PyAV, no `lerobot` dependency) as episodes.

`load_lerobot(root)` returns `[(key, loader)]`, one per episode of `meta/info.json`'s dataset; a loader returns an
`Episode` with

- frames: every video feature `observation.images.<name>` (or `cameras=`), camera named `<name>`, decoded lazily
  (`CheckedVideoFrames`) at the episode's timestamps inside the possibly multi-episode MP4;
- actions (T, A): the parquet column `action_key` (default `action`) at the kept steps, all known; `action_key=`
  (empty) gives action-free episodes;
- proprio (T, P): the column `state_key` (default `observation.state`); `state_key=` (empty) gives none;
- text: the episode's task strings (v3: its `tasks` in `meta/episodes`; v2.1: `tasks` in `meta/episodes.jsonl`) and,
  when the rows carry `task_index`, the tasks it names (v3 `meta/tasks.parquet`, v2.1 `meta/tasks.jsonl`);
  `extras["narrations"]`: the per-frame tasks as `[first_frame, end_frame, task]` spans (end exclusive) in the
  episode's kept-frame indices, so a clip gets the task it shows (`episodes.narrations_in`);
- extras: layout, episode index, native fps, the kept raw steps (when resampled).

fps resampling: `fps=f` keeps the raw steps nearest to the grid k/f (`sample_steps`). The action of a kept step is the
action recorded at that step; the actions of the skipped steps in between are dropped. LeRobot's `action` is an
absolute target (joint or end-effector position) on most robots, where the kept step's action is still the right
target, and a per-step delta on some; for the latter, sum them yourself or use a reader that derives actions from the
measured states between kept steps (droid, agibot do).

Layout. v3: `meta/info.json` (fps, features, `data_path`/`video_path` templates), `meta/episodes/chunk-*/file-*.parquet`
(per episode: `episode_index`, `length`, `tasks`, `data/{chunk,file}_index`,
`videos/<key>/{chunk_index,file_index,from_timestamp,to_timestamp}`), `meta/tasks.parquet` (task string as the index
or a `task` column, `task_index`), `data/chunk-*/file-*.parquet` (rows of many episodes), `videos/<key>/chunk-*/
file-*.mp4`; a frame is at `from_timestamp + timestamp` of its row. v2.1: `meta/episodes.jsonl`, `meta/tasks.jsonl`,
one parquet (`data/chunk-000/episode_000000.parquet`, numbered) and one MP4 per camera per episode; a frame
is at `timestamp`.
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from latentwm.data.episodes import Episode, EpisodeError
from latentwm.data.sources.video_folder import CheckedVideoFrames

OPTIONS = (
    "fps=<float|None: native> cameras=<comma list: all observation.images.*> size=<int|None> "
    "action_key=action state_key=observation.state episodes=<indices> dataset=<folder name>"
)
IMAGE_PREFIX = "observation.images."

Item = tuple[str, Callable[[], Episode]]


def sample_steps(num_steps: int, native_fps: float, fps: float | None) -> np.ndarray:
    """Raw step indices kept at `fps` (nearest to k·native/fps), all of them when fps is None or ≥ native."""
    if fps is None or fps >= native_fps:
        return np.arange(num_steps)
    if fps <= 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    idx = np.round(np.arange(0, num_steps / native_fps * fps) * native_fps / fps).astype(np.int64)
    return np.unique(idx[idx < num_steps])


def kept_spans(spans: Sequence, keep: np.ndarray) -> list[list]:
    """Raw-step spans `[(start, end, text)]` (end exclusive) → the same spans in kept-frame indices (keep: (T,) sorted
    raw steps); spans that hold no kept step are dropped."""
    out = []
    for s, e, text in spans:
        a, b = int(np.searchsorted(keep, s, "left")), int(np.searchsorted(keep, e, "left"))
        if b > a and str(text).strip():
            out.append([a, b, str(text)])
    return out


def texts(*groups) -> list[str]:
    """Non-empty strings of `groups` (each a string or a list of them), stripped, deduplicated, in order."""
    out: list[str] = []
    for g in groups:
        for t in [g] if isinstance(g, str) else (g or []):
            t = str(t).strip() if t is not None else ""
            if t and t not in out:
                out.append(t)
    return out


class TableCache:
    """A few recently read parquet tables (episodes of one data file are read one after the other)."""

    def __init__(self, size: int = 2):
        self.size, self.tables = size, OrderedDict()

    def get(self, path: Path, columns: list[str]):
        import pyarrow.parquet as pq

        key = (str(path), tuple(columns))
        if key in self.tables:
            self.tables.move_to_end(key)
            return self.tables[key]
        table = pq.read_table(path, columns=columns)
        self.tables[key] = table
        while len(self.tables) > self.size:
            self.tables.popitem(last=False)
        return table


def column(table, name: str) -> np.ndarray:
    """A parquet column as numpy: (n,) for scalars, (n, width) for list columns."""
    import pyarrow as pa

    col = table.column(name).combine_chunks()
    if pa.types.is_list(col.type) or pa.types.is_fixed_size_list(col.type) or pa.types.is_large_list(col.type):
        width = len(col[0]) if len(col) else 0
        return np.asarray(col.flatten().to_numpy(zero_copy_only=False)).reshape(len(col), width)
    return np.asarray(col.to_numpy(zero_copy_only=False))


class LeRobotReader:
    """Metadata, rows and videos of one LeRobot-format (v3.0 or v2.1) dataset directory.

    Subclasses (DROID) pick the row columns they need (`columns`) and build their own episodes from `rows` and
    `frames`; `LeRobotDataset` is the generic one."""

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        fps: float | None = None,
        cameras: Sequence[str] | None = None,
        size=None,
        dataset: str | None = None,
        episodes: Sequence[int] | None = None,
        default_fps: float = 30.0,
    ):
        self.root, self.fps, self.size = Path(root), fps, size
        self.dataset = dataset or self.root.resolve().name
        self.info_path = self.root / "meta" / "info.json"
        try:
            self.info = json.loads(self.info_path.read_text())
        except (OSError, ValueError) as e:
            raise FileNotFoundError(f"{self.info_path}: cannot read LeRobot info.json: {e}") from e
        self.version = str(self.info.get("codebase_version", "v3.0"))
        self.native_fps = float(self.info.get("fps", default_fps))
        self.features = self.info.get("features", {})
        self.video_keys = [k for k, v in self.features.items() if v.get("dtype") == "video"]
        names = {k: k[len(IMAGE_PREFIX) :] if k.startswith(IMAGE_PREFIX) else k for k in self.video_keys}
        if cameras:
            unknown = [c for c in cameras if c not in names.values() and c not in names]
            if unknown:
                raise ValueError(f"{self.root}: no camera {unknown}; available {sorted(names.values())}")
            self.video_keys = [k for k in self.video_keys if k in cameras or names[k] in cameras]
        if not self.video_keys:
            raise ValueError(f"{self.info_path}: lists no video features")
        self.camera_names = names
        self.episodes = self._read_episodes()
        if episodes is not None:
            want = set(int(i) for i in episodes)
            self.episodes = [e for e in self.episodes if int(e["episode_index"]) in want]
        self._tables = TableCache()

    def require(self, key: str, option: str) -> None:
        """ValueError naming info.json, the option and the available keys when feature `key` is missing."""
        if key not in self.features:
            raise ValueError(
                f"{self.info_path}: no feature {key!r} ({option}); available: "
                f"{', '.join(sorted(k for k in self.features if k not in self.video_keys))}"
            )

    # -- metadata -------------------------------------------------------------------------------------------
    def _read_episodes(self) -> list[dict]:
        if self.version.startswith("v2"):
            path = self.root / "meta" / "episodes.jsonl"
            try:
                return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            except (OSError, ValueError) as e:
                raise FileNotFoundError(f"{path}: cannot read LeRobot v2 episode list: {e}") from e
        import pyarrow.parquet as pq

        files = sorted((self.root / "meta" / "episodes").glob("chunk-*/file-*.parquet"))
        if not files:
            raise FileNotFoundError(f"{self.root}/meta/episodes: no chunk-*/file-*.parquet (LeRobot v3 layout)")
        rows: list[dict] = []
        for f in files:  # only the columns we need: the stats columns are many
            names = pq.read_schema(f).names
            cols = [
                c
                for c in names
                if c
                in (
                    "episode_index",
                    "length",
                    "tasks",
                    "data/chunk_index",
                    "data/file_index",
                    "dataset_from_index",
                    "dataset_to_index",
                )
                or (
                    c.startswith("videos/")
                    and c.split("/")[-1] in ("chunk_index", "file_index", "from_timestamp", "to_timestamp")
                )
            ]
            rows += pq.read_table(f, columns=cols).to_pylist()
        return sorted(rows, key=lambda r: int(r["episode_index"]))

    def task_table(self) -> dict[int, str]:
        """task_index → task string (empty when the dataset has no readable task list with strings)."""
        if self.version.startswith("v2"):
            path = self.root / "meta" / "tasks.jsonl"
            if not path.is_file():
                return {}
            rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            return {int(r["task_index"]): str(r["task"]) for r in rows if "task" in r}
        path = self.root / "meta" / "tasks.parquet"
        if not path.is_file():
            return {}
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        name = next((c for c in ("task", "__index_level_0__") if c in table.column_names), None)
        if name is None or "task_index" not in table.column_names:
            return {}
        return {int(i): str(t) for i, t in zip(column(table, "task_index").tolist(), column(table, name).tolist())}

    def _data_path(self, ep: dict) -> Path:
        tpl = self.info.get("data_path")
        if self.version.startswith("v2"):
            tpl = tpl or "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet"
            chunk = int(ep["episode_index"]) // int(self.info.get("chunks_size", 1000))
            return self.root / tpl.format(episode_chunk=chunk, episode_index=int(ep["episode_index"]))
        tpl = tpl or "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
        return self.root / tpl.format(chunk_index=int(ep["data/chunk_index"]), file_index=int(ep["data/file_index"]))

    def _video(self, ep: dict, key: str) -> tuple[Path, float]:
        """(video file, time of the episode's first frame in it)."""
        tpl = self.info.get("video_path")
        if self.version.startswith("v2"):
            tpl = tpl or "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4"
            chunk = int(ep["episode_index"]) // int(self.info.get("chunks_size", 1000))
            return self.root / tpl.format(
                episode_chunk=chunk, video_key=key, episode_index=int(ep["episode_index"])
            ), 0.0
        tpl = tpl or "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
        path = self.root / tpl.format(
            video_key=key,
            chunk_index=int(ep[f"videos/{key}/chunk_index"]),
            file_index=int(ep[f"videos/{key}/file_index"]),
        )
        return path, float(ep[f"videos/{key}/from_timestamp"])

    # -- episodes ---------------------------------------------------------------------------------------------
    def name(self, ep: dict) -> tuple[str, str]:
        eid = f"episode_{int(ep['episode_index']):06d}"
        return eid, f"{self.dataset}/{eid}"

    def items(self) -> list[Item]:
        return [(self.name(e)[1], self._loader(e)) for e in self.episodes]

    def _loader(self, ep: dict) -> Callable[[], Episode]:
        return lambda: self.load(ep)  # `load`: each reader's own (LeRobotDataset, droid's LeRobotDroid)

    def rows(self, ep: dict, columns: Sequence[str]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """(timestamps (T,) sorted, {column: (T, ...) in time order}) of one episode's rows; EpisodeError naming
        the file when it is missing or unreadable."""
        idx, name = int(ep["episode_index"]), self.name(ep)[1]
        path = self._data_path(ep)
        try:
            import pyarrow.compute as pc

            table = self._tables.get(path, ["episode_index", "timestamp", *columns])
            rows = table.filter(pc.equal(table.column("episode_index"), idx))
            if rows.num_rows == 0:
                raise EpisodeError(f"episode {name}: no rows with episode_index {idx} in {path}")
            ts = column(rows, "timestamp").astype(np.float64)
            order = np.argsort(ts, kind="stable")
            return ts[order], {c: column(rows, c)[order] for c in columns}
        except EpisodeError:
            raise
        except Exception as e:  # pyarrow raises many types for missing/corrupt files
            raise EpisodeError(f"episode {name}: cannot read {path}: {type(e).__name__}: {e}") from e

    def frames(self, ep: dict, ts: np.ndarray) -> dict:
        """camera → lazy frames at the (kept) row timestamps ts (T,)."""
        name, out = self.name(ep)[1], {}
        for key in self.video_keys:
            vpath, t0 = self._video(ep, key)
            if not vpath.is_file():
                raise EpisodeError(f"episode {name}: video file {vpath} not found")
            out[self.camera_names[key]] = CheckedVideoFrames(vpath, t0 + ts, self.size, episode=name)
        return out

    def out_fps(self) -> float:
        return float(self.fps if self.fps and self.fps < self.native_fps else self.native_fps)


class LeRobotDataset(LeRobotReader):
    """The generic reader: actions and proprio straight from the columns `action_key` / `state_key`."""

    def __init__(self, root, *, action_key: str | None = "action", state_key: str | None = "observation.state", **kw):
        super().__init__(root, **kw)
        self.action_key, self.state_key = action_key or None, state_key or None
        for key, option in ((self.action_key, "action_key"), (self.state_key, "state_key")):
            if key:
                self.require(key, option)
        self.tasks = self.task_table()
        self.columns = [k for k in (self.action_key, self.state_key) if k] + (
            ["task_index"] if "task_index" in self.features else []
        )

    def load(self, ep: dict) -> Episode:
        eid, name = self.name(ep)
        ts, cols = self.rows(ep, self.columns)
        keep = sample_steps(len(ts), self.native_fps, self.fps)
        vectors = {}
        for key in (self.action_key, self.state_key):
            if key:
                v = cols[key].reshape(len(ts), -1).astype(np.float32)[keep]
                vectors[key] = v
        actions = vectors.get(self.action_key) if self.action_key else None
        mask = None
        if actions is not None:
            mask = np.isfinite(actions).all(1)
            actions = np.where(mask[:, None], actions, 0.0).astype(np.float32)
        proprio = np.nan_to_num(vectors[self.state_key]) if self.state_key else None
        spans = []
        if "task_index" in cols:
            per_step = [self.tasks.get(int(i), "") for i in cols["task_index"].reshape(-1)]
            starts = [i for i in range(len(per_step)) if i == 0 or per_step[i] != per_step[i - 1]]
            spans = [
                (s, starts[j + 1] if j + 1 < len(starts) else len(per_step), per_step[s]) for j, s in enumerate(starts)
            ]
        narr = kept_spans(spans, keep)
        return Episode(
            dataset=self.dataset,
            episode_id=eid,
            fps=self.out_fps(),
            frames=self.frames(ep, ts[keep]),
            actions=actions,
            action_mask=mask,
            proprio=proprio,
            text=texts(ep.get("tasks"), [t for _, _, t in narr]),
            extras=dict(
                layout=f"lerobot-{self.version}",
                episode_index=int(ep["episode_index"]),
                native_fps=self.native_fps,
                narrations=narr,
                raw_steps=keep.tolist() if len(keep) != len(ts) else None,
            ),
        )


def load_lerobot(
    root: str | os.PathLike,
    *,
    fps: float | None = None,
    size: int | tuple[int, int] | None = None,
    cameras: Sequence[str] | str = "",
    action_key: str | None = "action",
    state_key: str | None = "observation.state",
    episodes: Sequence[int] | None = None,
    dataset: str | None = None,
) -> list[Item]:
    """`[(key, loader)]` of the episodes of the LeRobot dataset at `root` (see the module docstring); keys are
    `{dataset}/episode_XXXXXX`, dataset defaulting to the folder's name."""
    if isinstance(cameras, str):
        cameras = [c for c in cameras.split(",") if c]
    if episodes is not None and isinstance(episodes, (str, float, int)):
        episodes = [int(float(e)) for e in str(episodes).split(",") if e]
    return LeRobotDataset(
        root,
        fps=fps,
        cameras=cameras or None,
        size=size,
        dataset=dataset,
        episodes=episodes,
        action_key=action_key,
        state_key=state_key,
    ).items()
