"""Simulated Push-T episodes (gym-pusht) from a mix of goal-directed, random-target and random-walk policies.

`generate_pusht(cfg)` writes `episode_{i:06d}.npz` (see `latentwm.data.episodes.save_episode`): dataset "pusht",
camera "main", fps 10, frames (T, S, S, 3) uint8, actions (T, 2) float32 = the commanded agent target position in
[0, 512]² (the action at t is taken after frame t), proprio (T, 4) = agent [x, y, vx, vy], rewards (T,) = the env's
coverage reward of the step taken at t, states (T, 7) = DINO-WM's state [agent x, y, block x, y, angle, agent vx,
vy], success = the env's coverage success (> 95%) was reached, extras = {seed, policy, noise, block_travel,
narrations, narrations_heldout}. An episode stops early when the env reports success. With `render_every` k > 1
only every k-th env step is rendered and the episode is stored with frame skip k (`stored_every`: frames and states
of steps 0, k, 2k, …, actions (T/k, 2k), rewards summed, fps 10/k); the physics are the same.

Policies (`envs/pusht_policies.py`, shares in `GenerateConfig.mix`): "goal" pushes the block toward the green zone's
pose with noise (as DINO-WM's noisy replays of expert pushes), "scripted" toward random targets, "random_walk" moves
the pusher freely. Each episode draws its policy and its command-noise level from its own seeded generator.

Language: `extras["narrations"]` = `[start, end, text]` spans of NARRATION_SEGMENT stored frames describing what
the frames show (the block moved / turned, or where the pusher went; `latentwm.envs.pusht_language.narrate` of
the states, paraphrases drawn from the episode's seed), `extras["narrations_heldout"]` = the same spans worded with
held-out paraphrases (evaluation only). `text` stays [] (the narrations are the text). Episodes written without
narrations get identical ones computed from their states when `load_pusht`'s loaders read them.

OPTIONS of the reader (`latentwm encode --options`, `--data.source-options` online): narration = "direction" (the
default: the narrations stored with the episodes) or "magnitude" (`pusht_language`'s sentences whose slots say how far
and to where, computed from the states when the episodes are read; the stored ones are left unread).

Episode i is a pure function of the folder's settings and i, written with fixed zip timestamps: the same bytes
whatever the number of worker processes, and a killed run continues where it stopped (files that open are kept,
unreadable ones regenerated). The settings are recorded in `generate.json` in the folder: generating again with
another max_steps, image_size, policy mix or seed is refused (a ConfigError naming the fields) instead of mixing
episodes of two kinds; num_episodes may grow.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from latentwm.config import ConfigError, GenerateConfig
from latentwm.data.episodes import Episode, load_episode, save_episode
from latentwm.envs.pusht import PushTEnv, proprio_from_state
from latentwm.envs.pusht_language import NARRATION_STYLES, narrate
from latentwm.envs.pusht_policies import POLICIES, make_policy
from latentwm.io.files import write_json

CAMERA = "main"
NARRATION_SEGMENT = 20
"""Stored frames (env steps, 10 Hz) per narrated span: 2 s, 4 model steps at frame_skip 5 (a training clip of 8
model steps spans 2). A constant, not a folder setting: narrations are recomputed from the states of old folders."""
OPTIONS = ("narration",)
"""Reader options `load_source` passes to `load_pusht` (the narration style)."""
CHUNK = 4
"""Episodes per task handed to a worker process (small: progress stays smooth and the workers stay balanced)."""


def episode_path(out_dir: str | os.PathLike, i: int) -> Path:
    return Path(out_dir) / f"episode_{i:06d}.npz"


@dataclass(frozen=True)
class EpisodeSpec:
    """Everything episode `index` depends on: the env's reset seed is seed + index, the policy's generator
    (seed, index)."""

    index: int
    seed: int
    policy: str
    noise: float
    max_steps: int
    render_every: int = 1


def episode_spec(cfg: GenerateConfig, i: int) -> EpisodeSpec:
    """Episode i's policy and noise level: a seeded draw that depends on (seed, i) only, so any subset of episodes
    can be made in any order, by any process."""
    rng = np.random.default_rng([cfg.seed, i, 0x5EED])
    u, k = rng.random(), int(rng.integers(len(cfg.mix.noise)))
    shares = cfg.mix.shares()
    cum = np.cumsum([shares[p] for p in POLICIES])
    policy = POLICIES[min(int(np.searchsorted(cum, u, side="right")), len(POLICIES) - 1)]
    return EpisodeSpec(i, cfg.seed, policy, float(cfg.mix.noise[k]), cfg.max_steps, cfg.render_every)


def rollout_episode(env: PushTEnv, spec: EpisodeSpec) -> Episode:
    """One episode of `spec.policy` from the env's seeded random start. With render_every k > 1 only every k-th
    frame is rendered and the episode is stored with frame skip k (`stored_every`)."""
    rng = np.random.default_rng([spec.seed, spec.index])
    k = spec.render_every
    frame, info = env.reset(seed=int(spec.seed + spec.index) % (2**31))
    state = info["state"]
    act = make_policy(spec.policy, rng, state, spec.noise)
    frames, actions, states, rewards = [], [], [], []
    success = False
    for t in range(spec.max_steps):
        a = act(state)
        if t % k == 0:
            frames.append(frame)
        states.append(state)
        actions.append(a)
        frame, reward, terminated, _, info = env.step(a, render=(t + 1) % k == 0)
        state = info["state"]
        rewards.append(reward)
        success = success or info["is_success"]
        if terminated:
            break
    states_a = np.stack(states)
    travel = float(np.linalg.norm(np.diff(states_a[:, 2:4], axis=0), axis=1).sum()) if len(states) > 1 else 0.0
    noise = spec.noise if spec.policy != "random_walk" else None
    ep = stored_every(
        np.stack(frames), np.asarray(actions, dtype=np.float32), states_a, np.asarray(rewards, dtype=np.float32), k
    )
    ep.episode_id, ep.success = f"episode_{spec.index:06d}", bool(success)
    ep.extras = dict(seed=int(spec.seed + spec.index), policy=spec.policy, noise=noise, block_travel=travel)
    return with_narrations(ep)


def stored_every(frames: np.ndarray, actions: np.ndarray, states: np.ndarray, rewards: np.ndarray, k: int) -> Episode:
    """A Push-T episode stored with frame skip k from env-step arrays: frames (n, S, S, 3) = the frames of env steps
    0, k, 2k, … (n = ceil(T / k)); actions (T, 2), states (T, 7), rewards (T,) per env step. Stored step j holds the
    state at env step j·k, the k actions taken from there concatenated ((n, 2k); a step whose k actions were not
    all taken — the episode ended — is masked) and the sum of their rewards (`Episode.with_frame_skip`'s layout)."""
    T, n = len(actions), len(frames)
    if n != -(-T // k):
        raise ValueError(f"stored_every: {n} frames for {T} env steps at k = {k} (want {-(-T // k)})")
    padded = np.zeros((n * k, actions.shape[1]), np.float32)
    padded[:T] = actions
    mask = np.arange(n) * k + k <= T
    summed = np.add.reduceat(rewards, np.arange(0, T, k)).astype(np.float32)
    return Episode(
        dataset="pusht",
        episode_id="",
        fps=float(PushTEnv.fps) / k,
        frames={CAMERA: frames},
        actions=padded.reshape(n, k * actions.shape[1]),
        action_mask=None if mask.all() else mask,
        proprio=proprio_from_state(states[::k]),
        rewards=summed,
        states=states[::k],
        frame_skip=k,
    )


def with_narrations(ep: Episode, style: str = "direction") -> Episode:
    """`ep` with `extras["narrations"]` / `["narrations_heldout"]` from its states (`narrate`, NARRATION_SEGMENT,
    paraphrases seeded by `extras["seed"]`) unless it has both already; episodes without states are returned as
    they are. Generation and loading both go through here, so old and new folders narrate alike.

    style: the narration style (NARRATION_STYLES). Episodes are stored with "direction" narrations, so any other
    style is always computed from the states, replacing the stored ones."""
    if ep.states is None or (style == "direction" and "narrations" in ep.extras and "narrations_heldout" in ep.extras):
        return ep
    segment = max(1, NARRATION_SEGMENT // ep.frame_skip)  # 2 s of env steps whatever the stored frame skip
    train, held = narrate(ep.states, segment, seed=int(ep.extras.get("seed", 0)), style=style)
    ep.extras = dict(ep.extras, narrations=train, narrations_heldout=held)
    return ep


def _is_complete(path: Path) -> bool:
    """A finished episode file: its zip directory opens and holds the metadata and frames. Files are written
    atomically, so this catches truncation and foreign files without decompressing every frame (a 10,000-episode
    folder resumes in seconds)."""
    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
            zf.read("meta_json.npy")  # small; its CRC is checked on read
        return f"frames/{CAMERA}.npy" in names
    except (KeyError, OSError, zipfile.BadZipFile, ValueError):
        return False


_WORKER_ENV: PushTEnv | None = None


def _worker_start(image_size: int) -> None:
    global _WORKER_ENV
    _WORKER_ENV = PushTEnv(image_size=image_size)


def _worker_stop() -> None:
    global _WORKER_ENV
    if _WORKER_ENV is not None:
        _WORKER_ENV.close()
        _WORKER_ENV = None


def _worker_run(task: tuple[str, list[EpisodeSpec]]) -> int:
    """Simulate and save the given episodes in this worker's env; returns how many."""
    out_dir, specs = task
    for spec in specs:
        save_episode(rollout_episode(_WORKER_ENV, spec), episode_path(out_dir, spec.index))
    return len(specs)


SETTINGS_FILE = "generate.json"


def folder_settings(out: Path) -> tuple[dict | None, str]:
    """(settings, where they come from) of an episode folder: its generate.json or, for folders without one, what
    its first readable episode shows (image_size, seed); (None, "") for a folder without either."""
    f = out / SETTINGS_FILE
    if f.exists():
        try:
            return json.loads(f.read_text()), f"recorded in {f}"
        except (OSError, ValueError) as e:
            raise ConfigError(f"{f} is unreadable ({e}): delete it if {out} holds the episodes you ask for") from e
    for p in sorted(out.glob("episode_*.npz")):
        if not _is_complete(p):
            continue
        ep = load_episode(p)
        seen = {"image_size": int(ep.frames[CAMERA].shape[1])}
        if "seed" in ep.extras:
            seen["seed"] = int(ep.extras["seed"]) - int(p.stem.split("_")[-1])
        return seen, f"seen in {p.name}"
    return None, ""


def check_and_record_settings(out: Path, cfg: GenerateConfig) -> None:
    """Refuse (ConfigError naming the fields and the folder) to add episodes made with other settings than those
    already in `out` (a generate.json without a field counts as other settings); else record the settings
    (num_episodes: the largest asked for) atomically."""
    settings = cfg.settings()
    have, source = folder_settings(out)
    recorded = source.startswith("recorded")
    have = have or {}
    diff = [k for k in settings if (k in have or recorded) and have.get(k) != settings[k]]
    if diff:
        what = "; ".join(f"{k} {have.get(k, 'not recorded')} there, {settings[k]} now" for k in diff)
        raise ConfigError(
            f"{out} holds Push-T episodes generated with other settings ({what}; {source}): use "
            f"another --out-dir, or the folder's settings to add episodes to it"
        )
    record = {**settings, "num_episodes": max(int(cfg.num_episodes), int(have.get("num_episodes", 0)))}
    write_json(out / SETTINGS_FILE, record)


def policy_counts(cfg: GenerateConfig) -> dict[str, int]:
    """Episodes per policy among the first cfg.num_episodes (what the folder's mix gave, not the asked shares)."""
    counts = {p: 0 for p in POLICIES}
    for i in range(cfg.num_episodes):
        counts[episode_spec(cfg, i).policy] += 1
    return counts


def generate_pusht(cfg: GenerateConfig, show_progress: bool = True) -> list[Path]:
    """Write episodes 0..cfg.num_episodes-1 to cfg.out_dir (keeping finished ones) on cfg.workers processes; return
    all paths. A folder made with other settings is refused (ConfigError, nothing written)."""
    from tqdm.auto import tqdm

    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    check_and_record_settings(out, cfg)
    for stale in out.glob(".episode_*.npz.*.tmp"):  # temp files of an interrupted save
        stale.unlink(missing_ok=True)
    todo = [episode_spec(cfg, i) for i in range(cfg.num_episodes) if not _is_complete(episode_path(out, i))]
    if cfg.workers is None and len(todo) < 4 * CHUNK:
        workers = 1  # starting processes (each imports the simulator) costs more than a few episodes take
    else:
        workers = min(cfg.workers or os.cpu_count() or 1, max(1, -(-len(todo) // CHUNK)))
    bar = tqdm(
        total=cfg.num_episodes,
        initial=cfg.num_episodes - len(todo),
        desc="generate pusht",
        unit="ep",
        disable=not show_progress,
        dynamic_ncols=True,
    )
    t0 = time.perf_counter()
    try:
        if workers > 1:
            tasks = [(str(out), todo[k : k + CHUNK]) for k in range(0, len(todo), CHUNK)]
            with mp.get_context("spawn").Pool(workers, _worker_start, (cfg.image_size,)) as pool:
                for n in pool.imap_unordered(_worker_run, tasks):
                    bar.update(n)
        elif todo:
            _worker_start(cfg.image_size)
            try:
                for spec in todo:
                    bar.update(_worker_run((str(out), [spec])))
            finally:
                _worker_stop()
    finally:
        bar.close()
    if todo and show_progress:
        dt = time.perf_counter() - t0
        print(
            f"generated {len(todo)} Push-T episodes in {dt:.1f} s ({len(todo) / max(dt, 1e-9):.2f} episodes/s, "
            f"{workers} process{'es' if workers > 1 else ''})"
        )
    return [episode_path(out, i) for i in range(cfg.num_episodes)]


def load_pusht(out_dir: str | os.PathLike, *, narration: str = "direction") -> list[tuple[str, Callable[[], Episode]]]:
    """(key, loader) pairs for every episode file in `out_dir`, sorted: the input of `encode_to_cache`. Episodes
    saved without narrations get them from their states (`with_narrations`), as generation gives them.

    narration: the narration style of the loaded episodes' `extras["narrations"]` (NARRATION_STYLES; a reader
    option). ValueError naming the option for another value."""
    if narration not in NARRATION_STYLES:
        raise ValueError(
            f"the pusht reader's option narration must be one of {', '.join(NARRATION_STYLES)}, got {narration!r}"
        )
    paths = sorted(Path(out_dir).glob("episode_*.npz"))
    return [(f"pusht/{p.stem}", (lambda p=p: with_narrations(load_episode(p), narration))) for p in paths]


def run_generate(cfg: GenerateConfig) -> list[Path]:
    """`latentwm generate pusht`: simulate the episodes of cfg into cfg.out_dir (finished ones are kept)."""
    paths = generate_pusht(cfg)
    mix = ", ".join(f"{k} {v}" for k, v in policy_counts(cfg).items())
    print(f"{len(paths)} episodes in {cfg.out_dir} ({mix})")
    return paths
